/* Family adapters: checkpoint tensors -> the generic decoder block's compute
 * layout. Shapes are checked against the config; a contradiction names the
 * tensor and the config field. */
#include "config.h"
#include "backend/adapter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/weights.h"
#include "common/tensor.h"
#include "common/util.h"

/* Names follow the HF modeling_<family>.py modules, canonical (base prefix removed). */
static const pb_family families[PB_ARCH_COUNT] = {
    [PB_ARCH_GPT2] = {.tok_emb = "wte", .pos_emb = "wpe", .final_norm = "ln_f", .lm_head = "lm_head",
                      .ln1 = "ln_1", .ln2 = "ln_2", .qkv = "attn.c_attn", .o = "attn.c_proj",
                      .fc1 = "mlp.c_fc", .fc2 = "mlp.c_proj", .conv1d = true, .qkv_layout = PB_QKV_BLOCKS},
    [PB_ARCH_OPT] = {.tok_emb = "embed_tokens", .pos_emb = "embed_positions", .proj_in = "project_in",
                     .final_norm = "final_layer_norm", .proj_out = "project_out", .lm_head = "lm_head",
                     .ln1 = "self_attn_layer_norm", .ln2 = "final_layer_norm", .q = "self_attn.q_proj",
                     .k = "self_attn.k_proj", .v = "self_attn.v_proj", .o = "self_attn.out_proj", .fc1 = "fc1",
                     .fc2 = "fc2"},
    [PB_ARCH_BLOOM] = {.tok_emb = "word_embeddings", .emb_norm = "word_embeddings_layernorm", .final_norm = "ln_f",
                       .lm_head = "lm_head", .ln1 = "input_layernorm", .ln2 = "post_attention_layernorm",
                       .qkv = "self_attention.query_key_value", .o = "self_attention.dense",
                       .fc1 = "mlp.dense_h_to_4h", .fc2 = "mlp.dense_4h_to_h", .qkv_layout = PB_QKV_PER_HEAD},
    [PB_ARCH_GPT_NEO] = {.tok_emb = "wte", .pos_emb = "wpe", .final_norm = "ln_f", .lm_head = "lm_head",
                         .ln1 = "ln_1", .ln2 = "ln_2", .q = "attn.attention.q_proj", .k = "attn.attention.k_proj",
                         .v = "attn.attention.v_proj", .o = "attn.attention.out_proj", .fc1 = "mlp.c_fc",
                         .fc2 = "mlp.c_proj"},
    [PB_ARCH_GPTJ] = {.tok_emb = "wte", .final_norm = "ln_f", .lm_head = "lm_head", .ln1 = "ln_1",
                      .q = "attn.q_proj", .k = "attn.k_proj", .v = "attn.v_proj", .o = "attn.out_proj",
                      .fc1 = "mlp.fc_in", .fc2 = "mlp.fc_out"},
    [PB_ARCH_CODEGEN] = {.tok_emb = "wte", .final_norm = "ln_f", .lm_head = "lm_head", .ln1 = "ln_1",
                         .qkv = "attn.qkv_proj", .o = "attn.out_proj", .fc1 = "mlp.fc_in", .fc2 = "mlp.fc_out",
                         .qkv_layout = PB_QKV_CODEGEN},
    [PB_ARCH_GPT_NEOX] = {.tok_emb = "embed_in", .final_norm = "final_layer_norm", .lm_head = "embed_out",
                          .ln1 = "input_layernorm", .ln2 = "post_attention_layernorm",
                          .qkv = "attention.query_key_value", .o = "attention.dense", .fc1 = "mlp.dense_h_to_4h",
                          .fc2 = "mlp.dense_4h_to_h", .qkv_layout = PB_QKV_PER_HEAD},
    [PB_ARCH_LLAMA] = {.tok_emb = "embed_tokens", .final_norm = "norm", .lm_head = "lm_head",
                       .ln1 = "input_layernorm", .ln2 = "post_attention_layernorm", .q = "self_attn.q_proj",
                       .k = "self_attn.k_proj", .v = "self_attn.v_proj", .o = "self_attn.o_proj",
                       .gate = "mlp.gate_proj", .up = "mlp.up_proj", .down = "mlp.down_proj"},
    [PB_ARCH_MISTRAL] = {.tok_emb = "embed_tokens", .final_norm = "norm", .lm_head = "lm_head",
                         .ln1 = "input_layernorm", .ln2 = "post_attention_layernorm", .q = "self_attn.q_proj",
                         .k = "self_attn.k_proj", .v = "self_attn.v_proj", .o = "self_attn.o_proj",
                         .gate = "mlp.gate_proj", .up = "mlp.up_proj", .down = "mlp.down_proj"},
    [PB_ARCH_QWEN2] = {.tok_emb = "embed_tokens", .final_norm = "norm", .lm_head = "lm_head",
                       .ln1 = "input_layernorm", .ln2 = "post_attention_layernorm", .q = "self_attn.q_proj",
                       .k = "self_attn.k_proj", .v = "self_attn.v_proj", .o = "self_attn.o_proj",
                       .gate = "mlp.gate_proj", .up = "mlp.up_proj", .down = "mlp.down_proj"},
};

const pb_family *pb_family_of(pb_arch arch)
{
    return (unsigned)arch < PB_ARCH_COUNT ? &families[arch] : NULL;
}

void pb_wstore_free(pb_wstore *ws)
{
    if (!ws)
        return;
    for (int i = 0; i < ws->n_bufs; i++)
        ws->be->ops->release(ws->be, ws->bufs[i]);
    free(ws->bufs);
    free(ws->tmp);
    memset(ws, 0, sizeof *ws);
}

static pb_status ws_tmp(pb_wstore *ws, size_t n)
{
    if (ws->tmp_cap >= n)
        return PB_OK;
    float *p = realloc(ws->tmp, n * sizeof(float));
    if (!p)
        return pb_error(PB_ERR_NOMEM, "out of memory converting weights (%zu floats)", n);
    ws->tmp = p;
    ws->tmp_cap = n;
    return PB_OK;
}

/* Copy n host floats into new backend memory. */
static pb_status ws_put(pb_wstore *ws, const float *host, size_t n, const float **out)
{
    if (ws->n_bufs == ws->cap_bufs) {
        int cap = ws->cap_bufs ? 2 * ws->cap_bufs : 64;
        void **b = realloc(ws->bufs, (size_t)cap * sizeof *b);
        if (!b)
            return pb_error(PB_ERR_NOMEM, "out of memory for the weight list");
        ws->bufs = b;
        ws->cap_bufs = cap;
    }
    void *p;
    PB_CHECK(ws->be->ops->alloc(ws->be, n * sizeof(float), &p));
    ws->be->ops->upload(ws->be, p, host, n * sizeof(float));
    ws->bufs[ws->n_bufs++] = p;
    ws->bytes += n * sizeof(float);
    *out = p;
    return PB_OK;
}

static void shape_str(const pb_tensor *t, char *buf, size_t cap)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, cap - o, "[");
    for (int i = 0; i < t->ndim && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)t->shape[i]);
    if (o < cap)
        snprintf(buf + o, cap - o, "]");
}

static pb_status get_tensor(const pb_weights *w, const char *name, const pb_tensor **out)
{
    const pb_tensor *t = pb_weights_get(w, name);
    if (!t)
        return pb_error(PB_ERR_CONFIG, "tensor '%s' is missing from the checkpoint", name);
    if (t->dtype != PB_DT_F32 && t->dtype != PB_DT_F16 && t->dtype != PB_DT_BF16 && t->dtype != PB_DT_F64)
        return pb_error(PB_ERR_UNSUPPORTED, "tensor '%s': dtype %s is not supported (F32, F16, BF16, F64)", name,
                        pb_dtype_name(t->dtype));
    *out = t;
    return PB_OK;
}

/* Converted copy of tensor `name` in ws->tmp, checked to have shape [d0] or [d0, d1]. */
static pb_status load_host(pb_wstore *ws, const pb_weights *w, const char *name, int ndim, int64_t d0, int64_t d1,
                           const char *field)
{
    const pb_tensor *t = NULL;
    PB_CHECK(get_tensor(w, name, &t));
    bool ok = t->ndim == ndim && t->shape[0] == d0 && (ndim == 1 || t->shape[1] == d1);
    if (!ok) {
        char got[96];
        shape_str(t, got, sizeof got);
        if (ndim == 1)
            return pb_error(PB_ERR_CONFIG, "tensor '%s' has shape %s but the config (%s) gives [%lld]", name, got,
                            field, (long long)d0);
        return pb_error(PB_ERR_CONFIG, "tensor '%s' has shape %s but the config (%s) gives [%lld, %lld]", name, got,
                        field, (long long)d0, (long long)d1);
    }
    size_t n = (size_t)pb_tensor_numel(t);
    if (t->nbytes < n * pb_dtype_size(t->dtype))
        return pb_error(PB_ERR_FORMAT, "tensor '%s': %zu bytes for %zu elements", name, t->nbytes, n);
    PB_CHECK(ws_tmp(ws, n));
    if (pb_convert_to_f32(ws->tmp, t->data, t->dtype, n) != 0)
        return pb_error(PB_ERR_UNSUPPORTED, "tensor '%s': cannot convert %s to f32", name, pb_dtype_name(t->dtype));
    pb_weights_release(w, t); /* the f32 copy is what the stage keeps */
    return PB_OK;
}

pb_status pb_adapter_vector(pb_wstore *ws, const pb_weights *w, const char *name, int n, const char *field,
                            const float **out)
{
    PB_CHECK(load_host(ws, w, name, 1, n, 0, field));
    return ws_put(ws, ws->tmp, (size_t)n, out);
}

/* Transpose the [cols, rows] matrix at the start of ws->tmp into [rows, cols] in place (through a second half). */
static pb_status transpose_tmp(pb_wstore *ws, int rows, int cols)
{
    size_t n = (size_t)rows * cols;
    PB_CHECK(ws_tmp(ws, 2 * n));
    float *src = ws->tmp, *dst = ws->tmp + n;
    for (int c = 0; c < cols; c++)
        for (int r = 0; r < rows; r++)
            dst[(size_t)r * cols + c] = src[(size_t)c * rows + r];
    memcpy(src, dst, n * sizeof(float));
    return PB_OK;
}

pb_status pb_adapter_matrix(pb_wstore *ws, const pb_weights *w, const char *name, int rows, int cols,
                            const char *field, bool conv1d, const float **out)
{
    if (conv1d) {
        PB_CHECK(load_host(ws, w, name, 2, cols, rows, field));
        PB_CHECK(transpose_tmp(ws, rows, cols));
    } else {
        PB_CHECK(load_host(ws, w, name, 2, rows, cols, field));
    }
    return ws_put(ws, ws->tmp, (size_t)rows * cols, out);
}

/* ---- decoder layer ---- */

static void layer_name(char *buf, size_t cap, int layer, const char *suffix, const char *kind, pb_arch arch)
{
    char s[160];
    snprintf(s, sizeof s, "%s.%s", suffix, kind);
    pb_ckpt_layer_name(arch, layer, s, buf, cap);
}

/* Row permutation of a fused qkv projection: dest row of source row r, with
 * dest layout q (n_heads*hd) | k | v. */
static int qkv_dest_row(pb_qkv_layout lay, int r, int n_heads, int hd)
{
    const int H = n_heads * hd;
    switch (lay) {
    case PB_QKV_PER_HEAD: { /* Bloom/NeoX: view(n_heads, 3, head_dim) */
        int h = r / (3 * hd), j = (r / hd) % 3, d = r % hd;
        return j * H + h * hd + d;
    }
    case PB_QKV_CODEGEN: { /* CodeGen: reshape(mp_num=4, 3 * H/4), each block split q, v, k;
                              head h = block * (n_heads/4) + index within the block */
        int local = H / 4;
        int blk = r / (3 * local), rem = r % (3 * local);
        int part = rem / local, within = rem % local;      /* part: 0 q, 1 v, 2 k */
        int j = part == 0 ? 0 : part == 1 ? 2 : 1;          /* -> q | k | v */
        return j * H + blk * local + within;
    }
    default:
        return r;
    }
}

static pb_status load_fused_qkv(pb_wstore *ws, const pb_model_config *cfg, const pb_weights *w, const pb_family *f,
                                int layer, pb_layer_w *L)
{
    const int H = cfg->hidden_size, hd = cfg->head_dim, nh = cfg->n_heads;
    const int qd = nh * hd, rows = 3 * qd;
    char name[200];
    if (cfg->n_kv_heads != nh)
        return pb_error(PB_ERR_CONFIG, "%s: a fused qkv projection needs num_key_value_heads (%d) == num_heads (%d)",
                        cfg->model_type, cfg->n_kv_heads, nh);
    if (f->qkv_layout == PB_QKV_CODEGEN && nh % 4 != 0)
        return pb_error(PB_ERR_CONFIG, "codegen: n_head (%d) must be a multiple of 4 (qkv_proj has mp_num = 4 blocks)",
                        nh);
    layer_name(name, sizeof name, layer, f->qkv, "weight", cfg->arch);
    if (f->conv1d) {
        PB_CHECK(load_host(ws, w, name, 2, H, rows, "3 * n_embd"));
        PB_CHECK(transpose_tmp(ws, rows, H));
    } else {
        PB_CHECK(load_host(ws, w, name, 2, rows, H, "3 * hidden_size"));
    }
    size_t n = (size_t)rows * H;
    PB_CHECK(ws_tmp(ws, 2 * n));
    float *src = ws->tmp, *dst = ws->tmp + n;
    for (int r = 0; r < rows; r++)
        memcpy(dst + (size_t)qkv_dest_row(f->qkv_layout, r, nh, hd) * H, src + (size_t)r * H, (size_t)H * sizeof(float));
    PB_CHECK(ws_put(ws, dst, n, &L->qkv.w));
    L->qkv.n_out = rows;
    L->qkv.n_in = H;
    L->qkv.b = NULL;
    if (cfg->qkv_bias) {
        layer_name(name, sizeof name, layer, f->qkv, "bias", cfg->arch);
        PB_CHECK(load_host(ws, w, name, 1, rows, 0, "3 * hidden_size"));
        PB_CHECK(ws_tmp(ws, 2 * (size_t)rows));
        float *bs = ws->tmp, *bd = ws->tmp + rows;
        for (int r = 0; r < rows; r++)
            bd[qkv_dest_row(f->qkv_layout, r, nh, hd)] = bs[r];
        PB_CHECK(ws_put(ws, bd, (size_t)rows, &L->qkv.b));
    }
    return PB_OK;
}

/* Several [rows_i, in] matrices (and optional biases) stacked into one linear. */
static pb_status load_stacked(pb_wstore *ws, const pb_model_config *cfg, const pb_weights *w, int layer, int n,
                              const char *const *suffix, const int *rows, const char *const *field, int in,
                              bool bias, pb_linear *out)
{
    int total = 0;
    for (int i = 0; i < n; i++)
        total += rows[i];
    size_t nw = (size_t)total * in;
    float *acc = malloc((nw + (size_t)total) * sizeof(float));
    if (!acc)
        return pb_error(PB_ERR_NOMEM, "out of memory stacking %d x %d weights", total, in);
    char name[200];
    pb_status st = PB_OK;
    int off = 0;
    for (int i = 0; i < n; i++) {
        layer_name(name, sizeof name, layer, suffix[i], "weight", cfg->arch);
        PB_CHECK_GOTO(load_host(ws, w, name, 2, rows[i], in, field[i]), st, fail);
        memcpy(acc + (size_t)off * in, ws->tmp, (size_t)rows[i] * in * sizeof(float));
        if (bias) {
            layer_name(name, sizeof name, layer, suffix[i], "bias", cfg->arch);
            PB_CHECK_GOTO(load_host(ws, w, name, 1, rows[i], 0, field[i]), st, fail);
            memcpy(acc + nw + off, ws->tmp, (size_t)rows[i] * sizeof(float));
        }
        off += rows[i];
    }
    PB_CHECK_GOTO(ws_put(ws, acc, nw, &out->w), st, fail);
    out->b = NULL;
    if (bias)
        PB_CHECK_GOTO(ws_put(ws, acc + nw, (size_t)total, &out->b), st, fail);
    out->n_out = total;
    out->n_in = in;
fail:
    free(acc);
    return st;
}

static pb_status load_linear(pb_wstore *ws, const pb_model_config *cfg, const pb_weights *w, int layer,
                             const char *suffix, int n_out, int n_in, const char *field, bool conv1d, bool bias,
                             pb_linear *out)
{
    char name[200];
    layer_name(name, sizeof name, layer, suffix, "weight", cfg->arch);
    PB_CHECK(pb_adapter_matrix(ws, w, name, n_out, n_in, field, conv1d, &out->w));
    out->b = NULL;
    if (bias) {
        layer_name(name, sizeof name, layer, suffix, "bias", cfg->arch);
        PB_CHECK(pb_adapter_vector(ws, w, name, n_out, field, &out->b));
    }
    out->n_out = n_out;
    out->n_in = n_in;
    return PB_OK;
}

static pb_status load_norm(pb_wstore *ws, const pb_model_config *cfg, const pb_weights *w, int layer,
                           const char *suffix, const float **wt, const float **b)
{
    char name[200];
    layer_name(name, sizeof name, layer, suffix, "weight", cfg->arch);
    PB_CHECK(pb_adapter_vector(ws, w, name, cfg->hidden_size, "hidden_size", wt));
    *b = NULL;
    if (cfg->norm == PB_NORM_LAYERNORM) {
        layer_name(name, sizeof name, layer, suffix, "bias", cfg->arch);
        PB_CHECK(pb_adapter_vector(ws, w, name, cfg->hidden_size, "hidden_size", b));
    }
    return PB_OK;
}

pb_status pb_adapter_layer(pb_wstore *ws, const pb_model_config *cfg, const pb_weights *w, int layer,
                           pb_layer_w *L)
{
    const pb_family *f = pb_family_of(cfg->arch);
    if (!f)
        return pb_error(PB_ERR_UNSUPPORTED, "model_type '%s' has no adapter", cfg->model_type);
    const int H = cfg->hidden_size, qd = cfg->n_heads * cfg->head_dim, kvd = cfg->n_kv_heads * cfg->head_dim;
    const int I = cfg->intermediate_size;
    memset(L, 0, sizeof *L);
    PB_CHECK(load_norm(ws, cfg, w, layer, f->ln1, &L->ln1_w, &L->ln1_b));
    if (cfg->residual != PB_RESID_PARALLEL_SHARED) {
        if (!f->ln2)
            return pb_error(PB_ERR_UNSUPPORTED, "%s: only the parallel residual with one shared norm is handled",
                            cfg->model_type);
        PB_CHECK(load_norm(ws, cfg, w, layer, f->ln2, &L->ln2_w, &L->ln2_b));
    }
    if (f->qkv) {
        PB_CHECK(load_fused_qkv(ws, cfg, w, f, layer, L));
    } else {
        const char *const sfx[3] = {f->q, f->k, f->v};
        const int rows[3] = {qd, kvd, kvd};
        const char *const fld[3] = {"num_attention_heads * head_dim", "num_key_value_heads * head_dim",
                                    "num_key_value_heads * head_dim"};
        PB_CHECK(load_stacked(ws, cfg, w, layer, 3, sfx, rows, fld, H, cfg->qkv_bias, &L->qkv));
    }
    PB_CHECK(load_linear(ws, cfg, w, layer, f->o, H, qd, "hidden_size", f->conv1d, cfg->out_bias, &L->o));
    if (cfg->gated_mlp) {
        if (!f->gate)
            return pb_error(PB_ERR_UNSUPPORTED, "%s: a gated MLP is not handled for this family", cfg->model_type);
        const char *const sfx[2] = {f->gate, f->up};
        const int rows[2] = {I, I};
        const char *const fld[2] = {"intermediate_size", "intermediate_size"};
        PB_CHECK(load_stacked(ws, cfg, w, layer, 2, sfx, rows, fld, H, cfg->mlp_bias, &L->up));
        PB_CHECK(load_linear(ws, cfg, w, layer, f->down, H, I, "hidden_size", false, cfg->mlp_bias, &L->down));
    } else {
        if (!f->fc1)
            return pb_error(PB_ERR_UNSUPPORTED, "%s: a plain MLP is not handled for this family", cfg->model_type);
        PB_CHECK(load_linear(ws, cfg, w, layer, f->fc1, I, H, "intermediate_size", f->conv1d, cfg->mlp_bias, &L->up));
        PB_CHECK(load_linear(ws, cfg, w, layer, f->fc2, H, I, "hidden_size", f->conv1d, cfg->mlp_bias, &L->down));
    }
    return PB_OK;
}
