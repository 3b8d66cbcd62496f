// CUDA backend: the whole pb_backend_ops table on one GPU (kernels in
// kern_cuda.cu). One stream per backend; every op is enqueued on it and sync
// waits for it. Memory is device memory (host_memory = false); weights stay
// row-major [n_out, n_in] in their store dtype (PB_WLAYOUT_ROWS), converted
// on the host exactly as the CPU backend converts them and streamed to the
// device through two pinned staging buffers. The KV cache is bf16 by default
// (rounded to nearest even; --kv-dtype f16 the same size, --kv-dtype f32 or
// PB_CUDA_KV_DTYPE=f32 in the environment for the default: exact, twice the
// memory); attention computes in f32.
//
// Host arrays an op takes (attention's per-sequence arrays, select_rows'
// rows, rope angles) are packed on the host into one of ARG_SLOTS pinned
// slots, used in turn (a slot is rewritten only after the event of its last
// copy), and copied to the device scratch on the stream, so the host runs
// ahead of the GPU. Larger argument sets go through pageable memory, which
// cudaMemcpyAsync stages before returning (correct, but it may wait).
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cuda_runtime.h>

extern "C" {
#include "config.h"
#include "backend/backend.h"
#include "common/tensor.h"
#include "cuda/cuda.h"
}
#include "cuda/check.h"
#include "cuda/kern_cuda.cuh"
extern "C" {
#include "cpu/pool.h"
}

static_assert(PB_ACT_GELU_TANH == 0 && PB_ACT_GELU_ERF == 1 && PB_ACT_RELU == 2 && PB_ACT_SILU == 3 &&
                  PB_ACT_BLOOM_GELU == 4,
              "kern_cuda.cu's activation codes are the pb_act values");

#define STAGE_BYTES ((size_t)32 << 20) // each of the two pinned weight staging buffers
#define ARG_SLOTS 8
#define ARG_SLOT_BYTES ((size_t)256 << 10)

struct cuda_impl {
    int device;
    cudaStream_t stream;
    void *stage[2];           // pinned, STAGE_BYTES each (made at the first put_linear)
    cudaEvent_t stage_ev[2];  // the copy out of stage[i] is done
    void *scratch;            // device: op arguments (attention arrays, rows)
    size_t scratch_cap;
    int *flag;                // device: gather's out-of-range flag
    unsigned char *host;      // pageable host packing buffer for op arguments
    size_t host_cap;
    unsigned char *args;      // pinned, ARG_SLOTS slots of ARG_SLOT_BYTES
    cudaEvent_t args_ev[ARG_SLOTS]; // the copy out of slot i is done
    int args_next;            // the slot to use next
    int args_cur;             // the slot args_begin gave, -1: the pageable buffer
    bool tc_ok;               // the device has the m16n8k16 bf16/f16 mma (sm_80 on)
    void *part;               // device: attention's chunk results (flash-decoding; floats)
    size_t part_cap;
    void *xb;                 // device: x's rows rounded for the pipelined tensor-core kernel
    size_t xb_cap;
    void *samp;               // device: the sampler's rows, histories, masked ids, work and picks
    size_t samp_cap;
    pb_pool *host_pool;       // be->threads host threads for host_run (made at its first call), or NULL
    bool host_pool_failed;    // could not be made: host_run runs its items in turn
};

// --matmul-precision: bf16 and f16 weights' products on the tensor cores
// (default, or bf16: x rounded to the weight's type, f32 accumulation in a
// fixed order, batch-invariant), or exact f32 products for every weight
// (f32). f32 weights always take the exact products. Process-wide, as the
// CPU's setting.
static bool g_tc = true;

static const char *cuda_numerics(void) { return g_tc ? "dots=tc" : NULL; }

static pb_status cuda_set_matmul(pb_mmprec p)
{
    if (p == PB_MMPREC_BF16_AMX)
        return pb_error(PB_ERR_UNSUPPORTED, "--matmul-precision bf16-amx: the cuda backend has no AMX (bf16 or "
                        "default: its tensor cores; f32: exact products)");
    g_tc = p != PB_MMPREC_F32;
    return PB_OK;
}

static cuda_impl *impl_of(pb_backend *be) { return (cuda_impl *)be->impl; }

#define SET_DEVICE(c) PB_CUDA_CHECK(cudaSetDevice((c)->device))

static size_t round256(size_t n) { return (n + 255) & ~(size_t)255; }

static kc_dtype kc_of(pb_dtype dt) { return dt == PB_DT_BF16 ? KC_BF16 : dt == PB_DT_F16 ? KC_F16 : KC_F32; }

static pb_status host_reserve(cuda_impl *c, size_t bytes)
{
    if (bytes <= c->host_cap)
        return PB_OK;
    unsigned char *p = (unsigned char *)realloc(c->host, bytes);
    if (!p)
        return pb_error(PB_ERR_NOMEM, "cuda: out of host memory (%zu bytes of op arguments)", bytes);
    c->host = p;
    c->host_cap = bytes;
    return PB_OK;
}

// A host buffer of bytes to pack op arguments into, then args_send copies
// them to the device: a pinned slot when they fit, else the pageable buffer.
static pb_status args_begin(cuda_impl *c, size_t bytes, unsigned char **out)
{
    if (bytes <= ARG_SLOT_BYTES) {
        const int i = c->args_next;
        c->args_next = (i + 1) % ARG_SLOTS;
        PB_CUDA_CHECK(cudaEventSynchronize(c->args_ev[i])); // its last copy has read it
        c->args_cur = i;
        *out = c->args + (size_t)i * ARG_SLOT_BYTES;
        return PB_OK;
    }
    PB_CHECK(host_reserve(c, bytes));
    c->args_cur = -1;
    *out = c->host;
    return PB_OK;
}

static pb_status args_send(cuda_impl *c, void *dst, size_t bytes)
{
    const int i = c->args_cur;
    const unsigned char *src = i >= 0 ? c->args + (size_t)i * ARG_SLOT_BYTES : c->host;
    PB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->stream));
    if (i >= 0)
        PB_CUDA_CHECK(cudaEventRecord(c->args_ev[i], c->stream));
    return PB_OK;
}

// a device buffer of at least bytes at *buf (*cap its size); growing waits for the work that may still
// read the old one
static pb_status buf_reserve(cuda_impl *c, void **buf, size_t *cap, size_t bytes)
{
    if (bytes <= *cap)
        return PB_OK;
    PB_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    if (*buf) {
        PB_CUDA_CHECK(cudaFree(*buf));
        *buf = NULL;
        *cap = 0;
    }
    bytes = round256(bytes);
    PB_CUDA_CHECK(cudaMalloc(buf, bytes));
    *cap = bytes;
    return PB_OK;
}

// device scratch of at least bytes (op arguments)
static pb_status scratch_reserve(cuda_impl *c, size_t bytes)
{
    return buf_reserve(c, &c->scratch, &c->scratch_cap, bytes);
}

// ---- memory ----

static pb_status cuda_alloc(pb_backend *be, size_t bytes, void **out)
{
    cuda_impl *c = impl_of(be);
    *out = NULL;
    SET_DEVICE(c);
    void *p = NULL;
    cudaError_t e = cudaMalloc(&p, bytes ? bytes : 1);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        size_t fr = 0, tot = 0;
        if (cudaMemGetInfo(&fr, &tot) != cudaSuccess)
            (void)cudaGetLastError();
        return pb_error(e == cudaErrorMemoryAllocation ? PB_ERR_NOMEM : PB_ERR_DEVICE,
                        "CUDA device %d: cudaMalloc of %zu bytes failed: %s (%zu of %zu MiB free)", c->device, bytes,
                        cudaGetErrorString(e), fr >> 20, tot >> 20);
    }
    // zeroed (cudaMalloc's 256-byte alignment covers the interface's 64);
    // waited for, as another stream (a transport's) may use the buffer next
    e = cudaMemsetAsync(p, 0, bytes ? bytes : 1, c->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(c->stream);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        (void)cudaFree(p);
        PB_CUDA_CHECK(e);
    }
    *out = p;
    return PB_OK;
}

static void cuda_release(pb_backend *be, void *p)
{
    if (!p)
        return;
    cuda_impl *c = impl_of(be);
    // release happens at teardown: wait for work that may still use p
    if (cudaSetDevice(c->device) != cudaSuccess || cudaStreamSynchronize(c->stream) != cudaSuccess ||
        cudaFree(p) != cudaSuccess)
        (void)cudaGetLastError();
}

// A source in pinned (page-locked) host memory is read by the DMA after the
// call returns; the caller may reuse its buffer at once, so wait for it.
// Pageable memory is staged by cudaMemcpyAsync before it returns.
static pb_status wait_if_pinned(cuda_impl *c, const void *host)
{
    cudaPointerAttributes at;
    if (cudaPointerGetAttributes(&at, host) != cudaSuccess) {
        (void)cudaGetLastError();
        return PB_OK;
    }
    if (at.type == cudaMemoryTypeHost)
        PB_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return PB_OK;
}

static pb_status cuda_upload(pb_backend *be, void *dst, const void *host_src, size_t bytes)
{
    cuda_impl *c = impl_of(be);
    if (!bytes)
        return PB_OK;
    SET_DEVICE(c);
    PB_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, c->stream));
    return wait_if_pinned(c, host_src);
}

// complete when sync returns (pageable destinations: when this returns)
static pb_status cuda_download(pb_backend *be, void *host_dst, const void *src, size_t bytes)
{
    cuda_impl *c = impl_of(be);
    if (!bytes)
        return PB_OK;
    SET_DEVICE(c);
    PB_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    return PB_OK;
}

static pb_status cuda_copy(pb_backend *be, void *dst, const void *src, size_t bytes)
{
    cuda_impl *c = impl_of(be);
    if (!bytes || dst == src)
        return PB_OK;
    SET_DEVICE(c);
    const char *d = (const char *)dst, *s = (const char *)src;
    if (d < s + bytes && s < d + bytes) // overlapping (memmove): through the scratch
    {
        PB_CHECK(scratch_reserve(c, bytes));
        PB_CUDA_CHECK(cudaMemcpyAsync(c->scratch, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
        PB_CUDA_CHECK(cudaMemcpyAsync(dst, c->scratch, bytes, cudaMemcpyDeviceToDevice, c->stream));
        return PB_OK;
    }
    PB_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, c->stream));
    return PB_OK;
}

static pb_status cuda_sync(pb_backend *be)
{
    cuda_impl *c = impl_of(be);
    SET_DEVICE(c);
    PB_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return PB_OK;
}

// ---- weights ----

static uint64_t cuda_weight_bytes(pb_dtype store, int n_out, int n_in, bool bias)
{
    return round256((size_t)n_out * (size_t)n_in * pb_dtype_size(store)) +
           (bias ? round256((size_t)n_out * sizeof(float)) : 0);
}

static void cuda_weight_free(pb_backend *be, pb_weight *w)
{
    if (!w)
        return;
    cuda_release(be, w->impl);
    cuda_release(be, (void *)w->bias);
    free(w);
}

static float ld_f32(const unsigned char *p, pb_dtype dt)
{
    switch (dt) {
    case PB_DT_F32: {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    case PB_DT_F64: {
        double d;
        memcpy(&d, p, 8);
        return (float)d;
    }
    case PB_DT_BF16: {
        uint16_t h;
        memcpy(&h, p, 2);
        return pb_bf16_to_f32(h);
    }
    default: {
        uint16_t h;
        memcpy(&h, p, 2);
        return pb_f16_to_f32(h);
    }
    }
}

// elements k0 .. k1 of output row r (stacked row row_perm[r]) into dst in
// the store dtype: the same dtype moves the bits; anything else goes
// through the f32 value (f16/bf16 exact, f64 rounded), then f32 -> bf16/f16
// to nearest even, as the CPU backend's packing
static void convert_row(const pb_linear_src *s, int r, int k0, int k1, pb_dtype store, unsigned char *dst)
{
    int sr = s->row_perm ? s->row_perm[r] : r, q = 0;
    while (sr >= s->parts[q].rows)
        sr -= s->parts[q++].rows;
    const pb_wpart *p = &s->parts[q];
    const size_t ss = pb_dtype_size(p->dtype), es = pb_dtype_size(store);
    const unsigned char *base = (const unsigned char *)p->data;
    // element k of the part's row sr
    const size_t ks = p->transposed ? (size_t)p->rows * ss : ss;
    const unsigned char *row = base + (p->transposed ? (size_t)sr * ss : (size_t)sr * s->n_in * ss);
    if (p->dtype == store) {
        if (!p->transposed) {
            memcpy(dst, row + (size_t)k0 * ss, (size_t)(k1 - k0) * ss);
        } else {
            for (int k = k0; k < k1; k++)
                memcpy(dst + (size_t)(k - k0) * es, row + (size_t)k * ks, es);
        }
        return;
    }
    float f8v[256];
    for (int k = k0; k < k1; k++) {
        if (p->dtype == PB_DT_F8_E4M3 && (k - k0) % 256 == 0) // an FP8 checkpoint's values, 256 at a time
            pb_wpart_f8_row(p, s->n_in, sr, k, k1 - k < 256 ? k1 - k : 256, f8v);
        const float v = p->dtype == PB_DT_F8_E4M3 ? f8v[(k - k0) % 256] : ld_f32(row + (size_t)k * ks, p->dtype);
        unsigned char *d = dst + (size_t)(k - k0) * es;
        if (store == PB_DT_F32) {
            memcpy(d, &v, 4);
        } else {
            const uint16_t h = store == PB_DT_BF16 ? pb_f32_to_bf16(v) : pb_f32_to_f16(v);
            memcpy(d, &h, 2);
        }
    }
}

static pb_status stage_create(cuda_impl *c)
{
    for (int i = 0; i < 2; i++) {
        if (!c->stage[i])
            PB_CUDA_CHECK(cudaHostAlloc(&c->stage[i], STAGE_BYTES, cudaHostAllocDefault));
        if (!c->stage_ev[i])
            PB_CUDA_CHECK(cudaEventCreateWithFlags(&c->stage_ev[i], cudaEventDisableTiming));
    }
    return PB_OK;
}

// the rows of s in store dtype into dev [n_out, n_in]: the host converts
// into one staging buffer while the other's copy runs
static pb_status stream_rows(cuda_impl *c, const pb_linear_src *s, pb_dtype store, unsigned char *dev)
{
    PB_CHECK(stage_create(c));
    const size_t es = pb_dtype_size(store), per = STAGE_BYTES / es;
    const size_t total = (size_t)s->n_out * (size_t)s->n_in;
    int which = 0;
    for (size_t e0 = 0; e0 < total; e0 += per, which ^= 1) {
        const size_t e1 = total - e0 < per ? total : e0 + per;
        PB_CUDA_CHECK(cudaEventSynchronize(c->stage_ev[which])); // its previous copy is done
        unsigned char *buf = (unsigned char *)c->stage[which];
        for (size_t e = e0; e < e1;) {
            const int r = (int)(e / (size_t)s->n_in), k0 = (int)(e % (size_t)s->n_in);
            const size_t left = e1 - e;
            const int k1 = (size_t)(s->n_in - k0) <= left ? s->n_in : k0 + (int)left;
            convert_row(s, r, k0, k1, store, buf + (e - e0) * es);
            e += (size_t)(k1 - k0);
        }
        PB_CUDA_CHECK(cudaMemcpyAsync(dev + e0 * es, buf, (e1 - e0) * es, cudaMemcpyHostToDevice, c->stream));
        PB_CUDA_CHECK(cudaEventRecord(c->stage_ev[which], c->stream));
    }
    return PB_OK;
}

static pb_status cuda_put_linear(pb_backend *be, const pb_linear_src *s, pb_dtype store, pb_weight **out)
{
    cuda_impl *c = impl_of(be);
    *out = NULL;
    if (store != PB_DT_F32 && store != PB_DT_BF16 && store != PB_DT_F16)
        return pb_error(PB_ERR_UNSUPPORTED, "cuda: weights kept as %s are not supported (F32, F16, BF16)",
                        pb_dtype_name(store));
    int rows = 0;
    for (int i = 0; i < s->n_parts; i++) {
        const pb_wpart *p = &s->parts[i];
        if (p->dtype != PB_DT_F32 && p->dtype != PB_DT_F16 && p->dtype != PB_DT_BF16 && p->dtype != PB_DT_F64 &&
            p->dtype != PB_DT_F8_E4M3)
            return pb_error(PB_ERR_UNSUPPORTED, "cuda: tensor '%s' of dtype %s: weights must be F32, F16, BF16, F64 "
                            "or F8_E4M3",
                            p->name ? p->name : "?", pb_dtype_name(p->dtype));
        if (p->rows < 1 || !p->data)
            return pb_error(PB_ERR_INTERNAL, "cuda: tensor '%s': part %d is empty", p->name ? p->name : "?", i);
        rows += p->rows;
    }
    if (s->n_parts < 1 || rows != s->n_out || s->n_in < 1)
        return pb_error(PB_ERR_INTERNAL, "cuda: linear of %d x %d from %d parts of %d rows", s->n_out, s->n_in,
                        s->n_parts, rows);
    if (s->row_perm)
        for (int r = 0; r < s->n_out; r++)
            if (s->row_perm[r] < 0 || s->row_perm[r] >= s->n_out)
                return pb_error(PB_ERR_INTERNAL, "cuda: row_perm[%d] = %d outside [0, %d)", r, s->row_perm[r],
                                s->n_out);
    SET_DEVICE(c);
    pb_weight *w = (pb_weight *)calloc(1, sizeof *w);
    if (!w)
        return pb_error(PB_ERR_NOMEM, "out of memory");
    pb_status st = PB_OK;
    const size_t bytes = (size_t)s->n_out * (size_t)s->n_in * pb_dtype_size(store);
    void *m = NULL;
    cudaError_t e = cudaMalloc(&m, bytes);
    if (e != cudaSuccess) {
        (void)cudaGetLastError();
        st = pb_error(PB_ERR_NOMEM, "CUDA device %d: no memory for the %d x %d %s weight '%s' (%zu bytes): %s",
                      c->device, s->n_out, s->n_in, pb_dtype_name(store), s->parts[0].name ? s->parts[0].name : "?",
                      bytes, cudaGetErrorString(e));
        goto fail;
    }
    w->impl = m;
    PB_CHECK_GOTO(stream_rows(c, s, store, (unsigned char *)m), st, fail);
    if (s->bias) {
        float *b = NULL;
        PB_CHECK_GOTO(cuda_alloc(be, (size_t)s->n_out * sizeof(float), (void **)&b), st, fail);
        w->bias = b;
        PB_CHECK_GOTO(cuda_upload(be, b, s->bias, (size_t)s->n_out * sizeof(float)), st, fail);
    }
    w->dtype = store;
    w->layout = PB_WLAYOUT_ROWS;
    w->n_out = s->n_out;
    w->n_in = s->n_in;
    w->bytes = cuda_weight_bytes(store, s->n_out, s->n_in, s->bias != NULL);
    *out = w;
    return PB_OK;
fail:
    cuda_weight_free(be, w);
    return st;
}

// ---- scratch ----

// the split form's chunk results: each query's head's chunk's head_dim sums, its maximum and its total
static size_t attn_part_bytes(int T, int n_heads, int max_chunks, int head_dim)
{
    return (size_t)T * (size_t)n_heads * (size_t)max_chunks * (size_t)(head_dim + 2) * sizeof(float);
}

// the argument blob of one attention call: pointers, then ints, then floats
// attention's arguments: k[S], v[S] pointers; tok_start[S], pos[S], tok_seq[T], tiles[2 T]; alibi[n_heads]
static size_t attn_args_bytes(int n_seqs, int T, int n_heads)
{
    return round256((size_t)n_seqs * 2 * sizeof(void *) + ((size_t)n_seqs * 2 + (size_t)T * 3) * sizeof(int) +
                    (size_t)n_heads * sizeof(float));
}

static size_t rows_args_bytes(int n_rows) { return round256((size_t)n_rows * (sizeof(int) + sizeof(float))); }

static size_t sample_bytes(int rows, int n, int hist_ids, int mask_ids);

static int g_attn_chunk, g_attn_split = -1; // attention's chunk keys (0: not read yet) and form

// attention's chunk keys, PB_CUDA_ATTN_CHUNK and PB_CUDA_ATTN_SPLIT read at the first use (pb_cuda_attn_force
// sets them for the tests)
static int attn_chunk_keys(void)
{
    if (!g_attn_chunk) {
        g_attn_chunk = kc_env_int("PB_CUDA_ATTN_CHUNK", KC_ATTN_CHUNK, 1, 1 << 20);
        g_attn_split = kc_env_int("PB_CUDA_ATTN_SPLIT", -1, -1, 1);
    }
    return g_attn_chunk;
}

// The device memory of calls up to lim besides the stage's buffers, each the most any call asks: the op
// arguments (attention's arrays, rows), x's rows rounded for the tensor cores (bf16/f16 weights), the
// sampler's (the last stage: every slot's row with a history of max_keys ids) and attention's chunk results
// (the split form: fewer than 1024 queries x heads a call, 64 MiB at most). reserve allocates them all, so
// that a run the memory check lets through does not run out on its first sampled step or longest prompt.
struct cuda_sizes {
    size_t args, xb, samp, part;
};

static cuda_sizes sizes_for(const pb_backend_limits *lim)
{
    cuda_sizes z;
    const size_t a = attn_args_bytes(lim->max_seqs, lim->max_tokens, lim->max_heads);
    const size_t r = rows_args_bytes(lim->max_tokens);
    z.args = a > r ? a : r;
    z.xb = g_tc && lim->narrow_in > 0 ? round256(kc_linear_tc_scratch_max(lim->max_tokens, lim->narrow_in)) : 0;
    const bool samples = pb_cuda_backend_ops()->sample != NULL; // PB_CUDA_SAMPLE=0: the host samples
    z.samp = samples && lim->vocab > 0 ? round256(sample_bytes(lim->max_seqs, lim->vocab, lim->max_keys, 64)) : 0;
    const int chunk = attn_chunk_keys();
    const int chunks = (lim->max_keys + chunk - 1) / chunk;
    const int q = lim->max_heads > 0 ? 1023 / lim->max_heads : 0, qs = q < lim->max_tokens ? q : lim->max_tokens;
    const size_t part = chunks > 1 && qs > 0 ? attn_part_bytes(qs, lim->max_heads, chunks, lim->head_dim) : 0;
    z.part = part <= ((size_t)64 << 20) ? round256(part) : (size_t)64 << 20;
    return z;
}

static uint64_t cuda_scratch_bytes(int threads, const pb_backend_limits *lim)
{
    (void)threads;
    const cuda_sizes z = sizes_for(lim);
    return (uint64_t)z.args + z.xb + z.samp + z.part + 512; // and gather's flag, made with the backend
}

static pb_status cuda_reserve(pb_backend *be, const pb_backend_limits *lim)
{
    cuda_impl *c = impl_of(be);
    SET_DEVICE(c);
    const cuda_sizes z = sizes_for(lim);
    PB_CHECK(host_reserve(c, z.args));
    PB_CHECK(scratch_reserve(c, z.args));
    if (z.xb)
        PB_CHECK(buf_reserve(c, &c->xb, &c->xb_cap, z.xb));
    if (z.samp)
        PB_CHECK(buf_reserve(c, &c->samp, &c->samp_cap, z.samp));
    if (z.part)
        PB_CHECK(buf_reserve(c, &c->part, &c->part_cap, z.part));
    return PB_OK;
}

// ---- compute ----

static int g_attn_lane = -1;                 // attention's scores a key a thread (1), a warp's (0); -1: not read yet
static int g_attn_grp = -1; // a block a KV head's queries of a tile: 2 always, 1 from 1024 queries, 0 never; -1: unread

// the scores' form (kc_attn.lane_scores: the same bits); < 0: PB_CUDA_ATTN_LANE again (default 0 until the
// lane form is measured on a GPU)
extern "C" void pb_cuda_attn_scores(int lane)
{
    g_attn_lane = lane < 0 ? kc_env_int("PB_CUDA_ATTN_LANE", 0, 0, 1) : lane != 0;
}

// the grouped form (k_attention_grp: the same bits): 0 never, 1 where a call has 1024 queries or more (fewer
// would leave SMs idle in blocks of 8), 2 always; < 0: PB_CUDA_ATTN_GROUP again (default 1)
extern "C" void pb_cuda_attn_group(int on)
{
    g_attn_grp = on < 0 ? kc_env_int("PB_CUDA_ATTN_GROUP", 1, 0, 2) : on > 2 ? 2 : on;
}

extern "C" void pb_cuda_attn_force(int chunk, int split)
{
    g_attn_chunk = chunk > 0 ? chunk : kc_env_int("PB_CUDA_ATTN_CHUNK", KC_ATTN_CHUNK, 1, 1 << 20);
    g_attn_split = split < -1 ? -1 : split > 1 ? 1 : split;
}

#define LAUNCH(what, call)                                                                                             \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            (void)cudaGetLastError();                                                                                  \
            return pb_error(PB_ERR_DEVICE, "CUDA device %d: launch of %s failed at %s:%d: %s", c->device, (what),       \
                            __FILE__, __LINE__, cudaGetErrorString(e_));                                               \
        }                                                                                                              \
    } while (0)

// the weight's products go to the tensor cores: bf16/f16 weights, the GPU has them, not --matmul-precision f32
static bool tc_takes(const cuda_impl *c, const pb_weight *w)
{
    return g_tc && c->tc_ok && (w->dtype == PB_DT_BF16 || w->dtype == PB_DT_F16);
}

static pb_status cuda_linear(pb_backend *be, const float *x, int ldx, int M, const pb_weight *w, float *y, int ldy)
{
    cuda_impl *c = impl_of(be);
    SET_DEVICE(c);
    if (tc_takes(c, w)) {
        // x's rounded rows: grows to the largest call's (a round of rows at most)
        PB_CHECK(buf_reserve(c, &c->xb, &c->xb_cap, kc_linear_tc_scratch(M, w->n_in)));
        LAUNCH("linear (tensor cores)", kc_linear_tc(c->stream, x, ldx, M, w->impl, kc_of(w->dtype), w->bias, y, ldy,
                                                     w->n_out, w->n_in, c->xb, c->xb_cap));
    } else
        LAUNCH("linear", kc_linear(c->stream, x, ldx, M, w->impl, kc_of(w->dtype), w->bias, y, ldy, w->n_out,
                                   w->n_in));
    return PB_OK;
}

static pb_status cuda_gather(pb_backend *be, float *out, const pb_weight *table, const int32_t *ids, int T, int offset,
                             bool accumulate)
{
    cuda_impl *c = impl_of(be);
    if (T <= 0)
        return PB_OK;
    SET_DEVICE(c);
    PB_CUDA_CHECK(cudaMemsetAsync(c->flag, 0, sizeof(int), c->stream));
    LAUNCH("gather", kc_gather(c->stream, out, table->impl, kc_of(table->dtype), ids, T, offset, table->n_out,
                               table->n_in, accumulate, c->flag));
    int bad = 0;
    PB_CUDA_CHECK(cudaMemcpyAsync(&bad, c->flag, sizeof bad, cudaMemcpyDeviceToHost, c->stream));
    PB_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    if (!bad)
        return PB_OK;
    // name the first bad id
    PB_CHECK(host_reserve(c, (size_t)T * sizeof(int32_t)));
    PB_CUDA_CHECK(cudaMemcpyAsync(c->host, ids, (size_t)T * sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream));
    PB_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    for (int t = 0; t < T; t++) {
        int32_t id;
        memcpy(&id, c->host + (size_t)t * sizeof id, sizeof id);
        if (id < 0 || (int64_t)id + offset >= table->n_out)
            return pb_error(PB_ERR_INPUT, "gather: id %d (+ offset %d) at row %d is outside the table's %d rows",
                            (int)id, offset, t, table->n_out);
    }
    return pb_error(PB_ERR_INPUT, "gather: an id is outside the table's %d rows", table->n_out);
}

static pb_status cuda_norm(pb_backend *be, pb_norm kind, float *out, const float *x, int rows, int n, const float *w,
                          const float *b, float eps)
{
    cuda_impl *c = impl_of(be);
    SET_DEVICE(c);
    LAUNCH("norm", kc_norm(c->stream, kind == PB_NORM_RMSNORM, out, (float *)x, NULL, NULL, rows, n, w, b, eps));
    return PB_OK;
}

static pb_status cuda_add_norm(pb_backend *be, pb_norm kind, float *out, float *x, const float *a, const float *a2,
                               int rows, int n, const float *w, const float *b, float eps)
{
    cuda_impl *c = impl_of(be);
    SET_DEVICE(c);
    LAUNCH("add_norm", kc_norm(c->stream, kind == PB_NORM_RMSNORM, out, x, a, a2, rows, n, w, b, eps));
    return PB_OK;
}

static pb_status cuda_rope(pb_backend *be, float *x, int ld, int T, int n_heads, int head_dim, const pb_rope_desc *r,
                           const float *cs)
{
    cuda_impl *c = impl_of(be);
    SET_DEVICE(c);
    LAUNCH("rope", kc_rope(c->stream, x, ld, T, n_heads, head_dim, r->rot_dim / 2, r->style == PB_ROPE_INTERLEAVED,
                           cs));
    return PB_OK;
}

// on the host, as the CPU backend (the same f32 angle, glibc's cosf/sinf), then copied
static pb_status cuda_rope_angles(pb_backend *be, float *cs, const float *pos_scaled, int T, const float *inv_freq,
                                  int n_freq)
{
    cuda_impl *c = impl_of(be);
    const size_t n = (size_t)T * (size_t)n_freq * 2;
    if (!n)
        return PB_OK;
    SET_DEVICE(c);
    unsigned char *hb = NULL;
    PB_CHECK(args_begin(c, n * sizeof(float), &hb));
    float *h = (float *)(void *)hb;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < n_freq; i++) {
            const float a = pos_scaled[t] * inv_freq[i];
            h[((size_t)t * n_freq + i) * 2] = cosf(a);
            h[((size_t)t * n_freq + i) * 2 + 1] = sinf(a);
        }
    return args_send(c, cs, n * sizeof(float));
}

// the first key a query at position p sees: 0, or past a window of that many keys p - window + 1
static int attn_first_key(int window, int p) { return window > 0 && p - window + 1 > 0 ? p - window + 1 : 0; }

static pb_status cuda_attention(pb_backend *be, const pb_attn_args *a)
{
    cuda_impl *c = impl_of(be);
    if (a->n_heads <= 0 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads || a->head_dim <= 0)
        return pb_error(PB_ERR_INTERNAL, "attention: %d heads over %d KV heads of dim %d", a->n_heads, a->n_kv_heads,
                        a->head_dim);
    if (a->head_dim > KC_ATTN_MAX_HEAD_DIM)
        return pb_error(PB_ERR_UNSUPPORTED, "cuda: attention heads of %d dims (at most %d)", a->head_dim,
                        KC_ATTN_MAX_HEAD_DIM);
    if (a->kv_dtype != PB_DT_F32 && a->kv_dtype != PB_DT_BF16 && a->kv_dtype != PB_DT_F16)
        return pb_error(PB_ERR_INTERNAL, "cuda: a KV cache of %s (f32, bf16 or f16 here)", pb_dtype_name(a->kv_dtype));
    if (a->rope && (a->rope->rot_dim < 2 || a->rope->rot_dim % 2 || a->rope->rot_dim > a->head_dim || !a->rope_cs))
        return pb_error(PB_ERR_INTERNAL, "attention: rotary of %d dims in heads of %d", a->rope->rot_dim,
                        a->head_dim);
    const int S = a->n_seqs, T = pb_attn_rows(a);
    if (S <= 0 || T <= 0)
        return PB_OK;
    // the form (kern_cuda.cu; the same bits in each): chunks of keys, a block a chunk (flash-decoding) where
    // few queries would leave most SMs idle, else a block a KV head's queries of a tile of tokens (grouped)
    // or a block a query. PB_CUDA_ATTN_CHUNK (keys), PB_CUDA_ATTN_SPLIT=0|1 (never, always),
    // PB_CUDA_ATTN_GROUP and PB_CUDA_ATTN_LANE are for the tests and benchmarks.
    if (g_attn_lane < 0)
        pb_cuda_attn_scores(-1);
    if (g_attn_grp < 0)
        pb_cuda_attn_group(-1);
    int most = 1;
    for (int s = 0; s < S; s++)
        if (a->n_tokens[s] > 0) {
            const int p = a->pos[s] + a->n_tokens[s] - 1, keys = p + 1 - attn_first_key(a->window, p);
            most = keys > most ? keys : most;
        }
    const int chunk = attn_chunk_keys(), max_chunks = (most + chunk - 1) / chunk; // (g_attn_split read with it)
    const bool few = (size_t)T * (size_t)a->n_heads < 1024;
    const size_t part_bytes = attn_part_bytes(T, a->n_heads, max_chunks, a->head_dim);
    const bool split = max_chunks > 1 && max_chunks <= 65535 &&
                       (g_attn_split == 1 || (g_attn_split < 0 && few && part_bytes <= ((size_t)64 << 20)));
    const bool grouped = !split && !g_attn_lane && (g_attn_grp == 2 || (g_attn_grp == 1 && !few));
    SET_DEVICE(c);
    const size_t bytes = attn_args_bytes(S, T, a->n_heads);
    PB_CHECK(scratch_reserve(c, bytes));
    unsigned char *h = NULL;
    PB_CHECK(args_begin(c, bytes, &h));
    void **hk = (void **)(void *)h, **hv = hk + S;
    int *hts = (int *)(void *)(hv + S), *hpos = hts + S, *hseq = hpos + S, *htile = hseq + T;
    float *hal = (float *)(void *)(htile + 2 * (size_t)T);
    for (int s = 0; s < S; s++) {
        hk[s] = a->k_cache[s];
        hv[s] = a->v_cache[s];
        hts[s] = a->tok_start[s];
        hpos[s] = a->pos[s];
    }
    for (int t = 0; t < T; t++)
        hseq[t] = -1;
    for (int s = 0; s < S; s++)
        for (int i = 0; i < a->n_tokens[s]; i++)
            hseq[a->tok_start[s] + i] = s;
    if (a->alibi)
        memcpy(hal, a->alibi, (size_t)a->n_heads * sizeof(float));
    // the grouped form's tiles: runs of up to qb / (heads a block) tokens of a sequence whose first key is 0
    // (past a window's length it moves with each token: such tokens are tiles of one)
    const int G = a->n_heads / a->n_kv_heads, qb = KC_ATTN_GROUP_QUERIES(a->head_dim);
    const int grp_heads = G < qb ? G : qb, tile_tokens = qb / grp_heads;
    int n_tiles = 0, widest = 0;
    for (int s = 0; grouped && s < S; s++)
        for (int i = 0, n; i < a->n_tokens[s]; i += n) {
            const int p = a->pos[s] + i;
            for (n = 1; n < tile_tokens && i + n < a->n_tokens[s] && attn_first_key(a->window, p + n) == 0; n++)
                ;
            htile[2 * n_tiles] = a->tok_start[s] + i;
            htile[2 * n_tiles + 1] = n;
            n_tiles++;
            widest = n > widest ? n : widest;
        }
    PB_CHECK(args_send(c, c->scratch, bytes));
    unsigned char *d = (unsigned char *)c->scratch;
    kc_attn k;
    k.n_seqs = S;
    k.T = T;
    k.k_cache = (void *const *)(void *)d;
    k.v_cache = (void *const *)(void *)(d + (size_t)S * sizeof(void *));
    k.tok_start = (const int *)(void *)(d + (size_t)2 * S * sizeof(void *));
    k.pos = k.tok_start + S;
    k.tok_seq = k.pos + S;
    k.tiles = k.tok_seq + T;
    k.n_tiles = n_tiles;
    k.alibi = a->alibi ? (const float *)(const void *)(k.tiles + 2 * (size_t)T) : NULL;
    k.q = a->q;
    k.k = a->k;
    k.v = a->v;
    k.q_stride = a->q_stride;
    k.kv_stride = a->kv_stride;
    k.out = a->out;
    k.n_heads = a->n_heads;
    k.n_kv_heads = a->n_kv_heads;
    k.head_dim = a->head_dim;
    k.scale = a->scale;
    k.window = a->window;
    k.softcap = a->softcap;
    k.kv_dt = a->kv_dtype == PB_DT_F32 ? KC_F32 : a->kv_dtype == PB_DT_F16 ? KC_F16 : KC_BF16;
    k.lane_scores = g_attn_lane;
    k.grp_heads = grouped && (grp_heads > 1 || widest > 1) ? grp_heads : 0; // more than one query a block
    k.chunk = chunk;
    k.max_chunks = max_chunks;
    // rotated as the keys are stored (pb_attn_args.rope), or where PB_CUDA_ATTN_ROPE=0 by kc_rope first (the
    // same bits, a launch more: for the benchmarks)
    static const int rope_in = kc_env_int("PB_CUDA_ATTN_ROPE", 1, 0, 1);
    const pb_rope_desc *rope = a->rope;
    if (rope && !rope_in) {
        PB_CHECK(pb_backend_rope_qk(be, a, T));
        rope = NULL;
    }
    k.rope_cs = rope ? a->rope_cs : NULL;
    k.rope_half = rope ? rope->rot_dim / 2 : 0;
    k.rope_inter = rope && rope->style == PB_ROPE_INTERLEAVED;
    k.part = NULL;
    if (split) {
        PB_CHECK(buf_reserve(c, &c->part, &c->part_cap, part_bytes));
        k.part = (float *)c->part;
    }
    LAUNCH("attention", kc_attention(c->stream, &k));
    return PB_OK;
}

static pb_status cuda_argmax(pb_backend *be, const float *x, int rows, int n, int ld, const int32_t *mask_ids,
                             int n_mask, const uint8_t *mask_rows, int32_t *ids)
{
    cuda_impl *c = impl_of(be);
    if (rows <= 0)
        return PB_OK;
    if (n_mask < 0 || (n_mask > 0 && !mask_ids))
        return pb_error(PB_ERR_INTERNAL, "argmax: %d masked ids", n_mask);
    SET_DEVICE(c);
    // scratch: mask ids, mask rows (when any), then the picks
    const size_t a_ids = (size_t)n_mask * sizeof(int32_t), a_rows = mask_rows ? (size_t)rows : 0;
    const size_t args = round256(a_ids + a_rows), bytes = args + (size_t)rows * sizeof(int32_t);
    PB_CHECK(scratch_reserve(c, bytes));
    unsigned char *d = (unsigned char *)c->scratch;
    if (a_ids + a_rows) {
        unsigned char *h = NULL;
        PB_CHECK(args_begin(c, a_ids + a_rows, &h));
        if (a_ids)
            memcpy(h, mask_ids, a_ids);
        if (a_rows)
            memcpy(h + a_ids, mask_rows, a_rows);
        PB_CHECK(args_send(c, d, a_ids + a_rows));
    }
    int32_t *dids = (int32_t *)(void *)(d + args);
    LAUNCH("argmax", kc_argmax(c->stream, x, rows, n, ld, a_ids ? (const int32_t *)(void *)d : NULL, n_mask,
                               a_rows ? d + a_ids : NULL, dids));
    PB_CUDA_CHECK(cudaMemcpyAsync(ids, dids, (size_t)rows * sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream));
    PB_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return PB_OK;
}

// Sampled picks: the rows' settings, the histories of the rows with a repetition penalty and the masked ids
// go over in one copy; the rows are sampled in launches of at most SAMPLE_WORK_BYTES of work, then the picks
// come back
#define SAMPLE_WORK_BYTES ((size_t)256 << 20)

static int sample_rows_a_launch(int rows, int n)
{
    const size_t fit = SAMPLE_WORK_BYTES / kc_sample_work_bytes(n);
    return fit < 1 ? 1 : fit > (size_t)rows ? rows : (int)fit;
}

// c->samp's bytes for a call of rows rows of n logits, hist_ids history ids a row and mask_ids masked ids
// (cuda_sample's layout: the rows, the histories, the masked ids, the work, the picks)
static size_t sample_bytes(int rows, int n, int hist_ids, int mask_ids)
{
    const size_t args = round256((size_t)rows * sizeof(kc_sample_row)) +
                        round256((size_t)rows * (size_t)hist_ids * sizeof(int32_t)) + (size_t)mask_ids * sizeof(int32_t);
    return round256(args) + (size_t)sample_rows_a_launch(rows, n) * kc_sample_work_bytes(n) +
           (size_t)rows * sizeof(int32_t);
}

// a row's history goes over where a penalty reads it
static bool row_needs_hist(const pb_sample_row *q)
{
    return q->repetition_penalty != 1.0f || q->frequency_penalty != 0.0f || q->presence_penalty != 0.0f;
}

static pb_status cuda_sample(pb_backend *be, const float *x, int rows, int n, int ld, const pb_sample_row *row,
                             const int32_t *mask_ids, int n_mask, int32_t *ids)
{
    cuda_impl *c = impl_of(be);
    if (rows <= 0)
        return PB_OK;
    if (n <= 0 || ld < n || n_mask < 0 || (n_mask > 0 && !mask_ids))
        return pb_error(PB_ERR_INTERNAL, "sample: %d logits a row (stride %d), %d masked ids", n, ld, n_mask);
    SET_DEVICE(c);
    size_t n_hist = 0;
    for (int r = 0; r < rows; r++) {
        if (row[r].n_hist < 0 || (row[r].n_hist > 0 && !row[r].hist))
            return pb_error(PB_ERR_INTERNAL, "sample: row %d has a history of %d ids", r, (int)row[r].n_hist);
        n_hist += row_needs_hist(&row[r]) ? (size_t)row[r].n_hist : 0;
    }
    if (n_hist > (size_t)INT32_MAX)
        return pb_error(PB_ERR_INTERNAL, "sample: %zu history ids", n_hist);
    const size_t a_rows = round256((size_t)rows * sizeof(kc_sample_row)), a_hist = round256(n_hist * sizeof(int32_t));
    const size_t a_mask = (size_t)n_mask * sizeof(int32_t), args = a_rows + a_hist + a_mask;
    const size_t wrow = kc_sample_work_bytes(n);
    const int per = sample_rows_a_launch(rows, n);
    const size_t o_work = round256(args), o_ids = o_work + (size_t)per * wrow;
    PB_CHECK(buf_reserve(c, &c->samp, &c->samp_cap, o_ids + (size_t)rows * sizeof(int32_t)));
    unsigned char *h = NULL, *d = (unsigned char *)c->samp;
    PB_CHECK(args_begin(c, args, &h));
    kc_sample_row *kr = (kc_sample_row *)(void *)h;
    int32_t *kh = (int32_t *)(void *)(h + a_rows);
    size_t at = 0;
    for (int r = 0; r < rows; r++) {
        const pb_sample_row *q = &row[r];
        kc_sample_row k;
        memset(&k, 0, sizeof k);
        k.temperature = q->temperature;
        k.top_p = q->top_p;
        k.min_p = q->min_p;
        k.rep = q->repetition_penalty;
        k.freq = q->frequency_penalty;
        k.pres = q->presence_penalty;
        k.prompt_len = q->prompt_len;
        k.top_k = q->top_k;
        k.masked = q->masked != 0;
        k.hist_off = (int)at;
        k.n_hist = row_needs_hist(q) ? q->n_hist : 0;
        if (k.n_hist)
            memcpy(kh + at, q->hist, (size_t)k.n_hist * sizeof(int32_t));
        at += (size_t)k.n_hist;
        // pb_rng_uniform's counter (record, step) and key (seed)
        k.ctr[0] = (unsigned)q->record;
        k.ctr[1] = (unsigned)(q->record >> 32);
        k.ctr[2] = (unsigned)q->step;
        k.ctr[3] = (unsigned)(q->step >> 32);
        k.key[0] = (unsigned)q->seed;
        k.key[1] = (unsigned)(q->seed >> 32);
        memcpy(kr + r, &k, sizeof k);
    }
    if (a_mask)
        memcpy(h + a_rows + a_hist, mask_ids, a_mask);
    PB_CHECK(args_send(c, d, args));
    int32_t *dids = (int32_t *)(void *)(d + o_ids);
    for (int r0 = 0; r0 < rows; r0 += per) {
        const int nr = rows - r0 < per ? rows - r0 : per;
        LAUNCH("sample", kc_sample(c->stream, x + (size_t)r0 * (size_t)ld, nr, n, ld,
                                   (const kc_sample_row *)(void *)d + r0, (const int32_t *)(void *)(d + a_rows),
                                   a_mask ? (const int32_t *)(void *)(d + a_rows + a_hist) : NULL, n_mask, d + o_work,
                                   dids + r0));
    }
    PB_CUDA_CHECK(cudaMemcpyAsync(ids, dids, (size_t)rows * sizeof(int32_t), cudaMemcpyDeviceToHost, c->stream));
    PB_CUDA_CHECK(cudaStreamSynchronize(c->stream));
    return PB_OK;
}

static pb_status cuda_act(pb_backend *be, pb_act act, float *x, int ld, int rows, int n)
{
    cuda_impl *c = impl_of(be);
    SET_DEVICE(c);
    LAUNCH("act", kc_act(c->stream, (int)act, x, ld, rows, n));
    return PB_OK;
}

static pb_status cuda_glu(pb_backend *be, pb_act act, float *out, const float *gu, int ldgu, int rows, int n)
{
    cuda_impl *c = impl_of(be);
    SET_DEVICE(c);
    LAUNCH("glu", kc_glu(c->stream, (int)act, out, gu, ldgu, rows, n));
    return PB_OK;
}

// y = glu(gu) W^T: on the tensor cores the activation is taken as the product loads (or rounds) its x, one
// launch fewer (the same bits: kc_linear_tc_glu); elsewhere glu into mid, then linear
static pb_status cuda_glu_linear(pb_backend *be, pb_act act, float *mid, const float *gu, int ldgu, int rows, int n,
                                 const pb_weight *w, float *y, int ldy)
{
    cuda_impl *c = impl_of(be);
    SET_DEVICE(c);
    if (tc_takes(c, w) && w->n_in == n) {
        PB_CHECK(buf_reserve(c, &c->xb, &c->xb_cap, kc_linear_tc_scratch(rows, n)));
        const cudaError_t e = kc_linear_tc_glu(c->stream, (int)act, gu, ldgu, rows, w->impl, kc_of(w->dtype), w->bias,
                                               y, ldy, w->n_out, n, c->xb, c->xb_cap);
        if (e != cudaErrorNotSupported) {
            LAUNCH("glu, linear (tensor cores)", e);
            return PB_OK;
        }
    }
    PB_CHECK(cuda_glu(be, act, mid, gu, ldgu, rows, n));
    return cuda_linear(be, mid, n, rows, w, y, ldy);
}

static pb_status cuda_add(pb_backend *be, float *y, const float *x, const float *x2, size_t n)
{
    cuda_impl *c = impl_of(be);
    SET_DEVICE(c);
    LAUNCH("add", kc_add(c->stream, y, x, x2, n));
    return PB_OK;
}

// rows (and weights) into the scratch: ints, then floats
static pb_status rows_upload(cuda_impl *c, const int *rows, const float *w, int n_rows, int **drows, float **dw)
{
    const size_t bytes = rows_args_bytes(n_rows);
    PB_CHECK(scratch_reserve(c, bytes));
    unsigned char *h = NULL;
    PB_CHECK(args_begin(c, bytes, &h));
    memcpy(h, rows, (size_t)n_rows * sizeof(int));
    if (w)
        memcpy(h + (size_t)n_rows * sizeof(int), w, (size_t)n_rows * sizeof(float));
    PB_CHECK(args_send(c, c->scratch, (size_t)n_rows * (sizeof(int) + (w ? sizeof(float) : 0))));
    *drows = (int *)c->scratch;
    if (dw)
        *dw = (float *)(void *)((unsigned char *)c->scratch + (size_t)n_rows * sizeof(int));
    return PB_OK;
}

static pb_status cuda_select_rows(pb_backend *be, float *dst, const float *src, int n, const int *rows, int n_rows)
{
    cuda_impl *c = impl_of(be);
    if (n_rows <= 0)
        return PB_OK;
    SET_DEVICE(c);
    int *dr = NULL;
    PB_CHECK(rows_upload(c, rows, NULL, n_rows, &dr, NULL));
    LAUNCH("select_rows", kc_select_rows(c->stream, dst, src, n, dr, n_rows));
    return PB_OK;
}

static pb_status cuda_scatter_add(pb_backend *be, float *y, const float *x, int n, const int *rows, const float *w,
                                  int n_rows)
{
    cuda_impl *c = impl_of(be);
    if (n_rows <= 0)
        return PB_OK;
    SET_DEVICE(c);
    int *dr = NULL;
    float *dw = NULL;
    PB_CHECK(rows_upload(c, rows, w, n_rows, &dr, &dw));
    LAUNCH("scatter_add", kc_scatter_add(c->stream, y, x, n, dr, dw, n_rows));
    return PB_OK;
}

static pb_status cuda_scale(pb_backend *be, float *x, size_t n, float s)
{
    cuda_impl *c = impl_of(be);
    SET_DEVICE(c);
    LAUNCH("scale", kc_scale(c->stream, x, n, s));
    return PB_OK;
}

static pb_status cuda_softcap(pb_backend *be, float *x, size_t n, float cap)
{
    cuda_impl *c = impl_of(be);
    SET_DEVICE(c);
    LAUNCH("softcap", kc_softcap(c->stream, x, n, cap));
    return PB_OK;
}

static pb_status cuda_head_norm(pb_backend *be, float *x, int ld, int T, int n_heads, int head_dim, const float *w,
                                float eps)
{
    cuda_impl *c = impl_of(be);
    SET_DEVICE(c);
    LAUNCH("head_norm", kc_head_norm(c->stream, x, ld, T, n_heads, head_dim, w, eps));
    return PB_OK;
}

// ---- lifetime ----

static void cuda_free(pb_backend *be)
{
    if (!be)
        return;
    cuda_impl *c = impl_of(be);
    if (c) {
        // errors here have nowhere to go: clear them and release the rest
        if (cudaSetDevice(c->device) != cudaSuccess)
            (void)cudaGetLastError();
        if (c->stream && cudaStreamSynchronize(c->stream) != cudaSuccess)
            (void)cudaGetLastError();
        for (int i = 0; i < 2; i++) {
            if (c->stage[i] && cudaFreeHost(c->stage[i]) != cudaSuccess)
                (void)cudaGetLastError();
            if (c->stage_ev[i] && cudaEventDestroy(c->stage_ev[i]) != cudaSuccess)
                (void)cudaGetLastError();
        }
        for (int i = 0; i < ARG_SLOTS; i++)
            if (c->args_ev[i] && cudaEventDestroy(c->args_ev[i]) != cudaSuccess)
                (void)cudaGetLastError();
        if (c->args && cudaFreeHost(c->args) != cudaSuccess)
            (void)cudaGetLastError();
        if (c->scratch && cudaFree(c->scratch) != cudaSuccess)
            (void)cudaGetLastError();
        if (c->flag && cudaFree(c->flag) != cudaSuccess)
            (void)cudaGetLastError();
        if (c->part && cudaFree(c->part) != cudaSuccess)
            (void)cudaGetLastError();
        pb_pool_free(c->host_pool);
        if (c->xb && cudaFree(c->xb) != cudaSuccess)
            (void)cudaGetLastError();
        if (c->samp && cudaFree(c->samp) != cudaSuccess)
            (void)cudaGetLastError();
        if (c->stream && cudaStreamDestroy(c->stream) != cudaSuccess)
            (void)cudaGetLastError();
        free(c->host);
        free(c);
    }
    free(be);
}

// the KV cache is [cache_len, n_kv_heads * head_dim] rows of kv
static uint64_t cuda_kv_bytes(pb_dtype kv, int cache_len, int n_kv_heads, int head_dim)
{
    return (uint64_t)cache_len * (uint64_t)n_kv_heads * (uint64_t)head_dim * (uint64_t)pb_dtype_size(kv);
}

// a shared prompt prefix, a beam's parent: rows [from, n) of K and of V (those before from already the same)
static pb_status cuda_kv_copy(pb_backend *be, pb_dtype kv, int cache_len, int n_kv_heads, int head_dim, void *dst_k,
                              void *dst_v, const void *src_k, const void *src_v, int from, int n)
{
    n = n < cache_len ? n : cache_len;
    from = from < 0 ? 0 : from;
    if (n <= from)
        return PB_OK;
    const size_t off = (size_t)cuda_kv_bytes(kv, from, n_kv_heads, head_dim);
    const size_t bytes = (size_t)cuda_kv_bytes(kv, n, n_kv_heads, head_dim) - off;
    PB_CHECK(cuda_copy(be, (char *)dst_k + off, (const char *)src_k + off, bytes));
    return cuda_copy(be, (char *)dst_v + off, (const char *)src_v + off, bytes);
}

// host work (the sampler's rows) on be->threads host threads, made at the first call; in turn without them
static void cuda_host_run(pb_backend *be, int n_items, void (*fn)(void *ctx, int item, int worker), void *ctx)
{
    cuda_impl *c = impl_of(be);
    if (!c->host_pool && !c->host_pool_failed && be->threads > 1 && n_items > 1) {
        if (pb_pool_create(be->threads, &c->host_pool) != PB_OK) {
            c->host_pool = NULL;
            c->host_pool_failed = true;
        }
    }
    if (c->host_pool) {
        pb_pool_run(c->host_pool, n_items, fn, ctx);
        return;
    }
    for (int i = 0; i < n_items; i++)
        fn(ctx, i, 0);
}

static pb_backend_ops make_ops(void)
{
    pb_backend_ops o;
    memset(&o, 0, sizeof o);
    o.name = "cuda";
    o.numerics = cuda_numerics;
    o.set_matmul = cuda_set_matmul;
    // read once, before main: the planner and every backend see one value
    const char *kv = getenv("PB_CUDA_KV_DTYPE");
    o.kv_dtype = kv && strcmp(kv, "f32") == 0 ? PB_DT_F32 : PB_DT_BF16;
    o.kv_dtypes = 1u << PB_DT_F32 | 1u << PB_DT_BF16 | 1u << PB_DT_F16;
    o.weight_dtypes = 1u << PB_DT_F32 | 1u << PB_DT_BF16 | 1u << PB_DT_F16;
    o.kv_bytes = cuda_kv_bytes;
    o.host_memory = false;
    o.free = cuda_free;
    o.alloc = cuda_alloc;
    o.release = cuda_release;
    o.upload = cuda_upload;
    o.download = cuda_download;
    o.copy = cuda_copy;
    o.sync = cuda_sync;
    o.weight_bytes = cuda_weight_bytes;
    o.put_linear = cuda_put_linear;
    o.weight_free = cuda_weight_free;
    o.scratch_bytes = cuda_scratch_bytes;
    o.reserve = cuda_reserve;
    o.linear = cuda_linear;
    o.gather = cuda_gather;
    o.norm = cuda_norm;
    o.add_norm = cuda_add_norm;
    o.rope = cuda_rope;
    o.rope_angles = cuda_rope_angles;
    o.attention = cuda_attention;
    o.attn_rope = true;
    o.kv_copy = cuda_kv_copy;
    o.act = cuda_act;
    o.glu = cuda_glu;
    o.glu_linear = cuda_glu_linear;
    o.add = cuda_add;
    o.select_rows = cuda_select_rows;
    o.scatter_add = cuda_scatter_add;
    o.scale = cuda_scale;
    o.softcap = cuda_softcap;
    o.head_norm = cuda_head_norm;
    o.argmax = cuda_argmax;
    // PB_CUDA_SAMPLE=0: sampled rows' logits go to the host sampler (for comparisons)
    o.sample = kc_env_int("PB_CUDA_SAMPLE", 1, 0, 1) ? cuda_sample : NULL;
    o.host_run = cuda_host_run;
    return o;
}

static const pb_backend_ops cuda_ops = make_ops();

extern "C" const pb_backend_ops *pb_cuda_backend_ops(void) { return &cuda_ops; }

extern "C" pb_status pb_cuda_backend_create(int device, pb_backend **out)
{
    *out = NULL;
    const char *kvs = getenv("PB_CUDA_KV_DTYPE");
    if (kvs && *kvs && strcmp(kvs, "f32") != 0 && strcmp(kvs, "bf16") != 0)
        return pb_error(PB_ERR_USAGE, "PB_CUDA_KV_DTYPE=%s: expected bf16 or f32", kvs);
    const char *why = NULL;
    const int n = pb_cuda_device_count(&why);
    if (n <= 0)
        return pb_error(PB_ERR_NOT_AVAILABLE, "--device cuda: no usable CUDA device (%s)", why ? why : "none found");
    if (device < 0 || device >= n)
        return pb_error(PB_ERR_NOT_AVAILABLE, "--device cuda: device %d does not exist (%d visible)", device, n);
    pb_backend *be = (pb_backend *)calloc(1, sizeof *be);
    cuda_impl *c = (cuda_impl *)calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        return pb_error(PB_ERR_NOMEM, "out of memory creating the CUDA backend");
    }
    be->ops = &cuda_ops;
    be->impl = c;
    be->threads = 1;
    c->device = device;
    pb_status st = PB_OK;
    {
        cudaError_t e = cudaSetDevice(device);
        if (e == cudaSuccess)
            e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking);
        if (e == cudaSuccess)
            e = cudaMalloc((void **)&c->flag, sizeof(int));
        if (e == cudaSuccess)
            e = cudaHostAlloc((void **)&c->args, ARG_SLOTS * ARG_SLOT_BYTES, cudaHostAllocDefault);
        for (int i = 0; i < ARG_SLOTS && e == cudaSuccess; i++)
            e = cudaEventCreateWithFlags(&c->args_ev[i], cudaEventDisableTiming);
        cudaDeviceProp prop;
        if (e == cudaSuccess)
            e = cudaGetDeviceProperties(&prop, device);
        if (e == cudaSuccess)
            c->tc_ok = prop.major >= 8;
        if (e != cudaSuccess) {
            (void)cudaGetLastError();
            st = pb_error(PB_ERR_DEVICE, "CUDA device %d: creating the backend failed: %s", device,
                          cudaGetErrorString(e));
        }
    }
    if (st != PB_OK) {
        cuda_free(be);
        return st;
    }
    *out = be;
    return PB_OK;
}
