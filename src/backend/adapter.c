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

pb_status pb_adapter_items(const pb_model_config *cfg, int layer_begin, int layer_end, bool has_embed, bool has_head,
                           int pos_rows, pb_witem **items, int *n_items)
{
    return pb_family_items(cfg, layer_begin, layer_end, has_embed, has_head, pos_rows, items, n_items);
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

/* Tensor `name`, checked to be [d0] (ndim 1) or [d0, d1], of a float dtype
 * (F8_E4M3 too where f8: an FP8 checkpoint's matrix), with its bytes. */
static pb_status get_tensor(const pb_weights *w, const char *name, int ndim, int64_t d0, int64_t d1,
                            const char *field, bool f8, const pb_tensor **out)
{
    const pb_tensor *t = pb_weights_get(w, name);
    if (!t)
        return pb_error(PB_ERR_CONFIG, "tensor '%s' is missing from the checkpoint", name);
    pb_weights_wait(w, t); /* its bytes read from the file (the loader's reader) */
    if (t->dtype != PB_DT_F32 && t->dtype != PB_DT_F16 && t->dtype != PB_DT_BF16 && t->dtype != PB_DT_F64 &&
        !(f8 && t->dtype == PB_DT_F8_E4M3))
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
    PB_CHECK(get_tensor(w, it->name[0], 1, it->n_out, 0, it->field[0], false, &t));
    PB_CHECK(ws_tmp(ws, (size_t)it->n_out));
    pb_convert_to_f32(ws->tmp, t->data, t->dtype, (size_t)it->n_out);
    if (it->add != 0)
        for (int i = 0; i < it->n_out; i++)
            ws->tmp[i] = it->add + ws->tmp[i];
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

/* An FP8 checkpoint's matrix t (F8_E4M3, [rows, n_in] as the part p uses
 * it): its scales `<name>` + cfg->fp8_scale (shape checked by the loader), finite,
 * >= 0 and small enough to scale by 256, and no NaN byte, into p. */
static pb_status f8_part(const pb_model_config *cfg, const pb_weights *w, const pb_witem *it, const pb_tensor *t,
                         const char *name, pb_wpart *p, const pb_tensor **scale)
{
    char sname[PB_NAME_CAP + 16];
    snprintf(sname, sizeof sname, "%s%s", name, cfg->fp8_scale);
    if (it->conv1d)
        return pb_error(PB_ERR_UNSUPPORTED, "tensor '%s': F8_E4M3 weights stored transposed (Conv1D) are not read",
                        name);
    const pb_tensor *s = pb_weights_get(w, sname);
    if (!s)
        return pb_error(PB_ERR_CONFIG, "tensor '%s' is F8_E4M3 but '%s' is missing from the checkpoint", name, sname);
    pb_weights_wait(w, s);
    if (s->dtype != PB_DT_F32 && s->dtype != PB_DT_BF16 && s->dtype != PB_DT_F16)
        return pb_error(PB_ERR_UNSUPPORTED, "tensor '%s': dtype %s is not supported for FP8 scales (F32, BF16, F16)",
                        sname, pb_dtype_name(s->dtype));
    const size_t n = (size_t)pb_tensor_numel(s);
    if (!s->data || s->nbytes < n * pb_dtype_size(s->dtype))
        return pb_error(PB_ERR_FORMAT, "tensor '%s': %zu bytes for %zu elements", sname, s->nbytes, n);
    const size_t es = pb_dtype_size(s->dtype);
    for (size_t i = 0; i < n; i++) {
        float d;
        pb_convert_to_f32(&d, (const unsigned char *)s->data + i * es, s->dtype, 1);
        if (!(d >= 0.0f && d <= 1e30f))
            return pb_error(PB_ERR_FORMAT, "tensor '%s': element %zu is %g, not a scale in [0, 1e30]",
                            s->name ? s->name : sname, i, (double)d);
    }
    const unsigned char *q = t->data;
    const size_t nq = (size_t)pb_tensor_numel(t);
    for (size_t i = 0; i < nq; i++)
        if ((q[i] & 0x7f) == 0x7f)
            return pb_error(PB_ERR_FORMAT, "tensor '%s': element %zu is an e4m3 NaN (byte 0x%02x)",
                            t->name ? t->name : name, i, q[i]);
    const int br = cfg->fp8_block[0], bc = cfg->fp8_block[1];
    p->scale = s->data;
    p->scale_dtype = s->dtype;
    p->block_rows = br ? br : it->n_out; /* 0: the whole dimension (every part's: q, k, v of other heights) */
    p->block_cols = bc ? bc : (it->n_in + 63) / 64 * 64;
    *scale = s;
    return PB_OK;
}

static pb_status load_linear(pb_wstore *ws, const pb_model_config *cfg, const pb_weights *w, const pb_witem *it,
                             pb_weight **out)
{
    pb_wpart parts[3];
    const pb_tensor *wt[3] = {NULL, NULL, NULL}, *bt[3] = {NULL, NULL, NULL}, *sc[3] = {NULL, NULL, NULL};
    int *perm = NULL;
    float *bias = NULL;
    pb_status st = PB_OK;
    bool same = true, has_bias = it->bias[0][0] != '\0';
    *out = NULL;
    for (int i = 0; i < it->n_parts; i++) {
        if (it->conv1d)
            PB_CHECK(get_tensor(w, it->name[i], 2, it->n_in, it->rows[i], it->field[i], cfg->fp8, &wt[i]));
        else
            PB_CHECK(get_tensor(w, it->name[i], 2, it->rows[i], it->n_in, it->field[i], cfg->fp8, &wt[i]));
        parts[i] = (pb_wpart){.data = wt[i]->data, .dtype = wt[i]->dtype, .rows = it->rows[i],
                              .transposed = it->conv1d, .name = it->name[i]};
        if (wt[i]->dtype == PB_DT_F8_E4M3)
            PB_CHECK(f8_part(cfg, w, it, wt[i], it->name[i], &parts[i], &sc[i]));
        /* FP8 parts kept as stored share one scale dtype (else their values, as f32) */
        same = same && wt[i]->dtype == wt[0]->dtype &&
               (wt[i]->dtype != PB_DT_F8_E4M3 || parts[i].scale_dtype == parts[0].scale_dtype);
    }
    if (it->qkv_layout == PB_QKV_PER_HEAD || it->qkv_layout == PB_QKV_CODEGEN) {
        PB_CHECK_GOTO(pb_calloc((size_t)it->n_out, sizeof *perm, &perm), st, out);
        pb_adapter_qkv_perm(it->qkv_layout, it->n_heads, it->head_dim, perm);
    }
    if (has_bias) {
        PB_CHECK_GOTO(ws_tmp(ws, 2 * (size_t)it->n_out), st, out);
        int off = 0;
        for (int i = 0; i < it->n_parts; i++) {
            PB_CHECK_GOTO(get_tensor(w, it->bias[i], 1, it->rows[i], 0, it->field[i], false, &bt[i]), st, out);
            pb_convert_to_f32(ws->tmp + off, bt[i]->data, bt[i]->dtype, (size_t)it->rows[i]);
            off += it->rows[i];
        }
        bias = ws->tmp + it->n_out;
        for (int r = 0; r < it->n_out; r++)
            bias[r] = ws->tmp[perm ? perm[r] : r];
    }
    /* stored: as the checkpoint (mixed parts: f32); else the policy's dtype */
    pb_dtype store = pb_wdtype_resolve(ws->policy, same ? wt[0]->dtype : PB_DT_F32, it->slot == PB_SLOT_ROUTER);
    if (!(ws->be->ops->weight_dtypes & (1u << store))) { /* FP8 as stored where the backend keeps no FP8 */
        st = pb_error(PB_ERR_USAGE, "tensor '%s' is %s: the %s backend does not keep it as stored; give "
                      "--weights-dtype bf16 (or f32) to convert it at load", it->name[0], pb_dtype_name(store),
                      ws->be->ops->name);
        goto out;
    }
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
        if (sc[i])
            pb_weights_release(w, sc[i]);
    }
out:
    free(perm);
    return st;
}

void pb_adapter_prefetch(const pb_weights *w, const pb_witem *it)
{
    if (!pb_weights_windowed(w)) /* the whole range is already being read: no name lookups */
        return;
    const int np = it->n_parts > 0 ? it->n_parts : 1;
    for (int i = 0; i < np && i < 3; i++) {
        pb_weights_prefetch(w, pb_weights_get(w, it->name[i]));
        if (it->linear && it->bias[i][0])
            pb_weights_prefetch(w, pb_weights_get(w, it->bias[i]));
    }
}

pb_status pb_adapter_load(pb_wstore *ws, const pb_model_config *cfg, const pb_weights *w, const pb_witem *it,
                          const float **vec, pb_weight **mat)
{
    if (it->linear)
        return load_linear(ws, cfg, w, it, mat);
    return load_vector(ws, w, it, vec);
}
