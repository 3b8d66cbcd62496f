/* config.json (+ generation_config.json) -> pb_model_config for every family.
 * Defaults follow each family's HF configuration_<family>.py: a key that is
 * absent (or null, where HF accepts None) takes the class default. */
#include "config.h"
#include "model/config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "common/util.h"

static const char *const arch_names[PB_ARCH_COUNT] = {
    [PB_ARCH_GPT2] = "gpt2",         [PB_ARCH_OPT] = "opt",     [PB_ARCH_BLOOM] = "bloom",
    [PB_ARCH_GPT_NEO] = "gpt_neo",   [PB_ARCH_GPTJ] = "gptj",   [PB_ARCH_CODEGEN] = "codegen",
    [PB_ARCH_GPT_NEOX] = "gpt_neox", [PB_ARCH_LLAMA] = "llama", [PB_ARCH_MISTRAL] = "mistral",
    [PB_ARCH_QWEN2] = "qwen2",       [PB_ARCH_MIXTRAL] = "mixtral",
};

const char *pb_arch_name(pb_arch arch)
{
    return (unsigned)arch < PB_ARCH_COUNT ? arch_names[arch] : "?";
}

/* Largest config file we accept (real ones are a few KB). */
#define PB_CONFIG_MAX_BYTES (16u << 20)

/* --- typed field access: every getter names file and field on error --- */

typedef struct jctx {
    const char *path;
    const cJSON *root;
} jctx;

/* The first of the (NULL-terminated) alias keys present and not null, or NULL. */
static const cJSON *jfind(const jctx *c, const char *const *keys)
{
    for (; *keys; keys++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(c->root, *keys);
        if (it && !cJSON_IsNull(it))
            return it;
    }
    return NULL;
}

static pb_status jint_item(const jctx *c, const char *key, const cJSON *it, long long lo, long long hi,
                           long long *out)
{
    if (!cJSON_IsNumber(it))
        return pb_error(PB_ERR_CONFIG, "%s: field '%s' must be an integer", c->path, key);
    double v = it->valuedouble;
    if (!(v == floor(v)) || v < (double)lo || v > (double)hi)
        return pb_error(PB_ERR_CONFIG, "%s: field '%s' = %g is not an integer in [%lld, %lld]", c->path,
                        key, v, lo, hi);
    *out = (long long)v;
    return PB_OK;
}

#define KEYS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* Integer field with aliases; *present tells whether it was given. */
static pb_status jint(const jctx *c, const char *const *keys, int def, int lo, int hi, int *out, bool *present)
{
    const cJSON *it = jfind(c, keys);
    if (present)
        *present = it != NULL;
    if (!it) {
        *out = def;
        return PB_OK;
    }
    long long v;
    PB_CHECK(jint_item(c, it->string ? it->string : keys[0], it, lo, hi, &v));
    *out = (int)v;
    return PB_OK;
}

static pb_status jfloat(const jctx *c, const char *const *keys, double def, double *out, bool *present)
{
    const cJSON *it = jfind(c, keys);
    if (present)
        *present = it != NULL;
    if (!it) {
        *out = def;
        return PB_OK;
    }
    if (!cJSON_IsNumber(it) || !isfinite(it->valuedouble))
        return pb_error(PB_ERR_CONFIG, "%s: field '%s' must be a number", c->path, it->string);
    *out = it->valuedouble;
    return PB_OK;
}

static pb_status jbool(const jctx *c, const char *const *keys, bool def, bool *out, bool *present)
{
    const cJSON *it = jfind(c, keys);
    if (present)
        *present = it != NULL;
    if (!it) {
        *out = def;
        return PB_OK;
    }
    if (!cJSON_IsBool(it))
        return pb_error(PB_ERR_CONFIG, "%s: field '%s' must be true or false", c->path, it->string);
    *out = cJSON_IsTrue(it);
    return PB_OK;
}

/* String field; *out points into the JSON tree (or def). */
static pb_status jstr(const jctx *c, const char *const *keys, const char *def, const char **out)
{
    const cJSON *it = jfind(c, keys);
    if (!it) {
        *out = def;
        return PB_OK;
    }
    if (!cJSON_IsString(it))
        return pb_error(PB_ERR_CONFIG, "%s: field '%s' must be a string", c->path, it->string);
    *out = it->valuestring;
    return PB_OK;
}

/* Token id: int, or null/absent -> def. */
static pb_status jtoken(const jctx *c, const char *key, int def, int *out)
{
    return jint(c, KEYS(key), def, -1, 1 << 30, out, NULL);
}

/* eos_token_id: int or list of ints, appended to cfg->eos_ids without duplicates. */
static pb_status add_eos(pb_model_config *cfg, const jctx *c, const char *key)
{
    const cJSON *it = cJSON_GetObjectItemCaseSensitive(c->root, key);
    if (!it || cJSON_IsNull(it))
        return PB_OK;
    const cJSON *one = it;
    int count = 1;
    if (cJSON_IsArray(it)) {
        count = cJSON_GetArraySize(it);
        one = it->child;
    } else if (!cJSON_IsNumber(it)) {
        return pb_error(PB_ERR_CONFIG, "%s: field '%s' must be an integer or a list of integers", c->path, key);
    }
    for (int i = 0; i < count; i++, one = one->next) {
        long long v;
        if (!cJSON_IsNumber(one))
            return pb_error(PB_ERR_CONFIG, "%s: field '%s'[%d] must be an integer", c->path, key, i);
        PB_CHECK(jint_item(c, key, one, 0, 1 << 30, &v));
        bool dup = false;
        for (int k = 0; k < cfg->n_eos; k++)
            dup |= cfg->eos_ids[k] == (int)v;
        if (dup)
            continue;
        if (cfg->n_eos >= PB_MAX_EOS)
            return pb_error(PB_ERR_UNSUPPORTED, "%s: field '%s': more than %d EOS ids", c->path, key, PB_MAX_EOS);
        cfg->eos_ids[cfg->n_eos++] = (int)v;
    }
    return PB_OK;
}

static pb_status parse_act(const jctx *c, const char *key, const char *name, pb_act *out)
{
    static const struct { const char *name; pb_act act; } acts[] = {
        {"gelu_new", PB_ACT_GELU_TANH}, {"gelu_pytorch_tanh", PB_ACT_GELU_TANH},
        {"gelu_fast", PB_ACT_GELU_TANH}, {"gelu", PB_ACT_GELU_ERF}, {"gelu_python", PB_ACT_GELU_ERF},
        {"relu", PB_ACT_RELU}, {"silu", PB_ACT_SILU}, {"swish", PB_ACT_SILU},
    };
    for (size_t i = 0; i < sizeof acts / sizeof acts[0]; i++)
        if (strcmp(name, acts[i].name) == 0) {
            *out = acts[i].act;
            return PB_OK;
        }
    return pb_error(PB_ERR_UNSUPPORTED,
                    "%s: field '%s' = \"%s\" is not supported (gelu_new, gelu_pytorch_tanh, gelu_fast, gelu, relu, silu)",
                    c->path, key, name);
}

/* The rotary settings object: rope_scaling (transformers 4.x) wins over
 * rope_parameters (5.x), as in HF's convert_rope_params_to_dict. NULL: none. */
static pb_status rope_object(const jctx *c, const cJSON **out, const char **key)
{
    static const char *const keys[] = {"rope_scaling", "rope_parameters"};
    *out = NULL;
    for (int i = 0; i < 2; i++) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(c->root, keys[i]);
        if (!o || cJSON_IsNull(o))
            continue;
        if (!cJSON_IsObject(o))
            return pb_error(PB_ERR_CONFIG, "%s: field '%s' must be an object or null", c->path, keys[i]);
        if (!o->child)
            continue; /* {} is "not set" for HF */
        *out = o;
        *key = keys[i];
        return PB_OK;
    }
    return PB_OK;
}

/* rope_theta: the rotary object's "rope_theta" first, then the top-level keys. */
static pb_status parse_rope_theta(const jctx *c, const char *const *keys, double *theta)
{
    const cJSON *ro;
    const char *rkey = NULL;
    bool has;
    PB_CHECK(rope_object(c, &ro, &rkey));
    if (ro) {
        jctx sub = {c->path, ro};
        PB_CHECK(jfloat(&sub, KEYS("rope_theta"), 10000.0, theta, &has));
        if (has)
            return PB_OK;
    }
    return jfloat(c, keys, 10000.0, theta, NULL);
}

/* NeoX partial_rotary_factor: rope_parameters (5.x) first, then rotary_pct. */
static pb_status parse_rotary_pct(const jctx *c, double *pct)
{
    const cJSON *ro;
    const char *rkey = NULL;
    bool has;
    PB_CHECK(rope_object(c, &ro, &rkey));
    if (ro) {
        jctx sub = {c->path, ro};
        PB_CHECK(jfloat(&sub, KEYS("partial_rotary_factor"), 0.25, pct, &has));
        if (has)
            return PB_OK;
    }
    return jfloat(c, KEYS("rotary_pct"), 0.25, pct, NULL);
}

/* rope_scaling / rope_parameters: null, or {"type"|"rope_type": "default"|"linear"|"llama3", "factor": F, ...}. */
static pb_status parse_rope_scaling(const jctx *c, pb_model_config *cfg)
{
    const cJSON *rs;
    const char *rkey = "rope_scaling";
    PB_CHECK(rope_object(c, &rs, &rkey));
    if (!rs)
        return PB_OK;
    jctx sub = {c->path, rs};
    const char *type;
    PB_CHECK(jstr(&sub, KEYS("rope_type", "type"), NULL, &type));
    if (!type && strcmp(rkey, "rope_parameters") == 0)
        type = "default"; /* HF 5.x: rope_type defaults to "default" */
    if (!type)
        return pb_error(PB_ERR_CONFIG, "%s: field '%s' has no 'type' or 'rope_type'", c->path, rkey);
    if (strcmp(type, "default") == 0)
        return PB_OK;
    double factor, lo, hi;
    int orig;
    bool has_factor;
    PB_CHECK(jfloat(&sub, KEYS("factor"), 1.0, &factor, &has_factor));
    if (strcmp(type, "linear") == 0 || strcmp(type, "llama3") == 0) {
        if (!has_factor || !(factor > 0))
            return pb_error(PB_ERR_CONFIG, "%s: field '%s.factor' must be a number > 0", c->path, rkey);
    }
    if (strcmp(type, "linear") == 0) {
        cfg->rope_scaling = PB_ROPE_SCALE_LINEAR;
        cfg->rope_factor = (float)factor;
        return PB_OK;
    }
    if (strcmp(type, "llama3") == 0) {
        bool p1, p2;
        PB_CHECK(jfloat(&sub, KEYS("low_freq_factor"), 1.0, &lo, &p1));
        PB_CHECK(jfloat(&sub, KEYS("high_freq_factor"), 4.0, &hi, &p2));
        /* HF 5.x: original_max_position_embeddings defaults to max_position_embeddings */
        PB_CHECK(jint(&sub, KEYS("original_max_position_embeddings"), cfg->max_position, 1, 1 << 30, &orig, NULL));
        if (!p1 || !p2)
            return pb_error(PB_ERR_CONFIG, "%s: field '%s' of type llama3 needs low_freq_factor and high_freq_factor",
                            c->path, rkey);
        if (!(lo > 0) || !(hi > lo))
            return pb_error(PB_ERR_CONFIG, "%s: field '%s': need 0 < low_freq_factor < high_freq_factor", c->path, rkey);
        cfg->rope_scaling = PB_ROPE_SCALE_LLAMA3;
        cfg->rope_factor = (float)factor;
        cfg->rope_low_freq_factor = (float)lo;
        cfg->rope_high_freq_factor = (float)hi;
        cfg->rope_original_max_position = orig;
        return PB_OK;
    }
    return pb_error(PB_ERR_UNSUPPORTED, "%s: field '%s' type \"%s\" is not supported (default, linear, llama3)",
                    c->path, rkey, type);
}

/* GPT-Neo attention_types [[["global","local"], 12], ...] -> layer_local[n_layers]. */
static pb_status parse_attention_types(const jctx *c, pb_model_config *cfg)
{
    const cJSON *at = cJSON_GetObjectItemCaseSensitive(c->root, "attention_types");
    int total = 0;
    /* default [[["global", "local"], 12]] */
    if (!at || cJSON_IsNull(at)) {
        for (int i = 0; i < cfg->n_layers && i < 24; i++)
            cfg->layer_local[i] = i % 2 == 1;
        total = 24;
    } else {
        if (!cJSON_IsArray(at))
            return pb_error(PB_ERR_CONFIG, "%s: field 'attention_types' must be a list", c->path);
        const cJSON *grp;
        int gi = 0;
        cJSON_ArrayForEach(grp, at) {
            if (!cJSON_IsArray(grp) || cJSON_GetArraySize(grp) != 2 || !cJSON_IsArray(grp->child) ||
                !cJSON_IsNumber(grp->child->next))
                return pb_error(PB_ERR_CONFIG, "%s: field 'attention_types'[%d] must be [[\"global\"|\"local\", ...], count]",
                                c->path, gi);
            long long reps;
            PB_CHECK(jint_item(c, "attention_types", grp->child->next, 0, 1 << 20, &reps));
            int ntypes = cJSON_GetArraySize(grp->child);
            for (long long r = 0; r < reps; r++) {
                const cJSON *t;
                cJSON_ArrayForEach(t, grp->child) {
                    bool local;
                    if (cJSON_IsString(t) && strcmp(t->valuestring, "local") == 0)
                        local = true;
                    else if (cJSON_IsString(t) && strcmp(t->valuestring, "global") == 0)
                        local = false;
                    else
                        return pb_error(PB_ERR_CONFIG, "%s: field 'attention_types'[%d]: entries must be \"global\" or \"local\"",
                                        c->path, gi);
                    if (total < cfg->n_layers)
                        cfg->layer_local[total] = local;
                    total++;
                    if (total > (1 << 20))
                        return pb_error(PB_ERR_CONFIG, "%s: field 'attention_types' expands to too many layers", c->path);
                }
                if (ntypes == 0)
                    break;
            }
            gi++;
        }
    }
    if (total != cfg->n_layers)
        return pb_error(PB_ERR_CONFIG, "%s: field 'attention_types' describes %d layers but num_layers is %d", c->path,
                        total, cfg->n_layers);
    return PB_OK;
}

/* Qwen2 layer_types ["full_attention"|"sliding_attention", ...] -> layer_local; absent or
 * null: the layers from max_window_layers on are "sliding_attention". */
static pb_status parse_layer_types(const jctx *c, pb_model_config *cfg, int max_window_layers)
{
    const cJSON *lt = cJSON_GetObjectItemCaseSensitive(c->root, "layer_types");
    if (!lt || cJSON_IsNull(lt)) {
        for (int i = 0; i < cfg->n_layers; i++)
            cfg->layer_local[i] = i >= max_window_layers;
        return PB_OK;
    }
    if (!cJSON_IsArray(lt) || cJSON_GetArraySize(lt) != cfg->n_layers)
        return pb_error(PB_ERR_CONFIG, "%s: field 'layer_types' must be a list of %d strings (one per layer)", c->path,
                        cfg->n_layers);
    const cJSON *t;
    int i = 0;
    cJSON_ArrayForEach(t, lt) {
        if (cJSON_IsString(t) && strcmp(t->valuestring, "sliding_attention") == 0)
            cfg->layer_local[i] = true;
        else if (cJSON_IsString(t) && strcmp(t->valuestring, "full_attention") == 0)
            cfg->layer_local[i] = false;
        else
            return pb_error(PB_ERR_CONFIG, "%s: field 'layer_types'[%d] must be \"full_attention\" or \"sliding_attention\"",
                            c->path, i);
        i++;
    }
    return PB_OK;
}

/* Whether rope_theta is given (top level or in the rotary object). */
static bool has_rope_theta(const jctx *c)
{
    const cJSON *ro = NULL;
    const char *rkey = NULL;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(c->root, "rope_theta");
    if (t && !cJSON_IsNull(t))
        return true;
    if (rope_object(c, &ro, &rkey) != PB_OK || !ro)
        return false;
    t = cJSON_GetObjectItemCaseSensitive(ro, "rope_theta");
    return t && !cJSON_IsNull(t);
}

/* Mixture-of-experts keys (MixtralConfig, Qwen3MoeConfig). qwen: Qwen3-MoE's
 * moe_intermediate_size, norm_topk_prob, decoder_sparse_step, mlp_only_layers;
 * Mixtral always renormalises the top-k and every layer is sparse. */
static pb_status parse_moe(const jctx *c, pb_model_config *cfg, bool qwen)
{
    /* HF attribute_map: num_experts -> num_local_experts (5.x writes the latter) */
    PB_CHECK(jint(c, KEYS("num_local_experts", "num_experts"), qwen ? 128 : 8, 0, 1 << 16, &cfg->n_experts, NULL));
    PB_CHECK(jint(c, KEYS("num_experts_per_tok"), qwen ? 8 : 2, 1, 1 << 16, &cfg->n_experts_per_tok, NULL));
    if (cfg->n_experts > 0 && cfg->n_experts_per_tok > cfg->n_experts)
        return pb_error(PB_ERR_CONFIG, "%s: field 'num_experts_per_tok' (%d) exceeds the %d experts", c->path,
                        cfg->n_experts_per_tok, cfg->n_experts);
    cfg->moe_sparse_step = 1;
    memset(cfg->mlp_only, 0, sizeof cfg->mlp_only);
    if (!qwen) {
        cfg->moe_intermediate_size = cfg->intermediate_size;
        cfg->norm_topk_prob = true;
        if (cfg->n_experts < 1)
            return pb_error(PB_ERR_CONFIG, "%s: field 'num_local_experts' must be at least 1", c->path);
    } else {
        PB_CHECK(jint(c, KEYS("moe_intermediate_size"), 768, 1, 1 << 24, &cfg->moe_intermediate_size, NULL));
        PB_CHECK(jbool(c, KEYS("norm_topk_prob"), false, &cfg->norm_topk_prob, NULL));
        PB_CHECK(jint(c, KEYS("decoder_sparse_step"), 1, 1, 1 << 16, &cfg->moe_sparse_step, NULL));
        const cJSON *ml = cJSON_GetObjectItemCaseSensitive(c->root, "mlp_only_layers");
        if (ml && !cJSON_IsNull(ml)) {
            if (!cJSON_IsArray(ml))
                return pb_error(PB_ERR_CONFIG, "%s: field 'mlp_only_layers' must be a list of layer indices", c->path);
            const cJSON *e;
            int i = 0;
            cJSON_ArrayForEach(e, ml) {
                long long v;
                if (!cJSON_IsNumber(e))
                    return pb_error(PB_ERR_CONFIG, "%s: field 'mlp_only_layers'[%d] must be an integer", c->path, i);
                PB_CHECK(jint_item(c, "mlp_only_layers", e, 0, 1 << 20, &v));
                if (v < PB_MAX_MOE_LAYERS)
                    cfg->mlp_only[v / 64] |= (uint64_t)1 << (v % 64);
                i++;
            }
        }
    }
    if (cfg->n_experts > 0 && cfg->n_layers > PB_MAX_MOE_LAYERS)
        return pb_error(PB_ERR_UNSUPPORTED, "%s: field 'num_hidden_layers' = %d: more than %d mixture-of-experts layers",
                        c->path, cfg->n_layers, PB_MAX_MOE_LAYERS);
    /* router_jitter_noise, router_aux_loss_coef, output_router_logits: training only */
    return PB_OK;
}

const pb_moe_names *pb_moe_names_of(pb_arch arch)
{
    /* HF's legacy per-expert names: what save_pretrained writes (5.x converts its
     * fused experts.gate_up_proj / down_proj back) and what hub checkpoints hold */
    static const pb_moe_names mixtral = {"block_sparse_moe.gate", "block_sparse_moe.experts", "w1", "w3", "w2"};
    switch (arch) {
    case PB_ARCH_MIXTRAL: return &mixtral;
    default: return NULL;
    }
}

bool pb_model_layer_moe(const pb_model_config *cfg, int layer)
{
    if (cfg->n_experts <= 0 || layer < 0 || layer >= PB_MAX_MOE_LAYERS)
        return false;
    if (cfg->mlp_only[layer / 64] >> (layer % 64) & 1)
        return false;
    return cfg->moe_sparse_step > 0 && (layer + 1) % cfg->moe_sparse_step == 0;
}

/* Family-specific part. The layer count is read before, so layer_local can be sized. */
static pb_status parse_family(const jctx *c, pb_model_config *cfg)
{
    const char *act = NULL;
    const char *act_key = "activation_function";
    int inner;
    bool has;
    double eps = 1e-5, theta = 10000.0;
    bool b;

    cfg->norm = PB_NORM_LAYERNORM;
    cfg->pre_norm = true;
    cfg->final_norm = true;
    cfg->attn_scale = true;
    cfg->pos = PB_POS_LEARNED;
    cfg->residual = PB_RESID_SEQUENTIAL;
    cfg->rope_style = PB_ROPE_HALF;

    switch (cfg->arch) {
    case PB_ARCH_GPT2:
        PB_CHECK(jint(c, KEYS("vocab_size"), 50257, 1, 1 << 30, &cfg->vocab_size, NULL));
        PB_CHECK(jint(c, KEYS("n_embd", "hidden_size"), 768, 1, 1 << 20, &cfg->hidden_size, NULL));
        PB_CHECK(jint(c, KEYS("n_head", "num_attention_heads"), 12, 1, 1 << 16, &cfg->n_heads, NULL));
        PB_CHECK(jint(c, KEYS("n_positions", "max_position_embeddings"), 1024, 1, 1 << 26, &cfg->max_position, NULL));
        PB_CHECK(jint(c, KEYS("n_inner"), 0, 1, 1 << 24, &inner, &has));
        cfg->intermediate_size = has ? inner : 4 * cfg->hidden_size;
        PB_CHECK(jstr(c, KEYS("activation_function"), "gelu_new", &act));
        PB_CHECK(jfloat(c, KEYS("layer_norm_epsilon"), 1e-5, &eps, NULL));
        PB_CHECK(jbool(c, KEYS("scale_attn_weights"), true, &cfg->attn_scale, NULL));
        PB_CHECK(jbool(c, KEYS("scale_attn_by_inverse_layer_idx"), false, &cfg->scale_attn_by_inverse_layer_idx, NULL));
        PB_CHECK(jbool(c, KEYS("reorder_and_upcast_attn"), false, &b, NULL)); /* numerics only */
        cfg->qkv_bias = cfg->out_bias = cfg->mlp_bias = true;
        cfg->tie_word_embeddings = true;
        cfg->bos_token_id = 50256;
        break;
    case PB_ARCH_OPT: {
        bool affine, remove_final;
        int proj;
        PB_CHECK(jint(c, KEYS("vocab_size"), 50272, 1, 1 << 30, &cfg->vocab_size, NULL));
        PB_CHECK(jint(c, KEYS("hidden_size"), 768, 1, 1 << 20, &cfg->hidden_size, NULL));
        PB_CHECK(jint(c, KEYS("num_attention_heads"), 12, 1, 1 << 16, &cfg->n_heads, NULL));
        PB_CHECK(jint(c, KEYS("ffn_dim"), 3072, 1, 1 << 24, &cfg->intermediate_size, NULL));
        PB_CHECK(jint(c, KEYS("max_position_embeddings"), 2048, 1, 1 << 26, &cfg->max_position, NULL));
        PB_CHECK(jint(c, KEYS("word_embed_proj_dim"), 0, 1, 1 << 20, &proj, &has));
        cfg->word_embed_proj_dim = has && proj != cfg->hidden_size ? proj : 0;
        PB_CHECK(jbool(c, KEYS("do_layer_norm_before"), true, &cfg->pre_norm, NULL));
        PB_CHECK(jbool(c, KEYS("_remove_final_layer_norm"), false, &remove_final, NULL));
        cfg->final_norm = cfg->pre_norm && !remove_final;
        PB_CHECK(jbool(c, KEYS("layer_norm_elementwise_affine"), true, &affine, NULL));
        if (!affine)
            return pb_error(PB_ERR_UNSUPPORTED, "%s: field 'layer_norm_elementwise_affine' = false is not supported", c->path);
        PB_CHECK(jbool(c, KEYS("enable_bias"), true, &cfg->qkv_bias, NULL));
        cfg->out_bias = cfg->mlp_bias = cfg->qkv_bias;
        PB_CHECK(jstr(c, KEYS("activation_function"), "relu", &act));
        cfg->pos_offset = 2; /* OPTLearnedPositionalEmbedding offset */
        cfg->tie_word_embeddings = true;
        cfg->bos_token_id = 2;
        cfg->pad_token_id = 1;
        break;
    }
    case PB_ARCH_BLOOM: {
        bool post_ln;
        PB_CHECK(jint(c, KEYS("vocab_size"), 250880, 1, 1 << 30, &cfg->vocab_size, NULL));
        PB_CHECK(jint(c, KEYS("hidden_size", "n_embed"), 64, 1, 1 << 20, &cfg->hidden_size, NULL));
        PB_CHECK(jint(c, KEYS("n_head", "num_attention_heads"), 8, 1, 1 << 16, &cfg->n_heads, NULL));
        /* ALiBi has no trained length; seq_length is what some Bloom configs record. */
        PB_CHECK(jint(c, KEYS("seq_length", "max_position_embeddings"), 2048, 1, 1 << 26, &cfg->max_position, NULL));
        PB_CHECK(jfloat(c, KEYS("layer_norm_epsilon"), 1e-5, &eps, NULL));
        PB_CHECK(jbool(c, KEYS("apply_residual_connection_post_layernorm"), false, &post_ln, NULL));
        if (post_ln)
            return pb_error(PB_ERR_UNSUPPORTED,
                            "%s: field 'apply_residual_connection_post_layernorm' = true is not supported", c->path);
        cfg->intermediate_size = 4 * cfg->hidden_size;
        cfg->pos = PB_POS_ALIBI;
        cfg->embed_norm = true;
        cfg->act = PB_ACT_BLOOM_GELU;
        cfg->qkv_bias = cfg->out_bias = cfg->mlp_bias = true;
        cfg->tie_word_embeddings = true;
        cfg->bos_token_id = 1;
        break;
    }
    case PB_ARCH_GPT_NEO:
        PB_CHECK(jint(c, KEYS("vocab_size"), 50257, 1, 1 << 30, &cfg->vocab_size, NULL));
        PB_CHECK(jint(c, KEYS("hidden_size"), 2048, 1, 1 << 20, &cfg->hidden_size, NULL));
        PB_CHECK(jint(c, KEYS("num_heads", "num_attention_heads"), 16, 1, 1 << 16, &cfg->n_heads, NULL));
        PB_CHECK(jint(c, KEYS("max_position_embeddings"), 2048, 1, 1 << 26, &cfg->max_position, NULL));
        PB_CHECK(jint(c, KEYS("intermediate_size"), 0, 1, 1 << 24, &inner, &has));
        cfg->intermediate_size = has ? inner : 4 * cfg->hidden_size;
        PB_CHECK(jint(c, KEYS("window_size"), 256, 1, 1 << 26, &cfg->sliding_window, NULL));
        PB_CHECK(jstr(c, KEYS("activation_function"), "gelu_new", &act));
        PB_CHECK(jfloat(c, KEYS("layer_norm_epsilon"), 1e-5, &eps, NULL));
        PB_CHECK(parse_attention_types(c, cfg));
        cfg->attn_scale = false; /* GPTNeoSelfAttention does not scale the scores */
        cfg->qkv_bias = false;
        cfg->out_bias = cfg->mlp_bias = true;
        cfg->tie_word_embeddings = true;
        cfg->bos_token_id = 50256;
        break;
    case PB_ARCH_GPTJ:
    case PB_ARCH_CODEGEN: {
        int rot;
        PB_CHECK(jint(c, KEYS("vocab_size"), 50400, 1, 1 << 30, &cfg->vocab_size, NULL));
        PB_CHECK(jint(c, KEYS("n_embd", "hidden_size"), 4096, 1, 1 << 20, &cfg->hidden_size, NULL));
        PB_CHECK(jint(c, KEYS("n_head", "num_attention_heads"), 16, 1, 1 << 16, &cfg->n_heads, NULL));
        PB_CHECK(jint(c, KEYS("n_positions", "max_position_embeddings"), 2048, 1, 1 << 26, &cfg->max_position, NULL));
        PB_CHECK(jint(c, KEYS("n_inner"), 0, 1, 1 << 24, &inner, &has));
        cfg->intermediate_size = has ? inner : 4 * cfg->hidden_size;
        PB_CHECK(jint(c, KEYS("rotary_dim"), 64, 1, 1 << 16, &rot, &has));
        /* rotary_dim None: GPT-J rotates the whole head */
        cfg->rotary_dim = !has && cJSON_GetObjectItemCaseSensitive(c->root, "rotary_dim") ? 0 : rot;
        PB_CHECK(jstr(c, KEYS("activation_function"), "gelu_new", &act));
        PB_CHECK(jfloat(c, KEYS("layer_norm_epsilon"), 1e-5, &eps, NULL));
        cfg->pos = PB_POS_ROTARY;
        cfg->rope_style = PB_ROPE_INTERLEAVED;
        cfg->residual = PB_RESID_PARALLEL_SHARED;
        cfg->qkv_bias = cfg->out_bias = false;
        cfg->mlp_bias = true;
        cfg->lm_head_bias = true;
        cfg->tie_word_embeddings = false;
        cfg->bos_token_id = 50256;
        break;
    }
    case PB_ARCH_GPT_NEOX: {
        double pct;
        bool parallel;
        PB_CHECK(jint(c, KEYS("vocab_size"), 50432, 1, 1 << 30, &cfg->vocab_size, NULL));
        PB_CHECK(jint(c, KEYS("hidden_size"), 6144, 1, 1 << 20, &cfg->hidden_size, NULL));
        PB_CHECK(jint(c, KEYS("num_attention_heads"), 64, 1, 1 << 16, &cfg->n_heads, NULL));
        PB_CHECK(jint(c, KEYS("intermediate_size"), 24576, 1, 1 << 24, &cfg->intermediate_size, NULL));
        PB_CHECK(jint(c, KEYS("max_position_embeddings"), 2048, 1, 1 << 26, &cfg->max_position, NULL));
        PB_CHECK(jstr(c, KEYS("hidden_act"), "gelu", &act));
        act_key = "hidden_act";
        PB_CHECK(parse_rotary_pct(c, &pct));
        if (!(pct > 0 && pct <= 1))
            return pb_error(PB_ERR_CONFIG, "%s: field 'rotary_pct' (partial_rotary_factor) must be in (0, 1]", c->path);
        PB_CHECK(parse_rope_theta(c, KEYS("rotary_emb_base", "rope_theta"), &theta));
        PB_CHECK(jfloat(c, KEYS("layer_norm_eps"), 1e-5, &eps, NULL));
        PB_CHECK(jbool(c, KEYS("use_parallel_residual"), true, &parallel, NULL));
        PB_CHECK(jbool(c, KEYS("attention_bias"), true, &cfg->qkv_bias, NULL));
        PB_CHECK(jbool(c, KEYS("tie_word_embeddings"), false, &cfg->tie_word_embeddings, NULL));
        cfg->out_bias = cfg->qkv_bias;
        cfg->mlp_bias = true;
        cfg->pos = PB_POS_ROTARY;
        cfg->residual = parallel ? PB_RESID_PARALLEL_TWO_NORM : PB_RESID_SEQUENTIAL;
        if (cfg->hidden_size % cfg->n_heads)
            return pb_error(PB_ERR_CONFIG, "%s: hidden_size %d is not a multiple of num_attention_heads %d", c->path,
                            cfg->hidden_size, cfg->n_heads);
        cfg->rotary_dim = (int)((double)(cfg->hidden_size / cfg->n_heads) * pct); /* int(head_size * rotary_pct) */
        if (cfg->rotary_dim <= 0)
            return pb_error(PB_ERR_CONFIG, "%s: field 'rotary_pct' = %g leaves no rotary dimensions", c->path, pct);
        PB_CHECK(parse_rope_scaling(c, cfg));
        cfg->bos_token_id = 0;
        break;
    }
    case PB_ARCH_LLAMA:
    case PB_ARCH_MISTRAL:
    case PB_ARCH_MIXTRAL:
    case PB_ARCH_QWEN2: {
        bool is_llama = cfg->arch == PB_ARCH_LLAMA, is_qwen = cfg->arch == PB_ARCH_QWEN2;
        int hd;
        PB_CHECK(jint(c, KEYS("vocab_size"), is_qwen ? 151936 : 32000, 1, 1 << 30, &cfg->vocab_size, NULL));
        PB_CHECK(jint(c, KEYS("hidden_size"), 4096, 1, 1 << 20, &cfg->hidden_size, NULL));
        PB_CHECK(jint(c, KEYS("intermediate_size"), is_llama ? 11008 : is_qwen ? 22016 : 14336, 1, 1 << 24,
                      &cfg->intermediate_size, NULL));
        PB_CHECK(jint(c, KEYS("num_attention_heads"), 32, 1, 1 << 16, &cfg->n_heads, NULL));
        const bool mistral_like = cfg->arch == PB_ARCH_MISTRAL || cfg->arch == PB_ARCH_MIXTRAL;
        PB_CHECK(jint(c, KEYS("num_key_value_heads"), mistral_like ? 8 : cfg->n_heads, 1, 1 << 16,
                      &cfg->n_kv_heads, NULL));
        PB_CHECK(jint(c, KEYS("max_position_embeddings"), is_llama ? 2048 : is_qwen ? 32768 : 4096 * 32, 1, 1 << 30,
                      &cfg->max_position, NULL));
        PB_CHECK(jint(c, KEYS("head_dim"), 0, 1, 1 << 16, &hd, &has));
        cfg->head_dim = has ? hd : 0;
        PB_CHECK(jstr(c, KEYS("hidden_act"), "silu", &act));
        act_key = "hidden_act";
        PB_CHECK(jfloat(c, KEYS("rms_norm_eps"), cfg->arch == PB_ARCH_MIXTRAL ? 1e-5 : 1e-6, &eps, NULL));
        PB_CHECK(parse_rope_theta(c, KEYS("rope_theta"), &theta));
        if (cfg->arch == PB_ARCH_MIXTRAL && !has_rope_theta(c))
            theta = 1e6; /* MixtralConfig's default */
        PB_CHECK(jbool(c, KEYS("tie_word_embeddings"), false, &cfg->tie_word_embeddings, NULL));
        PB_CHECK(parse_rope_scaling(c, cfg));
        cfg->norm = PB_NORM_RMSNORM;
        cfg->pos = PB_POS_ROTARY;
        cfg->gated_mlp = true;
        if (is_llama) {
            PB_CHECK(jbool(c, KEYS("attention_bias"), false, &cfg->qkv_bias, NULL));
            cfg->out_bias = cfg->qkv_bias;
            PB_CHECK(jbool(c, KEYS("mlp_bias"), false, &cfg->mlp_bias, NULL));
            cfg->bos_token_id = 1;
        } else if (mistral_like) {
            if (cfg->arch == PB_ARCH_MIXTRAL)
                PB_CHECK(parse_moe(c, cfg, false));
            PB_CHECK(jint(c, KEYS("sliding_window"), 0, 1, 1 << 30, &cfg->sliding_window, NULL));
            for (int i = 0; i < cfg->n_layers; i++)
                cfg->layer_local[i] = cfg->sliding_window > 0;
            cfg->bos_token_id = 1;
        } else {
            bool use_sw;
            int sw, max_window_layers;
            PB_CHECK(jbool(c, KEYS("use_sliding_window"), false, &use_sw, NULL));
            PB_CHECK(jint(c, KEYS("sliding_window"), 4096, 1, 1 << 30, &sw, NULL));
            PB_CHECK(jint(c, KEYS("max_window_layers"), 28, 0, 1 << 20, &max_window_layers, NULL));
            /* HF 5.x Qwen2Config: sliding_window is None unless use_sliding_window (an explicit null
             * too); layer_types, when given, names the sliding layers, else they are the layers from
             * max_window_layers on. A "sliding_attention" layer without a window attends to all. */
            const cJSON *swj = cJSON_GetObjectItemCaseSensitive(c->root, "sliding_window");
            if (swj && cJSON_IsNull(swj))
                use_sw = false;
            cfg->sliding_window = use_sw ? sw : 0;
            PB_CHECK(parse_layer_types(c, cfg, max_window_layers));
            for (int i = 0; i < cfg->n_layers; i++)
                cfg->layer_local[i] = use_sw && cfg->layer_local[i];
            cfg->qkv_bias = true;
            cfg->bos_token_id = -1;
        }
        break;
    }
    default:
        return pb_error(PB_ERR_INTERNAL, "unknown arch %d", (int)cfg->arch);
    }

    if (act)
        PB_CHECK(parse_act(c, act_key, act, &cfg->act));
    cfg->norm_eps = (float)eps;
    if (!(eps > 0))
        return pb_error(PB_ERR_CONFIG, "%s: the norm epsilon must be > 0", c->path);
    cfg->rope_theta = (float)theta;
    if (cfg->pos == PB_POS_ROTARY && !(theta > 0))
        return pb_error(PB_ERR_CONFIG, "%s: the rotary base (rope_theta) must be > 0", c->path);
    return PB_OK;
}

static pb_status parse_generation_config(const char *dir, pb_model_config *cfg)
{
    char *path = pb_path_join(dir, "generation_config.json");
    char *text = NULL;
    cJSON *root = NULL;
    pb_status st = PB_OK;
    if (!path)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    if (!pb_file_exists(path))
        goto out;
    PB_CHECK_GOTO(pb_read_file(path, PB_CONFIG_MAX_BYTES, &text, NULL), st, out);
    root = cJSON_Parse(text);
    if (!root || !cJSON_IsObject(root)) {
        st = pb_error(PB_ERR_CONFIG, "%s: not a JSON object", path);
        goto out;
    }
    jctx c = {path, root};
    pb_gen_defaults *g = &cfg->gen;
    double v;
    PB_CHECK_GOTO(jint(&c, KEYS("max_new_tokens"), 0, 0, 1 << 30, &g->max_new_tokens, &g->has_max_new_tokens), st, out);
    PB_CHECK_GOTO(jfloat(&c, KEYS("temperature"), 1.0, &v, &g->has_temperature), st, out);
    g->temperature = (float)v;
    PB_CHECK_GOTO(jint(&c, KEYS("top_k"), 50, 0, 1 << 30, &g->top_k, &g->has_top_k), st, out);
    PB_CHECK_GOTO(jfloat(&c, KEYS("top_p"), 1.0, &v, &g->has_top_p), st, out);
    g->top_p = (float)v;
    PB_CHECK_GOTO(jfloat(&c, KEYS("min_p"), 0.0, &v, &g->has_min_p), st, out);
    g->min_p = (float)v;
    PB_CHECK_GOTO(jfloat(&c, KEYS("repetition_penalty"), 1.0, &v, &g->has_repetition_penalty), st, out);
    g->repetition_penalty = (float)v;
    PB_CHECK_GOTO(jbool(&c, KEYS("do_sample"), false, &g->do_sample, &g->has_do_sample), st, out);
    if ((g->has_temperature && g->temperature < 0) || (g->has_top_p && (g->top_p < 0 || g->top_p > 1)) ||
        (g->has_min_p && (g->min_p < 0 || g->min_p > 1)) || (g->has_repetition_penalty && g->repetition_penalty <= 0)) {
        st = pb_error(PB_ERR_CONFIG, "%s: temperature, top_p, min_p or repetition_penalty out of range", path);
        goto out;
    }
    PB_CHECK_GOTO(add_eos(cfg, &c, "eos_token_id"), st, out);
    if (cfg->bos_token_id < 0)
        PB_CHECK_GOTO(jtoken(&c, "bos_token_id", -1, &cfg->bos_token_id), st, out);
    if (cfg->pad_token_id < 0)
        PB_CHECK_GOTO(jtoken(&c, "pad_token_id", -1, &cfg->pad_token_id), st, out);
out:
    cJSON_Delete(root);
    free(text);
    free(path);
    return st;
}

/* config.json text -> cfg, up to the family EOS default (before
 * generation_config.json and the final vocabulary checks). On failure cfg is
 * freed. `path` names the text in messages. */
static pb_status parse_config_text(const char *json, size_t len, const char *path, pb_model_config *cfg)
{
    cJSON *root = NULL;
    pb_status st = PB_OK;
    const char *mt;
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_token_id = cfg->pad_token_id = -1;
    root = cJSON_ParseWithLength(json, len);
    if (!root || !cJSON_IsObject(root)) {
        st = pb_error(PB_ERR_CONFIG, "%s: not a JSON object", path);
        goto fail;
    }
    jctx c = {path, root};
    PB_CHECK_GOTO(jstr(&c, KEYS("model_type"), NULL, &mt), st, fail);
    if (!mt) {
        st = pb_error(PB_ERR_CONFIG, "%s: field 'model_type' is missing", path);
        goto fail;
    }
    int arch = -1;
    for (int i = 0; i < PB_ARCH_COUNT; i++)
        if (strcmp(mt, arch_names[i]) == 0)
            arch = i;
    if (arch < 0) {
        st = pb_error(PB_ERR_UNSUPPORTED,
                      "%s: model_type \"%s\" is not supported (supported: gpt2, opt, bloom, gpt_neo, gptj, codegen, "
                      "gpt_neox, llama, mistral, qwen2, mixtral)",
                      path, mt);
        goto fail;
    }
    cfg->arch = (pb_arch)arch;
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", mt);

    static const char *const layer_keys[PB_ARCH_COUNT][3] = {
        [PB_ARCH_GPT2] = {"n_layer", "num_hidden_layers"}, [PB_ARCH_OPT] = {"num_hidden_layers"},
        [PB_ARCH_BLOOM] = {"n_layer", "num_hidden_layers"}, [PB_ARCH_GPT_NEO] = {"num_layers", "num_hidden_layers"},
        [PB_ARCH_GPTJ] = {"n_layer", "num_hidden_layers"}, [PB_ARCH_CODEGEN] = {"n_layer", "num_hidden_layers"},
        [PB_ARCH_GPT_NEOX] = {"num_hidden_layers"},         [PB_ARCH_LLAMA] = {"num_hidden_layers"},
        [PB_ARCH_MISTRAL] = {"num_hidden_layers"},          [PB_ARCH_QWEN2] = {"num_hidden_layers"},
        [PB_ARCH_MIXTRAL] = {"num_hidden_layers"},
    };
    static const int layer_defaults[PB_ARCH_COUNT] = {12, 12, 2, 24, 28, 28, 44, 32, 32, 32, 32};
    PB_CHECK_GOTO(jint(&c, layer_keys[arch], layer_defaults[arch], 1, 1 << 16, &cfg->n_layers, NULL), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)cfg->n_layers, sizeof *cfg->layer_local, &cfg->layer_local), st, fail);

    PB_CHECK_GOTO(parse_family(&c, cfg), st, fail);

    if (cfg->n_kv_heads == 0)
        cfg->n_kv_heads = cfg->n_heads;
    if (cfg->head_dim == 0) {
        if (cfg->hidden_size % cfg->n_heads) {
            st = pb_error(PB_ERR_CONFIG, "%s: hidden size %d is not a multiple of the %d attention heads", path,
                          cfg->hidden_size, cfg->n_heads);
            goto fail;
        }
        cfg->head_dim = cfg->hidden_size / cfg->n_heads;
    }
    if (cfg->n_heads % cfg->n_kv_heads) {
        st = pb_error(PB_ERR_CONFIG, "%s: field 'num_attention_heads' (%d) is not a multiple of 'num_key_value_heads' (%d)",
                      path, cfg->n_heads, cfg->n_kv_heads);
        goto fail;
    }
    if (cfg->pos == PB_POS_ROTARY) {
        if (cfg->rotary_dim == 0) {
            cfg->rotary_dim = cfg->head_dim;
        }
        if (cfg->rotary_dim <= 0 || cfg->rotary_dim > cfg->head_dim || cfg->rotary_dim % 2) {
            st = pb_error(PB_ERR_CONFIG, "%s: rotary dimension %d must be even and in (0, head_dim=%d]", path,
                          cfg->rotary_dim, cfg->head_dim);
            goto fail;
        }
        if (cfg->rope_scaling == PB_ROPE_SCALE_NONE)
            cfg->rope_factor = 1.0f;
    }

    const char *td;
    /* transformers 5.x writes "dtype", 4.x "torch_dtype" */
    PB_CHECK_GOTO(jstr(&c, KEYS("dtype", "torch_dtype"), "", &td), st, fail);
    snprintf(cfg->torch_dtype, sizeof cfg->torch_dtype, "%s", td);
    PB_CHECK_GOTO(jtoken(&c, "bos_token_id", cfg->bos_token_id, &cfg->bos_token_id), st, fail);
    PB_CHECK_GOTO(jtoken(&c, "pad_token_id", cfg->pad_token_id, &cfg->pad_token_id), st, fail);
    {
        /* a family default EOS applies only when config.json does not name one */
        static const int eos_default[PB_ARCH_COUNT] = {50256, 2, 2, 50256, 50256, 50256, 2, 2, 2, -1, 2};
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
        if (e)
            PB_CHECK_GOTO(add_eos(cfg, &c, "eos_token_id"), st, fail);
        else if (eos_default[arch] >= 0)
            cfg->eos_ids[cfg->n_eos++] = eos_default[arch];
    }
    cJSON_Delete(root);
    return PB_OK;
fail:
    cJSON_Delete(root);
    pb_model_config_free(cfg);
    return st;
}

/* The checks after all files are read. */
static void finish_config(pb_model_config *cfg)
{
    /* ids outside the vocabulary can never be generated (tiny test models keep GPT-2's 50256) */
    int k = 0;
    for (int i = 0; i < cfg->n_eos; i++)
        if (cfg->eos_ids[i] < cfg->vocab_size)
            cfg->eos_ids[k++] = cfg->eos_ids[i];
    cfg->n_eos = k;
    if (cfg->bos_token_id >= cfg->vocab_size)
        cfg->bos_token_id = -1;
}

/* config.json text in memory (len bytes, no NUL needed) -> cfg, without
 * generation_config.json; `name` names the text in messages. Declared here
 * (src/model/config.h is not tracked: .gitignore's "config.h" matches it). */
pb_status pb_model_config_parse(const char *json, size_t len, const char *name, pb_model_config *cfg)
{
    PB_CHECK(parse_config_text(json, len, name ? name : "config.json", cfg));
    finish_config(cfg);
    return PB_OK;
}

pb_status pb_model_config_load(const char *model_dir, pb_model_config *cfg)
{
    char *path = pb_path_join(model_dir, "config.json");
    char *text = NULL;
    pb_status st = PB_OK;
    memset(cfg, 0, sizeof *cfg);
    cfg->bos_token_id = cfg->pad_token_id = -1;
    if (!path)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    if (!pb_file_exists(path)) {
        st = pb_error(PB_ERR_CONFIG, "%s: no config.json in the model folder", path);
        goto out;
    }
    PB_CHECK_GOTO(pb_read_file(path, PB_CONFIG_MAX_BYTES, &text, NULL), st, out);
    /* up to the first NUL, as cJSON_Parse(text) reads it */
    PB_CHECK_GOTO(parse_config_text(text, strlen(text), path, cfg), st, out);
    st = parse_generation_config(model_dir, cfg);
    if (st != PB_OK) {
        pb_model_config_free(cfg);
        goto out;
    }
    finish_config(cfg);
out:
    free(text);
    free(path);
    return st;
}

void pb_model_config_free(pb_model_config *cfg)
{
    if (!cfg)
        return;
    free(cfg->layer_local);
    cfg->layer_local = NULL;
}
