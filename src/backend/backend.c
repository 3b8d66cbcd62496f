/* Backend kinds and the weights-dtype policy: the one place that maps a
 * device name to a backend implementation. */
#include "config.h"
#include "backend/backend.h"

#include <stdio.h>
#include <string.h>

#include "cpu/cpu.h"
#include "cuda/cuda.h"

int pb_wdtype_parse(const char *s, pb_wdtype *out)
{
    if (strcmp(s, "stored") == 0)
        *out = PB_WDTYPE_STORED;
    else if (strcmp(s, "f32") == 0)
        *out = PB_WDTYPE_F32;
    else if (strcmp(s, "bf16") == 0)
        *out = PB_WDTYPE_BF16;
    else if (strcmp(s, "int8") == 0)
        *out = PB_WDTYPE_INT8;
    else
        return -1;
    return 0;
}

const char *pb_wdtype_name(pb_wdtype w)
{
    switch (w) {
    case PB_WDTYPE_F32: return "f32";
    case PB_WDTYPE_BF16: return "bf16";
    case PB_WDTYPE_INT8: return "int8";
    default: return "stored";
    }
}

pb_dtype pb_wdtype_resolve(pb_wdtype w, pb_dtype stored, bool router)
{
    switch (w) {
    case PB_WDTYPE_F32: return PB_DT_F32;
    case PB_WDTYPE_BF16: return PB_DT_BF16;
    case PB_WDTYPE_INT8:
        if (!router)
            return PB_DT_Q8;
        break; /* a router: as stored */
    default: break;
    }
    return stored == PB_DT_F16 || stored == PB_DT_BF16 || stored == PB_DT_F8_E4M3 ? stored : PB_DT_F32;
}

void pb_wpart_f8_row(const pb_wpart *p, int n_in, int r, int k0, int n, float *out)
{
    const size_t ssz = pb_dtype_size(p->scale_dtype), bc = (size_t)p->block_cols;
    const size_t nb = ((size_t)n_in + bc - 1) / bc;
    const unsigned char *q = (const unsigned char *)p->data + (size_t)r * (size_t)n_in;
    const unsigned char *sr = (const unsigned char *)p->scale + (size_t)(r / p->block_rows) * nb * ssz;
    for (int i = 0; i < n; i++) {
        const size_t k = (size_t)k0 + (size_t)i;
        float d;
        pb_convert_to_f32(&d, sr + k / bc * ssz, p->scale_dtype, 1);
        out[i] = pb_f8e4m3_to_f32(q[k]) * d;
    }
}

pb_status pb_wdtype_check(const pb_backend_ops *ops, pb_wdtype w)
{
    const pb_dtype dt = pb_wdtype_resolve(w, PB_DT_BF16, false);
    if (w == PB_WDTYPE_STORED || (ops->weight_dtypes & (1u << dt)))
        return PB_OK;
    return pb_error(PB_ERR_USAGE, "--weights-dtype %s: the %s backend keeps weights as %s", pb_wdtype_name(w),
                    ops->name, ops->weight_dtypes & (1u << PB_DT_Q8) ? "f32, f16, bf16 or int8" : "f32, f16 or bf16");
}

pb_status pb_wdtype_check_model(const pb_backend_ops *ops, pb_wdtype w, const pb_model_config *cfg)
{
    if (!cfg->fp8 || w != PB_WDTYPE_STORED || (ops->weight_dtypes & (1u << PB_DT_F8_E4M3)))
        return PB_OK;
    return pb_error(PB_ERR_USAGE, "an FP8 checkpoint (quant_method \"fp8\"): the %s backend does not keep F8_E4M3 "
                    "weights as stored; give --weights-dtype bf16 (or f32) to convert them at load", ops->name);
}

int pb_mmprec_parse(const char *s, pb_mmprec *out)
{
    if (strcmp(s, "f32") == 0)
        *out = PB_MMPREC_F32;
    else if (strcmp(s, "bf16") == 0)
        *out = PB_MMPREC_BF16;
    else if (strcmp(s, "bf16-amx") == 0)
        *out = PB_MMPREC_BF16_AMX;
    else
        return -1;
    return 0;
}

const char *pb_mmprec_name(pb_mmprec p)
{
    switch (p) {
    case PB_MMPREC_F32: return "f32";
    case PB_MMPREC_BF16: return "bf16";
    case PB_MMPREC_BF16_AMX: return "bf16-amx";
    default: return "default";
    }
}

pb_status pb_mmprec_select(const pb_backend_ops *ops, pb_mmprec p)
{
    if (p == PB_MMPREC_DEFAULT)
        return PB_OK;
    if (ops->set_matmul)
        return ops->set_matmul(p);
    if (p == PB_MMPREC_F32)
        return PB_OK;
    return pb_error(PB_ERR_UNSUPPORTED, "--matmul-precision %s: the %s backend multiplies in f32 only",
                    pb_mmprec_name(p), ops->name);
}

int pb_kvdtype_parse(const char *s, pb_kvdtype *out)
{
    static const char *const names[] = {"auto", "f32", "f16", "bf16"};
    for (int i = 0; i < 4; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = (pb_kvdtype)i;
            return 0;
        }
    return -1;
}

const char *pb_kvdtype_name(pb_kvdtype k)
{
    switch (k) {
    case PB_KVDTYPE_F32: return "f32";
    case PB_KVDTYPE_F16: return "f16";
    case PB_KVDTYPE_BF16: return "bf16";
    default: return "auto";
    }
}

pb_status pb_kvdtype_resolve(const pb_backend_ops *ops, pb_kvdtype k, pb_dtype *out)
{
    static const pb_dtype of[] = {PB_DT_F32, PB_DT_F32, PB_DT_F16, PB_DT_BF16};
    const pb_dtype dt = k == PB_KVDTYPE_AUTO ? ops->kv_dtype : of[k];
    if (ops->kv_dtypes & (1u << dt)) {
        *out = dt;
        return PB_OK;
    }
    char has[32] = "";
    for (int i = PB_KVDTYPE_F32; i <= PB_KVDTYPE_BF16; i++)
        if (ops->kv_dtypes & (1u << of[i]))
            snprintf(has + strlen(has), sizeof has - strlen(has), "%s%s", has[0] ? " or " : "",
                     pb_kvdtype_name((pb_kvdtype)i));
    return pb_error(PB_ERR_USAGE, "--kv-dtype %s: the %s backend keeps its KV cache in %s", pb_kvdtype_name(k),
                    ops->name, has);
}

const pb_backend_ops *pb_backend_ops_of(const char *kind)
{
    if (strcmp(kind, "cpu") == 0 || strcmp(kind, "auto") == 0)
        return pb_cpu_backend_ops();
    if (strcmp(kind, "cuda") == 0)
        return pb_cuda_backend_ops(); /* NULL in a build without CUDA */
    return NULL;
}

pb_status pb_backend_create(const char *kind, const pb_backend_opts *o, pb_backend **out)
{
    *out = NULL;
    int threads = o && o->threads > 0 ? o->threads : 1;
    if (strcmp(kind, "cpu") == 0 || strcmp(kind, "auto") == 0)
        return pb_cpu_backend_create(threads, out);
    if (strcmp(kind, "cuda") == 0) {
        PB_CHECK(pb_cuda_backend_create(o ? o->device : 0, out));
        (*out)->threads = threads; /* its host threads (host_run) */
        return PB_OK;
    }
    return pb_error(PB_ERR_USAGE, "backend '%s': unknown (cpu, cuda or auto)", kind);
}

int pb_attn_rows(const pb_attn_args *a)
{
    int T = 0;
    for (int s = 0; s < a->n_seqs; s++)
        if (a->n_tokens[s] > 0 && a->tok_start[s] + a->n_tokens[s] > T)
            T = a->tok_start[s] + a->n_tokens[s];
    return T;
}

pb_status pb_backend_rope_qk(pb_backend *be, const pb_attn_args *a, int T)
{
    const pb_backend_ops *op = be->ops;
    /* q and k are the caller's writable rows (pb_attn_args.rope) */
    float *q = (float *)(uintptr_t)a->q, *k = (float *)(uintptr_t)a->k;
    if (T <= 0)
        return PB_OK;
    if (k == q + (size_t)a->n_heads * a->head_dim && a->kv_stride == a->q_stride)
        return op->rope(be, q, a->q_stride, T, a->n_heads + a->n_kv_heads, a->head_dim, a->rope, a->rope_cs);
    PB_CHECK(op->rope(be, q, a->q_stride, T, a->n_heads, a->head_dim, a->rope, a->rope_cs));
    return op->rope(be, k, a->kv_stride, T, a->n_kv_heads, a->head_dim, a->rope, a->rope_cs);
}

pb_status pb_backend_attention(pb_backend *be, const pb_attn_args *a)
{
    const pb_backend_ops *op = be->ops;
    if (!a->rope || op->attn_rope)
        return op->attention(be, a);
    PB_CHECK(pb_backend_rope_qk(be, a, pb_attn_rows(a)));
    pb_attn_args b = *a;
    b.rope = NULL;
    b.rope_cs = NULL;
    return op->attention(be, &b);
}

pb_status pb_backend_glu_linear(pb_backend *be, pb_act act, float *mid, const float *gu, int ldgu, int rows, int n,
                                const pb_weight *w, float *y, int ldy)
{
    const pb_backend_ops *op = be->ops;
    if (op->glu_linear)
        return op->glu_linear(be, act, mid, gu, ldgu, rows, n, w, y, ldy);
    PB_CHECK(op->glu(be, act, mid, gu, ldgu, rows, n));
    return op->linear(be, mid, n, rows, w, y, ldy);
}

pb_status pb_backend_mlp_glu(pb_backend *be, pb_act act, const float *x, int ldx, int rows, const pb_weight *gu_w,
                             float *gu, int ldgu, float *mid, int n, const pb_weight *down, float *y, int ldy)
{
    const pb_backend_ops *op = be->ops;
    if (op->mlp_glu)
        return op->mlp_glu(be, act, x, ldx, rows, gu_w, gu, ldgu, mid, n, down, y, ldy);
    PB_CHECK(op->linear(be, x, ldx, rows, gu_w, gu, ldgu));
    return pb_backend_glu_linear(be, act, mid, gu, ldgu, rows, n, down, y, ldy);
}

void pb_backend_free(pb_backend *be)
{
    if (be)
        be->ops->free(be);
}
