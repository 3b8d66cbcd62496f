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
    [PB_ARCH_MIXTRAL] = {.tok_emb = "embed_tokens", .final_norm = "norm", .lm_head = "lm_head",
                         .ln1 = "input_layernorm", .ln2 = "post_attention_layernorm", .q = "self_attn.q_proj",
                         .k = "self_attn.k_proj", .v = "self_attn.v_proj", .o = "self_attn.o_proj",
                         .gate = "mlp.gate_proj", .up = "mlp.up_proj", .down = "mlp.down_proj"},
};

const pb_family *pb_family_of(pb_arch arch)
{
    return (unsigned)arch < PB_ARCH_COUNT ? &families[arch] : NULL;
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

/* Canonical name of base + "." + kind; base is a layer suffix when layer >= 0. */
static void wname(char *buf, pb_arch arch, int layer, const char *base, const char *kind)
{
    char s[PB_NAME_CAP];
    snprintf(s, sizeof s, "%s.%s", base, kind);
    if (layer >= 0)
        pb_ckpt_layer_name(arch, layer, s, buf, PB_NAME_CAP);
    else
        snprintf(buf, PB_NAME_CAP, "%s", s);
}

static pb_status add_vec(item_list *l, const pb_model_config *cfg, pb_wslot slot, int layer, const char *base,
                         const char *kind, int n, const char *field)
{
    pb_witem *it = new_item(l, slot, layer, false);
    if (!it)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    wname(it->name[0], cfg->arch, layer, base, kind);
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
        wname(it->name[i], cfg->arch, layer, base[i], "weight");
        if (bias)
            wname(it->bias[i], cfg->arch, layer, base[i], "bias");
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
    if (cfg->norm == PB_NORM_LAYERNORM)
        PB_CHECK(add_vec(l, cfg, b, layer, base, "bias", n, "hidden_size"));
    return PB_OK;
}

/* Router and experts of a mixture-of-experts layer: expert e's gate|up
 * stacked [2 I, H] and down [H, I] (I = moe_intermediate_size). */
static pb_status moe_items(item_list *l, const pb_model_config *cfg, int layer)
{
    const pb_moe_names *m = pb_moe_names_of(cfg->arch);
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
    if (f->qkv) {
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
    PB_CHECK(add_lin1(l, cfg, PB_SLOT_O, layer, f->o, H, qd, "hidden_size", f->conv1d, cfg->out_bias));
    if (pb_model_layer_moe(cfg, layer))
        return moe_items(l, cfg, layer);
    if (cfg->gated_mlp) {
        if (!f->gate)
            return pb_error(PB_ERR_UNSUPPORTED, "%s: a gated MLP is not handled for this family", cfg->model_type);
        const char *const sfx[2] = {f->gate, f->up};
        const int rows[2] = {I, I};
        const char *const fld[2] = {"intermediate_size", "intermediate_size"};
        PB_CHECK(add_lin(l, cfg, PB_SLOT_UP, layer, 2, sfx, rows, fld, H, false, cfg->mlp_bias));
        PB_CHECK(add_lin1(l, cfg, PB_SLOT_DOWN, layer, f->down, H, I, "hidden_size", false, cfg->mlp_bias));
    } else {
        if (!f->fc1)
            return pb_error(PB_ERR_UNSUPPORTED, "%s: a plain MLP is not handled for this family", cfg->model_type);
        PB_CHECK(add_lin1(l, cfg, PB_SLOT_UP, layer, f->fc1, I, H, "intermediate_size", f->conv1d, cfg->mlp_bias));
        PB_CHECK(add_lin1(l, cfg, PB_SLOT_DOWN, layer, f->fc2, H, I, "hidden_size", f->conv1d, cfg->mlp_bias));
    }
    return PB_OK;
}

pb_status pb_adapter_items(const pb_model_config *cfg, int layer_begin, int layer_end, bool has_embed, bool has_head,
                           int pos_rows, pb_witem **items, int *n_items)
{
    *items = NULL;
    *n_items = 0;
    const pb_family *f = pb_family_of(cfg->arch);
    if (!f)
        return pb_error(PB_ERR_UNSUPPORTED, "model_type '%s' has no adapter", cfg->model_type);
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

/* Output row of source row r of a fused qkv, with outputs q (n_heads*hd) | k | v. */
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
        int part = rem / local, within = rem % local; /* part: 0 q, 1 v, 2 k */
        int j = part == 0 ? 0 : part == 1 ? 2 : 1;     /* -> q | k | v */
        return j * H + blk * local + within;
    }
    default:
        return r;
    }
}

void pb_adapter_qkv_perm(pb_qkv_layout lay, int n_heads, int head_dim, int *perm)
{
    const int rows = 3 * n_heads * head_dim;
    for (int r = 0; r < rows; r++)
        perm[qkv_dest_row(lay, r, n_heads, head_dim)] = r;
}

/* ---- loading ---- */

void pb_wstore_free(pb_wstore *ws)
{
    if (!ws)
        return;
    for (int i = 0; i < ws->n_bufs; i++)
        ws->be->ops->release(ws->be, ws->bufs[i]);
    for (int i = 0; i < ws->n_mats; i++)
        ws->be->ops->weight_free(ws->be, ws->mats[i]);
    free(ws->bufs);
    free(ws->mats);
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

static pb_status grow(pb_wstore *ws)
{
    if (ws->n_bufs < ws->cap_bufs && ws->n_mats < ws->cap_mats)
        return PB_OK;
    int c = ws->cap_bufs > ws->cap_mats ? ws->cap_bufs : ws->cap_mats;
    c = c ? 2 * c : 64;
    void **b = realloc(ws->bufs, (size_t)c * sizeof *b);
    if (b)
        ws->bufs = b;
    pb_weight **m = b ? realloc(ws->mats, (size_t)c * sizeof *m) : NULL;
    if (!b || !m)
        return pb_error(PB_ERR_NOMEM, "out of memory for the weight list");
    ws->mats = m;
    ws->cap_bufs = ws->cap_mats = c;
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

/* Tensor `name`, checked to be [d0] (ndim 1) or [d0, d1], of a float dtype, with its bytes. */
static pb_status get_tensor(const pb_weights *w, const char *name, int ndim, int64_t d0, int64_t d1,
                            const char *field, const pb_tensor **out)
{
    const pb_tensor *t = pb_weights_get(w, name);
    if (!t)
        return pb_error(PB_ERR_CONFIG, "tensor '%s' is missing from the checkpoint", name);
    if (t->dtype != PB_DT_F32 && t->dtype != PB_DT_F16 && t->dtype != PB_DT_BF16 && t->dtype != PB_DT_F64)
        return pb_error(PB_ERR_UNSUPPORTED, "tensor '%s': dtype %s is not supported (F32, F16, BF16, F64)", name,
                        pb_dtype_name(t->dtype));
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
    if (!t->data || t->nbytes < n * pb_dtype_size(t->dtype))
        return pb_error(PB_ERR_FORMAT, "tensor '%s': %zu bytes for %zu elements", name, t->nbytes, n);
    *out = t;
    return PB_OK;
}

static pb_status load_vector(pb_wstore *ws, const pb_weights *w, const pb_witem *it, const float **out)
{
    const pb_tensor *t;
    PB_CHECK(get_tensor(w, it->name[0], 1, it->n_out, 0, it->field[0], &t));
    PB_CHECK(ws_tmp(ws, (size_t)it->n_out));
    pb_convert_to_f32(ws->tmp, t->data, t->dtype, (size_t)it->n_out);
    pb_weights_release(w, t);
    PB_CHECK(grow(ws));
    void *p;
    size_t bytes = (size_t)it->n_out * sizeof(float);
    PB_CHECK(ws->be->ops->alloc(ws->be, bytes, &p));
    ws->bufs[ws->n_bufs++] = p;
    ws->bytes += (bytes + 63) & ~(size_t)63;
    PB_CHECK(ws->be->ops->upload(ws->be, p, ws->tmp, bytes));
    *out = p;
    return PB_OK;
}

static pb_status load_linear(pb_wstore *ws, const pb_weights *w, const pb_witem *it, pb_weight **out)
{
    pb_wpart parts[3];
    const pb_tensor *wt[3] = {NULL, NULL, NULL}, *bt[3] = {NULL, NULL, NULL};
    int *perm = NULL;
    float *bias = NULL;
    pb_status st = PB_OK;
    bool same = true, has_bias = it->bias[0][0] != '\0';
    *out = NULL;
    for (int i = 0; i < it->n_parts; i++) {
        if (it->conv1d)
            PB_CHECK(get_tensor(w, it->name[i], 2, it->n_in, it->rows[i], it->field[i], &wt[i]));
        else
            PB_CHECK(get_tensor(w, it->name[i], 2, it->rows[i], it->n_in, it->field[i], &wt[i]));
        parts[i] = (pb_wpart){.data = wt[i]->data, .dtype = wt[i]->dtype, .rows = it->rows[i],
                              .transposed = it->conv1d, .name = it->name[i]};
        same = same && wt[i]->dtype == wt[0]->dtype;
    }
    if (it->qkv_layout == PB_QKV_PER_HEAD || it->qkv_layout == PB_QKV_CODEGEN) {
        PB_CHECK_GOTO(pb_calloc((size_t)it->n_out, sizeof *perm, &perm), st, out);
        pb_adapter_qkv_perm(it->qkv_layout, it->n_heads, it->head_dim, perm);
    }
    if (has_bias) {
        PB_CHECK_GOTO(ws_tmp(ws, 2 * (size_t)it->n_out), st, out);
        int off = 0;
        for (int i = 0; i < it->n_parts; i++) {
            PB_CHECK_GOTO(get_tensor(w, it->bias[i], 1, it->rows[i], 0, it->field[i], &bt[i]), st, out);
            pb_convert_to_f32(ws->tmp + off, bt[i]->data, bt[i]->dtype, (size_t)it->rows[i]);
            off += it->rows[i];
        }
        bias = ws->tmp + it->n_out;
        for (int r = 0; r < it->n_out; r++)
            bias[r] = ws->tmp[perm ? perm[r] : r];
    }
    /* stored: as the checkpoint (mixed parts: f32); else the policy's dtype */
    pb_dtype store = pb_wdtype_resolve(ws->policy, same ? wt[0]->dtype : PB_DT_F32);
    pb_linear_src src = {.n_out = it->n_out, .n_in = it->n_in, .n_parts = it->n_parts, .parts = parts,
                         .row_perm = perm, .bias = bias};
    PB_CHECK_GOTO(grow(ws), st, out);
    PB_CHECK_GOTO(ws->be->ops->put_linear(ws->be, &src, store, out), st, out);
    ws->mats[ws->n_mats++] = *out;
    ws->bytes += (*out)->bytes;
    /* the backend holds its copy: the mapped pages can go */
    for (int i = 0; i < it->n_parts; i++) {
        pb_weights_release(w, wt[i]);
        if (bt[i])
            pb_weights_release(w, bt[i]);
    }
out:
    free(perm);
    return st;
}

pb_status pb_adapter_load(pb_wstore *ws, const pb_model_config *cfg, const pb_weights *w, const pb_witem *it,
                          const float **vec, pb_weight **mat)
{
    (void)cfg;
    if (it->linear)
        return load_linear(ws, w, it, mat);
    return load_vector(ws, w, it, vec);
}
