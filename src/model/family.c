/* The family table (one record per family) and the one list of a stage's
 * weights every layer reads. Names, keys and defaults follow each family's HF
 * modeling_<family>.py / configuration_<family>.py. */
#include "model/family.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "model/cfgjson.h"
#include "model/config.h"

/* ---- the families' own config keys ---- */

static pb_status parse_gpt2(const pb_jctx *c, pb_model_config *cfg)
{
    bool b;
    PB_CHECK(pb_jbool(c, KEYS("scale_attn_weights"), true, &cfg->attn_scale, NULL));
    PB_CHECK(pb_jbool(c, KEYS("scale_attn_by_inverse_layer_idx"), false, &cfg->scale_attn_by_inverse_layer_idx, NULL));
    return pb_jbool(c, KEYS("reorder_and_upcast_attn"), false, &b, NULL); /* numerics only */
}

static pb_status parse_opt(const pb_jctx *c, pb_model_config *cfg)
{
    bool affine, remove_final, has;
    int proj;
    PB_CHECK(pb_jint(c, KEYS("word_embed_proj_dim"), 0, 1, 1 << 20, &proj, &has));
    cfg->word_embed_proj_dim = has && proj != cfg->hidden_size ? proj : 0;
    PB_CHECK(pb_jbool(c, KEYS("do_layer_norm_before"), true, &cfg->pre_norm, NULL));
    PB_CHECK(pb_jbool(c, KEYS("_remove_final_layer_norm"), false, &remove_final, NULL));
    cfg->final_norm = cfg->pre_norm && !remove_final;
    PB_CHECK(pb_jbool(c, KEYS("layer_norm_elementwise_affine"), true, &affine, NULL));
    if (!affine)
        return pb_error(PB_ERR_UNSUPPORTED, "%s: field 'layer_norm_elementwise_affine' = false is not supported",
                        c->path);
    PB_CHECK(pb_jbool(c, KEYS("enable_bias"), true, &cfg->qkv_bias, NULL));
    cfg->out_bias = cfg->mlp_bias = cfg->qkv_bias;
    cfg->pos_offset = 2; /* OPTLearnedPositionalEmbedding offset */
    return PB_OK;
}

static pb_status parse_bloom(const pb_jctx *c, pb_model_config *cfg)
{
    bool post_ln;
    (void)cfg;
    PB_CHECK(pb_jbool(c, KEYS("apply_residual_connection_post_layernorm"), false, &post_ln, NULL));
    if (post_ln)
        return pb_error(PB_ERR_UNSUPPORTED,
                        "%s: field 'apply_residual_connection_post_layernorm' = true is not supported", c->path);
    return PB_OK;
}

static pb_status parse_gpt_neo(const pb_jctx *c, pb_model_config *cfg)
{
    PB_CHECK(pb_jint(c, KEYS("window_size"), 256, 1, 1 << 26, &cfg->sliding_window, NULL));
    return pb_cfg_attention_types(c, cfg);
}

static pb_status parse_gptj(const pb_jctx *c, pb_model_config *cfg)
{
    int rot;
    bool has;
    PB_CHECK(pb_jint(c, KEYS("rotary_dim"), 64, 1, 1 << 16, &rot, &has));
    /* rotary_dim None: GPT-J rotates the whole head */
    cfg->rotary_dim = !has && cJSON_GetObjectItemCaseSensitive(c->root, "rotary_dim") ? 0 : rot;
    return PB_OK;
}

static pb_status parse_gpt_neox(const pb_jctx *c, pb_model_config *cfg)
{
    double pct;
    bool parallel;
    PB_CHECK(pb_cfg_rotary_pct(c, KEYS("rotary_pct"), 0.25, &pct));
    if (!(pct > 0 && pct <= 1))
        return pb_error(PB_ERR_CONFIG, "%s: field 'rotary_pct' (partial_rotary_factor) must be in (0, 1]", c->path);
    PB_CHECK(pb_jbool(c, KEYS("use_parallel_residual"), true, &parallel, NULL));
    PB_CHECK(pb_jbool(c, KEYS("attention_bias"), true, &cfg->qkv_bias, NULL));
    cfg->out_bias = cfg->qkv_bias;
    cfg->residual = parallel ? PB_RESID_PARALLEL_TWO_NORM : PB_RESID_SEQUENTIAL;
    if (cfg->hidden_size % cfg->n_heads)
        return pb_error(PB_ERR_CONFIG, "%s: hidden_size %d is not a multiple of num_attention_heads %d", c->path,
                        cfg->hidden_size, cfg->n_heads);
    cfg->rotary_dim = (int)((double)(cfg->hidden_size / cfg->n_heads) * pct); /* int(head_size * rotary_pct) */
    if (cfg->rotary_dim <= 0)
        return pb_error(PB_ERR_CONFIG, "%s: field 'rotary_pct' = %g leaves no rotary dimensions", c->path, pct);
    return PB_OK;
}

static pb_status parse_llama(const pb_jctx *c, pb_model_config *cfg)
{
    PB_CHECK(pb_jbool(c, KEYS("attention_bias"), false, &cfg->qkv_bias, NULL));
    cfg->out_bias = cfg->qkv_bias;
    return pb_jbool(c, KEYS("mlp_bias"), false, &cfg->mlp_bias, NULL);
}

static pb_status parse_mistral(const pb_jctx *c, pb_model_config *cfg)
{
    PB_CHECK(pb_jint(c, KEYS("sliding_window"), 0, 1, 1 << 30, &cfg->sliding_window, NULL));
    for (int i = 0; i < cfg->n_layers; i++)
        cfg->layer_local[i] = cfg->sliding_window > 0;
    return PB_OK;
}

static pb_status parse_mixtral(const pb_jctx *c, pb_model_config *cfg)
{
    PB_CHECK(pb_cfg_moe(c, cfg, false));
    return parse_mistral(c, cfg);
}

/* Qwen3MoeConfig 5.x: sliding_window only with use_sliding_window, and then
 * on every layer (max_window_layers is not read); experts with
 * moe_intermediate_size, norm_topk_prob, decoder_sparse_step, mlp_only_layers. */
static pb_status parse_qwen3_moe(const pb_jctx *c, pb_model_config *cfg)
{
    bool use_sw;
    int sw;
    PB_CHECK(pb_jbool(c, KEYS("attention_bias"), false, &cfg->qkv_bias, NULL));
    cfg->out_bias = cfg->qkv_bias;
    PB_CHECK(pb_jbool(c, KEYS("use_sliding_window"), false, &use_sw, NULL));
    PB_CHECK(pb_jint(c, KEYS("sliding_window"), 4096, 1, 1 << 30, &sw, NULL));
    const cJSON *swj = cJSON_GetObjectItemCaseSensitive(c->root, "sliding_window");
    if (swj && cJSON_IsNull(swj))
        use_sw = false;
    cfg->sliding_window = use_sw ? sw : 0;
    for (int i = 0; i < cfg->n_layers; i++)
        cfg->layer_local[i] = use_sw;
    return pb_cfg_moe(c, cfg, true);
}

static pb_status parse_qwen2(const pb_jctx *c, pb_model_config *cfg)
{
    bool use_sw;
    int sw, max_window_layers;
    PB_CHECK(pb_jbool(c, KEYS("use_sliding_window"), false, &use_sw, NULL));
    PB_CHECK(pb_jint(c, KEYS("sliding_window"), 4096, 1, 1 << 30, &sw, NULL));
    PB_CHECK(pb_jint(c, KEYS("max_window_layers"), 28, 0, 1 << 20, &max_window_layers, NULL));
    /* HF 5.x Qwen2Config: sliding_window is None unless use_sliding_window (an explicit null
     * too); layer_types, when given, names the sliding layers, else they are the layers from
     * max_window_layers on. A "sliding_attention" layer without a window attends to all. */
    const cJSON *swj = cJSON_GetObjectItemCaseSensitive(c->root, "sliding_window");
    if (swj && cJSON_IsNull(swj))
        use_sw = false;
    cfg->sliding_window = use_sw ? sw : 0;
    PB_CHECK(pb_cfg_layer_types(c, cfg, max_window_layers));
    for (int i = 0; i < cfg->n_layers; i++)
        cfg->layer_local[i] = use_sw && cfg->layer_local[i];
    return PB_OK;
}

static pb_status parse_qwen3(const pb_jctx *c, pb_model_config *cfg)
{
    PB_CHECK(pb_jbool(c, KEYS("attention_bias"), false, &cfg->qkv_bias, NULL));
    cfg->out_bias = cfg->qkv_bias;
    return parse_qwen2(c, cfg); /* the same sliding-window keys */
}

/* Phi-3: partial rotary, rope type default or longrope only, one window for all layers. */
static pb_status parse_phi3(const pb_jctx *c, pb_model_config *cfg)
{
    double pct;
    PB_CHECK(pb_cfg_rotary_pct(c, KEYS("partial_rotary_factor"), 1.0, &pct));
    if (!(pct > 0 && pct <= 1))
        return pb_error(PB_ERR_CONFIG, "%s: field 'partial_rotary_factor' = %g must be in (0, 1]", c->path, pct);
    if (!cfg->head_dim && cfg->hidden_size % cfg->n_heads)
        return pb_error(PB_ERR_CONFIG, "%s: hidden_size %d is not a multiple of num_attention_heads %d", c->path,
                        cfg->hidden_size, cfg->n_heads);
    const int hd = cfg->head_dim ? cfg->head_dim : cfg->hidden_size / cfg->n_heads;
    cfg->rotary_dim = (int)((double)hd * pct); /* int(head_dim * partial_rotary_factor) */
    if (cfg->rotary_dim <= 0)
        return pb_error(PB_ERR_CONFIG, "%s: field 'partial_rotary_factor' = %g leaves no rotary dimensions", c->path,
                        pct);
    if (cfg->rope_scaling != PB_ROPE_SCALE_NONE && cfg->rope_scaling != PB_ROPE_SCALE_LONGROPE)
        return pb_error(PB_ERR_UNSUPPORTED, "%s: field 'rope_parameters' (rope_scaling): Phi-3 takes the rope types "
                        "default and longrope only", c->path);
    return parse_mistral(c, cfg);
}

/* ---- Gemma 2 and Gemma 3 text (configuration_gemma2.py, Gemma3TextConfig) ---- */

/* A soft-cap: absent -> def, null -> none (0), else a number > 0. */
static pb_status gemma_cap(const pb_jctx *c, const char *key, double def, float *out)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (!it) {
        *out = (float)def;
        return PB_OK;
    }
    if (cJSON_IsNull(it)) {
        *out = 0;
        return PB_OK;
    }
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble) || !(it->valuedouble > 0))
        return pb_error(PB_ERR_CONFIG, "%s: field '%s' must be a number > 0 or null", c->path, key);
    *out = (float)it->valuedouble;
    return PB_OK;
}

/* Gemma 3 rotary settings, as Gemma3TextConfig.convert_rope_params_to_dict:
 * rope_parameters {"full_attention": {...}, "sliding_attention": {...}} (5.x),
 * or rope_theta (global, default 1e6), rope_local_base_freq (local, 1e4) and
 * rope_scaling (global only; already read by the common keys). Local layers
 * take only the default rotary. */
static pb_status gemma3_rope(const pb_jctx *c, pb_model_config *cfg)
{
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(c->root, "rope_parameters");
    const cJSON *full = NULL, *slide = NULL;
    if (rp && !cJSON_IsNull(rp)) {
        if (!cJSON_IsObject(rp))
            return pb_error(PB_ERR_CONFIG, "%s: field 'rope_parameters' must be an object or null", c->path);
        full = cJSON_GetObjectItemCaseSensitive(rp, "full_attention");
        slide = cJSON_GetObjectItemCaseSensitive(rp, "sliding_attention");
        if (rp->child && !full && !slide)
            return pb_error(PB_ERR_CONFIG, "%s: field 'rope_parameters' must hold 'full_attention' and "
                            "'sliding_attention' objects (one per layer type)", c->path);
        if ((full && !cJSON_IsNull(full) && !cJSON_IsObject(full)) ||
            (slide && !cJSON_IsNull(slide) && !cJSON_IsObject(slide)))
            return pb_error(PB_ERR_CONFIG, "%s: field 'rope_parameters': each layer type's entry must be an object",
                            c->path);
        if (full && cJSON_IsNull(full))
            full = NULL;
        if (slide && cJSON_IsNull(slide))
            slide = NULL;
    }
    double theta = cfg->rope_theta, local;
    PB_CHECK(pb_jfloat(c, KEYS("rope_local_base_freq"), 10000.0, &local, NULL));
    if (full) {
        pb_jctx sub = {c->path, full};
        PB_CHECK(pb_jfloat(&sub, KEYS("rope_theta"), theta, &theta, NULL));
        /* rope_scaling (4.x), when given, was read instead and wins as in HF */
        const cJSON *rs = cJSON_GetObjectItemCaseSensitive(c->root, "rope_scaling");
        if (!rs || cJSON_IsNull(rs)) {
            cJSON *root = cJSON_CreateObject();
            if (!root || !cJSON_AddItemReferenceToObject(root, "rope_parameters", (cJSON *)full)) {
                cJSON_Delete(root);
                return pb_error(PB_ERR_NOMEM, "out of memory");
            }
            pb_jctx r = {c->path, root};
            pb_status st = pb_cfg_rope_scaling(&r, cfg);
            cJSON_Delete(root);
            PB_CHECK(st);
        }
    }
    if (slide) {
        pb_jctx sub = {c->path, slide};
        const char *type;
        PB_CHECK(pb_jstr(&sub, KEYS("rope_type", "type"), "default", &type));
        if (strcmp(type, "default") != 0)
            return pb_error(PB_ERR_UNSUPPORTED, "%s: field 'rope_parameters.sliding_attention.rope_type' = \"%s\" is "
                            "not supported (local layers: default)", c->path, type);
        PB_CHECK(pb_jfloat(&sub, KEYS("rope_theta"), local, &local, NULL));
    }
    if (!(local > 0) || !(theta > 0))
        return pb_error(PB_ERR_CONFIG, "%s: the rotary bases (rope_theta, rope_local_base_freq) must be > 0", c->path);
    cfg->rope_theta = (float)theta;
    cfg->rope_local_theta = (float)local;
    return PB_OK;
}

/* Gemma 2 / 3: caps, query_pre_attn_scalar, local layers, (1 + w) norms. */
static pb_status parse_gemma(const pb_jctx *c, pb_model_config *cfg, bool g3)
{
    bool b;
    PB_CHECK(pb_jbool(c, KEYS("attention_bias"), false, &cfg->qkv_bias, NULL));
    cfg->out_bias = cfg->qkv_bias;
    double qpas;
    PB_CHECK(pb_jfloat(c, KEYS("query_pre_attn_scalar"), 256.0, &qpas, NULL));
    if (!(qpas > 0))
        return pb_error(PB_ERR_CONFIG, "%s: field 'query_pre_attn_scalar' must be > 0", c->path);
    cfg->query_pre_attn_scalar = (float)qpas;
    PB_CHECK(gemma_cap(c, "final_logit_softcapping", g3 ? 0 : 30.0, &cfg->final_softcap));
    PB_CHECK(gemma_cap(c, "attn_logit_softcapping", g3 ? 0 : 50.0, &cfg->attn_softcap));
    /* transformers' Gemma 3 applies final_logit_softcapping but never passes
     * attn_logit_softcapping to its attention: refused rather than guessed */
    if (g3 && cfg->attn_softcap > 0)
        return pb_error(PB_ERR_UNSUPPORTED, "%s: field 'attn_logit_softcapping' = %g is not supported for gemma3_text "
                        "(transformers' Gemma 3 ignores it; set it to null)", c->path, (double)cfg->attn_softcap);
    PB_CHECK(pb_jbool(c, KEYS("use_bidirectional_attention"), false, &b, NULL));
    if (b)
        return pb_error(PB_ERR_UNSUPPORTED, "%s: field 'use_bidirectional_attention' = true is not supported "
                        "(causal generation only)", c->path);
    /* local layers: layer_types, else every 2nd (Gemma 2) / all but every sliding_window_pattern-th (Gemma 3) */
    if (pb_jfind(c, KEYS("layer_types"))) {
        PB_CHECK(pb_cfg_layer_types(c, cfg, 0));
    } else {
        int pattern = 2;
        if (g3)
            PB_CHECK(pb_jint(c, KEYS("sliding_window_pattern"), 6, 1, 1 << 20, &pattern, NULL));
        for (int i = 0; i < cfg->n_layers; i++)
            cfg->layer_local[i] = (i + 1) % pattern != 0;
    }
    bool any_local = false;
    for (int i = 0; i < cfg->n_layers; i++)
        any_local |= cfg->layer_local[i];
    const cJSON *swj = cJSON_GetObjectItemCaseSensitive(c->root, "sliding_window");
    if (swj && cJSON_IsNull(swj) && any_local)
        return pb_error(PB_ERR_CONFIG, "%s: field 'sliding_window' is null but layer_types has sliding_attention "
                        "layers", c->path);
    PB_CHECK(pb_jint(c, KEYS("sliding_window"), 4096, 1, 1 << 30, &cfg->sliding_window, NULL));
    cfg->norm_w_offset = 1.0f;
    cfg->embed_scale = true;
    return g3 ? gemma3_rope(c, cfg) : PB_OK;
}

static pb_status parse_gemma2(const pb_jctx *c, pb_model_config *cfg) { return parse_gemma(c, cfg, false); }
static pb_status parse_gemma3(const pb_jctx *c, pb_model_config *cfg) { return parse_gemma(c, cfg, true); }

/* ---- the table ---- */

/* Shared pieces of the records. */
#define GPT2_STYLE_NAMES                                                                                           \
    .prefix = {"transformer."}, .layer_prefix = "h", .tok_emb = "wte", .final_norm = "ln_f", .lm_head = "lm_head", \
    .ln1 = "ln_1"
#define LLAMA_NAMES                                                                                                \
    .prefix = {"model."}, .layer_prefix = "layers", .tok_emb = "embed_tokens", .final_norm = "norm",               \
    .lm_head = "lm_head", .ln1 = "input_layernorm", .ln2 = "post_attention_layernorm", .q = "self_attn.q_proj",   \
    .k = "self_attn.k_proj", .v = "self_attn.v_proj", .o = "self_attn.o_proj", .gate = "mlp.gate_proj",            \
    .up = "mlp.up_proj", .down = "mlp.down_proj"
#define LLAMA_KEYS                                                                                                 \
    .k_layers = PB_FKEYS("num_hidden_layers"), .d_layers = 32, .k_vocab = PB_FKEYS("vocab_size"),                  \
    .k_hidden = PB_FKEYS("hidden_size"), .k_heads = PB_FKEYS("num_attention_heads"),                               \
    .d_heads = 32, .k_kv_heads = PB_FKEYS("num_key_value_heads"), .k_head_dim = PB_FKEYS("head_dim"),              \
    .k_inter = PB_FKEYS("intermediate_size"), .k_max_pos = PB_FKEYS("max_position_embeddings"),                    \
    .k_act = PB_FKEYS("hidden_act"), .d_act = "silu", .k_eps = PB_FKEYS("rms_norm_eps"),                          \
    .k_theta = PB_FKEYS("rope_theta"), .k_tie = PB_FKEYS("tie_word_embeddings"), .d_tie = false,                    \
    .norm = PB_NORM_RMSNORM, .pos = PB_POS_ROTARY, .rope_style = PB_ROPE_HALF, .gated_mlp = true, .attn_scale = true

static const pb_family families[] = {
    {.model_type = {"gpt2"}, GPT2_STYLE_NAMES, .pos_emb = "wpe", .ln2 = "ln_2", .qkv = "attn.c_attn",
     .o = "attn.c_proj", .fc1 = "mlp.c_fc", .fc2 = "mlp.c_proj", .conv1d = true, .qkv_layout = PB_QKV_BLOCKS,
     .k_layers = PB_FKEYS("n_layer", "num_hidden_layers"), .d_layers = 12, .k_vocab = PB_FKEYS("vocab_size"),
     .d_vocab = 50257, .k_hidden = PB_FKEYS("n_embd", "hidden_size"), .d_hidden = 768,
     .k_heads = PB_FKEYS("n_head", "num_attention_heads"), .d_heads = 12, .k_inter = PB_FKEYS("n_inner"),
     .k_max_pos = PB_FKEYS("n_positions", "max_position_embeddings"), .d_max_pos = 1024,
     .k_act = PB_FKEYS("activation_function"), .d_act = "gelu_new", .k_eps = PB_FKEYS("layer_norm_epsilon"),
     .d_eps = 1e-5, .d_tie = true, .d_bos = 50256, .d_eos = 50256, .d_pad = -1, .pos = PB_POS_LEARNED,
     .attn_scale = true, .qkv_bias = true, .out_bias = true, .mlp_bias = true, .parse = parse_gpt2},

    {.model_type = {"opt"}, .prefix = {"model.decoder.", "decoder."}, .layer_prefix = "layers",
     .tok_emb = "embed_tokens", .pos_emb = "embed_positions", .proj_in = "project_in",
     .final_norm = "final_layer_norm", .proj_out = "project_out", .lm_head = "lm_head",
     .ln1 = "self_attn_layer_norm", .ln2 = "final_layer_norm", .q = "self_attn.q_proj", .k = "self_attn.k_proj",
     .v = "self_attn.v_proj", .o = "self_attn.out_proj", .fc1 = "fc1", .fc2 = "fc2",
     .k_layers = PB_FKEYS("num_hidden_layers"), .d_layers = 12, .k_vocab = PB_FKEYS("vocab_size"), .d_vocab = 50272,
     .k_hidden = PB_FKEYS("hidden_size"), .d_hidden = 768, .k_heads = PB_FKEYS("num_attention_heads"), .d_heads = 12,
     .k_inter = PB_FKEYS("ffn_dim"), .d_inter = 3072, .k_max_pos = PB_FKEYS("max_position_embeddings"),
     .d_max_pos = 2048, .k_act = PB_FKEYS("activation_function"), .d_act = "relu", .d_eps = 1e-5, .d_tie = true,
     .d_bos = 2, .d_eos = 2, .d_pad = 1, .pos = PB_POS_LEARNED, .attn_scale = true, .parse = parse_opt},

    {.model_type = {"bloom"}, .prefix = {"transformer."}, .layer_prefix = "h", .tok_emb = "word_embeddings",
     .emb_norm = "word_embeddings_layernorm", .final_norm = "ln_f", .lm_head = "lm_head", .ln1 = "input_layernorm", .ln2 = "post_attention_layernorm",
     .qkv = "self_attention.query_key_value", .o = "self_attention.dense", .fc1 = "mlp.dense_h_to_4h",
     .fc2 = "mlp.dense_4h_to_h", .qkv_layout = PB_QKV_PER_HEAD,
     .k_layers = PB_FKEYS("n_layer", "num_hidden_layers"), .d_layers = 2, .k_vocab = PB_FKEYS("vocab_size"),
     .d_vocab = 250880, .k_hidden = PB_FKEYS("hidden_size", "n_embed"), .d_hidden = 64,
     .k_heads = PB_FKEYS("n_head", "num_attention_heads"), .d_heads = 8,
     /* ALiBi has no trained length; seq_length is what some Bloom configs record. */
     .k_max_pos = PB_FKEYS("seq_length", "max_position_embeddings"), .d_max_pos = 2048,
     .k_eps = PB_FKEYS("layer_norm_epsilon"), .d_eps = 1e-5, .d_tie = true, .d_bos = 1, .d_eos = 2, .d_pad = -1,
     .pos = PB_POS_ALIBI, .act = PB_ACT_BLOOM_GELU, .embed_norm = true, .attn_scale = true, .qkv_bias = true,
     .out_bias = true, .mlp_bias = true, .parse = parse_bloom},

    {.model_type = {"gpt_neo"}, GPT2_STYLE_NAMES, .pos_emb = "wpe", .ln2 = "ln_2", .q = "attn.attention.q_proj",
     .k = "attn.attention.k_proj", .v = "attn.attention.v_proj", .o = "attn.attention.out_proj",
     .fc1 = "mlp.c_fc", .fc2 = "mlp.c_proj",
     .k_layers = PB_FKEYS("num_layers", "num_hidden_layers"), .d_layers = 24, .k_vocab = PB_FKEYS("vocab_size"),
     .d_vocab = 50257, .k_hidden = PB_FKEYS("hidden_size"), .d_hidden = 2048,
     .k_heads = PB_FKEYS("num_heads", "num_attention_heads"), .d_heads = 16, .k_inter = PB_FKEYS("intermediate_size"),
     .k_max_pos = PB_FKEYS("max_position_embeddings"), .d_max_pos = 2048, .k_act = PB_FKEYS("activation_function"),
     .d_act = "gelu_new", .k_eps = PB_FKEYS("layer_norm_epsilon"), .d_eps = 1e-5, .d_tie = true, .d_bos = 50256,
     .d_eos = 50256, .d_pad = -1, .pos = PB_POS_LEARNED,
     .attn_scale = false, /* GPTNeoSelfAttention does not scale the scores */
     .out_bias = true, .mlp_bias = true, .parse = parse_gpt_neo},

    {.model_type = {"gptj"}, GPT2_STYLE_NAMES, .q = "attn.q_proj", .k = "attn.k_proj", .v = "attn.v_proj",
     .o = "attn.out_proj", .fc1 = "mlp.fc_in", .fc2 = "mlp.fc_out",
     .k_layers = PB_FKEYS("n_layer", "num_hidden_layers"), .d_layers = 28, .k_vocab = PB_FKEYS("vocab_size"),
     .d_vocab = 50400, .k_hidden = PB_FKEYS("n_embd", "hidden_size"), .d_hidden = 4096,
     .k_heads = PB_FKEYS("n_head", "num_attention_heads"), .d_heads = 16, .k_inter = PB_FKEYS("n_inner"),
     .k_max_pos = PB_FKEYS("n_positions", "max_position_embeddings"), .d_max_pos = 2048,
     .k_act = PB_FKEYS("activation_function"), .d_act = "gelu_new", .k_eps = PB_FKEYS("layer_norm_epsilon"),
     .d_eps = 1e-5, .d_tie = false, .d_bos = 50256, .d_eos = 50256, .d_pad = -1, .pos = PB_POS_ROTARY,
     .rope_style = PB_ROPE_INTERLEAVED, .residual = PB_RESID_PARALLEL_SHARED, .attn_scale = true, .mlp_bias = true,
     .lm_head_bias = true, .parse = parse_gptj},

    {.model_type = {"codegen"}, GPT2_STYLE_NAMES, .qkv = "attn.qkv_proj", .o = "attn.out_proj", .fc1 = "mlp.fc_in",
     .fc2 = "mlp.fc_out", .qkv_layout = PB_QKV_CODEGEN,
     .k_layers = PB_FKEYS("n_layer", "num_hidden_layers"), .d_layers = 28, .k_vocab = PB_FKEYS("vocab_size"),
     .d_vocab = 50400, .k_hidden = PB_FKEYS("n_embd", "hidden_size"), .d_hidden = 4096,
     .k_heads = PB_FKEYS("n_head", "num_attention_heads"), .d_heads = 16, .k_inter = PB_FKEYS("n_inner"),
     .k_max_pos = PB_FKEYS("n_positions", "max_position_embeddings"), .d_max_pos = 2048,
     .k_act = PB_FKEYS("activation_function"), .d_act = "gelu_new", .k_eps = PB_FKEYS("layer_norm_epsilon"),
     .d_eps = 1e-5, .d_tie = false, .d_bos = 50256, .d_eos = 50256, .d_pad = -1, .pos = PB_POS_ROTARY,
     .rope_style = PB_ROPE_INTERLEAVED, .residual = PB_RESID_PARALLEL_SHARED, .attn_scale = true, .mlp_bias = true,
     .lm_head_bias = true, .parse = parse_gptj},

    {.model_type = {"gpt_neox"}, .prefix = {"gpt_neox."}, .layer_prefix = "layers", .tok_emb = "embed_in",
     .final_norm = "final_layer_norm", .lm_head = "embed_out", .ln1 = "input_layernorm",
     .ln2 = "post_attention_layernorm", .qkv = "attention.query_key_value", .o = "attention.dense",
     .fc1 = "mlp.dense_h_to_4h", .fc2 = "mlp.dense_4h_to_h", .qkv_layout = PB_QKV_PER_HEAD,
     .k_layers = PB_FKEYS("num_hidden_layers"), .d_layers = 44, .k_vocab = PB_FKEYS("vocab_size"), .d_vocab = 50432,
     .k_hidden = PB_FKEYS("hidden_size"), .d_hidden = 6144, .k_heads = PB_FKEYS("num_attention_heads"), .d_heads = 64,
     .k_inter = PB_FKEYS("intermediate_size"), .d_inter = 24576, .k_max_pos = PB_FKEYS("max_position_embeddings"),
     .d_max_pos = 2048, .k_act = PB_FKEYS("hidden_act"), .d_act = "gelu", .k_eps = PB_FKEYS("layer_norm_eps"),
     .d_eps = 1e-5, .k_theta = PB_FKEYS("rotary_emb_base", "rope_theta"), .k_tie = PB_FKEYS("tie_word_embeddings"),
     .d_tie = false, .d_bos = 0, .d_eos = 2, .d_pad = -1, .pos = PB_POS_ROTARY, .rope_style = PB_ROPE_HALF,
     .attn_scale = true, .mlp_bias = true, .parse = parse_gpt_neox},

    {.model_type = {"llama"}, LLAMA_NAMES, LLAMA_KEYS, .d_pad = -1, .d_hidden = 4096, .d_vocab = 32000, .d_inter = 11008, .d_max_pos = 2048,
     .d_eps = 1e-6, .d_bos = 1, .d_eos = 2, .parse = parse_llama},

    {.model_type = {"mistral"}, LLAMA_NAMES, LLAMA_KEYS, .d_pad = -1, .d_hidden = 4096, .d_vocab = 32000, .d_kv_heads = 8, .d_inter = 14336,
     .d_max_pos = 4096 * 32, .d_eps = 1e-6, .d_bos = 1, .d_eos = 2, .parse = parse_mistral},

    {.model_type = {"qwen2"}, LLAMA_NAMES, LLAMA_KEYS, .d_pad = -1, .d_hidden = 4096, .d_vocab = 151936, .d_inter = 22016, .d_max_pos = 32768,
     .d_eps = 1e-6, .d_bos = -1, .d_eos = -1, .qkv_bias = true, .parse = parse_qwen2},

    /* HF's legacy per-expert names: what save_pretrained writes (5.x converts its
     * fused experts.gate_up_proj / down_proj back) and what hub checkpoints hold */
    {.model_type = {"mixtral"}, LLAMA_NAMES, LLAMA_KEYS, .d_pad = -1, .d_hidden = 4096, .d_vocab = 32000, .d_kv_heads = 8, .d_inter = 14336,
     .d_max_pos = 4096 * 32, .d_eps = 1e-5, .d_theta = 1e6, .d_bos = 1, .d_eos = 2,
     .moe = {"block_sparse_moe.gate", "block_sparse_moe.experts", "w1", "w3", "w2"}, .parse = parse_mixtral},

    {.model_type = {"qwen3"}, LLAMA_NAMES, LLAMA_KEYS, .d_pad = -1, .q_norm = "self_attn.q_norm", .k_norm = "self_attn.k_norm",
     .d_vocab = 151936, .d_hidden = 4096, .d_kv_heads = 32, .d_head_dim = 128, .d_inter = 22016, .d_max_pos = 32768,
     .d_eps = 1e-6, .d_bos = -1, .d_eos = -1, .parse = parse_qwen3},

    /* Phi-3, Phi-3.5, Phi-4-mini: fused qkv_proj rows q | k | v (GQA allowed) and gate_up_proj rows gate | up */
    {.model_type = {"phi3"}, .prefix = {"model."}, .layer_prefix = "layers", .tok_emb = "embed_tokens",
     .final_norm = "norm", .lm_head = "lm_head", .ln1 = "input_layernorm", .ln2 = "post_attention_layernorm",
     .qkv = "self_attn.qkv_proj", .qkv_layout = PB_QKV_BLOCKS, .o = "self_attn.o_proj", .gate_up = "mlp.gate_up_proj",
     .down = "mlp.down_proj", LLAMA_KEYS, .d_vocab = 32064, .d_hidden = 3072, .d_inter = 8192, .d_max_pos = 4096,
     .d_eps = 1e-5, .d_bos = 1, .d_eos = 32000, .d_pad = 32000, .d_orig_max_pos = 4096,
     .rope_su_yarn_longrope = true, .parse = parse_phi3},

    /* Qwen3-MoE: Qwen3 attention (q_norm/k_norm), dense mlp.* layers where
     * decoder_sparse_step / mlp_only_layers say, experts mlp.experts.N.* */
    {.model_type = {"qwen3_moe"}, LLAMA_NAMES, .q_norm = "self_attn.q_norm", .k_norm = "self_attn.k_norm",
     .k_layers = PB_FKEYS("num_hidden_layers"), .d_layers = 24, .k_vocab = PB_FKEYS("vocab_size"), .d_vocab = 151936,
     .k_hidden = PB_FKEYS("hidden_size"), .d_hidden = 2048, .k_heads = PB_FKEYS("num_attention_heads"), .d_heads = 32,
     .k_kv_heads = PB_FKEYS("num_key_value_heads"), .d_kv_heads = 4, .k_head_dim = PB_FKEYS("head_dim"),
     .k_inter = PB_FKEYS("intermediate_size"), .d_inter = 6144, .k_max_pos = PB_FKEYS("max_position_embeddings"),
     .d_max_pos = 32768, .k_act = PB_FKEYS("hidden_act"), .d_act = "silu", .k_eps = PB_FKEYS("rms_norm_eps"),
     .d_eps = 1e-6, .k_theta = PB_FKEYS("rope_theta"), .k_tie = PB_FKEYS("tie_word_embeddings"), .d_tie = false,
     .d_bos = -1, .d_eos = -1, .d_pad = -1, .norm = PB_NORM_RMSNORM, .pos = PB_POS_ROTARY,
     .rope_style = PB_ROPE_HALF, .gated_mlp = true, .attn_scale = true,
     .moe = {"mlp.gate", "mlp.experts", "gate_proj", "up_proj", "down_proj"}, .parse = parse_qwen3_moe},
    /* Gemma: HF's post_attention_layernorm is the norm of the attention output; the MLP's
     * input norm is pre_feedforward_layernorm */
#define GEMMA_NAMES                                                                                                \
    .prefix = {"model."}, .layer_prefix = "layers", .tok_emb = "embed_tokens", .final_norm = "norm",               \
    .lm_head = "lm_head", .ln1 = "input_layernorm", .ln2 = "pre_feedforward_layernorm",                           \
    .ln_post_attn = "post_attention_layernorm", .ln_post_mlp = "post_feedforward_layernorm",                      \
    .q = "self_attn.q_proj", .k = "self_attn.k_proj", .v = "self_attn.v_proj", .o = "self_attn.o_proj",           \
    .gate = "mlp.gate_proj", .up = "mlp.up_proj", .down = "mlp.down_proj"
#define GEMMA_KEYS                                                                                                 \
    .k_layers = PB_FKEYS("num_hidden_layers"), .d_layers = 26, .k_vocab = PB_FKEYS("vocab_size"),                  \
    .k_hidden = PB_FKEYS("hidden_size"), .d_hidden = 2304, .k_heads = PB_FKEYS("num_attention_heads"),             \
    .d_heads = 8, .k_kv_heads = PB_FKEYS("num_key_value_heads"), .d_kv_heads = 4,                                 \
    .k_head_dim = PB_FKEYS("head_dim"), .d_head_dim = 256, /* HF: 256, not hidden_size / heads */                 \
    .k_inter = PB_FKEYS("intermediate_size"), .d_inter = 9216, .k_max_pos = PB_FKEYS("max_position_embeddings"),   \
    .k_act = PB_FKEYS("hidden_activation"), .d_act = "gelu_pytorch_tanh", .k_eps = PB_FKEYS("rms_norm_eps"),      \
    .d_eps = 1e-6, .k_theta = PB_FKEYS("rope_theta"), .k_tie = PB_FKEYS("tie_word_embeddings"), .d_tie = true,    \
    .d_bos = 2, .d_eos = 1, .d_pad = 0, .norm = PB_NORM_RMSNORM, .pos = PB_POS_ROTARY, .rope_style = PB_ROPE_HALF, \
    .residual = PB_RESID_SANDWICH, .gated_mlp = true, .attn_scale = true, .softcaps = true
    {.model_type = {"gemma2"}, GEMMA_NAMES, GEMMA_KEYS, .d_vocab = 256000, .d_max_pos = 8192, .d_theta = 10000.0,
     .parse = parse_gemma2},
    {.model_type = {"gemma3_text"}, GEMMA_NAMES, GEMMA_KEYS, .q_norm = "self_attn.q_norm", .k_norm = "self_attn.k_norm",
     .d_vocab = 262208, .d_max_pos = 131072, .d_theta = 1000000.0, .parse = parse_gemma3},
};

#define N_FAMILIES ((int)(sizeof families / sizeof families[0]))

const pb_family *pb_family_at(int i)
{
    return i >= 0 && i < N_FAMILIES ? &families[i] : NULL;
}

const pb_family *pb_family_find(const char *model_type)
{
    for (int i = 0; i < N_FAMILIES; i++)
        for (int k = 0; k < 3 && families[i].model_type[k]; k++)
            if (strcmp(model_type, families[i].model_type[k]) == 0)
                return &families[i];
    return NULL;
}

const char *pb_family_list(void)
{
    static char buf[512];
    if (buf[0])
        return buf;
    size_t o = 0;
    for (int i = 0; i < N_FAMILIES; i++)
        for (int k = 0; k < 3 && families[i].model_type[k]; k++) {
            int n = snprintf(buf + o, sizeof buf - o, "%s%s", o ? ", " : "", families[i].model_type[k]);
            if (n < 0 || (size_t)n >= sizeof buf - o)
                return buf;
            o += (size_t)n;
        }
    return buf;
}

const char *pb_family_canonical(const pb_family *f, const char *name)
{
    for (int i = 0; i < 3 && f->prefix[i]; i++) {
        size_t n = strlen(f->prefix[i]);
        if (strncmp(name, f->prefix[i], n) == 0)
            return name + n;
    }
    return name;
}

int pb_family_layer_name(const pb_family *f, int layer, const char *suffix, char *buf, size_t cap)
{
    return snprintf(buf, cap, "%s.%d.%s", f->layer_prefix, layer, suffix);
}

/* ---- the weights of a stage ---- */

typedef struct item_list {
    pb_witem *v;
    int n, cap;
} item_list;

static pb_witem *new_item(item_list *l, pb_wslot slot, int layer, bool linear)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 32;
        pb_witem *v = realloc(l->v, (size_t)cap * sizeof *v);
        if (!v)
            return NULL;
        l->v = v;
        l->cap = cap;
    }
    pb_witem *it = &l->v[l->n++];
    memset(it, 0, sizeof *it);
    it->slot = slot;
    it->layer = layer;
    it->linear = linear;
    return it;
}

/* Canonical name of base + "." + kind; base is a layer suffix when layer >= 0.
 * (The table's names are short: a cut name only shows as a missing tensor.) */
static void wname(char *buf, const pb_family *f, int layer, const char *base, const char *kind)
{
    int n;
    if (layer >= 0)
        n = snprintf(buf, PB_NAME_CAP, "%s.%d.%s.%s", f->layer_prefix, layer, base, kind);
    else
        n = snprintf(buf, PB_NAME_CAP, "%s.%s", base, kind);
    (void)n;
}

static pb_status add_vec(item_list *l, const pb_model_config *cfg, pb_wslot slot, int layer, const char *base,
                         const char *kind, int n, const char *field)
{
    pb_witem *it = new_item(l, slot, layer, false);
    if (!it)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    wname(it->name[0], cfg->family, layer, base, kind);
    it->n_out = n;
    it->n_parts = 1;
    it->rows[0] = n;
    it->field[0] = field;
    return PB_OK;
}

/* A linear layer of n parts (base names), stacked. */
static pb_status add_lin(item_list *l, const pb_model_config *cfg, pb_wslot slot, int layer, int n,
                         const char *const *base, const int *rows, const char *const *field, int n_in, bool conv1d,
                         bool bias)
{
    pb_witem *it = new_item(l, slot, layer, true);
    if (!it)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    it->n_in = n_in;
    it->n_parts = n;
    it->conv1d = conv1d;
    for (int i = 0; i < n; i++) {
        wname(it->name[i], cfg->family, layer, base[i], "weight");
        if (bias)
            wname(it->bias[i], cfg->family, layer, base[i], "bias");
        it->rows[i] = rows[i];
        it->field[i] = field[i];
        it->n_out += rows[i];
    }
    return PB_OK;
}

static pb_status add_lin1(item_list *l, const pb_model_config *cfg, pb_wslot slot, int layer, const char *base,
                          int n_out, int n_in, const char *field, bool conv1d, bool bias)
{
    return add_lin(l, cfg, slot, layer, 1, &base, &n_out, &field, n_in, conv1d, bias);
}

static pb_status add_norm(item_list *l, const pb_model_config *cfg, pb_wslot w, pb_wslot b, int layer,
                          const char *base, int n)
{
    PB_CHECK(add_vec(l, cfg, w, layer, base, "weight", n, "hidden_size"));
    if (cfg->norm == PB_NORM_RMSNORM)
        l->v[l->n - 1].add = cfg->norm_w_offset; /* Gemma: x * (1 + w), (1 + w) in f32 as HF */
    if (cfg->norm == PB_NORM_LAYERNORM)
        PB_CHECK(add_vec(l, cfg, b, layer, base, "bias", n, "hidden_size"));
    return PB_OK;
}

/* Router and experts of a mixture-of-experts layer: expert e's gate|up
 * stacked [2 I, H] and down [H, I] (I = moe_intermediate_size). */
static pb_status moe_items(item_list *l, const pb_model_config *cfg, int layer)
{
    const pb_moe_names *m = pb_moe_names_of(cfg->family);
    const int H = cfg->hidden_size, I = cfg->moe_intermediate_size;
    if (!m || !cfg->gated_mlp)
        return pb_error(PB_ERR_UNSUPPORTED, "%s: mixture-of-experts layers are not handled", cfg->model_type);
    PB_CHECK(add_lin1(l, cfg, PB_SLOT_ROUTER, layer, m->router, cfg->n_experts, H, "num_local_experts x hidden_size",
                      false, false));
    for (int e = 0; e < cfg->n_experts; e++) {
        char g[PB_NAME_CAP / 2], u[PB_NAME_CAP / 2], d[PB_NAME_CAP / 2];
        snprintf(g, sizeof g, "%s.%d.%s", m->experts, e, m->gate);
        snprintf(u, sizeof u, "%s.%d.%s", m->experts, e, m->up);
        snprintf(d, sizeof d, "%s.%d.%s", m->experts, e, m->down);
        const char *const sfx[2] = {g, u};
        const int rows[2] = {I, I};
        const char *const fld[2] = {"moe_intermediate_size", "moe_intermediate_size"};
        PB_CHECK(add_lin(l, cfg, PB_SLOT_EXP_GU, layer, 2, sfx, rows, fld, H, false, false));
        l->v[l->n - 1].expert = e;
        PB_CHECK(add_lin1(l, cfg, PB_SLOT_EXP_DOWN, layer, d, H, I, "hidden_size", false, false));
        l->v[l->n - 1].expert = e;
    }
    return PB_OK;
}

/* Gemma: the norms of the attention and MLP outputs (sandwich). */
static pb_status gemma_norm_items(item_list *l, const pb_model_config *cfg, const pb_family *f, int layer)
{
    if (cfg->residual == PB_RESID_SANDWICH) {
        if (!f->ln_post_attn || !f->ln_post_mlp)
            return pb_error(PB_ERR_UNSUPPORTED, "%s: post-attention/post-MLP norms are not handled for this family",
                            cfg->model_type);
        PB_CHECK(add_norm(l, cfg, PB_SLOT_POST_ATTN_W, PB_SLOT_POST_ATTN_W, layer, f->ln_post_attn,
                          cfg->hidden_size));
        PB_CHECK(add_norm(l, cfg, PB_SLOT_POST_MLP_W, PB_SLOT_POST_MLP_W, layer, f->ln_post_mlp, cfg->hidden_size));
    }
    return PB_OK;
}

static pb_status layer_items(item_list *l, const pb_model_config *cfg, const pb_family *f, int layer)
{
    const int H = cfg->hidden_size, hd = cfg->head_dim, nh = cfg->n_heads;
    const int qd = nh * hd, kvd = cfg->n_kv_heads * hd, I = cfg->intermediate_size;
    PB_CHECK(add_norm(l, cfg, PB_SLOT_LN1_W, PB_SLOT_LN1_B, layer, f->ln1, H));
    if (cfg->residual != PB_RESID_PARALLEL_SHARED) {
        if (!f->ln2)
            return pb_error(PB_ERR_UNSUPPORTED, "%s: only the parallel residual with one shared norm is handled",
                            cfg->model_type);
        PB_CHECK(add_norm(l, cfg, PB_SLOT_LN2_W, PB_SLOT_LN2_B, layer, f->ln2, H));
    }
    PB_CHECK(gemma_norm_items(l, cfg, f, layer));
    if (f->qkv && f->qkv_layout == PB_QKV_BLOCKS && !f->conv1d) {
        /* fused rows q | k | v, with GQA allowed (Phi-3 qkv_proj) */
        PB_CHECK(add_lin1(l, cfg, PB_SLOT_QKV, layer, f->qkv, qd + 2 * kvd, H,
                          "(num_attention_heads + 2 * num_key_value_heads) * head_dim", false, cfg->qkv_bias));
    } else if (f->qkv) {
        if (cfg->n_kv_heads != nh)
            return pb_error(PB_ERR_CONFIG,
                            "%s: a fused qkv projection needs num_key_value_heads (%d) == num_heads (%d)",
                            cfg->model_type, cfg->n_kv_heads, nh);
        if (f->qkv_layout == PB_QKV_CODEGEN && nh % 4 != 0)
            return pb_error(PB_ERR_CONFIG,
                            "codegen: n_head (%d) must be a multiple of 4 (qkv_proj has mp_num = 4 blocks)", nh);
        PB_CHECK(add_lin1(l, cfg, PB_SLOT_QKV, layer, f->qkv, 3 * qd, H, f->conv1d ? "3 * n_embd" : "3 * hidden_size",
                          f->conv1d, cfg->qkv_bias));
        l->v[l->n - 1].qkv_layout = f->qkv_layout;
        l->v[l->n - 1].n_heads = nh;
        l->v[l->n - 1].head_dim = hd;
    } else {
        const char *const sfx[3] = {f->q, f->k, f->v};
        const int rows[3] = {qd, kvd, kvd};
        const char *const fld[3] = {"num_attention_heads * head_dim", "num_key_value_heads * head_dim",
                                    "num_key_value_heads * head_dim"};
        PB_CHECK(add_lin(l, cfg, PB_SLOT_QKV, layer, 3, sfx, rows, fld, H, false, cfg->qkv_bias));
    }
    if (f->q_norm) {
        PB_CHECK(add_vec(l, cfg, PB_SLOT_Q_NORM, layer, f->q_norm, "weight", hd, "head_dim"));
        l->v[l->n - 1].add = cfg->norm_w_offset; /* Gemma 3: (1 + w) */
        PB_CHECK(add_vec(l, cfg, PB_SLOT_K_NORM, layer, f->k_norm, "weight", hd, "head_dim"));
        l->v[l->n - 1].add = cfg->norm_w_offset;
    }
    PB_CHECK(add_lin1(l, cfg, PB_SLOT_O, layer, f->o, H, qd, "hidden_size", f->conv1d, cfg->out_bias));
    if (pb_model_layer_moe(cfg, layer))
        return moe_items(l, cfg, layer);
    if (cfg->gated_mlp) {
        if (f->gate_up) {
            PB_CHECK(add_lin1(l, cfg, PB_SLOT_UP, layer, f->gate_up, 2 * I, H, "2 * intermediate_size", false,
                              cfg->mlp_bias));
        } else {
            if (!f->gate)
                return pb_error(PB_ERR_UNSUPPORTED, "%s: a gated MLP is not handled for this family",
                                cfg->model_type);
            const char *const sfx[2] = {f->gate, f->up};
            const int rows[2] = {I, I};
            const char *const fld[2] = {"intermediate_size", "intermediate_size"};
            PB_CHECK(add_lin(l, cfg, PB_SLOT_UP, layer, 2, sfx, rows, fld, H, false, cfg->mlp_bias));
        }
        PB_CHECK(add_lin1(l, cfg, PB_SLOT_DOWN, layer, f->down, H, I, "hidden_size", false, cfg->mlp_bias));
    } else {
        if (!f->fc1)
            return pb_error(PB_ERR_UNSUPPORTED, "%s: a plain MLP is not handled for this family", cfg->model_type);
        PB_CHECK(add_lin1(l, cfg, PB_SLOT_UP, layer, f->fc1, I, H, "intermediate_size", f->conv1d, cfg->mlp_bias));
        PB_CHECK(add_lin1(l, cfg, PB_SLOT_DOWN, layer, f->fc2, H, I, "hidden_size", f->conv1d, cfg->mlp_bias));
    }
    return PB_OK;
}

pb_status pb_family_items(const pb_model_config *cfg, int layer_begin, int layer_end, bool has_embed, bool has_head,
                          int pos_rows, pb_witem **items, int *n_items)
{
    *items = NULL;
    *n_items = 0;
    const pb_family *f = cfg->family;
    if (!f)
        return pb_error(PB_ERR_UNSUPPORTED, "model_type '%s' has no family record", cfg->model_type);
    const int H = cfg->hidden_size, V = cfg->vocab_size;
    const int E = cfg->word_embed_proj_dim > 0 ? cfg->word_embed_proj_dim : H;
    item_list l = {0};
    pb_status st = PB_OK;
    if (has_embed || (has_head && cfg->tie_word_embeddings))
        PB_CHECK_GOTO(add_lin1(&l, cfg, PB_SLOT_TOK_EMB, -1, f->tok_emb, V, E, "vocab_size x hidden_size", false,
                               false), st, fail);
    if (has_embed) {
        if (cfg->pos == PB_POS_LEARNED) {
            if (!f->pos_emb) {
                st = pb_error(PB_ERR_UNSUPPORTED, "%s: learned positions are not handled for this family",
                              cfg->model_type);
                goto fail;
            }
            PB_CHECK_GOTO(add_lin1(&l, cfg, PB_SLOT_POS_EMB, -1, f->pos_emb, pos_rows, H,
                                   "max_position_embeddings x hidden_size", false, false), st, fail);
        }
        if (cfg->embed_norm) {
            PB_CHECK_GOTO(add_vec(&l, cfg, PB_SLOT_EMB_NORM_W, -1, f->emb_norm, "weight", E, "hidden_size"), st, fail);
            PB_CHECK_GOTO(add_vec(&l, cfg, PB_SLOT_EMB_NORM_B, -1, f->emb_norm, "bias", E, "hidden_size"), st, fail);
        }
        if (E != H)
            PB_CHECK_GOTO(add_lin1(&l, cfg, PB_SLOT_PROJ_IN, -1, f->proj_in, H, E,
                                   "hidden_size x word_embed_proj_dim", false, false), st, fail);
    }
    if (has_head) {
        if (cfg->final_norm)
            PB_CHECK_GOTO(add_norm(&l, cfg, PB_SLOT_FINAL_W, PB_SLOT_FINAL_B, -1, f->final_norm, H), st, fail);
        if (E != H)
            PB_CHECK_GOTO(add_lin1(&l, cfg, PB_SLOT_PROJ_OUT, -1, f->proj_out, E, H,
                                   "word_embed_proj_dim x hidden_size", false, false), st, fail);
        if (cfg->tie_word_embeddings && cfg->lm_head_bias) {
            st = pb_error(PB_ERR_UNSUPPORTED, "%s: a tied LM head with a bias is not handled", cfg->model_type);
            goto fail;
        }
        if (!cfg->tie_word_embeddings)
            PB_CHECK_GOTO(add_lin1(&l, cfg, PB_SLOT_LM_HEAD, -1, f->lm_head, V, E, "vocab_size x hidden_size", false,
                                   cfg->lm_head_bias), st, fail);
    }
    for (int layer = layer_begin; layer < layer_end; layer++)
        PB_CHECK_GOTO(layer_items(&l, cfg, f, layer), st, fail);
    *items = l.v;
    *n_items = l.n;
    return PB_OK;
fail:
    free(l.v);
    return st;
}
