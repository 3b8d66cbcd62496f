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
#include "model/cfgjson.h"

/* Largest config file we accept (real ones are a few KB). */
#define PB_CONFIG_MAX_BYTES (16u << 20)

/* --- typed field access: every getter names file and field on error --- */


/* The first of the (NULL-terminated) alias keys present and not null, or NULL. */
const cJSON *pb_jfind(const pb_jctx *c, const char *const *keys)
{
    for (; *keys; keys++) {
        const cJSON *it = cJSON_GetObjectItemCaseSensitive(c->root, *keys);
        if (it && !cJSON_IsNull(it))
            return it;
    }
    return NULL;
}

pb_status pb_jint_item(const pb_jctx *c, const char *key, const cJSON *it, long long lo, long long hi,
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


/* Integer field with aliases; *present tells whether it was given. */
pb_status pb_jint(const pb_jctx *c, const char *const *keys, int def, int lo, int hi, int *out, bool *present)
{
    const cJSON *it = pb_jfind(c, keys);
    if (present)
        *present = it != NULL;
    if (!it) {
        *out = def;
        return PB_OK;
    }
    long long v;
    PB_CHECK(pb_jint_item(c, it->string ? it->string : keys[0], it, lo, hi, &v));
    *out = (int)v;
    return PB_OK;
}

pb_status pb_jfloat(const pb_jctx *c, const char *const *keys, double def, double *out, bool *present)
{
    const cJSON *it = pb_jfind(c, keys);
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

pb_status pb_jbool(const pb_jctx *c, const char *const *keys, bool def, bool *out, bool *present)
{
    const cJSON *it = pb_jfind(c, keys);
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
pb_status pb_jstr(const pb_jctx *c, const char *const *keys, const char *def, const char **out)
{
    const cJSON *it = pb_jfind(c, keys);
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
static pb_status jtoken(const pb_jctx *c, const char *key, int def, int *out)
{
    return pb_jint(c, KEYS(key), def, -1, 1 << 30, out, NULL);
}

/* eos_token_id: int or list of ints, appended to cfg->eos_ids without duplicates. */
static pb_status add_eos(pb_model_config *cfg, const pb_jctx *c, const char *key)
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
        PB_CHECK(pb_jint_item(c, key, one, 0, 1 << 30, &v));
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

static pb_status parse_act(const pb_jctx *c, const char *key, const char *name, pb_act *out)
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
static pb_status rope_object(const pb_jctx *c, const cJSON **out, const char **key)
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

/* rope_theta: the rotary object's "rope_theta" first, then the top-level keys;
 * *theta comes in as the family default. */
static pb_status parse_rope_theta(const pb_jctx *c, const char *const *keys, double *theta)
{
    const cJSON *ro;
    const char *rkey = NULL;
    const double def = *theta;
    bool has;
    PB_CHECK(rope_object(c, &ro, &rkey));
    if (ro) {
        pb_jctx sub = {c->path, ro};
        PB_CHECK(pb_jfloat(&sub, KEYS("rope_theta"), def, theta, &has));
        if (has)
            return PB_OK;
    }
    return pb_jfloat(c, keys, def, theta, NULL);
}

/* partial_rotary_factor: rope_parameters (5.x) first, then the keys (NeoX rotary_pct). */
pb_status pb_cfg_rotary_pct(const pb_jctx *c, const char *const *keys, double def, double *pct)
{
    const cJSON *ro;
    const char *rkey = NULL;
    bool has;
    PB_CHECK(rope_object(c, &ro, &rkey));
    if (ro) {
        pb_jctx sub = {c->path, ro};
        PB_CHECK(pb_jfloat(&sub, KEYS("partial_rotary_factor"), def, pct, &has));
        if (has)
            return PB_OK;
    }
    return pb_jfloat(c, keys, def, pct, NULL);
}

/* short_factor / long_factor: a list of numbers (length checked once rotary_dim is known). */
static pb_status rope_factor_list(const pb_jctx *c, const cJSON *ro, const char *rkey, const char *key, float *out,
                                  int *n)
{
    const cJSON *l = cJSON_GetObjectItemCaseSensitive(ro, key);
    if (!l || !cJSON_IsArray(l))
        return pb_error(PB_ERR_CONFIG, "%s: field '%s.%s' must be a list of numbers (longrope)", c->path, rkey, key);
    int k = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, l) {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || !(e->valuedouble > 0))
            return pb_error(PB_ERR_CONFIG, "%s: field '%s.%s'[%d] must be a number > 0", c->path, rkey, key, k);
        if (k >= PB_MAX_ROPE_FREQS)
            return pb_error(PB_ERR_UNSUPPORTED, "%s: field '%s.%s' has more than %d entries", c->path, rkey, key,
                            PB_MAX_ROPE_FREQS);
        out[k++] = (float)e->valuedouble;
    }
    *n = k;
    return PB_OK;
}

/* LongRoPE as HF 5.x _compute_longrope_parameters: factor (absent: max_position /
 * original), attention_factor (absent: sqrt(1 + ln factor / ln original), 1 when factor <= 1). */
static pb_status parse_longrope(const pb_jctx *c, const pb_jctx *sub, const char *rkey, pb_model_config *cfg,
                                double factor, int orig)
{
    int ns, nl;
    double af;
    bool has_af;
    PB_CHECK(rope_factor_list(c, sub->root, rkey, "short_factor", cfg->rope_short, &ns));
    PB_CHECK(rope_factor_list(c, sub->root, rkey, "long_factor", cfg->rope_long, &nl));
    if (ns != nl)
        return pb_error(PB_ERR_CONFIG, "%s: fields '%s.short_factor' (%d) and '%s.long_factor' (%d) differ in length",
                        c->path, rkey, ns, rkey, nl);
    if (factor == 0)
        factor = (double)cfg->max_position / (double)orig;
    if (!(factor > 0))
        return pb_error(PB_ERR_CONFIG, "%s: field '%s.factor' must be a number > 0", c->path, rkey);
    PB_CHECK(pb_jfloat(sub, KEYS("attention_factor"), 0.0, &af, &has_af));
    if (!has_af)
        af = factor <= 1.0 ? 1.0 : sqrt(1.0 + log(factor) / log((double)orig));
    if (!(af > 0))
        return pb_error(PB_ERR_CONFIG, "%s: field '%s.attention_factor' must be a number > 0", c->path, rkey);
    cfg->rope_scaling = PB_ROPE_SCALE_LONGROPE;
    cfg->rope_factor = (float)factor;
    cfg->rope_attn_factor = (float)af;
    cfg->rope_original_max_position = orig;
    cfg->rope_n_factors = ns;
    return PB_OK;
}

/* rope_scaling / rope_parameters: null, or {"type"|"rope_type": "default"|"linear"|"llama3"|"longrope", "factor": F, ...}. */
static pb_status parse_rope_scaling(const pb_jctx *c, pb_model_config *cfg)
{
    const cJSON *rs;
    const char *rkey = "rope_scaling";
    PB_CHECK(rope_object(c, &rs, &rkey));
    if (!rs)
        return PB_OK;
    pb_jctx sub = {c->path, rs};
    const char *type;
    PB_CHECK(pb_jstr(&sub, KEYS("rope_type", "type"), NULL, &type));
    if (!type && strcmp(rkey, "rope_parameters") == 0)
        type = "default"; /* HF 5.x: rope_type defaults to "default" */
    if (!type)
        return pb_error(PB_ERR_CONFIG, "%s: field '%s' has no 'type' or 'rope_type'", c->path, rkey);
    if (strcmp(type, "default") == 0)
        return PB_OK;
    double factor, lo, hi;
    int orig;
    bool has_factor;
    PB_CHECK(pb_jfloat(&sub, KEYS("factor"), 1.0, &factor, &has_factor));
    /* HF 5.x standardize_rope_params: a top-level original_max_position_embeddings
     * (Phi-3 always has one) wins over the rotary object's, which defaults to max_position_embeddings */
    {
        bool top;
        const int def = cfg->family->d_orig_max_pos > 0 ? cfg->family->d_orig_max_pos : cfg->max_position;
        PB_CHECK(pb_jint(c, KEYS("original_max_position_embeddings"), def, 1, 1 << 30, &orig, &top));
        if (!top && !cfg->family->d_orig_max_pos)
            PB_CHECK(pb_jint(&sub, KEYS("original_max_position_embeddings"), def, 1, 1 << 30, &orig, NULL));
    }
    if (cfg->family->rope_su_yarn_longrope && (strcmp(type, "su") == 0 || strcmp(type, "yarn") == 0))
        type = "longrope";
    if (strcmp(type, "longrope") == 0)
        return parse_longrope(c, &sub, rkey, cfg, has_factor ? factor : 0, orig);
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
        PB_CHECK(pb_jfloat(&sub, KEYS("low_freq_factor"), 1.0, &lo, &p1));
        PB_CHECK(pb_jfloat(&sub, KEYS("high_freq_factor"), 4.0, &hi, &p2));
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
    return pb_error(PB_ERR_UNSUPPORTED, "%s: field '%s' type \"%s\" is not supported (default, linear, llama3, longrope)",
                    c->path, rkey, type);
}

pb_status pb_cfg_rope_scaling(const pb_jctx *c, pb_model_config *cfg)
{
    return parse_rope_scaling(c, cfg);
}

/* GPT-Neo attention_types [[["global","local"], 12], ...] -> layer_local[n_layers]. */
pb_status pb_cfg_attention_types(const pb_jctx *c, pb_model_config *cfg)
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
            PB_CHECK(pb_jint_item(c, "attention_types", grp->child->next, 0, 1 << 20, &reps));
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
pb_status pb_cfg_layer_types(const pb_jctx *c, pb_model_config *cfg, int max_window_layers)
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

/* Mixture-of-experts keys (MixtralConfig, Qwen3MoeConfig). qwen: Qwen3-MoE's
 * moe_intermediate_size, norm_topk_prob, decoder_sparse_step, mlp_only_layers;
 * Mixtral always renormalises the top-k and every layer is sparse. */
pb_status pb_cfg_moe(const pb_jctx *c, pb_model_config *cfg, bool qwen)
{
    /* HF attribute_map: num_experts -> num_local_experts (5.x writes the latter) */
    PB_CHECK(pb_jint(c, KEYS("num_local_experts", "num_experts"), qwen ? 128 : 8, 0, 1 << 16, &cfg->n_experts, NULL));
    PB_CHECK(pb_jint(c, KEYS("num_experts_per_tok"), qwen ? 8 : 2, 1, 1 << 16, &cfg->n_experts_per_tok, NULL));
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
        PB_CHECK(pb_jint(c, KEYS("moe_intermediate_size"), 768, 1, 1 << 24, &cfg->moe_intermediate_size, NULL));
        PB_CHECK(pb_jbool(c, KEYS("norm_topk_prob"), false, &cfg->norm_topk_prob, NULL));
        PB_CHECK(pb_jint(c, KEYS("decoder_sparse_step"), 1, 1, 1 << 16, &cfg->moe_sparse_step, NULL));
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
                PB_CHECK(pb_jint_item(c, "mlp_only_layers", e, 0, 1 << 20, &v));
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

const pb_moe_names *pb_moe_names_of(const pb_family *f)
{
    return f && f->moe.router ? &f->moe : NULL;
}

bool pb_model_all_moe(const pb_model_config *cfg)
{
    for (int l = 0; l < cfg->n_layers; l++)
        if (!pb_model_layer_moe(cfg, l))
            return false;
    return cfg->n_layers > 0;
}

bool pb_model_layer_moe(const pb_model_config *cfg, int layer)
{
    if (cfg->n_experts <= 0 || layer < 0 || layer >= PB_MAX_MOE_LAYERS)
        return false;
    if (cfg->mlp_only[layer / 64] >> (layer % 64) & 1)
        return false;
    return cfg->moe_sparse_step > 0 && (layer + 1) % cfg->moe_sparse_step == 0;
}

/* The fields every family has, from its record's keys and defaults, then
 * the record's hook for its own keys. The layer count is read before, so
 * layer_local can be sized. */
static pb_status parse_family(const pb_jctx *c, pb_model_config *cfg)
{
    const pb_family *f = cfg->family;
    const char *act = NULL;
    int inner, hd;
    bool has;
    double eps, theta = 10000.0;

    cfg->norm = f->norm;
    cfg->pre_norm = true;
    cfg->final_norm = true;
    cfg->attn_scale = f->attn_scale;
    cfg->pos = f->pos;
    cfg->residual = f->residual;
    cfg->rope_style = f->rope_style;
    cfg->act = f->act;
    cfg->gated_mlp = f->gated_mlp;
    cfg->qkv_bias = f->qkv_bias;
    cfg->out_bias = f->out_bias;
    cfg->mlp_bias = f->mlp_bias;
    cfg->lm_head_bias = f->lm_head_bias;
    cfg->embed_norm = f->embed_norm;
    cfg->bos_token_id = f->d_bos;
    cfg->pad_token_id = f->d_pad;

    PB_CHECK(pb_jint(c, f->k_vocab, f->d_vocab, 1, 1 << 30, &cfg->vocab_size, NULL));
    PB_CHECK(pb_jint(c, f->k_hidden, f->d_hidden, 1, 1 << 20, &cfg->hidden_size, NULL));
    PB_CHECK(pb_jint(c, f->k_heads, f->d_heads, 1, 1 << 16, &cfg->n_heads, NULL));
    PB_CHECK(pb_jint(c, f->k_kv_heads, f->d_kv_heads ? f->d_kv_heads : cfg->n_heads, 1, 1 << 16, &cfg->n_kv_heads,
                     NULL));
    PB_CHECK(pb_jint(c, f->k_head_dim, f->d_head_dim, 1, 1 << 16, &hd, &has));
    cfg->head_dim = has ? hd : f->d_head_dim;
    PB_CHECK(pb_jint(c, f->k_inter, f->d_inter, 1, 1 << 24, &inner, &has));
    cfg->intermediate_size = has || f->d_inter ? inner : 4 * cfg->hidden_size;
    /* a learned table must fit; rotary and ALiBi positions have no table */
    PB_CHECK(pb_jint(c, f->k_max_pos, f->d_max_pos, 1, cfg->pos == PB_POS_LEARNED ? 1 << 26 : 1 << 30,
                     &cfg->max_position, NULL));
    PB_CHECK(pb_jstr(c, f->k_act, f->d_act, &act));
    PB_CHECK(pb_jfloat(c, f->k_eps, f->d_eps, &eps, NULL));
    PB_CHECK(pb_jbool(c, f->k_tie, f->d_tie, &cfg->tie_word_embeddings, NULL));
    if (f->k_theta[0]) {
        theta = f->d_theta > 0 ? f->d_theta : 10000.0;
        PB_CHECK(parse_rope_theta(c, f->k_theta, &theta));
        PB_CHECK(parse_rope_scaling(c, cfg));
    }
    cfg->rope_theta = (float)theta; /* a hook may set its own (Gemma 3's per layer type) */
    if (f->parse)
        PB_CHECK(f->parse(c, cfg));
    if (!f->softcaps) /* Gemma's keys in another family's config: its forward has no caps */
        for (int i = 0; i < 2; i++) {
            static const char *const caps[2] = {"attn_logit_softcapping", "final_logit_softcapping"};
            const cJSON *it = cJSON_GetObjectItemCaseSensitive(c->root, caps[i]);
            if (it && !cJSON_IsNull(it))
                return pb_error(PB_ERR_UNSUPPORTED, "%s: field '%s' is not supported for model_type \"%s\" (only "
                                "gemma2 and gemma3_text apply soft-caps)", c->path, caps[i], cfg->model_type);
        }

    if (act)
        PB_CHECK(parse_act(c, f->k_act[0], act, &cfg->act));
    cfg->norm_eps = (float)eps;
    if (!(eps > 0))
        return pb_error(PB_ERR_CONFIG, "%s: the norm epsilon must be > 0", c->path);
    if (cfg->pos == PB_POS_ROTARY && !(cfg->rope_theta > 0))
        return pb_error(PB_ERR_CONFIG, "%s: the rotary base (rope_theta) must be > 0", c->path);
    return PB_OK;
}

/* *root: the JSON in path of the model folder (not valid JSON: NULL), or NULL where the file is absent. */
static pb_status read_json_file(const char *path, cJSON **root)
{
    *root = NULL;
    if (!pb_file_exists(path))
        return PB_OK;
    char *text = NULL;
    PB_CHECK(pb_read_file(path, PB_CONFIG_MAX_BYTES, &text, NULL));
    *root = cJSON_Parse(text);
    free(text);
    return PB_OK;
}

/* sentence-transformers' modules.json: the Pooling module's config.json (its mode) and a Normalize module. */
static pb_status parse_st_modules(const char *dir, pb_model_config *cfg)
{
    pb_gen_defaults *g = &cfg->gen;
    g->st_pooling = -1;
    char *path = pb_path_join(dir, "modules.json"), *ppath = NULL, *pdir = NULL;
    cJSON *root = NULL, *proot = NULL;
    pb_status st = PB_OK;
    if (!path)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    if (!pb_file_exists(path))
        goto out;
    PB_CHECK_GOTO(read_json_file(path, &root), st, out);
    if (!cJSON_IsArray(root)) {
        st = pb_error(PB_ERR_CONFIG, "%s: not a JSON list of modules", path);
        goto out;
    }
    g->has_st_modules = true;
    const cJSON *m;
    cJSON_ArrayForEach(m, root) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(m, "type");
        const cJSON *mp = cJSON_GetObjectItemCaseSensitive(m, "path");
        if (!cJSON_IsString(type))
            continue;
        if (strstr(type->valuestring, "models.Normalize"))
            g->st_normalize = true;
        if (!strstr(type->valuestring, "models.Pooling") || pdir)
            continue;
        if (!cJSON_IsString(mp) || mp->valuestring[0] == '/' || strstr(mp->valuestring, "..")) {
            st = pb_error(PB_ERR_CONFIG, "%s: the Pooling module's path must be a folder within the model's", path);
            goto out;
        }
        if (!(pdir = pb_path_join(dir, mp->valuestring)) || !(ppath = pb_path_join(pdir, "config.json"))) {
            st = pb_error(PB_ERR_NOMEM, "out of memory");
            goto out;
        }
    }
    if (!ppath || !pb_file_exists(ppath))
        goto out;
    PB_CHECK_GOTO(read_json_file(ppath, &proot), st, out);
    if (!cJSON_IsObject(proot)) {
        st = pb_error(PB_ERR_CONFIG, "%s: not a JSON object", ppath);
        goto out;
    }
    static const struct { const char *key; int mode; } MODES[] = {
        {"pooling_mode_lasttoken", 0}, {"pooling_mode_mean_tokens", 1}, {"pooling_mode_cls_token", 2},
        {"pooling_mode_max_tokens", 3}, {"pooling_mode_mean_sqrt_len_tokens", 3},
        {"pooling_mode_weightedmean_tokens", 3}};
    int on = 0;
    for (size_t i = 0; i < sizeof MODES / sizeof *MODES; i++)
        if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(proot, MODES[i].key))) {
            on++;
            g->st_pooling = MODES[i].mode;
            snprintf(g->st_pooling_name, sizeof g->st_pooling_name, "%s", MODES[i].key);
        }
    if (on > 1) { /* the modes' outputs concatenated */
        g->st_pooling = 3;
        snprintf(g->st_pooling_name, sizeof g->st_pooling_name, "%d modes at once", on);
    }
out:
    cJSON_Delete(root);
    cJSON_Delete(proot);
    free(path);
    free(ppath);
    free(pdir);
    return st;
}

static pb_status parse_generation_config(const char *dir, pb_model_config *cfg)
{
    char *path = pb_path_join(dir, "generation_config.json");
    cJSON *root = NULL;
    pb_status st = PB_OK;
    if (!path)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    if (!pb_file_exists(path))
        goto out;
    PB_CHECK_GOTO(read_json_file(path, &root), st, out);
    if (!root || !cJSON_IsObject(root)) {
        st = pb_error(PB_ERR_CONFIG, "%s: not a JSON object", path);
        goto out;
    }
    pb_jctx c = {path, root};
    pb_gen_defaults *g = &cfg->gen;
    double v;
    PB_CHECK_GOTO(pb_jint(&c, KEYS("max_new_tokens"), 0, 0, 1 << 30, &g->max_new_tokens, &g->has_max_new_tokens), st, out);
    PB_CHECK_GOTO(pb_jfloat(&c, KEYS("temperature"), 1.0, &v, &g->has_temperature), st, out);
    g->temperature = (float)v;
    PB_CHECK_GOTO(pb_jint(&c, KEYS("top_k"), 50, 0, 1 << 30, &g->top_k, &g->has_top_k), st, out);
    PB_CHECK_GOTO(pb_jfloat(&c, KEYS("top_p"), 1.0, &v, &g->has_top_p), st, out);
    g->top_p = (float)v;
    PB_CHECK_GOTO(pb_jfloat(&c, KEYS("min_p"), 0.0, &v, &g->has_min_p), st, out);
    g->min_p = (float)v;
    PB_CHECK_GOTO(pb_jfloat(&c, KEYS("repetition_penalty"), 1.0, &v, &g->has_repetition_penalty), st, out);
    g->repetition_penalty = (float)v;
    PB_CHECK_GOTO(pb_jbool(&c, KEYS("do_sample"), false, &g->do_sample, &g->has_do_sample), st, out);
    PB_CHECK_GOTO(pb_jint(&c, KEYS("num_beams"), 1, 1, 1 << 16, &g->num_beams, &g->has_num_beams), st, out);
    PB_CHECK_GOTO(pb_jfloat(&c, KEYS("length_penalty"), 1.0, &v, &g->has_length_penalty), st, out);
    g->length_penalty = (float)v;
    const cJSON *es = cJSON_GetObjectItemCaseSensitive(root, "early_stopping");
    if (es && !cJSON_IsNull(es)) {
        if (!cJSON_IsBool(es) && !(cJSON_IsString(es) && !strcmp(es->valuestring, "never"))) {
            st = pb_error(PB_ERR_CONFIG, "%s: early_stopping must be true, false or \"never\"", path);
            goto out;
        }
        g->early_stopping = cJSON_IsString(es) ? 2 : cJSON_IsTrue(es) ? 1 : 0;
        g->has_early_stopping = true;
    }
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
    free(path);
    return st;
}

/* config.json text -> cfg, up to the family EOS default (before
 * generation_config.json and the final vocabulary checks). On failure cfg is
 * freed. `path` names the text in messages. */
/* compressed-tensors (vLLM's llm-compressor): FP8 weights ("float-quantized": e4m3 with a scale per tensor,
 * row or block, `<name>_scale`) read; its other formats (int4/int8 packed, sparse) refused by name */
static pb_status parse_compressed_tensors(const pb_jctx *c, const cJSON *q, pb_model_config *cfg)
{
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(q, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "float-quantized") != 0)
        return pb_error(PB_ERR_UNSUPPORTED, "%s: quantization_config (compressed-tensors) format %s%.40s%s: only "
                        "\"float-quantized\" (FP8 weights) is read; give the model in f32, f16 or bf16 (pippy-batch "
                        "quantizes it at load with --weights-dtype int8)", c->path, cJSON_IsString(fmt) ? "\"" : "",
                        cJSON_IsString(fmt) ? fmt->valuestring : "(none)", cJSON_IsString(fmt) ? "\"" : "");
    const char *const other[] = {"sparsity_config", "transform_config"};
    for (int i = 0; i < 2; i++) {
        const cJSON *o = cJSON_GetObjectItemCaseSensitive(q, other[i]);
        if (o && !cJSON_IsNull(o) && !(cJSON_IsObject(o) && !o->child))
            return pb_error(PB_ERR_UNSUPPORTED, "%s: quantization_config.%s: compressed-tensors %s is not read",
                            c->path, other[i], i ? "transforms" : "sparsity");
    }
    const cJSON *groups = cJSON_GetObjectItemCaseSensitive(q, "config_groups"), *g;
    if (!cJSON_IsObject(groups) || !groups->child)
        return pb_error(PB_ERR_CONFIG, "%s: quantization_config.config_groups is not an object of groups", c->path);
    bool first = true;
    cJSON_ArrayForEach(g, groups) {
        const cJSON *w = cJSON_IsObject(g) ? cJSON_GetObjectItemCaseSensitive(g, "weights") : NULL;
        const cJSON *nb = w ? cJSON_GetObjectItemCaseSensitive(w, "num_bits") : NULL;
        const cJSON *ty = w ? cJSON_GetObjectItemCaseSensitive(w, "type") : NULL;
        const cJSON *sy = w ? cJSON_GetObjectItemCaseSensitive(w, "symmetric") : NULL;
        const cJSON *sg = w ? cJSON_GetObjectItemCaseSensitive(w, "strategy") : NULL;
        const cJSON *gf = cJSON_IsObject(g) ? cJSON_GetObjectItemCaseSensitive(g, "format") : NULL;
        if (!cJSON_IsObject(w) || !cJSON_IsNumber(nb) || nb->valuedouble != 8 || !cJSON_IsString(ty) ||
            strcmp(ty->valuestring, "float") != 0 || cJSON_IsFalse(sy) || !cJSON_IsString(sg) ||
            (gf && !cJSON_IsNull(gf) && !(cJSON_IsString(gf) && strcmp(gf->valuestring, "float-quantized") == 0)))
            return pb_error(PB_ERR_UNSUPPORTED, "%s: quantization_config.config_groups.%s: weights of 8-bit "
                            "symmetric float (FP8) with a strategy are read, not these", c->path, g->string);
        int b[2];
        if (strcmp(sg->valuestring, "tensor") == 0) {
            b[0] = b[1] = 0;
        } else if (strcmp(sg->valuestring, "channel") == 0) {
            b[0] = 1, b[1] = 0;
        } else if (strcmp(sg->valuestring, "block") == 0) {
            const cJSON *bs = cJSON_GetObjectItemCaseSensitive(w, "block_structure");
            if (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) != 2)
                return pb_error(PB_ERR_CONFIG, "%s: quantization_config.config_groups.%s.weights.block_structure "
                                "is not a list of two integers", c->path, g->string);
            for (int i = 0; i < 2; i++) {
                long long v;
                PB_CHECK(pb_jint_item(c, "quantization_config...weights.block_structure", cJSON_GetArrayItem(bs, i),
                                      1, 1 << 20, &v));
                b[i] = (int)v;
            }
            if (b[1] % 64)
                return pb_error(PB_ERR_UNSUPPORTED, "%s: quantization_config.config_groups.%s.weights.block_structure "
                                "[%d, %d]: blocks of a multiple of 64 columns are read (pippy-batch keeps a scale per "
                                "64 weights of a row)", c->path, g->string, b[0], b[1]);
        } else {
            return pb_error(PB_ERR_UNSUPPORTED, "%s: quantization_config.config_groups.%s.weights.strategy \"%.20s\": "
                            "FP8 scales per tensor, channel or block are read", c->path, g->string, sg->valuestring);
        }
        if (!first && (b[0] != cfg->fp8_block[0] || b[1] != cfg->fp8_block[1]))
            return pb_error(PB_ERR_UNSUPPORTED, "%s: quantization_config.config_groups: groups of different weight "
                            "strategies are not read", c->path);
        cfg->fp8_block[0] = b[0], cfg->fp8_block[1] = b[1];
        first = false;
    }
    snprintf(cfg->fp8_scale, sizeof cfg->fp8_scale, "_scale");
    return PB_OK;
}

/* quantization_config: none (null or {}); an FP8 checkpoint, read: HF
 * transformers' fine-grained FP8 (quant_method "fp8": FineGrainedFP8Config,
 * e4m3 weights with a scale_inv per block) or compressed-tensors FP8; any
 * other method (GPTQ, AWQ, bitsandbytes, ...) refused by name: its tensors
 * are not weights pippy-batch can read */
static pb_status parse_quantization(const pb_jctx *c, pb_model_config *cfg)
{
    const cJSON *q = cJSON_GetObjectItemCaseSensitive(c->root, "quantization_config");
    if (!q || cJSON_IsNull(q) || (cJSON_IsObject(q) && !q->child))
        return PB_OK;
    const cJSON *m = cJSON_IsObject(q) ? cJSON_GetObjectItemCaseSensitive(q, "quant_method") : NULL;
    if (cJSON_IsString(m) && strcmp(m->valuestring, "compressed-tensors") == 0) {
        PB_CHECK(parse_compressed_tensors(c, q, cfg));
        cfg->fp8 = true;
        return PB_OK;
    }
    if (!cJSON_IsString(m) || strcmp(m->valuestring, "fp8") != 0)
        return pb_error(PB_ERR_UNSUPPORTED,
                        "%s: field 'quantization_config' (quant_method \"%.40s\"): pre-quantized checkpoints are "
                        "not supported but for FP8 (quant_method \"fp8\", or compressed-tensors' \"float-quantized\"); "
                        "give the model in f32, f16 or bf16 (pippy-batch quantizes it at load with --weights-dtype "
                        "int8)",
                        c->path, cJSON_IsString(m) ? m->valuestring : "?");
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(q, "fmt");
    if (fmt && !cJSON_IsNull(fmt) && !(cJSON_IsString(fmt) && strcmp(fmt->valuestring, "e4m3") == 0))
        return pb_error(PB_ERR_UNSUPPORTED, "%s: quantization_config.fmt %s%.20s%s: only \"e4m3\" FP8 is read",
                        c->path, cJSON_IsString(fmt) ? "\"" : "", cJSON_IsString(fmt) ? fmt->valuestring : "(not a "
                        "string)", cJSON_IsString(fmt) ? "\"" : "");
    const cJSON *as = cJSON_GetObjectItemCaseSensitive(q, "activation_scheme");
    if (as && !cJSON_IsNull(as) &&
        !(cJSON_IsString(as) && (strcmp(as->valuestring, "dynamic") == 0 || strcmp(as->valuestring, "static") == 0)))
        return pb_error(PB_ERR_CONFIG, "%s: quantization_config.activation_scheme is not \"dynamic\" or "
                        "\"static\"", c->path);
    const cJSON *bs = cJSON_GetObjectItemCaseSensitive(q, "weight_block_size");
    cfg->fp8 = true;
    snprintf(cfg->fp8_scale, sizeof cfg->fp8_scale, "_scale_inv");
    if (!bs) { /* FineGrainedFP8Config's default */
        cfg->fp8_block[0] = cfg->fp8_block[1] = 128;
    } else if (!cJSON_IsNull(bs)) {
        if (!cJSON_IsArray(bs) || cJSON_GetArraySize(bs) != 2)
            return pb_error(PB_ERR_CONFIG, "%s: quantization_config.weight_block_size is not a list of two integers",
                            c->path);
        for (int i = 0; i < 2; i++) {
            long long v;
            PB_CHECK(pb_jint_item(c, "quantization_config.weight_block_size", cJSON_GetArrayItem(bs, i), 1, 1 << 20,
                                  &v));
            cfg->fp8_block[i] = (int)v;
        }
        if (cfg->fp8_block[1] % 64)
            return pb_error(PB_ERR_UNSUPPORTED, "%s: quantization_config.weight_block_size [%d, %d]: blocks of a "
                            "multiple of 64 columns are read (pippy-batch keeps a scale per 64 weights of a row)",
                            c->path, cfg->fp8_block[0], cfg->fp8_block[1]);
    }
    return PB_OK;
}

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
    pb_jctx c = {path, root};
    PB_CHECK_GOTO(pb_jstr(&c, KEYS("model_type"), NULL, &mt), st, fail);
    if (!mt) {
        st = pb_error(PB_ERR_CONFIG, "%s: field 'model_type' is missing", path);
        goto fail;
    }
    cfg->family = pb_family_find(mt);
    if (!cfg->family) {
        st = pb_error(PB_ERR_UNSUPPORTED, "%s: model_type \"%s\" is not supported (supported: %s)", path, mt,
                      pb_family_list());
        goto fail;
    }
    snprintf(cfg->model_type, sizeof cfg->model_type, "%s", mt);
    PB_CHECK_GOTO(parse_quantization(&c, cfg), st, fail);
    PB_CHECK_GOTO(pb_jint(&c, cfg->family->k_layers, cfg->family->d_layers, 1, 1 << 16, &cfg->n_layers, NULL), st,
                  fail);
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
        if (cfg->rope_scaling == PB_ROPE_SCALE_LONGROPE && cfg->rope_n_factors != cfg->rotary_dim / 2) {
            st = pb_error(PB_ERR_CONFIG, "%s: fields 'short_factor'/'long_factor' of the rotary settings have %d "
                          "entries but the rotary dimension %d needs %d", path, cfg->rope_n_factors, cfg->rotary_dim,
                          cfg->rotary_dim / 2);
            goto fail;
        }
    }

    const char *td;
    /* transformers 5.x writes "dtype", 4.x "torch_dtype" */
    PB_CHECK_GOTO(pb_jstr(&c, KEYS("dtype", "torch_dtype"), "", &td), st, fail);
    snprintf(cfg->torch_dtype, sizeof cfg->torch_dtype, "%s", td);
    PB_CHECK_GOTO(jtoken(&c, "bos_token_id", cfg->bos_token_id, &cfg->bos_token_id), st, fail);
    PB_CHECK_GOTO(jtoken(&c, "pad_token_id", cfg->pad_token_id, &cfg->pad_token_id), st, fail);
    {
        /* a family default EOS applies only when config.json does not name one */
        const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "eos_token_id");
        if (e)
            PB_CHECK_GOTO(add_eos(cfg, &c, "eos_token_id"), st, fail);
        else if (cfg->family->d_eos >= 0)
            cfg->eos_ids[cfg->n_eos++] = cfg->family->d_eos;
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
    if (st == PB_OK)
        st = parse_st_modules(model_dir, cfg);
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
