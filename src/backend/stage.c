/* The stage runtime and the generic decoder block: one forward pass for every
 * family, driven by pb_model_config and the adapters' compute layout. */
#include "config.h"
#include "backend/stage.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/adapter.h"
#include "backend/backend.h"
#include "backend/moe.h"
#include "ckpt/ckpt.h"
#include "ckpt/plan.h"
#include "ckpt/weights.h"
#include "common/log.h"
#include "common/util.h"

/* Rows of the LM head computed per call when all logits are asked for. */
#define HEAD_ROWS 64

/* Activation arena, [T = max_batch_tokens] rows each. */
typedef struct arena_layout {
    size_t x, h, h2, qkv, ctx, attn, mlp_in, mlp_mid, mlp_out, cs, cs_local, emb, head_in, head_mid, moe,
        total; /* in floats */
} arena_layout;

/* One decoder layer in backend memory. */
typedef struct layer_w {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b; /* [hidden]; biases NULL for RMSNorm */
    pb_weight *qkv;  /* [q_dim + 2 kv_dim, hidden], rows q | k | v */
    pb_weight *o;    /* [hidden, q_dim] */
    pb_weight *up;   /* [I, hidden], or [2 I, hidden] rows gate | up when gated */
    pb_weight *down; /* [hidden, I] */
    pb_moe_layer moe; /* mixture-of-experts layers (then up/down are NULL) */
    const float *q_norm, *k_norm; /* [head_dim] per-head RMSNorm weights (Qwen3), or NULL */
    const float *post_attn_w, *post_mlp_w; /* Gemma sandwich norms [hidden] */
} layer_w;

struct pb_stage {
    pb_model_config cfg;     /* copy; layer_local points to our own copy */
    bool *layer_local;
    const pb_family *fam;
    pb_backend *be;          /* given, not owned */
    pb_stage_opts opts;
    int layer_begin, layer_end, n_layers;
    bool has_embed, has_head;
    int H, V, E, hd, nh, nkv, qd, kvd, I, qkv_dim, rot;

    pb_wstore ws;
    /* first stage */
    pb_weight *tok_emb;    /* [V, E]; also the tied LM head */
    pb_weight *pos_emb;    /* [pos_rows, H] or NULL */
    int pos_rows;
    const float *emb_norm_w, *emb_norm_b;
    pb_weight *proj_in;    /* [H, E] when E != H */
    /* last stage */
    const float *final_w, *final_b;
    pb_weight *proj_out;   /* [E, H] when E != H */
    pb_weight *lm_head;    /* [V, E] (tok_emb when tied) */
    layer_w *layers;       /* [n_layers] */

    float *inv_freq;       /* host [rot/2] */
    float *inv_freq_long;  /* host [rot/2]: longrope's long factors, else NULL */
    float *cs_host;        /* host [max_batch_tokens, rot/2, 2]: longrope's angles, else NULL */
    float *inv_freq_local; /* host [rot/2]: local layers' own rotary base (Gemma 3), or NULL */
    float embed_scale;     /* Gemma: sqrt(hidden) in the embedding's dtype; 0 = none */
    float *alibi;          /* host [nh] */
    float *scale;          /* host [n_layers] */
    int *window;           /* host [n_layers] */

    void *kv;              /* [n_slots][n_layers][2] caches of kv_bytes(kv_dtype, max_seq_len, ...) */
    pb_dtype kv_dtype;     /* their elements (opts.kv_dtype resolved) */
    float *arena;
    arena_layout al;
    pb_moe *moe;           /* experts' scratch when a layer of the stage has them */
    pb_buf in, out;        /* stage input / output (backend buffers) */
    int32_t *pos_dev;      /* backend [max_batch_tokens]: positions for a learned table */

    /* host scratch */
    int *tok_start, *rows;      /* [n_slots], [max_batch_tokens] */
    int32_t *ids, *pos_ids;     /* [max_batch_tokens] */
    float *pos_scaled;          /* [max_batch_tokens] */
    float *pos_plain;           /* [max_batch_tokens]: unscaled positions (local rotary), or NULL */
    void **kptr, **vptr;        /* [n_slots] */
    unsigned char *slot_used;   /* [n_slots] */
};

static int max_i(int a, int b) { return a > b ? a : b; }

static int embed_dim(const pb_model_config *cfg)
{
    return cfg->word_embed_proj_dim > 0 ? cfg->word_embed_proj_dim : cfg->hidden_size;
}

/* The row stride of the MLP's first product (n columns: I, or 2I gated):
 * n, but n + 16 where a row is a multiple of 2 KiB, so that the 16 rows of
 * an AMX output tile do not all fall in one or two of the L1's sets (as
 * GPT-2's 3072 columns, SmolLM2's 2 x 1536 and TinyLlama's 2 x 5632 did).
 * 512-token prefill under bf16-amx, medians of 3-4, the same bits: SmolLM2
 * 4480 -> 4698 tok/s, GPT-2 f32 2804 -> 3063, f16 3753 -> 3934, TinyLlama
 * 658 -> 675; the exact products unchanged. */
static size_t mlp_ld(const pb_model_config *cfg)
{
    const size_t n = (size_t)cfg->intermediate_size * (cfg->gated_mlp ? 2 : 1);
    return n > 0 && n % 512 == 0 ? n + 16 : n;
}

static arena_layout layout_for(const pb_model_config *cfg, bool has_embed, bool has_head, int T)
{
    arena_layout a;
    const size_t H = (size_t)cfg->hidden_size, E = (size_t)embed_dim(cfg);
    const size_t qd = (size_t)cfg->n_heads * cfg->head_dim, kvd = (size_t)cfg->n_kv_heads * cfg->head_dim;
    /* the dense MLP's rows: none when every layer has experts (their own arena part) */
    const size_t I = pb_model_all_moe(cfg) ? 0 : (size_t)cfg->intermediate_size, t = (size_t)(T > 0 ? T : 1);
    const size_t rot = cfg->pos == PB_POS_ROTARY ? (size_t)cfg->rotary_dim : 0;
    size_t o = 0;
#define TAKE(field, n) do { a.field = o; o += ((n) + 15) & ~(size_t)15; } while (0)
    TAKE(x, t * H);
    TAKE(h, t * H);
    TAKE(h2, cfg->residual == PB_RESID_PARALLEL_TWO_NORM ? t * H : 0);
    TAKE(qkv, t * (qd + 2 * kvd));
    TAKE(ctx, t * qd);
    TAKE(attn, t * H);
    TAKE(mlp_in, I ? t * mlp_ld(cfg) : 0);
    TAKE(mlp_mid, cfg->gated_mlp ? t * I : 0);
    TAKE(mlp_out, t * H);
    TAKE(cs, t * rot);
    TAKE(cs_local, cfg->rope_local_theta > 0 ? t * rot : 0);
    TAKE(emb, has_embed && E != H ? t * E : 0);
    size_t hr = t < HEAD_ROWS ? t : HEAD_ROWS;
    TAKE(head_in, has_head ? hr * H : 0);
    TAKE(head_mid, has_head && E != H ? hr * E : 0);
    TAKE(moe, pb_moe_arena_floats(cfg, T));
#undef TAKE
    a.total = o;
    return a;
}

int pb_stage_batch_tokens(int requested, int per_mb, int n_slots, int max_seq_len)
{
    long t = requested > 0 ? requested : per_mb > PB_BATCH_TOKENS_CPU ? per_mb : PB_BATCH_TOKENS_CPU;
    const long all = (long)n_slots * (long)max_seq_len;
    if (t > all)
        t = all;
    if (t < per_mb)
        t = per_mb;
    return (int)(t > 0 ? t : 1);
}

/* Output rows on the last stage: every sequence's logits (all logits are
 * computed and downloaded in chunks of at most that many rows). */
static size_t out_rows(const pb_stage_opts *o)
{
    return (size_t)o->n_slots;
}

/* narrow_in, the largest n_in of a bf16/f16 linear layer the stage holds (0: none), after one of type d */
static int narrow_max(int narrow_in, pb_dtype d, int n_in)
{
    return (d == PB_DT_BF16 || d == PB_DT_F16) && n_in > narrow_in ? n_in : narrow_in;
}

/* narrow_in: as narrow_max */
static pb_backend_limits limits_for(const pb_model_config *cfg, const pb_stage_opts *o, bool has_head, int narrow_in)
{
    const int qd = cfg->n_heads * cfg->head_dim, kvd = cfg->n_kv_heads * cfg->head_dim;
    int max_dim = max_i(max_i(cfg->vocab_size, 2 * cfg->intermediate_size), qd + 2 * kvd);
    max_dim = max_i(max_dim, max_i(cfg->hidden_size, cfg->word_embed_proj_dim));
    if (cfg->n_experts > 0)
        max_dim = max_i(max_dim, max_i(cfg->n_experts, 2 * cfg->moe_intermediate_size));
    return (pb_backend_limits){.max_seqs = o->n_slots, .max_keys = o->max_seq_len, .max_heads = cfg->n_heads,
                               .max_tokens = o->max_batch_tokens, .max_dim = max_dim, .head_dim = cfg->head_dim,
                               .narrow_in = narrow_in, .vocab = has_head ? cfg->vocab_size : 0};
}

/* KV cache, arena, input/output buffers and backend scratch: the sizes
 * pb_stage_create allocates (each allocation rounded up to 64 bytes). */
static pb_status runtime_memory(const pb_model_config *cfg, const pb_backend_ops *ops, int n_layers, bool has_embed,
                                bool has_head, int narrow_in, const pb_stage_opts *o, pb_stage_mem *m)
{
    pb_dtype kvdt;
    PB_CHECK(pb_kvdtype_resolve(ops, o->kv_dtype, &kvdt));
    m->kv = (uint64_t)o->n_slots * (uint64_t)n_layers * 2u *
            ops->kv_bytes(kvdt, o->max_seq_len, cfg->n_kv_heads, cfg->head_dim);
    arena_layout a = layout_for(cfg, has_embed, has_head, o->max_batch_tokens);
    pb_backend_limits lim = limits_for(cfg, o, has_head, narrow_in);
    /* ids (+ positions for a learned table); a hidden input is the arena's x */
    uint64_t in = has_embed ? (((uint64_t)o->max_batch_tokens * 4u + 63) & ~(uint64_t)63) : 0;
    if (has_embed && cfg->pos == PB_POS_LEARNED)
        in *= 2;
    uint64_t out = has_head ? (uint64_t)out_rows(o) * (uint64_t)cfg->vocab_size * 4u : 0;
    m->act = (((uint64_t)a.total * 4u + 63) & ~(uint64_t)63) + ((in + 63) & ~(uint64_t)63) +
             ((out + 63) & ~(uint64_t)63) + ops->scratch_bytes(o->threads > 0 ? o->threads : 1, &lim);
    return PB_OK;
}

/* Rows of the learned position table, checked against the config. */
static pb_status pos_table_rows(const pb_model_config *cfg, const pb_family *f, const char *name, int ndim,
                                const int64_t *shape, int *rows)
{
    if (ndim != 2 || shape[1] != cfg->hidden_size || shape[0] < 1 || shape[0] > (1 << 26))
        return pb_error(PB_ERR_CONFIG, "tensor '%s' has %d dims (second %lld) but the config (hidden_size) "
                        "gives [positions, %d]", name, ndim, ndim > 1 ? (long long)shape[1] : 0LL,
                        cfg->hidden_size);
    *rows = (int)shape[0];
    if (*rows < cfg->max_position + cfg->pos_offset)
        return pb_error(PB_ERR_CONFIG, "tensor '%s' has %d rows but the config (max_position_embeddings %d + "
                        "offset %d) needs %d", name, *rows, cfg->max_position, cfg->pos_offset,
                        cfg->max_position + cfg->pos_offset);
    (void)f;
    return PB_OK;
}

pb_status pb_stage_estimate(const pb_model_config *cfg, const pb_ckpt *ck, const pb_backend_ops *ops,
                            const pb_stage_plan *sp, const pb_stage_opts *opts, pb_stage_mem *out)
{
    memset(out, 0, sizeof *out);
    const pb_family *f = cfg->family;
    if (!f)
        return pb_error(PB_ERR_UNSUPPORTED, "model_type '%s' has no adapter", cfg->model_type);
    pb_dtype dt;
    int ndim;
    int64_t shape[2];
    char name[PB_NAME_CAP];
    int pos_rows = 0;
    if (sp->has_embed && cfg->pos == PB_POS_LEARNED && f->pos_emb) {
        snprintf(name, sizeof name, "%s.weight", f->pos_emb);
        if (!pb_ckpt_tensor_info(ck, name, &dt, &ndim, shape))
            return pb_error(PB_ERR_CONFIG, "tensor '%s' is missing from the checkpoint", name);
        PB_CHECK(pos_table_rows(cfg, f, name, ndim, shape, &pos_rows));
    }
    pb_witem *items = NULL;
    int n = 0;
    PB_CHECK(pb_adapter_items(cfg, sp->layer_begin, sp->layer_end, sp->has_embed, sp->has_head, pos_rows, &items, &n));
    uint64_t bytes = 0;
    int narrow_in = 0;
    for (int i = 0; i < n; i++) {
        const pb_witem *it = &items[i];
        if (!it->linear) {
            bytes += ((uint64_t)it->n_out * 4u + 63) & ~(uint64_t)63;
            continue;
        }
        /* the dtype pb_adapter_load keeps: the parts' own (f32 when they differ) under the policy */
        pb_dtype d0 = PB_DT_F32;
        bool same = true;
        for (int p = 0; p < it->n_parts; p++) {
            if (!pb_ckpt_tensor_info(ck, it->name[p], &dt, &ndim, shape))
                dt = PB_DT_F32;
            if (p == 0)
                d0 = dt;
            same = same && dt == d0;
        }
        pb_dtype store = pb_wdtype_resolve(opts->weights_dtype, same ? d0 : PB_DT_F32, it->slot == PB_SLOT_ROUTER);
        bytes += ops->weight_bytes(store, it->n_out, it->n_in, it->bias[0][0] != '\0');
        narrow_in = narrow_max(narrow_in, store, it->n_in);
    }
    free(items);
    out->weights = bytes;
    return runtime_memory(cfg, ops, sp->layer_end - sp->layer_begin, sp->has_embed, sp->has_head, narrow_in, opts,
                          out);
}

pb_status pb_stage_plan_memory(pb_plan *plan, const pb_model_config *cfg, const pb_ckpt *ck,
                               const pb_backend_ops *ops, const pb_stage_opts *base)
{
    /* the run's micro-batch tokens (it gives its own), or plan's: one chunk of the batch */
    const int mbt = pb_stage_batch_tokens(base->max_batch_tokens, plan->batch_size, plan->batch_size,
                                          plan->max_seq_len);
    plan->max_batch_tokens = mbt;
    pb_stage_opts o = {.n_slots = plan->batch_size, .max_seq_len = plan->max_seq_len, .max_batch_tokens = mbt,
                       .threads = base->threads, .weights_dtype = base->weights_dtype,
                       .kv_dtype = base->kv_dtype};
    for (int s = 0; s < plan->n_stages; s++) {
        pb_stage_plan *sp = &plan->stages[s];
        pb_stage_mem m;
        PB_CHECK(pb_stage_estimate(cfg, ck, ops, sp, &o, &m));
        sp->mem_weights = m.weights;
        sp->mem_kv = m.kv;
        sp->mem_act = m.act;
        sp->mem_total = m.weights + m.kv + m.act;
    }
    return PB_OK;
}

/* ---- creation ---- */

static pb_status check_config(const pb_model_config *cfg)
{
    if (cfg->hidden_size <= 0 || cfg->n_heads <= 0 || cfg->head_dim <= 0 || cfg->n_kv_heads <= 0 ||
        cfg->vocab_size <= 0 || cfg->intermediate_size <= 0 || cfg->n_layers <= 0)
        return pb_error(PB_ERR_CONFIG, "%s: sizes must be positive (hidden_size %d, heads %d, head_dim %d, kv heads %d, "
                        "vocab_size %d, intermediate_size %d, layers %d)", cfg->model_type, cfg->hidden_size,
                        cfg->n_heads, cfg->head_dim, cfg->n_kv_heads, cfg->vocab_size, cfg->intermediate_size,
                        cfg->n_layers);
    if (cfg->n_heads % cfg->n_kv_heads != 0)
        return pb_error(PB_ERR_CONFIG, "%s: num_attention_heads (%d) is not a multiple of num_key_value_heads (%d)",
                        cfg->model_type, cfg->n_heads, cfg->n_kv_heads);
    if (cfg->pos == PB_POS_ROTARY) {
        if (cfg->rotary_dim <= 0 || cfg->rotary_dim > cfg->head_dim || cfg->rotary_dim % 2)
            return pb_error(PB_ERR_CONFIG, "%s: rotary dimension %d must be even and at most head_dim %d",
                            cfg->model_type, cfg->rotary_dim, cfg->head_dim);
        if (!(cfg->rope_theta > 0))
            return pb_error(PB_ERR_CONFIG, "%s: rope_theta must be positive", cfg->model_type);
        switch (cfg->rope_scaling) {
        case PB_ROPE_SCALE_NONE:
            break;
        case PB_ROPE_SCALE_LINEAR:
            if (!(cfg->rope_factor > 0))
                return pb_error(PB_ERR_CONFIG, "%s: rope_scaling.factor must be positive", cfg->model_type);
            break;
        case PB_ROPE_SCALE_LONGROPE:
            if (cfg->rope_n_factors != cfg->rotary_dim / 2 || cfg->rope_original_max_position <= 0 ||
                !(cfg->rope_attn_factor > 0))
                return pb_error(PB_ERR_CONFIG, "%s: longrope needs rotary_dim / 2 short and long factors, "
                                "original_max_position_embeddings > 0 and attention_factor > 0", cfg->model_type);
            break;
        case PB_ROPE_SCALE_LLAMA3:
            if (!(cfg->rope_factor > 0) || !(cfg->rope_low_freq_factor > 0) ||
                !(cfg->rope_high_freq_factor > cfg->rope_low_freq_factor) || cfg->rope_original_max_position <= 0)
                return pb_error(PB_ERR_CONFIG, "%s: rope_scaling (llama3) needs factor > 0, high_freq_factor > "
                                "low_freq_factor > 0 and original_max_position_embeddings > 0", cfg->model_type);
            break;
        default:
            return pb_error(PB_ERR_UNSUPPORTED, "%s: rope_scaling type %d is not handled", cfg->model_type,
                            (int)cfg->rope_scaling);
        }
    } else if (cfg->pos != PB_POS_LEARNED && cfg->pos != PB_POS_ALIBI) {
        return pb_error(PB_ERR_UNSUPPORTED, "%s: position encoding %d is not handled", cfg->model_type, (int)cfg->pos);
    }
    if (cfg->norm != PB_NORM_LAYERNORM && cfg->norm != PB_NORM_RMSNORM)
        return pb_error(PB_ERR_UNSUPPORTED, "%s: norm kind %d is not handled", cfg->model_type, (int)cfg->norm);
    if ((unsigned)cfg->act > PB_ACT_BLOOM_GELU)
        return pb_error(PB_ERR_UNSUPPORTED, "%s: activation %d is not handled", cfg->model_type, (int)cfg->act);
    if (!cfg->pre_norm && cfg->residual != PB_RESID_SEQUENTIAL)
        return pb_error(PB_ERR_UNSUPPORTED, "%s: post-norm with a parallel residual is not handled", cfg->model_type);
    return PB_OK;
}

/* Rotary inverse frequencies of base theta, with Llama-3 scaling applied (unless local); longrope:
 * divided by its factors (ext: short or long), as HF 1 / (ext * base ** (arange(0, dim, 2) / dim)). */
static void make_inv_freq(const pb_model_config *cfg, const float *ext, float theta, bool local, float *inv)
{
    const int rot = cfg->rotary_dim;
    for (int i = 0; i < rot / 2; i++) {
        /* HF: 1 / base ** (arange(0, dim, 2).float() / dim), in f32 */
        float e = (float)(2 * i) / (float)rot;
        inv[i] = ext ? 1.0f / (ext[i] * powf(theta, e)) : 1.0f / powf(theta, e);
    }
    if (local)
        return;
    if (cfg->rope_scaling == PB_ROPE_SCALE_LLAMA3) {
        /* transformers' _compute_llama3_parameters (Llama 3.1) */
        const double factor = cfg->rope_factor, lo = cfg->rope_low_freq_factor, hi = cfg->rope_high_freq_factor;
        const double old_ctx = cfg->rope_original_max_position;
        const double lo_wavelen = old_ctx / lo, hi_wavelen = old_ctx / hi;
        for (int i = 0; i < rot / 2; i++) {
            double f = inv[i], wavelen = 2 * M_PI / f;
            if (wavelen < hi_wavelen) {
                continue;
            } else if (wavelen > lo_wavelen) {
                inv[i] = (float)(f / factor);
            } else {
                double smooth = (old_ctx / wavelen - lo) / (hi - lo);
                inv[i] = (float)((1 - smooth) * f / factor + smooth * f);
            }
        }
    }
}

/* Bloom's build_alibi_tensor slopes: closest power of two, then odd powers of the next base. */
static void make_alibi(int nh, float *slopes)
{
    int cp2 = 1;
    while (cp2 * 2 <= nh)
        cp2 *= 2;
    float base = (float)pow(2.0, -pow(2.0, -(log2((double)cp2) - 3)));
    for (int i = 0; i < cp2; i++)
        slopes[i] = powf(base, (float)(i + 1));
    if (cp2 != nh) {
        float extra = (float)pow(2.0, -pow(2.0, -(log2((double)(2 * cp2)) - 3)));
        int rem = nh - cp2 < cp2 ? nh - cp2 : cp2;
        for (int i = 0; i < rem; i++)
            slopes[cp2 + i] = powf(extra, (float)(1 + 2 * i));
    }
}

static pb_status load_weights(pb_stage *s, const pb_weights *w)
{
    const pb_model_config *cfg = &s->cfg;
    const pb_family *f = s->fam;
    if (s->has_embed && cfg->pos == PB_POS_LEARNED && f->pos_emb) {
        char name[PB_NAME_CAP];
        snprintf(name, sizeof name, "%s.weight", f->pos_emb);
        const pb_tensor *t = pb_weights_get(w, name);
        if (!t)
            return pb_error(PB_ERR_CONFIG, "tensor '%s' is missing from the checkpoint", name);
        PB_CHECK(pos_table_rows(cfg, f, name, t->ndim, t->shape, &s->pos_rows));
    }
    pb_witem *items = NULL;
    int n = 0;
    PB_CHECK(pb_adapter_items(cfg, s->layer_begin, s->layer_end, s->has_embed, s->has_head, s->pos_rows, &items, &n));
    pb_status st = PB_OK;
    for (int i = 0; i < n; i++) {
        const pb_witem *it = &items[i];
        const float *vec = NULL;
        pb_weight *mat = NULL;
        if (i + 1 < n)
            pb_adapter_prefetch(w, &items[i + 1]); /* its file pages arrive while this one packs */
        PB_CHECK_GOTO(pb_adapter_load(&s->ws, cfg, w, it, &vec, &mat), st, out);
        layer_w *L = it->layer >= 0 ? &s->layers[it->layer - s->layer_begin] : NULL;
        switch (it->slot) {
        case PB_SLOT_TOK_EMB: s->tok_emb = mat; break;
        case PB_SLOT_POS_EMB: s->pos_emb = mat; break;
        case PB_SLOT_EMB_NORM_W: s->emb_norm_w = vec; break;
        case PB_SLOT_EMB_NORM_B: s->emb_norm_b = vec; break;
        case PB_SLOT_PROJ_IN: s->proj_in = mat; break;
        case PB_SLOT_FINAL_W: s->final_w = vec; break;
        case PB_SLOT_FINAL_B: s->final_b = vec; break;
        case PB_SLOT_PROJ_OUT: s->proj_out = mat; break;
        case PB_SLOT_LM_HEAD: s->lm_head = mat; break;
        case PB_SLOT_LN1_W: L->ln1_w = vec; break;
        case PB_SLOT_LN1_B: L->ln1_b = vec; break;
        case PB_SLOT_LN2_W: L->ln2_w = vec; break;
        case PB_SLOT_LN2_B: L->ln2_b = vec; break;
        case PB_SLOT_QKV: L->qkv = mat; break;
        case PB_SLOT_O: L->o = mat; break;
        case PB_SLOT_UP: L->up = mat; break;
        case PB_SLOT_DOWN: L->down = mat; break;
        case PB_SLOT_ROUTER: L->moe.router = mat; break;
        case PB_SLOT_EXP_GU:
        case PB_SLOT_EXP_DOWN:
            if (!L->moe.gu) {
                PB_CHECK_GOTO(pb_calloc((size_t)cfg->n_experts, sizeof(pb_weight *), &L->moe.gu), st, out);
                PB_CHECK_GOTO(pb_calloc((size_t)cfg->n_experts, sizeof(pb_weight *), &L->moe.down), st, out);
            }
            if (it->slot == PB_SLOT_EXP_GU)
                L->moe.gu[it->expert] = mat;
            else
                L->moe.down[it->expert] = mat;
            break;
        case PB_SLOT_Q_NORM: L->q_norm = vec; break;
        case PB_SLOT_K_NORM: L->k_norm = vec; break;
        case PB_SLOT_POST_ATTN_W: L->post_attn_w = vec; break;
        case PB_SLOT_POST_MLP_W: L->post_mlp_w = vec; break;
        }
    }
    if (s->has_head && cfg->tie_word_embeddings)
        s->lm_head = s->tok_emb;
out:
    free(items);
    return st;
}

/* Gemma's embedding scale: sqrt(hidden_size) as an f32 tensor, cast to the
 * embedding's dtype as HF's ScaledWordEmbedding does (bf16: 55.4256 -> 55.5). */
static pb_status gemma_consts(pb_stage *s)
{
    if (!s->cfg.embed_scale || !s->has_embed)
        return PB_OK;
    if (!s->tok_emb)
        return pb_error(PB_ERR_INTERNAL, "%s: no token embedding to scale", s->cfg.model_type);
    float sc = (float)sqrt((double)s->cfg.hidden_size);
    if (s->tok_emb->dtype == PB_DT_BF16)
        sc = pb_bf16_to_f32(pb_f32_to_bf16(sc));
    else if (s->tok_emb->dtype == PB_DT_F16)
        sc = pb_f16_to_f32(pb_f32_to_f16(sc));
    s->embed_scale = sc;
    return PB_OK;
}

pb_status pb_stage_create(const pb_model_config *cfg, const pb_stage_plan *sp, const pb_weights *w, pb_backend *be,
                          const pb_stage_opts *opts, pb_stage **out)
{
    *out = NULL;
    pb_status st = PB_OK;
    PB_CHECK(check_config(cfg));
    if (sp->layer_begin < 0 || sp->layer_end < sp->layer_begin || sp->layer_end > cfg->n_layers)
        return pb_error(PB_ERR_INTERNAL, "stage %d: layers [%d, %d) outside the model's %d", sp->stage,
                        sp->layer_begin, sp->layer_end, cfg->n_layers);
    if (opts->n_slots < 1 || opts->max_seq_len < 1 || opts->max_batch_tokens < 1)
        return pb_error(PB_ERR_USAGE, "stage: n_slots (%d), max_seq_len (%d) and max_batch_tokens (%d) must be >= 1",
                        opts->n_slots, opts->max_seq_len, opts->max_batch_tokens);
    if (cfg->max_position > 0 && opts->max_seq_len > cfg->max_position)
        return pb_error(PB_ERR_USAGE, "stage: max_seq_len %d exceeds the model context (max_position_embeddings %d)",
                        opts->max_seq_len, cfg->max_position);
    pb_stage *s = calloc(1, sizeof *s);
    if (!s)
        return pb_error(PB_ERR_NOMEM, "out of memory creating a stage");
    s->cfg = *cfg;
    s->cfg.layer_local = NULL;
    s->opts = *opts;
    if (s->opts.threads < 1)
        s->opts.threads = 1;
    s->fam = cfg->family;
    if (!s->fam) {
        free(s);
        return pb_error(PB_ERR_UNSUPPORTED, "model_type '%s' has no adapter", cfg->model_type);
    }
    s->layer_begin = sp->layer_begin;
    s->layer_end = sp->layer_end;
    s->n_layers = sp->layer_end - sp->layer_begin;
    s->has_embed = sp->has_embed;
    s->has_head = sp->has_head;
    s->H = cfg->hidden_size;
    s->V = cfg->vocab_size;
    s->E = embed_dim(cfg);
    s->hd = cfg->head_dim;
    s->nh = cfg->n_heads;
    s->nkv = cfg->n_kv_heads;
    s->qd = s->nh * s->hd;
    s->kvd = s->nkv * s->hd;
    s->I = cfg->intermediate_size;
    s->qkv_dim = s->qd + 2 * s->kvd;
    s->rot = cfg->pos == PB_POS_ROTARY ? cfg->rotary_dim : 0;
    const int T = opts->max_batch_tokens, NS = opts->n_slots;

    s->be = be;
    s->ws.be = be;
    s->ws.policy = opts->weights_dtype;

    PB_CHECK_GOTO(pb_calloc((size_t)(s->n_layers > 0 ? s->n_layers : 1), sizeof *s->layers, &s->layers), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)cfg->n_layers, sizeof *s->layer_local, &s->layer_local), st, fail);
    if (cfg->layer_local)
        memcpy(s->layer_local, cfg->layer_local, (size_t)cfg->n_layers * sizeof *s->layer_local);
    s->cfg.layer_local = s->layer_local;

    PB_CHECK_GOTO(load_weights(s, w), st, fail);
    if (be->ops->weights_done)
        be->ops->weights_done(be); /* a --weights-cache file is written now */
    free(s->ws.tmp);
    s->ws.tmp = NULL;
    s->ws.tmp_cap = 0;

    /* per-layer attention constants */
    PB_CHECK_GOTO(pb_calloc((size_t)(s->n_layers + 1), sizeof(float), &s->scale), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)(s->n_layers + 1), sizeof(int), &s->window), st, fail);
    for (int l = 0; l < s->n_layers; l++) {
        int gl = s->layer_begin + l;
        float sc = cfg->attn_scale ? 1.0f / sqrtf((float)s->hd) : 1.0f;
        if (cfg->query_pre_attn_scalar > 0) /* Gemma: query_pre_attn_scalar ** -0.5 (Python float, then f32) */
            sc = (float)pow((double)cfg->query_pre_attn_scalar, -0.5);
        if (cfg->scale_attn_by_inverse_layer_idx)
            sc /= (float)(gl + 1); /* GPT-2 option: also divide by layer_idx + 1 */
        s->scale[l] = sc;
        /* HF (Mistral, Qwen2, GPT-Neo local): query i sees keys i - W < j <= i, W keys */
        if (s->layer_local[gl] && cfg->sliding_window > 0)
            s->window[l] = cfg->sliding_window;
    }
    if (s->rot) {
        PB_CHECK_GOTO(pb_calloc((size_t)s->rot / 2, sizeof(float), &s->inv_freq), st, fail);
        const bool lr = cfg->rope_scaling == PB_ROPE_SCALE_LONGROPE;
        make_inv_freq(cfg, lr ? cfg->rope_short : NULL, cfg->rope_theta, false, s->inv_freq);
        if (lr) {
            PB_CHECK_GOTO(pb_calloc((size_t)s->rot / 2, sizeof(float), &s->inv_freq_long), st, fail);
            make_inv_freq(cfg, cfg->rope_long, cfg->rope_theta, false, s->inv_freq_long);
            PB_CHECK_GOTO(pb_calloc((size_t)T * (size_t)s->rot, sizeof(float), &s->cs_host), st, fail);
        }
        if (cfg->rope_local_theta > 0) {
            PB_CHECK_GOTO(pb_calloc((size_t)s->rot / 2, sizeof(float), &s->inv_freq_local), st, fail);
            make_inv_freq(cfg, NULL, cfg->rope_local_theta, true, s->inv_freq_local);
        }
    }
    PB_CHECK_GOTO(gemma_consts(s), st, fail);
    if (cfg->pos == PB_POS_ALIBI) {
        PB_CHECK_GOTO(pb_calloc((size_t)s->nh, sizeof(float), &s->alibi), st, fail);
        make_alibi(s->nh, s->alibi);
    }

    /* KV cache, arena, input and output */
    pb_stage_mem mem;
    PB_CHECK_GOTO(pb_kvdtype_resolve(be->ops, opts->kv_dtype, &s->kv_dtype), st, fail);
    int narrow_in = 0;
    for (int i = 0; i < s->ws.n_mats; i++)
        narrow_in = narrow_max(narrow_in, s->ws.mats[i]->dtype, s->ws.mats[i]->n_in);
    PB_CHECK_GOTO(runtime_memory(cfg, be->ops, s->n_layers, s->has_embed, s->has_head, narrow_in, &s->opts, &mem), st,
                  fail);
    if (mem.kv > SIZE_MAX / 2)
        PB_CHECK_GOTO(pb_error(PB_ERR_NOMEM, "KV cache of %llu bytes is too large", (unsigned long long)mem.kv), st, fail);
    if (s->n_layers > 0)
        PB_CHECK_GOTO(be->ops->alloc(be, (size_t)mem.kv, &s->kv), st, fail);
    s->al = layout_for(cfg, s->has_embed, s->has_head, T);
    PB_CHECK_GOTO(be->ops->alloc(be, s->al.total * sizeof(float), (void **)&s->arena), st, fail);
    if (s->has_embed) {
        s->in = (pb_buf){NULL, PB_DT_I32, (size_t)T};
        PB_CHECK_GOTO(be->ops->alloc(be, (size_t)T * sizeof(int32_t), &s->in.data), st, fail);
        if (s->pos_emb)
            PB_CHECK_GOTO(be->ops->alloc(be, (size_t)T * sizeof(int32_t), (void **)&s->pos_dev), st, fail);
    } else {
        s->in = (pb_buf){s->arena + s->al.x, PB_DT_F32, (size_t)T * s->H};
    }
    if (s->has_head) {
        size_t n = out_rows(&s->opts) * (size_t)s->V;
        s->out = (pb_buf){NULL, PB_DT_F32, n};
        PB_CHECK_GOTO(be->ops->alloc(be, n * sizeof(float), &s->out.data), st, fail);
    } else {
        s->out = (pb_buf){s->arena + s->al.x, PB_DT_F32, (size_t)T * s->H};
    }
    pb_backend_limits lim = limits_for(cfg, &s->opts, s->has_head, narrow_in);
    PB_CHECK_GOTO(be->ops->reserve(be, &lim), st, fail);
    for (int l = 0; l < s->n_layers && !s->moe; l++)
        if (pb_model_layer_moe(cfg, s->layer_begin + l))
            PB_CHECK_GOTO(pb_moe_create(cfg, T, s->arena + s->al.moe, &s->moe), st, fail);

    PB_CHECK_GOTO(pb_calloc((size_t)NS + 1, sizeof(int), &s->tok_start), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)T, sizeof(int), &s->rows), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)T, sizeof(int32_t), &s->ids), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)T, sizeof(int32_t), &s->pos_ids), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)T, sizeof(float), &s->pos_scaled), st, fail);
    if (s->inv_freq_local)
        PB_CHECK_GOTO(pb_calloc((size_t)T, sizeof(float), &s->pos_plain), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)NS, sizeof(void *), &s->kptr), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)NS, sizeof(void *), &s->vptr), st, fail);
    PB_CHECK_GOTO(pb_calloc((size_t)NS, 1, &s->slot_used), st, fail);
    pb_log_verbose("stage %d: layers [%d, %d)%s%s: weights %.1f MiB (%s), KV %.1f MiB (%s), activations %.1f MiB, "
                   "backend %s, %d threads", sp->stage, s->layer_begin, s->layer_end, s->has_embed ? " +embed" : "",
                   s->has_head ? " +head" : "", (double)s->ws.bytes / 1048576.0, pb_wdtype_name(opts->weights_dtype),
                   (double)mem.kv / 1048576.0, pb_dtype_name(s->kv_dtype), (double)mem.act / 1048576.0, be->ops->name,
                   be->threads);
    *out = s;
    return PB_OK;
fail:
    pb_stage_free(s);
    return st;
}

void pb_stage_free(pb_stage *s)
{
    if (!s)
        return;
    if (s->be) {
        pb_wstore_free(&s->ws);
        if (s->kv)
            s->be->ops->release(s->be, s->kv);
        if (s->arena)
            s->be->ops->release(s->be, s->arena);
        if (s->has_embed && s->in.data)
            s->be->ops->release(s->be, s->in.data);
        if (s->pos_dev)
            s->be->ops->release(s->be, s->pos_dev);
        if (s->has_head && s->out.data)
            s->be->ops->release(s->be, s->out.data);
    }
    pb_moe_free(s->moe);
    for (int l = 0; s->layers && l < s->n_layers; l++) {
        free(s->layers[l].moe.gu);
        free(s->layers[l].moe.down);
    }
    free(s->layers);
    free(s->layer_local);
    free(s->scale);
    free(s->window);
    free(s->inv_freq);
    free(s->inv_freq_long);
    free(s->cs_host);
    free(s->inv_freq_local);
    free(s->pos_plain);
    free(s->alibi);
    free(s->tok_start);
    free(s->rows);
    free(s->ids);
    free(s->pos_ids);
    free(s->pos_scaled);
    free(s->kptr);
    free(s->vptr);
    free(s->slot_used);
    free(s);
}

int pb_stage_hidden_size(const pb_stage *st) { return st->H; }
uint64_t pb_stage_weight_bytes(const pb_stage *st) { return st->ws.bytes; }
pb_buf pb_stage_input(const pb_stage *st) { return st->in; }
pb_buf pb_stage_output(const pb_stage *st) { return st->out; }
int pb_stage_vocab_size(const pb_stage *st) { return st->V; }

/* ---- forward ---- */

/* Qwen3: RMSNorm over each head of q and of k (own weights), before rotary.
 * Each token's q heads (then k heads) are contiguous rows of head_dim. */
static pb_status qk_norm(pb_stage *s, const layer_w *L, float *qkv, int T)
{
    pb_backend *be = s->be; /* every head of every row in one call (strided rows of qkv) */
    PB_CHECK(be->ops->head_norm(be, qkv, s->qkv_dim, T, s->nh, s->hd, L->q_norm, s->cfg.norm_eps));
    return be->ops->head_norm(be, qkv + s->qd, s->qkv_dim, T, s->nkv, s->hd, L->k_norm, s->cfg.norm_eps);
}

/* LongRoPE angles as HF 5.x: a sequence whose last position in this forward
 * is past original_max_position_embeddings uses the long factors for all its
 * tokens, else the short ones (keys already cached keep theirs); cos and sin
 * are scaled by the attention factor. Made on the host, then uploaded. */
static pb_status longrope_angles(pb_stage *s, const pb_seq_batch *b, int T)
{
    const pb_model_config *cfg = &s->cfg;
    const int nf = s->rot / 2;
    const float af = cfg->rope_attn_factor;
    for (int i = 0; i < b->n_seqs; i++) {
        const bool lng = (long)b->pos[i] + b->n_tokens[i] > cfg->rope_original_max_position ||
                         (b->rope_long && b->rope_long[i]);
        const float *inv = lng ? s->inv_freq_long : s->inv_freq;
        for (int t = s->tok_start[i]; t < s->tok_start[i] + b->n_tokens[i]; t++)
            for (int f = 0; f < nf; f++) {
                float a = s->pos_scaled[t] * inv[f]; /* the f32 product, as HF */
                s->cs_host[((size_t)t * nf + f) * 2] = cosf(a) * af;
                s->cs_host[((size_t)t * nf + f) * 2 + 1] = sinf(a) * af;
            }
    }
    return s->be->ops->upload(s->be, s->arena + s->al.cs, s->cs_host, (size_t)T * (size_t)s->rot * sizeof(float));
}

/* Bytes of one layer's K (or V) cache of one slot. */
static size_t kv_kind_bytes(const pb_stage *s)
{
    return (size_t)s->be->ops->kv_bytes(s->kv_dtype, s->opts.max_seq_len, s->nkv, s->hd);
}

/* Slot `slot`'s K cache of layer l (its V cache follows, kv_kind_bytes on):
 * pointer arithmetic only, the memory may be a device's. */
static char *layer_cache(const pb_stage *s, int slot, int l)
{
    const size_t per_kind = kv_kind_bytes(s);
    return (char *)s->kv + ((size_t)slot * (size_t)s->n_layers + (size_t)l) * 2 * per_kind;
}

static pb_status run_attention(pb_stage *s, int l, const pb_seq_batch *b, const float *in, float *out, int T)
{
    pb_backend *be = s->be;
    const pb_backend_ops *op = be->ops;
    const layer_w *L = &s->layers[l];
    float *qkv = s->arena + s->al.qkv, *ctx = s->arena + s->al.ctx;
    PB_CHECK(op->linear(be, in, s->H, T, L->qkv, qkv, s->qkv_dim));
    if (L->q_norm)
        PB_CHECK(qk_norm(s, L, qkv, T));
    /* q's and k's heads rotated by attention (pb_backend_attention: the backend's, or the rope op first) */
    const pb_rope_desc r = {s->cfg.rope_style, s->rot};
    const float *cs = s->arena + (s->inv_freq_local && s->layer_local[s->layer_begin + l] ? s->al.cs_local : s->al.cs);
    /* cache rows of this layer for each sequence's slot */
    const size_t per_kind = kv_kind_bytes(s);
    for (int i = 0; i < b->n_seqs; i++) {
        char *base = layer_cache(s, b->slot[i], l);
        s->kptr[i] = base;
        s->vptr[i] = base + per_kind;
    }
    pb_attn_args a = {
        .n_seqs = b->n_seqs, .tok_start = s->tok_start, .pos = b->pos, .n_tokens = b->n_tokens,
        .k_cache = s->kptr, .v_cache = s->vptr, .cache_len = s->opts.max_seq_len, .kv_dtype = s->kv_dtype,
        .q = qkv, .k = qkv + s->qd, .v = qkv + s->qd + s->kvd, .q_stride = s->qkv_dim, .kv_stride = s->qkv_dim,
        .out = ctx, .n_heads = s->nh, .n_kv_heads = s->nkv, .head_dim = s->hd,
        .scale = s->scale[l], .alibi = s->alibi, .window = s->window[l], .softcap = s->cfg.attn_softcap,
        .rope = s->rot ? &r : NULL, .rope_cs = s->rot ? cs : NULL,
    };
    PB_CHECK(pb_backend_attention(be, &a));
    return op->linear(be, ctx, s->qd, T, L->o, out, s->H);
}

static pb_status run_mlp(pb_stage *s, int l, const float *in, float *out, int T)
{
    pb_backend *be = s->be;
    const pb_backend_ops *op = be->ops;
    const layer_w *L = &s->layers[l];
    float *mi = s->arena + s->al.mlp_in;
    const int ld = (int)mlp_ld(&s->cfg);
    if (L->moe.router)
        return pb_moe_forward(s->moe, be, &L->moe, in, out, T);
    if (s->cfg.gated_mlp) {
        float *mid = s->arena + s->al.mlp_mid;
        return pb_backend_mlp_glu(be, s->cfg.act, in, s->H, T, L->up, mi, ld, mid, s->I, L->down, out, s->H);
    }
    PB_CHECK(op->linear(be, in, s->H, T, L->up, mi, ld));
    PB_CHECK(op->act(be, s->cfg.act, mi, ld, T, s->I));
    return op->linear(be, mi, ld, T, L->down, out, s->H);
}

/* x += a (+ a2) where a; out = norm(x): fused when the backend has add_norm (the bits of add, then norm) */
static pb_status add_then_norm(pb_stage *s, float *out, float *x, const float *a, const float *a2, int T,
                               const float *w, const float *bias)
{
    const pb_backend_ops *op = s->be->ops;
    if (!a)
        return op->norm(s->be, s->cfg.norm, out, x, T, s->H, w, bias, s->cfg.norm_eps);
    if (op->add_norm)
        return op->add_norm(s->be, s->cfg.norm, out, x, a, a2, T, s->H, w, bias, s->cfg.norm_eps);
    PB_CHECK(op->add(s->be, x, a, a2, (size_t)T * s->H));
    return op->norm(s->be, s->cfg.norm, out, x, T, s->H, w, bias, s->cfg.norm_eps);
}

/* A pre-norm layer's residual add left for the next layer's first norm to do (add_norm: one pass, one launch,
 * the same bits): x += a (+ b), where a is not NULL. run_body does what is left after the stage's last layer.
 * A model's layers share one layout, so only pre-norm, non-sandwich layers ever see one. */
typedef struct resid_pending {
    const float *a, *b;
} resid_pending;

/* x += what is pending, now */

/* Gemma 2/3: x += post_attn(attn(ln1(x))); x += post_mlp(mlp(ln2(x))). */
static pb_status run_block_sandwich(pb_stage *s, int l, const pb_seq_batch *b, int T)
{
    pb_backend *be = s->be;
    const pb_backend_ops *op = be->ops;
    const layer_w *L = &s->layers[l];
    const pb_model_config *cfg = &s->cfg;
    float *x = s->arena + s->al.x, *h = s->arena + s->al.h;
    float *ao = s->arena + s->al.attn, *mo = s->arena + s->al.mlp_out;
    const size_t n = (size_t)T * s->H;
    PB_CHECK(op->norm(be, cfg->norm, h, x, T, s->H, L->ln1_w, NULL, cfg->norm_eps));
    PB_CHECK(run_attention(s, l, b, h, ao, T));
    PB_CHECK(op->norm(be, cfg->norm, ao, ao, T, s->H, L->post_attn_w, NULL, cfg->norm_eps));
    PB_CHECK(op->add(be, x, ao, NULL, n));
    PB_CHECK(op->norm(be, cfg->norm, h, x, T, s->H, L->ln2_w, NULL, cfg->norm_eps));
    PB_CHECK(run_mlp(s, l, h, mo, T));
    PB_CHECK(op->norm(be, cfg->norm, mo, mo, T, s->H, L->post_mlp_w, NULL, cfg->norm_eps));
    return op->add(be, x, mo, NULL, n);
}

static pb_status run_block(pb_stage *s, int l, const pb_seq_batch *b, int T, resid_pending *pend)
{
    pb_backend *be = s->be;
    const pb_backend_ops *op = be->ops;
    const layer_w *L = &s->layers[l];
    const pb_model_config *cfg = &s->cfg;
    float *x = s->arena + s->al.x, *h = s->arena + s->al.h;
    float *ao = s->arena + s->al.attn, *mo = s->arena + s->al.mlp_out;
    if (!cfg->pre_norm) {
        /* OPT do_layer_norm_before=False: x = ln1(x + attn(x)); x = ln2(x + mlp(x)) */
        PB_CHECK(run_attention(s, l, b, x, ao, T));
        PB_CHECK(add_then_norm(s, x, x, ao, NULL, T, L->ln1_w, L->ln1_b));
        PB_CHECK(run_mlp(s, l, x, mo, T));
        return add_then_norm(s, x, x, mo, NULL, T, L->ln2_w, L->ln2_b);
    }
    if (cfg->residual == PB_RESID_SANDWICH)
        return run_block_sandwich(s, l, b, T);
    /* x += the last layer's residual (pending), then ln1 */
    PB_CHECK(add_then_norm(s, h, x, pend->a, pend->b, T, L->ln1_w, L->ln1_b));
    *pend = (resid_pending){NULL, NULL};
    PB_CHECK(run_attention(s, l, b, h, ao, T));
    /* this layer's residual: pending, for the next layer's ln1 (ao and mo are not written before it) */
    switch (cfg->residual) {
    case PB_RESID_SEQUENTIAL:
        PB_CHECK(add_then_norm(s, h, x, ao, NULL, T, L->ln2_w, L->ln2_b));
        PB_CHECK(run_mlp(s, l, h, mo, T));
        *pend = (resid_pending){mo, NULL};
        return PB_OK;
    case PB_RESID_PARALLEL_SHARED: /* GPT-J, CodeGen: x + attn(ln1 x) + mlp(ln1 x) */
        PB_CHECK(run_mlp(s, l, h, mo, T));
        *pend = (resid_pending){ao, mo};
        return PB_OK;
    case PB_RESID_PARALLEL_TWO_NORM: { /* NeoX: x + attn(ln1 x) + mlp(ln2 x) */
        float *h2 = s->arena + s->al.h2;
        PB_CHECK(op->norm(be, cfg->norm, h2, x, T, s->H, L->ln2_w, L->ln2_b, cfg->norm_eps));
        PB_CHECK(run_mlp(s, l, h2, mo, T));
        *pend = (resid_pending){ao, mo};
        return PB_OK;
    }
    default:
        return pb_error(PB_ERR_UNSUPPORTED, "%s: residual layout %d is not handled", cfg->model_type,
                        (int)cfg->residual);
    }
}

/* Slot dst's caches start as slot src's first n positions (those before `from` already the same), every layer of
 * the stage: the backend's kv_copy of [from, n), or a copy of the whole caches. */
static pb_status fork_slot(pb_stage *s, int dst, int src, int from, int n)
{
    const pb_backend_ops *op = s->be->ops;
    if (src < 0 || src >= s->opts.n_slots || n < 1 || n > s->opts.max_seq_len || from < 0 || from >= n)
        return pb_error(PB_ERR_INPUT, "stage: slot %d cannot start as %d positions of slot %d (from %d)", dst, n, src,
                        from);
    if (src == dst)
        return PB_OK; /* a finished sequence's cache, kept in its slot for the next prompt */
    const size_t per_kind = kv_kind_bytes(s);
    for (int l = 0; l < s->n_layers; l++) {
        char *d = layer_cache(s, dst, l);
        const char *c = layer_cache(s, src, l);
        if (op->kv_copy)
            PB_CHECK(op->kv_copy(s->be, s->kv_dtype, s->opts.max_seq_len, s->nkv, s->hd, d, d + per_kind, c,
                                 c + per_kind, from, n));
        else
            PB_CHECK(op->copy(s->be, d, c, 2 * per_kind));
    }
    return PB_OK;
}

/* Validates b and fills the per-token host arrays; *T_out = tokens. */
static pb_status prepare(pb_stage *s, const pb_seq_batch *b, int *T_out)
{
    if (!b || b->n_seqs < 1 || b->n_seqs > s->opts.n_slots)
        return pb_error(PB_ERR_INPUT, "stage: batch of %d sequences (1 .. %d slots)", b ? b->n_seqs : 0,
                        s->opts.n_slots);
    memset(s->slot_used, 0, (size_t)s->opts.n_slots);
    long T = 0;
    for (int i = 0; i < b->n_seqs; i++) {
        int slot = b->slot[i], pos = b->pos[i], nt = b->n_tokens[i];
        if (slot < 0 || slot >= s->opts.n_slots)
            return pb_error(PB_ERR_INPUT, "stage: sequence %d: slot %d outside 0 .. %d", i, slot, s->opts.n_slots - 1);
        if (s->slot_used[slot])
            return pb_error(PB_ERR_INPUT, "stage: slot %d appears twice in one batch", slot);
        s->slot_used[slot] = 1;
        if (pos < 0 || nt < 1 || (long)pos + nt > s->opts.max_seq_len)
            return pb_error(PB_ERR_INPUT, "stage: sequence %d: pos %d + %d tokens exceeds max_seq_len %d (or is empty)",
                            i, pos, nt, s->opts.max_seq_len);
        T += nt;
        if (T > s->opts.max_batch_tokens)
            return pb_error(PB_ERR_INPUT, "stage: batch of more than %d tokens (max_batch_tokens)",
                            s->opts.max_batch_tokens);
    }
    const pb_model_config *cfg = &s->cfg;
    int t = 0;
    for (int i = 0; i < b->n_seqs; i++) {
        s->tok_start[i] = t;
        for (int k = 0; k < b->n_tokens[i]; k++, t++) {
            int p = b->pos[i] + k;
            s->pos_ids[t] = p;
            /* HF linear scaling divides the f32 position by the factor */
            s->pos_scaled[t] = cfg->rope_scaling == PB_ROPE_SCALE_LINEAR ? (float)p / cfg->rope_factor : (float)p;
            if (s->pos_plain)
                s->pos_plain[t] = (float)p;
            if (s->pos_emb && p + cfg->pos_offset >= s->pos_rows)
                return pb_error(PB_ERR_INPUT, "stage: position %d beyond the %d learned positions", p,
                                s->pos_rows - cfg->pos_offset);
        }
    }
    s->tok_start[b->n_seqs] = (int)T;
    *T_out = (int)T;
    if (b->fork_src)
        for (int i = 0; i < b->n_seqs; i++)
            if (b->fork_src[i] >= 0)
                PB_CHECK(fork_slot(s, b->slot[i], b->fork_src[i], b->fork_from ? b->fork_from[i] : 0, b->pos[i]));
    return PB_OK;
}

/* Embeddings (first stage) and the decoder layers, on s->in; result in x. */
static pb_status run_body(pb_stage *s, const pb_seq_batch *b, int T)
{
    pb_backend *be = s->be;
    const pb_backend_ops *op = be->ops;
    const pb_model_config *cfg = &s->cfg;
    float *x = s->arena + s->al.x;
    if (s->has_embed) {
        const int32_t *ids = s->in.data;
        if (s->E != s->H) {
            float *e = s->arena + s->al.emb;
            PB_CHECK(op->gather(be, e, s->tok_emb, ids, T, 0, false));
            PB_CHECK(op->linear(be, e, s->E, T, s->proj_in, x, s->H));
        } else {
            PB_CHECK(op->gather(be, x, s->tok_emb, ids, T, 0, false));
        }
        if (s->pos_emb) {
            PB_CHECK(op->upload(be, s->pos_dev, s->pos_ids, (size_t)T * sizeof(int32_t)));
            PB_CHECK(op->gather(be, x, s->pos_emb, s->pos_dev, T, cfg->pos_offset, true));
        }
        if (cfg->embed_norm)
            PB_CHECK(op->norm(be, PB_NORM_LAYERNORM, x, x, T, s->H, s->emb_norm_w, s->emb_norm_b, cfg->norm_eps));
        if (s->embed_scale > 0)
            PB_CHECK(op->scale(be, x, (size_t)T * s->H, s->embed_scale));
    }
    if (s->rot && s->cs_host)
        PB_CHECK(longrope_angles(s, b, T));
    else if (s->rot)
        PB_CHECK(op->rope_angles(be, s->arena + s->al.cs, s->pos_scaled, T, s->inv_freq, s->rot / 2));
    if (s->rot && s->inv_freq_local)
        PB_CHECK(op->rope_angles(be, s->arena + s->al.cs_local, s->pos_plain, T, s->inv_freq_local, s->rot / 2));
    resid_pending pend = {NULL, NULL};
    for (int l = 0; l < s->n_layers; l++)
        PB_CHECK(run_block(s, l, b, T, &pend));
    return pend.a ? op->add(be, x, pend.a, pend.b, (size_t)T * s->H) : PB_OK; /* the last layer's residual */
}

/* Logits of token rows s->rows[r0 .. r0 + nr) (nr <= HEAD_ROWS) into dst (backend, [nr, V]). */
static pb_status run_head(pb_stage *s, int r0, int nr, float *dst)
{
    pb_backend *be = s->be;
    const pb_backend_ops *op = be->ops;
    const pb_model_config *cfg = &s->cfg;
    float *x = s->arena + s->al.x;
    float *hin = s->arena + s->al.head_in, *hmid = s->arena + s->al.head_mid;
    PB_CHECK(op->select_rows(be, hin, x, s->H, s->rows + r0, nr));
    if (cfg->final_norm)
        PB_CHECK(op->norm(be, cfg->norm, hin, hin, nr, s->H, s->final_w, s->final_b, cfg->norm_eps));
    const float *hv = hin;
    if (s->E != s->H) {
        PB_CHECK(op->linear(be, hin, s->H, nr, s->proj_out, hmid, s->E));
        hv = hmid;
    }
    PB_CHECK(op->linear(be, hv, s->E, nr, s->lm_head, dst, s->V));
    if (cfg->final_softcap > 0) /* Gemma: cap * tanh(logits / cap) */
        PB_CHECK(op->softcap(be, dst, (size_t)nr * s->V, cfg->final_softcap));
    return PB_OK;
}

/* Rows of one LM head call: at most HEAD_ROWS (the arena's head rows), the
 * batch tokens and the output buffer's rows. */
static int head_chunk(const pb_stage *s)
{
    int c = s->opts.max_batch_tokens < HEAD_ROWS ? s->opts.max_batch_tokens : HEAD_ROWS;
    return c < s->opts.n_slots ? c : s->opts.n_slots;
}

pb_status pb_stage_run(pb_stage *s, const pb_seq_batch *b)
{
    int T = 0;
    PB_CHECK(prepare(s, b, &T));
    PB_CHECK(run_body(s, b, T));
    if (!s->has_head)
        return PB_OK;
    const int R = b->n_seqs, C = head_chunk(s);
    for (int i = 0; i < R; i++)
        s->rows[i] = s->tok_start[i] + b->n_tokens[i] - 1;
    for (int r0 = 0; r0 < R; r0 += C)
        PB_CHECK(run_head(s, r0, R - r0 < C ? R - r0 : C, (float *)s->out.data + (size_t)r0 * s->V));
    return PB_OK;
}

/* Validates b, uploads in (host) and runs the layers: pb_stage_forward's first half. */
static pb_status forward_body(pb_stage *s, const pb_seq_batch *b, const void *in, int *T_out)
{
    int T = 0;
    PB_CHECK(prepare(s, b, &T));
    pb_backend *be = s->be;
    const pb_backend_ops *op = be->ops;
    if (s->has_embed) {
        const int32_t *ids = in;
        for (int i = 0; i < T; i++)
            if (ids[i] < 0 || ids[i] >= s->V)
                return pb_error(PB_ERR_INPUT, "stage: token id %d at batch row %d is outside the vocabulary (0 .. %d)",
                                (int)ids[i], i, s->V - 1);
        PB_CHECK(op->upload(be, s->in.data, ids, (size_t)T * sizeof(int32_t)));
    } else {
        PB_CHECK(op->upload(be, s->in.data, in, (size_t)T * s->H * sizeof(float)));
    }
    *T_out = T;
    return run_body(s, b, T);
}

bool pb_stage_has_argmax(const pb_stage *s) { return s->has_head && s->be->ops->argmax; }

pb_backend *pb_stage_backend(pb_stage *s) { return s->be; }

bool pb_stage_has_sample(const pb_stage *s) { return s->has_head && s->be->ops->sample; }

/* the head's rows of each sequence's last token, a chunk at a time, each chunk's picks made on the backend:
 * sampled with row (the sample op) or greedy (argmax) */
static pb_status forward_pick(pb_stage *s, const pb_seq_batch *b, const void *in, const pb_sample_row *row,
                              const int32_t *mask_ids, int n_mask, const uint8_t *mask_rows, int32_t *ids)
{
    int T = 0;
    PB_CHECK(forward_body(s, b, in, &T));
    pb_backend *be = s->be;
    const int R = b->n_seqs, C = head_chunk(s);
    for (int i = 0; i < R; i++)
        s->rows[i] = s->tok_start[i] + b->n_tokens[i] - 1;
    for (int r0 = 0; r0 < R; r0 += C) {
        const int nr = R - r0 < C ? R - r0 : C;
        float *dst = (float *)s->out.data + (size_t)r0 * s->V;
        PB_CHECK(run_head(s, r0, nr, dst));
        if (row)
            PB_CHECK(be->ops->sample(be, dst, nr, s->V, s->V, row + r0, mask_ids, n_mask, ids + r0));
        else
            PB_CHECK(be->ops->argmax(be, dst, nr, s->V, s->V, mask_ids, n_mask, mask_rows ? mask_rows + r0 : NULL,
                                     ids + r0));
    }
    return be->ops->sync(be);
}

pb_status pb_stage_forward_argmax(pb_stage *s, const pb_seq_batch *b, const void *in, const int32_t *mask_ids,
                                  int n_mask, const uint8_t *mask_rows, int32_t *ids)
{
    if (!pb_stage_has_argmax(s))
        return pb_error(PB_ERR_INTERNAL, "stage: greedy picks on a stage without a head or a backend without argmax");
    return forward_pick(s, b, in, NULL, mask_ids, n_mask, mask_rows, ids);
}

pb_status pb_stage_forward_sample(pb_stage *s, const pb_seq_batch *b, const void *in, const pb_sample_row *row,
                                  const int32_t *mask_ids, int n_mask, int32_t *ids)
{
    if (!pb_stage_has_sample(s))
        return pb_error(PB_ERR_INTERNAL, "stage: sampled picks on a stage without a head or a backend without sample");
    return forward_pick(s, b, in, row, mask_ids, n_mask, NULL, ids);
}

bool pb_stage_has_embeddings(const pb_stage *s)
{
    return s->has_head && s->E == s->H;
}

pb_status pb_stage_forward_hidden(pb_stage *s, const pb_seq_batch *b, const void *in, float *out)
{
    if (!pb_stage_has_embeddings(s))
        return pb_error(PB_ERR_INTERNAL, "stage: final hidden states asked of a stage without the head, or with a "
                        "projection after the final norm");
    int T = 0;
    PB_CHECK(forward_body(s, b, in, &T));
    pb_backend *be = s->be;
    const pb_backend_ops *op = be->ops;
    const pb_model_config *cfg = &s->cfg;
    float *x = s->arena + s->al.x, *hin = s->arena + s->al.head_in;
    const int C = head_chunk(s);
    for (int r0 = 0; r0 < T; r0 += C) { /* the final norm, the head's rows at a time */
        const int nr = T - r0 < C ? T - r0 : C;
        for (int i = 0; i < nr; i++)
            s->rows[i] = r0 + i;
        PB_CHECK(op->select_rows(be, hin, x, s->H, s->rows, nr));
        if (cfg->final_norm)
            PB_CHECK(op->norm(be, cfg->norm, hin, hin, nr, s->H, s->final_w, s->final_b, cfg->norm_eps));
        PB_CHECK(op->download(be, out + (size_t)r0 * s->H, hin, (size_t)nr * s->H * sizeof(float)));
        PB_CHECK(op->sync(be)); /* the next chunk reuses hin */
    }
    return PB_OK;
}

pb_status pb_stage_forward(pb_stage *s, const pb_seq_batch *b, const void *in, float *out, bool all_logits)
{
    int T = 0;
    PB_CHECK(forward_body(s, b, in, &T));
    pb_backend *be = s->be;
    const pb_backend_ops *op = be->ops;
    if (!s->has_head) {
        PB_CHECK(op->download(be, out, s->out.data, (size_t)T * s->H * sizeof(float)));
        return op->sync(be);
    }
    const int R = all_logits ? T : b->n_seqs, C = head_chunk(s);
    for (int i = 0; i < R; i++)
        s->rows[i] = all_logits ? i : s->tok_start[i] + b->n_tokens[i] - 1;
    for (int r0 = 0; r0 < R; r0 += C) {
        int nr = R - r0 < C ? R - r0 : C;
        if (op->host_memory) { /* straight into out: the output buffer's pages are never touched */
            PB_CHECK(run_head(s, r0, nr, out + (size_t)r0 * s->V));
            continue;
        }
        float *dst = (float *)s->out.data + (all_logits ? 0 : (size_t)r0 * s->V);
        PB_CHECK(run_head(s, r0, nr, dst));
        PB_CHECK(op->download(be, out + (size_t)r0 * s->V, dst, (size_t)nr * s->V * sizeof(float)));
        if (all_logits)
            PB_CHECK(op->sync(be)); /* the next chunk reuses dst */
    }
    return op->sync(be);
}
