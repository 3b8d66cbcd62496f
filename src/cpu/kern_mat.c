/* Packed weight matrices and the batch-invariant matmul driver: panels of 16
 * output rows (layout in kern_impl.h), threaded over panels, register tiles
 * from the active ISA path. Every y[i, j] is one fma chain over k = 0 ..
 * n_in - 1 (K blocks store and reload the running sums), bias added after. */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <pthread.h>
#include <stdatomic.h>
#include <unistd.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#include <xmmintrin.h>
#endif

#include "cpu/kern_impl.h"

/* ---- kernel context (used by packing and the kernels) ---- */

struct pb_kctx {
    pb_pool *pool;
    int threads;
    /* attention: per-thread scores, attn_cap floats each; work items */
    float **scores;
    size_t attn_cap;
    void *items;
    size_t items_cap;
    /* matmul: per-thread f32 copy of a group of bf16/f16 panels over one K
     * block, reused by all row tiles of a large M */
    float *wconv;     /* [threads][WCONV_FLOATS], WCONV_SKEW bytes into wconv_mem */
    void *wconv_mem;
    /* the bf16 products: a call's activations as bf16 pairs (pb_kops.xpairs) */
    uint32_t *xb;
    size_t xb_cap; /* words */
};

/* ---- packing ---- */

static size_t store_size(pb_dtype dt)
{
    return dt == PB_DT_F32 ? 4 : pb_kgrouped(dt) ? 1 : 2;
}

static size_t panel_elems(pb_dtype dt, int n_in)
{
    size_t k = (size_t)n_in;
    if (pb_kgrouped(dt))
        return (k + PB_KQ8 - 1) / PB_KQ8 * PB_KQ8_GROUP;
    if (dt == PB_DT_BF16)
        k += k & 1;
    return k * PB_KNR;
}

static size_t data_bytes(pb_dtype dt, int n_out, int n_in)
{
    size_t np = ((size_t)n_out + PB_KNR - 1) / PB_KNR;
    size_t b = np * panel_elems(dt, n_in) * store_size(dt);
    return (b + 63) & ~(size_t)63;
}

uint64_t pb_kmat_bytes(pb_dtype store_dt, int n_out, int n_in)
{
    if (n_out <= 0 || n_in <= 0)
        return 0;
    return (uint64_t)data_bytes(store_dt, n_out, n_in) + sizeof(pb_kmat);
}

static int is_float_dt(pb_dtype dt)
{
    return dt == PB_DT_F32 || dt == PB_DT_F16 || dt == PB_DT_BF16;
}

static int is_store_dt(pb_dtype dt)
{
    return is_float_dt(dt) || pb_kgrouped(dt);
}

/* Packed data lives in large anonymous mappings shared by many matrices (a
 * bump allocator; a mapping is returned to the system when its last matrix
 * is freed): no allocator arena keeps freed weights, and transparent huge
 * pages where the system grants them on request (512x fewer page faults
 * while packing, fewer TLB misses while streaming). Resident memory beyond
 * the bytes handed out is at most the rest of one 2 MiB page per mapping. */
#define SLAB_ALIGN ((size_t)2 << 20)
#define SLAB_SIZE ((size_t)1 << 30) /* address space reserved per mapping */

typedef struct kslab {
    unsigned char *base;
    size_t len, used;
    long refs;
} kslab;

static pthread_mutex_t slab_mu = PTHREAD_MUTEX_INITIALIZER;
static kslab *slab_cur; /* where the next matrix goes; NULL: map a new one */

static kslab *slab_new(size_t min_bytes)
{
    size_t len = min_bytes > SLAB_SIZE ? (min_bytes + SLAB_ALIGN - 1) / SLAB_ALIGN * SLAB_ALIGN : SLAB_SIZE;
    kslab *sl = calloc(1, sizeof *sl);
    if (!sl)
        return NULL;
    /* over-map by one huge page, then trim to a 2 MiB aligned start */
    unsigned char *p = mmap(NULL, len + SLAB_ALIGN, PROT_READ | PROT_WRITE,
                            MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED && len > min_bytes) { /* strict overcommit: only what is asked */
        len = (min_bytes + SLAB_ALIGN - 1) / SLAB_ALIGN * SLAB_ALIGN;
        p = mmap(NULL, len + SLAB_ALIGN, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    }
    if (p == MAP_FAILED) {
        free(sl);
        return NULL;
    }
    size_t head = (SLAB_ALIGN - (uintptr_t)p % SLAB_ALIGN) % SLAB_ALIGN;
    if (head)
        munmap(p, head);
    if (SLAB_ALIGN - head)
        munmap(p + head + len, SLAB_ALIGN - head);
    sl->base = p + head;
    sl->len = len;
#ifdef MADV_HUGEPAGE
    (void)madvise(sl->base, len, MADV_HUGEPAGE);
#endif
    return sl;
}

static void *kmat_data_alloc(size_t bytes, void **slab)
{
    void *out = NULL;
    bytes = (bytes + 63) & ~(size_t)63;
    pthread_mutex_lock(&slab_mu);
    kslab *sl = slab_cur;
    if (!sl || sl->len - sl->used < bytes) {
        sl = slab_new(bytes);
        if (sl) {
            /* the old one stays mapped until its last matrix goes */
            if (slab_cur && slab_cur->refs == 0) {
                munmap(slab_cur->base, slab_cur->len);
                free(slab_cur);
            }
            slab_cur = sl;
        }
    }
    if (sl) {
        out = sl->base + sl->used;
        sl->used += bytes;
        sl->refs++;
        *slab = sl;
    }
    pthread_mutex_unlock(&slab_mu);
    return out;
}

static void kmat_data_free(void *slab)
{
    kslab *sl = slab;
    pthread_mutex_lock(&slab_mu);
    if (--sl->refs == 0) {
        if (sl == slab_cur) {
            /* keep the address space, hand the pages back */
            (void)madvise(sl->base, sl->used, MADV_DONTNEED);
            sl->used = 0;
        } else {
            munmap(sl->base, sl->len);
            free(sl);
        }
    }
    pthread_mutex_unlock(&slab_mu);
}

/* One 64-byte line of a panel (dst 64-byte aligned). x86: a streaming store,
 * as the packed copy is not read again soon and is usually far larger than
 * the caches: no read of the line before it is written. */
static inline void put_line(void *dst, const void *v)
{
#if defined(__SSE2__)
    for (int i = 0; i < PB_KNR / 4; i++)
        _mm_stream_si128((__m128i *)dst + i, _mm_loadu_si128((const __m128i *)v + i));
#else
    memcpy(dst, v, PB_KNR * sizeof(uint32_t));
#endif
}

/* The panel line writers below take 64 bytes of each of the 16 source rows
 * at byte offset off and write 16 output lines. Each row's 64 bytes are read
 * at once, not 4 bytes a row in turn: where rows are a multiple of 2 KiB
 * apart (hidden 2048 in bf16, 1024 in f32) their 16 lines fall in one or two
 * L1 sets, and reading them in turn evicts each line before its next use.
 * x86: 4x4 transposes of 128-bit rows (moves only: the bits unchanged), the
 * rows' next lines prefetched (16 streams are more than the hardware
 * prefetcher follows), the output streamed 16 bytes at a time, each group
 * of 4 lines whole before the next. Measured on Zen 5 (contrib/bench/load.sh,
 * bf16 hidden 1024, 2 threads): 5.9 GB/s with scalar lanes, 7.4 transposed,
 * 10.4 with the prefetch 512 bytes ahead (256: 10.1, 1024: 9.0). */
#ifndef PACK_PF
#define PACK_PF 512 /* bytes ahead in each of the 16 source rows */
#endif
#if defined(__SSE2__)
static inline void load_rows(__m128 t[PB_KNR][4], const unsigned char *const rowp[PB_KNR], size_t off)
{
    for (int c = 0; c < PB_KNR; c++) {
        /* (an address past the mapping is harmless to a prefetch) */
        _mm_prefetch((const char *)(uintptr_t)((uintptr_t)(rowp[c] + off) + PACK_PF), _MM_HINT_T0);
        for (int q = 0; q < 4; q++)
            t[c][q] = _mm_loadu_ps((const float *)(const void *)(rowp[c] + off) + 4 * q);
    }
}

/* lines 4q .. 4q + 3 of the 32-bit transpose: out[l][cb] holds 32-bit lane
 * 4q + l of rows 4cb .. 4cb + 3 */
static inline void transpose_q(__m128 t[PB_KNR][4], int q, __m128i out[4][4])
{
    for (int cb = 0; cb < 4; cb++) {
        __m128 r0 = t[4 * cb][q], r1 = t[4 * cb + 1][q], r2 = t[4 * cb + 2][q], r3 = t[4 * cb + 3][q];
        _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
        out[0][cb] = _mm_castps_si128(r0);
        out[1][cb] = _mm_castps_si128(r1);
        out[2][cb] = _mm_castps_si128(r2);
        out[3][cb] = _mm_castps_si128(r3);
    }
}

static inline void stream_line(void *dst, const __m128i v[4])
{
    for (int i = 0; i < 4; i++)
        _mm_stream_si128((__m128i *)dst + i, v[i]);
}

/* f32 lanes rounded to bf16 as pb_f32_to_bf16 does (nearest even; a NaN
 * kept quiet), the bf16 in each lane's high half, the low half 0 */
static inline __m128i bf16_hi(__m128i x)
{
    const __m128i abs = _mm_and_si128(x, _mm_set1_epi32(0x7fffffff));
    const __m128i nan = _mm_cmpgt_epi32(abs, _mm_set1_epi32(0x7f800000)); /* abs >= 0 as signed */
    const __m128i odd = _mm_and_si128(_mm_srli_epi32(x, 16), _mm_set1_epi32(1));
    const __m128i r = _mm_add_epi32(x, _mm_add_epi32(_mm_set1_epi32(0x7fff), odd));
    const __m128i q = _mm_or_si128(x, _mm_set1_epi32(0x400000)); /* (x >> 16) | 0x40, moved up */
    const __m128i v = _mm_or_si128(_mm_and_si128(nan, q), _mm_andnot_si128(nan, r));
    return _mm_and_si128(v, _mm_set1_epi32((int)0xffff0000u));
}

/* one 64-byte line of bf16 pairs: k from lo, k + 1 from hi (16 f32 columns each) */
static inline void put_pairs(void *dst, const __m128i lo[4], const __m128i hi[4])
{
    __m128i v[4];
    for (int i = 0; i < 4; i++)
        v[i] = _mm_or_si128(_mm_srli_epi32(bf16_hi(lo[i]), 16), bf16_hi(hi[i]));
    stream_line(dst, v);
}
#endif

/* What put_lines makes of 64 bytes of each of the 16 rows. */
typedef enum {
    LINES_LANES,  /* 32-bit lanes (f32, and the bf16 k pairs): 16 lines, line i holds lane i of every row */
    LINES_HALVES, /* 32 16-bit k: 16 lines, line i holds k = 2i of every row, then k = 2i + 1 (the f16
                   * panel layout): each lane's low and high halves gathered (x86: shifts that
                   * sign-extend a half, and a signed pack that keeps it) */
    LINES_PAIRS_FROM_F32, /* 16 f32 k rounded to bf16 pairs: 8 lines (x86 only) */
    LINES_F32_FROM_BF16,  /* 32 bf16 k widened, exact: 32 lines (x86 only) */
} lines_kind;

/* Output lines of 64 bytes from the 32-bit transpose of 64 bytes of each row. */
static void put_lines(void *dst, const unsigned char *const rowp[PB_KNR], size_t off, lines_kind kind)
{
    unsigned char *d = dst;
#if defined(__SSE2__)
    __m128 t[PB_KNR][4];
    load_rows(t, rowp, off);
    for (int q = 0; q < 4; q++) {
        __m128i o[4][4];
        transpose_q(t, q, o); /* o[l]: lane 4q + l of the 16 rows */
        if (kind == LINES_PAIRS_FROM_F32) {
            put_pairs(d + (size_t)(2 * q) * 64, o[0], o[1]);
            put_pairs(d + (size_t)(2 * q + 1) * 64, o[2], o[3]);
            continue;
        }
        for (int l = 0; l < 4; l++) {
            __m128i v[4] = {o[l][0], o[l][1], o[l][2], o[l][3]}, w[4];
            for (int cb = 0; cb < 4 && kind != LINES_LANES; cb++) {
                v[cb] = _mm_slli_epi32(o[l][cb], 16); /* the pair's first k, moved up */
                w[cb] = _mm_and_si128(o[l][cb], _mm_set1_epi32((int)0xffff0000u));
            }
            if (kind == LINES_F32_FROM_BF16) {
                stream_line(d + (size_t)(2 * (4 * q + l)) * 64, v);
                stream_line(d + (size_t)(2 * (4 * q + l) + 1) * 64, w);
                continue;
            }
            if (kind == LINES_HALVES) {
                for (int cb = 0; cb < 4; cb++) {
                    v[cb] = _mm_srai_epi32(v[cb], 16);
                    w[cb] = _mm_srai_epi32(w[cb], 16);
                }
                v[0] = _mm_packs_epi32(v[0], v[1]);
                v[1] = _mm_packs_epi32(v[2], v[3]);
                v[2] = _mm_packs_epi32(w[0], w[1]);
                v[3] = _mm_packs_epi32(w[2], w[3]);
            }
            stream_line(d + (size_t)(4 * q + l) * 64, v);
        }
    }
#else
    uint32_t t[PB_KNR][16];
    for (int c = 0; c < PB_KNR; c++)
        memcpy(t[c], rowp[c] + off, sizeof t[c]);
    for (int i = 0; i < 16; i++) {
        uint32_t v[PB_KNR];
        for (int c = 0; c < PB_KNR; c++)
            v[c] = t[c][i];
        if (kind == LINES_HALVES) {
            uint16_t h[2 * PB_KNR];
            for (int c = 0; c < PB_KNR; c++) { /* its first two bytes are k = 2i */
                uint16_t e[2];
                memcpy(e, &v[c], 4);
                h[c] = e[0];
                h[PB_KNR + c] = e[1];
            }
            memcpy(v, h, sizeof v);
        }
        put_line(d + (size_t)i * 64, v);
    }
#endif
}

#if defined(__SSE2__)
/* A panel from a k-major source (transposed, as GPT-2's Conv1D stores its
 * weights) whose 16 columns are adjacent at every k: source elements of sdt,
 * k rows ks bytes apart, kept as dt, the same or (f32 -> bf16) rounded. f32
 * and f16 kept: each k's 16 elements are the panel's row k as they are;
 * bf16: rows k and k + 1 paired (an odd last k pairs with 0). */
static void pack_adjacent(pb_dtype sdt, pb_dtype dt, unsigned char *dst, const unsigned char *s, size_t K, size_t ks)
{
    const size_t row = (size_t)PB_KNR * (dt == PB_DT_F32 ? 4 : 2); /* bytes of one k kept */
    const size_t step = dt == PB_DT_F32 ? 1 : 2;                   /* k per 64-byte line */
    const int nv = sdt == PB_DT_F32 ? 4 : 2;                       /* 16-byte vectors of one k read */
    for (size_t k = 0; k < K; k += step) {
        _mm_prefetch((const char *)(uintptr_t)((uintptr_t)(s + k * ks) + 8 * ks), _MM_HINT_T0);
        const unsigned char *a = s + k * ks, *b = step == 2 && k + 1 < K ? a + ks : NULL;
        if (dt == PB_DT_F32) {
            put_line(dst + k * row, a);
            continue;
        }
        __m128i va[4], vb[4], v[4];
        for (int i = 0; i < nv; i++) {
            va[i] = _mm_loadu_si128((const __m128i *)(const void *)a + i);
            vb[i] = b ? _mm_loadu_si128((const __m128i *)(const void *)b + i) : _mm_setzero_si128();
        }
        if (sdt == PB_DT_F32) { /* kept as bf16 */
            put_pairs(dst + k * row, va, vb);
            continue;
        }
        if (dt == PB_DT_BF16) {
            v[0] = _mm_unpacklo_epi16(va[0], vb[0]);
            v[1] = _mm_unpackhi_epi16(va[0], vb[0]);
            v[2] = _mm_unpacklo_epi16(va[1], vb[1]);
            v[3] = _mm_unpackhi_epi16(va[1], vb[1]);
        } else {
            v[0] = va[0];
            v[1] = va[1];
            v[2] = vb[0];
            v[3] = vb[1];
        }
        if (b || dt == PB_DT_BF16) /* (a bf16 odd last k: its pairs with 0 fill the line) */
            stream_line(dst + k * row, v);
        else /* the odd last k of f16: half a line */
            memcpy(dst + k * row, v, 32);
    }
}
#endif

static inline uint16_t ld16(const unsigned char *p)
{
    uint16_t v;
    memcpy(&v, p, 2);
    return v;
}

static inline float ld_f32(const unsigned char *p, pb_dtype dt)
{
    if (dt == PB_DT_F32) {
        float f;
        memcpy(&f, p, 4);
        return f;
    }
    return dt == PB_DT_F16 ? pb_f16_to_f32(ld16(p)) : pb_bf16_to_f32(ld16(p));
}

typedef struct pack_job {
    const pb_kmat_src *src;
    const pb_kmat *m;
    int n_out, n_in, per; /* per: panels per item */
    atomic_int nomem;     /* an item found no memory for its scratch */
} pack_job;

/* bytes of an f16 panel of K rows in a scratch buffer, to a 64-byte line */
static inline size_t f16_scratch_bytes(size_t K)
{
    return (K * PB_KNR * 2 + 63) & ~(size_t)63;
}

/* One panel of nv (<= 16) source rows kept as dt at dst (pstride elements):
 * element (row c, k) is at rowp[c] + k * ks. Same dtype: raw bits; otherwise
 * converted in registers (f16/bf16 -> f32 exact, f32 -> bf16/f16 round to
 * nearest even, f16 <-> bf16 through the exact f32 value). Rows past nv and
 * the bf16 odd-k pad are 0. */
static void pack_rows(const pb_kmat_src *src, const unsigned char *const rowp[PB_KNR], int nv, size_t K, size_t ks,
                      pb_dtype dt, size_t pstride, unsigned char *dst)
{
    if (nv < PB_KNR || (dt == PB_DT_BF16 && (K & 1)))
        memset(dst, 0, pstride * store_size(dt));
    const bool same = src->dtype == dt;
#if defined(__SSE2__)
    /* k-major with the 16 columns adjacent: no permutation or part boundary
     * between them */
    const size_t ss = store_size(src->dtype);
    bool adj = src->transposed && nv == PB_KNR;
    for (int c = 1; adj && c < PB_KNR; c++)
        adj = rowp[c] == rowp[0] + (size_t)c * ss;
    if (adj && (same || (src->dtype == PB_DT_F32 && dt == PB_DT_BF16))) {
        pack_adjacent(src->dtype, dt, dst, rowp[0], K, ks);
        return;
    }
#endif
    if (same && dt == PB_DT_BF16) {
        /* a 32-bit lane holds k (low half) and k + 1 of one column */
        uint32_t *d = (uint32_t *)(void *)dst;
        const size_t kp = K / 2;
        if (!src->transposed && nv == PB_KNR) {
            size_t q = 0;
            for (; q + 16 <= kp; q += 16) /* 16 k pairs: 64 bytes of each row */
                put_lines(d + q * PB_KNR, rowp, q * 4, LINES_LANES);
            for (; q < kp; q++) {
                uint32_t v[PB_KNR];
                for (int c = 0; c < PB_KNR; c++)
                    memcpy(&v[c], rowp[c] + q * 4, 4);
                put_line(d + q * PB_KNR, v);
            }
        } else if (!src->transposed) {
            for (size_t q = 0; q < kp; q++)
                for (int c = 0; c < nv; c++) {
                    uint32_t v;
                    memcpy(&v, rowp[c] + q * 4, 4);
                    d[q * PB_KNR + c] = v;
                }
        } else {
            for (size_t q = 0; q < kp; q++)
                for (int c = 0; c < nv; c++)
                    d[q * PB_KNR + c] = (uint32_t)ld16(rowp[c] + 2 * q * ks) |
                                        (uint32_t)ld16(rowp[c] + (2 * q + 1) * ks) << 16;
        }
        if (K & 1)
            for (int c = 0; c < nv; c++)
                d[kp * PB_KNR + c] = ld16(rowp[c] + (K - 1) * ks);
        return;
    }
    if (same && dt == PB_DT_F32) {
        uint32_t *d = (uint32_t *)(void *)dst;
        if (nv == PB_KNR) {
            size_t k = 0;
            if (!src->transposed)
                for (; k + 16 <= K; k += 16)
                    put_lines(d + k * PB_KNR, rowp, k * 4, LINES_LANES);
            for (; k < K; k++) {
                uint32_t v[PB_KNR];
                for (int c = 0; c < PB_KNR; c++)
                    memcpy(&v[c], rowp[c] + k * ks, 4);
                put_line(d + k * PB_KNR, v);
            }
            return;
        }
        for (size_t k = 0; k < K; k++)
            for (int c = 0; c < nv; c++)
                memcpy(&d[k * PB_KNR + c], rowp[c] + k * ks, 4);
        return;
    }
    if (same) { /* f16 */
        uint16_t *d = (uint16_t *)(void *)dst;
        size_t k0 = 0;
        if (nv == PB_KNR && !src->transposed)
            for (; k0 + 32 <= K; k0 += 32) /* 32 k: 64 bytes of each row */
                put_lines(d + k0 * PB_KNR, rowp, k0 * 2, LINES_HALVES);
        if (nv == PB_KNR)
            for (; k0 + 1 < K; k0 += 2) { /* two k of 16 columns: one 64-byte line */
                uint16_t v[2 * PB_KNR];
                for (int c = 0; c < PB_KNR; c++) {
                    v[c] = ld16(rowp[c] + k0 * ks);
                    v[PB_KNR + c] = ld16(rowp[c] + (k0 + 1) * ks);
                }
                uint32_t w[PB_KNR];
                memcpy(w, v, sizeof w);
                put_line(d + k0 * PB_KNR, w);
            }
        for (size_t k = k0; k < K; k++)
            for (int c = 0; c < nv; c++)
                d[k * PB_KNR + c] = ld16(rowp[c] + k * ks);
        return;
    }
    const pb_dtype sdt = src->dtype;
    switch (dt) {
    case PB_DT_F32: {
        float *d = (float *)(void *)dst;
        if (sdt == PB_DT_BF16) { /* exact: the bits move up */
            size_t k0 = 0;
#if defined(__SSE2__)
            if (!src->transposed && nv == PB_KNR)
                for (; k0 + 32 <= K; k0 += 32) /* 32 k: 64 bytes of each row */
                    put_lines(d + k0 * PB_KNR, rowp, k0 * 2, LINES_F32_FROM_BF16);
#endif
            for (size_t k = k0; k < K; k++)
                for (int c = 0; c < nv; c++) {
                    const uint32_t b = (uint32_t)ld16(rowp[c] + k * ks) << 16;
                    memcpy(&d[k * PB_KNR + c], &b, 4);
                }
        } else {
            for (size_t k = 0; k < K; k++)
                for (int c = 0; c < nv; c++)
                    d[k * PB_KNR + c] = pb_f16_to_f32(ld16(rowp[c] + k * ks));
        }
        break;
    }
    case PB_DT_F16: {
        uint16_t *d = (uint16_t *)(void *)dst;
        for (size_t k = 0; k < K; k++)
            for (int c = 0; c < nv; c++)
                d[k * PB_KNR + c] = pb_f32_to_f16(ld_f32(rowp[c] + k * ks, sdt));
        break;
    }
    default: { /* bf16 from f32 or f16 */
        uint16_t *d = (uint16_t *)(void *)dst;
        size_t k0 = 0;
#if defined(__SSE2__)
        if (sdt == PB_DT_F32 && nv == PB_KNR && !src->transposed)
            for (; k0 + 16 <= K; k0 += 16) /* 16 k: 64 bytes of each row */
                put_lines(d + k0 * PB_KNR, rowp, k0 * 4, LINES_PAIRS_FROM_F32);
#endif
        for (size_t k = k0; k < K; k++)
            for (int c = 0; c < nv; c++)
                d[(k >> 1) * 2 * PB_KNR + (size_t)c * 2 + (k & 1)] = pb_f32_to_bf16(ld_f32(rowp[c] + k * ks, sdt));
        break;
    }
    }
}

/* q[0 .. n) of one column's group of values v (n <= PB_KQ8, v padded to a
 * multiple of 4 with zeros) and its scale (kern_impl.h: pb_kq8_scale) */
static float q8_group(const float *v, int n, int8_t *q)
{
#if defined(__SSE2__)
    __m128 am = _mm_setzero_ps();
    const __m128 sign = _mm_set1_ps(-0.0f);
    for (int k = 0; k < n; k += 4) /* a > amax ? a : amax, lane by lane: a NaN is passed over */
        am = _mm_max_ps(_mm_andnot_ps(sign, _mm_loadu_ps(v + k)), am);
    float l[4], amax = 0.0f;
    _mm_storeu_ps(l, am);
    for (int i = 0; i < 4; i++)
        amax = l[i] > amax ? l[i] : amax;
    const float d = pb_kq8_scale(amax);
    if (!(d > 0.0f)) {
        memset(q, 0, (size_t)n);
        return d;
    }
    const __m128 dv = _mm_set1_ps(d), hi = _mm_set1_ps(127.0f), lo = _mm_set1_ps(-127.0f);
    int8_t b[PB_KQ8];
    for (int k = 0; k < n; k += 16) {
        __m128i r[4];
        for (int j = 0; j < 4; j++) {
            /* w / d, a NaN as 0, within [-127, 127], then the conversion's nearest even (MXCSR's mode) */
            __m128 t = _mm_div_ps(_mm_loadu_ps(v + k + 4 * j), dv);
            t = _mm_and_ps(t, _mm_cmpord_ps(t, t));
            r[j] = _mm_cvtps_epi32(_mm_max_ps(_mm_min_ps(t, hi), lo));
        }
        _mm_storeu_si128((__m128i *)(void *)(b + k),
                         _mm_packs_epi16(_mm_packs_epi32(r[0], r[1]), _mm_packs_epi32(r[2], r[3])));
    }
    memcpy(q, b, (size_t)n);
    return d;
#else
    float amax = 0.0f;
    for (int k = 0; k < n; k++) {
        const float a = fabsf(v[k]);
        amax = a > amax ? a : amax; /* (a NaN is passed over) */
    }
    const float d = pb_kq8_scale(amax);
    for (int k = 0; k < n; k++) {
        const float t = d > 0.0f ? rintf(v[k] / d) : 0.0f;
        q[k] = (int8_t)(t >= 127.0f ? 127 : t <= -127.0f ? -127 : t == t ? (int)t : 0);
    }
    return d;
#endif
}

/* One q8 panel (--weights-dtype int8) of nv (<= 16) source rows as in
 * pack_rows: per group of PB_KQ8 k, each column's scale from its largest
 * magnitude and its int8s (q8_group); columns past nv and k past K are
 * zeros. */
static void pack_q8(const pb_kmat_src *src, const unsigned char *const rowp[PB_KNR], int nv, size_t K, size_t ks,
                    unsigned char *dst)
{
    for (size_t k0 = 0; k0 < K; k0 += PB_KQ8) {
        const int n = K - k0 < PB_KQ8 ? (int)(K - k0) : PB_KQ8;
        float scale[PB_KNR] = {0};
        int8_t q[PB_KQ8][PB_KNR];
        if (nv < PB_KNR || n < PB_KQ8)
            memset(q, 0, sizeof q);
        for (int c = 0; c < nv; c++) {
            float v[PB_KQ8];
            int8_t qc[PB_KQ8];
            int k = 0;
#if defined(__SSE2__)
            if (src->dtype == PB_DT_BF16 && ks == 2) /* a row's bf16: the bits move up, 8 at a time */
                for (const __m128i z = _mm_setzero_si128(); k + 8 <= n; k += 8) {
                    const __m128i b = _mm_loadu_si128((const __m128i *)(const void *)(rowp[c] + (k0 + (size_t)k) * 2));
                    _mm_storeu_si128((__m128i *)(void *)(v + k), _mm_unpacklo_epi16(z, b));
                    _mm_storeu_si128((__m128i *)(void *)(v + k + 4), _mm_unpackhi_epi16(z, b));
                }
            else if (src->dtype == PB_DT_F32 && ks == 4)
                for (; k + 4 <= n; k += 4)
                    memcpy(v + k, rowp[c] + (k0 + (size_t)k) * 4, 16);
#endif
            for (; k < n; k++)
                v[k] = ld_f32(rowp[c] + (k0 + (size_t)k) * ks, src->dtype);
            for (; k % 4; k++) /* q8_group's vectors of 4 */
                v[k] = 0.0f;
            scale[c] = q8_group(v, n, qc);
            for (int i = 0; i < n; i++)
                q[i][c] = qc[i];
        }
        unsigned char *g = dst + k0 / PB_KQ8 * PB_KQ8_GROUP;
        memcpy(g, scale, sizeof scale);
        memcpy(g + 64, q, sizeof q);
    }
}

/* One f8 panel (an FP8 checkpoint kept as stored) of nv (<= 16) source rows
 * as in pack_rows, srow[c] the scales of row c's block row: per group of
 * PB_KQ8 k, each column's block scale times 256 (exact: pb_kf8_half's
 * values are the e4m3 ones / 256), then the bytes as they are. */
static void pack_f8(const pb_kmat_src *src, const unsigned char *const rowp[PB_KNR],
                    const unsigned char *const srow[PB_KNR], int nv, size_t K, unsigned char *dst)
{
    const size_t ssz = pb_dtype_size(src->scale_dtype);
    for (size_t k0 = 0; k0 < K; k0 += PB_KQ8) {
        const int n = K - k0 < PB_KQ8 ? (int)(K - k0) : PB_KQ8;
        float scale[PB_KNR] = {0};
        unsigned char q[PB_KQ8][PB_KNR];
        if (nv < PB_KNR || n < PB_KQ8)
            memset(q, 0, sizeof q);
        for (int c = 0; c < nv; c++)
            scale[c] = 256.0f * ld_f32(srow[c] + k0 / (size_t)src->block_cols * ssz, src->scale_dtype);
        int i0 = 0;
#if defined(__SSE2__)
        for (; nv == PB_KNR && i0 + 16 <= n; i0 += 16) { /* 16 k of the 16 rows: a 16 x 16 byte transpose */
            __m128i r[16], t[16];
            for (int c = 0; c < 16; c++)
                r[c] = _mm_loadu_si128((const __m128i *)(const void *)(rowp[c] + k0 + (size_t)i0));
            for (int c = 0; c < 8; c++) { /* bytes, then pairs, quads and eights of rows c and c + 8 */
                t[2 * c] = _mm_unpacklo_epi8(r[c], r[c + 8]);
                t[2 * c + 1] = _mm_unpackhi_epi8(r[c], r[c + 8]);
            }
            for (int c = 0; c < 8; c++) {
                r[2 * c] = _mm_unpacklo_epi8(t[c], t[c + 8]);
                r[2 * c + 1] = _mm_unpackhi_epi8(t[c], t[c + 8]);
            }
            for (int c = 0; c < 8; c++) {
                t[2 * c] = _mm_unpacklo_epi8(r[c], r[c + 8]);
                t[2 * c + 1] = _mm_unpackhi_epi8(r[c], r[c + 8]);
            }
            for (int c = 0; c < 8; c++) {
                r[2 * c] = _mm_unpacklo_epi8(t[c], t[c + 8]);
                r[2 * c + 1] = _mm_unpackhi_epi8(t[c], t[c + 8]);
            }
            for (int i = 0; i < 16; i++) /* k = i0 + i of the 16 rows */
                _mm_storeu_si128((__m128i *)(void *)q[i0 + i], r[i]);
        }
#endif
        for (int c = 0; c < nv; c++)
            for (int i = i0; i < n; i++)
                q[i][c] = rowp[c][k0 + (size_t)i];
        unsigned char *g = dst + k0 / PB_KQ8 * PB_KQ8_GROUP;
        memcpy(g, scale, sizeof scale);
        memcpy(g + 64, q, sizeof q);
    }
}

/* nv f8 source rows as f32 [nv, K]: e4m3 x scale, one rounding (as half(b)
 * x 256 scale, the tiles' product: the same real number) */
static void f8_rows_f32(const pb_kmat_src *src, const unsigned char *const rowp[PB_KNR],
                        const unsigned char *const srow[PB_KNR], int nv, size_t K, float *out)
{
    const size_t ssz = pb_dtype_size(src->scale_dtype), bc = (size_t)src->block_cols;
    for (int c = 0; c < nv; c++)
        for (size_t k0 = 0; k0 < K; k0 += bc) {
            const float d = 256.0f * ld_f32(srow[c] + k0 / bc * ssz, src->scale_dtype);
            for (size_t k = k0; k < K && k < k0 + bc; k++)
                out[(size_t)c * K + k] = pb_f16_to_f32(pb_kf8_half(rowp[c][k])) * d;
        }
}

/* Packs panel p straight from the source. An f16 source kept as f32 or
 * bf16, given scratch (16 K halves, then 16 K floats): packed as stored into
 * it, widened exactly by the ISA's conversion (F16C where the CPU has it),
 * and kept as f32 from there or rounded into bf16 pairs as a k-major f32
 * source (the scalar conversions, per element, ran at 1.3-2.2 GB/s). */
static void pack_panel(const pack_job *j, int p, void *scratch)
{
    const pb_kmat_src *src = j->src;
    const pb_kmat *m = j->m;
    const int n_out = j->n_out, n_in = j->n_in;
    const int r0 = p * PB_KNR, nv = n_out - r0 < PB_KNR ? n_out - r0 : PB_KNR;
    const size_t ss = store_size(src->dtype), K = (size_t)n_in;
    const size_t rs = src->transposed ? ss : K * ss;              /* bytes between source rows */
    const size_t ks = src->transposed ? (size_t)n_out * ss : ss;  /* bytes between k */
    const unsigned char *rowp[PB_KNR], *srow[PB_KNR];
    const bool f8 = src->dtype == PB_DT_F8_E4M3;
    const size_t sstride = f8 ? (K + (size_t)src->block_cols - 1) / (size_t)src->block_cols *
                                    pb_dtype_size(src->scale_dtype)
                              : 0; /* bytes of a row of scales */
    for (int c = 0; c < nv; c++) {
        int r = src->row_perm ? src->row_perm[r0 + c] : r0 + c, q = 0;
        if (src->n_parts > 1) {
            while (r >= src->part_rows[q])
                r -= src->part_rows[q++];
            rowp[c] = (const unsigned char *)src->parts[q] + (size_t)r * rs;
        } else {
            rowp[c] = (const unsigned char *)src->data + (size_t)r * rs;
        }
        if (f8)
            srow[c] = (const unsigned char *)(src->n_parts > 1 ? src->part_scales[q] : src->scale) +
                      (size_t)(r / src->block_rows) * sstride;
    }
    unsigned char *dst = (unsigned char *)m->data + (size_t)p * m->pstride * store_size(m->dt);
    if (f8 && m->dt == PB_DT_F8_E4M3) {
        pack_f8(src, rowp, srow, nv, K, dst);
        return;
    }
    if (f8) { /* kept as another dtype: from the panel's f32 values (scratch: 16 K floats) */
        float *f = scratch;
        f8_rows_f32(src, rowp, srow, nv, K, f);
        const pb_kmat_src fs = {.dtype = PB_DT_F32};
        const unsigned char *frow[PB_KNR];
        for (int c = 0; c < nv; c++)
            frow[c] = (const unsigned char *)(f + (size_t)c * K);
        if (m->dt == PB_DT_Q8)
            pack_q8(&fs, frow, nv, K, 4, dst);
        else
            pack_rows(&fs, frow, nv, K, 4, m->dt, m->pstride, dst);
        return;
    }
    if (m->dt == PB_DT_Q8) {
        pack_q8(src, rowp, nv, K, ks, dst);
        return;
    }
#if defined(__SSE2__)
    if (scratch) {
        unsigned char *h = scratch;
        float *f = (float *)(void *)(h + f16_scratch_bytes(K));
        pack_rows(src, rowp, nv, K, ks, PB_DT_F16, K * PB_KNR, h);
        const pb_kops *ops = pb_kops_active();
        if (m->dt == PB_DT_F32) {
            ops->cvt(PB_DT_F16, h, n_in, (float *)(void *)dst);
            return;
        }
        ops->cvt(PB_DT_F16, h, n_in, f);
        pack_adjacent(PB_DT_F32, PB_DT_BF16, dst, (const unsigned char *)f, K, PB_KNR * sizeof(float));
        return;
    }
#else
    (void)scratch;
#endif
    pack_rows(src, rowp, nv, K, ks, m->dt, m->pstride, dst);
}

static void pack_item(void *ctx, int item, int worker)
{
    (void)worker;
    pack_job *j = ctx;
    const int p0 = item * j->per, p1 = p0 + j->per < j->m->npanels ? p0 + j->per : j->m->npanels;
    void *scratch = NULL; /* NULL (none needed, or no memory): the conversions in pack_rows */
    if (j->src->dtype == PB_DT_F8_E4M3 && j->m->dt != PB_DT_F8_E4M3) { /* f8's f32 values: needed */
        scratch = malloc((size_t)j->n_in * PB_KNR * sizeof(float));
        if (!scratch) {
            atomic_store(&j->nomem, 1);
            return;
        }
        for (int p = p0; p < p1; p++)
            pack_panel(j, p, scratch);
        free(scratch);
        return;
    }
#if defined(__SSE2__)
    if (j->src->dtype == PB_DT_F16 && j->m->dt != PB_DT_F16 && j->m->dt != PB_DT_Q8)
        scratch = aligned_alloc(64, f16_scratch_bytes((size_t)j->n_in) + (size_t)j->n_in * PB_KNR * sizeof(float));
#endif
    for (int p = p0; p < p1; p++)
        pack_panel(j, p, scratch);
    free(scratch);
#if defined(__SSE2__)
    _mm_sfence(); /* the streaming stores are visible before the item counts as done */
#endif
}

/* A matrix's header (no data yet), or NULL */
static pb_kmat *kmat_header(pb_dtype store_dt, int n_out, int n_in)
{
    pb_kmat *m = calloc(1, sizeof *m);
    if (m) {
        m->dt = store_dt;
        m->n_out = n_out;
        m->n_in = n_in;
        m->npanels = (n_out + PB_KNR - 1) / PB_KNR;
        m->pstride = panel_elems(store_dt, n_in);
    }
    return m;
}

pb_status pb_kmat_pack_mt(pb_kctx *k, const pb_kmat_src *src, int n_out, int n_in, pb_dtype store_dt, pb_kmat **out)
{
    *out = NULL;
    if (!src || (src->n_parts > 1 ? !src->parts || !src->part_rows : !src->data))
        return pb_error(PB_ERR_INTERNAL, "pb_kmat_pack: no source data");
    if (src->n_parts > 1) {
        long rows = 0;
        for (int i = 0; i < src->n_parts; i++) {
            if (!src->parts[i] || src->part_rows[i] < 1)
                return pb_error(PB_ERR_INTERNAL, "pb_kmat_pack: part %d is empty", i);
            rows += src->part_rows[i];
        }
        if (rows != n_out || src->transposed)
            return pb_error(PB_ERR_INTERNAL, "pb_kmat_pack: %d parts of %ld rows (transposed %d) for %d rows",
                            src->n_parts, rows, (int)src->transposed, n_out);
    }
    if (n_out <= 0 || n_in <= 0)
        return pb_error(PB_ERR_INTERNAL, "pb_kmat_pack: bad shape [%d, %d]", n_out, n_in);
    const bool f8 = src->dtype == PB_DT_F8_E4M3;
    if (!is_float_dt(src->dtype) && !f8)
        return pb_error(PB_ERR_UNSUPPORTED, "pb_kmat_pack: source dtype %s is not F32, F16, BF16 or F8_E4M3",
                        pb_dtype_name(src->dtype));
    if (!is_store_dt(store_dt) || (store_dt == PB_DT_F8_E4M3 && !f8))
        return pb_error(PB_ERR_UNSUPPORTED, "pb_kmat_pack: store dtype %s is not F32, F16, BF16, Q8 (or F8_E4M3 "
                        "from F8_E4M3)", pb_dtype_name(store_dt));
    if (f8 && (src->transposed || src->block_rows < 1 || src->block_cols < PB_KQ8 || src->block_cols % PB_KQ8 ||
               !is_float_dt(src->scale_dtype) || (src->n_parts > 1 ? !src->part_scales : !src->scale)))
        return pb_error(PB_ERR_INTERNAL, "pb_kmat_pack: an F8_E4M3 source needs untransposed rows, scales of "
                        "F32, F16 or BF16 and blocks of a multiple of %d columns (given %d x %d, scales %s)",
                        PB_KQ8, src->block_rows, src->block_cols, pb_dtype_name(src->scale_dtype));
    if (src->row_perm)
        for (int r = 0; r < n_out; r++)
            if (src->row_perm[r] < 0 || src->row_perm[r] >= n_out)
                return pb_error(PB_ERR_INTERNAL, "pb_kmat_pack: row_perm[%d] = %d outside [0, %d)", r,
                                src->row_perm[r], n_out);
    pb_kmat *m = kmat_header(store_dt, n_out, n_in);
    if (!m)
        return pb_error(PB_ERR_NOMEM, "out of memory for a packed matrix");
    const size_t bytes = data_bytes(store_dt, n_out, n_in);
    m->data = kmat_data_alloc(bytes, &m->slab);
    if (!m->data) {
        free(m);
        return pb_error(PB_ERR_NOMEM, "out of memory packing a [%d, %d] %s matrix (%zu bytes)", n_out, n_in,
                        pb_dtype_name(store_dt), bytes);
    }
    /* the tail after the last panel (every panel writes all of its own bytes) */
    const size_t used = (size_t)m->npanels * m->pstride * store_size(store_dt);
    if (used < bytes)
        memset((char *)m->data + used, 0, bytes - used);
    /* items of about 256 KiB of source, at least 4 per thread when there are enough panels */
    const int threads = k ? k->threads : 1;
    const size_t panel_src = (size_t)PB_KNR * (size_t)n_in * store_size(src->dtype);
    int per = (int)((256u << 10) / (panel_src ? panel_src : 1));
    if (per < 1)
        per = 1;
    if (per * 4 * threads > m->npanels)
        per = (m->npanels + 4 * threads - 1) / (4 * threads);
    if (per < 1)
        per = 1;
    pack_job j = {src, m, n_out, n_in, per, 0};
    const int items = (m->npanels + per - 1) / per;
    if (threads == 1 || items == 1)
        for (int i = 0; i < items; i++)
            pack_item(&j, i, 0);
    else
        pb_kctx_run(k, items, pack_item, &j);
    if (atomic_load(&j.nomem)) {
        pb_kmat_free(m);
        return pb_error(PB_ERR_NOMEM, "out of memory converting a [%d, %d] F8_E4M3 matrix", n_out, n_in);
    }
    *out = m;
    return PB_OK;
}

pb_status pb_kmat_pack(const pb_kmat_src *src, int n_out, int n_in, pb_dtype store_dt, pb_kmat **out)
{
    return pb_kmat_pack_mt(NULL, src, n_out, n_in, store_dt, out);
}

void pb_kmat_free(pb_kmat *m)
{
    if (!m)
        return;
    if (m->data && m->slab)
        kmat_data_free(m->slab);
    free(m);
}

const void *pb_kmat_packed(const pb_kmat *m, size_t *bytes)
{
    *bytes = data_bytes(m->dt, m->n_out, m->n_in);
    return m->data;
}

pb_status pb_kmat_wrap(const void *packed, size_t bytes, pb_dtype store_dt, int n_out, int n_in, pb_kmat **out)
{
    *out = NULL;
    if (n_out <= 0 || n_in <= 0 || !is_store_dt(store_dt))
        return pb_error(PB_ERR_FORMAT, "packed matrix [%d, %d] of %s", n_out, n_in, pb_dtype_name(store_dt));
    if (bytes != data_bytes(store_dt, n_out, n_in) || ((uintptr_t)packed & 63))
        return pb_error(PB_ERR_FORMAT, "packed [%d, %d] %s matrix of %zu bytes at %p (expected %zu, 64-byte aligned)",
                        n_out, n_in, pb_dtype_name(store_dt), bytes, packed, data_bytes(store_dt, n_out, n_in));
    pb_kmat *m = kmat_header(store_dt, n_out, n_in);
    if (!m)
        return pb_error(PB_ERR_NOMEM, "out of memory for a packed matrix");
    m->data = (void *)(uintptr_t)packed; /* read only: the kernels never write weights */
    m->slab = NULL;
    *out = m;
    return PB_OK;
}

pb_dtype pb_kmat_dtype(const pb_kmat *m)
{
    return m->dt;
}

int pb_kmat_rows(const pb_kmat *m)
{
    return m->n_out;
}

int pb_kmat_cols(const pb_kmat *m)
{
    return m->n_in;
}

void pb_kmat_gather(const pb_kmat *m, const int32_t *rows, int n_rows, int offset, float *out, int ldo,
                    bool accumulate)
{
    for (int t = 0; t < n_rows; t++) {
        const int r = rows[t] + offset;
        const int p = r / PB_KNR, c = r % PB_KNR;
        float *o = out + (size_t)t * ldo;
        const size_t n = (size_t)m->n_in;
        switch (m->dt) {
        case PB_DT_F32: {
            const float *w = (const float *)m->data + (size_t)p * m->pstride + c;
            for (size_t k = 0; k < n; k++)
                o[k] = accumulate ? o[k] + w[k * PB_KNR] : w[k * PB_KNR];
            break;
        }
        case PB_DT_F16: {
            const uint16_t *w = (const uint16_t *)m->data + (size_t)p * m->pstride + c;
            for (size_t k = 0; k < n; k++) {
                float f = pb_f16_to_f32(w[k * PB_KNR]);
                o[k] = accumulate ? o[k] + f : f;
            }
            break;
        }
        case PB_DT_Q8:
        case PB_DT_F8_E4M3: {
            const unsigned char *w = (const unsigned char *)m->data + (size_t)p * m->pstride;
            for (size_t k = 0; k < n; k++) {
                const float f = pb_kq8_at(m->dt, w, k, c);
                o[k] = accumulate ? o[k] + f : f;
            }
            break;
        }
        default: {
            const uint16_t *w = (const uint16_t *)m->data + (size_t)p * m->pstride + (size_t)c * 2;
            for (size_t k = 0; k < n; k++) {
                float f = pb_bf16_to_f32(w[(k >> 1) * 2 * PB_KNR + (k & 1)]);
                o[k] = accumulate ? o[k] + f : f;
            }
            break;
        }
        }
    }
}

/* ---- kernel context ---- */


#define WCONV_FLOATS ((size_t)PB_KMR_MAX * 512 * PB_KNR) /* >= gmax[mr] * kc * 16 of every path */
/* The converted panels start about half a page off a page boundary: the
 * large buffers (activations, from mmap) start 64 bytes past one. Measured on
 * Zen 1 (SmolLM2 bf16, 512-token prefill, panels at offsets 0..4032 of a
 * page): at 0 and 4032 the prefill ran at 55% of its rate, at 64..3072 at
 * full rate; presumably 4K aliasing between the tiles' loads and stores. Which
 * offset malloc gave depended on earlier allocations (a run with
 * --ignore-eos was slow, one without fast). */
#define WCONV_SKEW 2112

pb_status pb_kctx_create(pb_pool *pool, pb_kctx **out)
{
    pb_kctx *k = calloc(1, sizeof *k);
    if (!k)
        return pb_error(PB_ERR_NOMEM, "out of memory for the kernel context");
    k->pool = pool;
    k->threads = pool ? pb_pool_threads(pool) : 1;
    k->scores = calloc((size_t)k->threads, sizeof *k->scores);
    k->wconv_mem = aligned_alloc(4096, (size_t)k->threads * WCONV_FLOATS * sizeof(float) + 4096);
    k->wconv = k->wconv_mem ? (float *)(void *)((char *)k->wconv_mem + WCONV_SKEW) : NULL;
    if (!k->scores || !k->wconv) {
        free(k->scores);
        free(k->wconv_mem);
        free(k);
        return pb_error(PB_ERR_NOMEM, "out of memory for the kernel context");
    }
    *out = k;
    return PB_OK;
}

void pb_kctx_free(pb_kctx *k)
{
    if (!k)
        return;
    for (int i = 0; i < k->threads; i++)
        free(k->scores[i]);
    free(k->scores);
    free(k->items);
    free(k->wconv_mem);
    free(k->xb);
    free(k);
}

static pb_status grow_xb(pb_kctx *k, size_t words)
{
    if (words <= k->xb_cap)
        return PB_OK;
    /* whole 64-byte lines: an A tile's rows and a pair row's loads each
     * one line (malloc's large blocks start 16 bytes into a page) */
    const size_t bytes = (words * sizeof(uint32_t) + 63) & ~(size_t)63;
    uint32_t *p = aligned_alloc(64, bytes);
    if (!p)
        return pb_error(PB_ERR_NOMEM, "out of memory for %zu words of bf16 activation pairs", words);
    free(k->xb);
    k->xb = p;
    k->xb_cap = words;
    return PB_OK;
}

/* (kern_impl.h) its rows go to a multiple of 16 (amx_rows) */
size_t pb_kamx_ldxb(int n_in)
{
    size_t w = (((size_t)n_in + 1) / 2 + 15) & ~(size_t)15;
    return w % 256 == 0 ? w + 16 : w;
}

static size_t amx_rows(int M)
{
    return ((size_t)M + 15) & ~(size_t)15;
}

/* words of pairs pb_kmat_mul keeps for calls of up to max_m rows of max_k
 * when the active path has the bf16 products on, else 0 */
static size_t xb_words(int max_m, int max_k)
{
    const pb_kops *ops = pb_kops_active();
    max_m = max_m > 1 ? max_m : 1;
    max_k = max_k > 1 ? max_k : 1;
    if (ops && ops->amx)
        return amx_rows(max_m) * pb_kamx_ldxb(max_k);
    return ops && ops->xpairs ? (size_t)max_m * (((size_t)max_k + 1) / 2) * (size_t)ops->xwords : 0;
}

static pb_status grow(pb_kctx *k, size_t floats, size_t items, size_t item_size)
{
    if (floats > k->attn_cap) {
        for (int i = 0; i < k->threads; i++) {
            float *p = realloc(k->scores[i], floats * sizeof(float));
            if (!p)
                return pb_error(PB_ERR_NOMEM, "out of memory for attention scores (%zu floats)", floats);
            k->scores[i] = p;
        }
        k->attn_cap = floats;
    }
    if (items * item_size > k->items_cap) {
        void *p = realloc(k->items, items * item_size);
        if (!p)
            return pb_error(PB_ERR_NOMEM, "out of memory for %zu attention work items", items);
        k->items = p;
        k->items_cap = items * item_size;
    }
    return PB_OK;
}

#define ATTN_ITEM_BYTES 16 /* kern_attn.c's work item */

/* What pb_kctx_reserve keeps for these limits (each at least 1): attention
 * scratch floats per thread, and work items (one per token or sequence and
 * head at most). */
static void reserve_sizes(int max_m, int max_keys, int max_heads, int head_dim, size_t *floats, size_t *items)
{
    max_m = max_m > 1 ? max_m : 1;
    max_keys = max_keys > 1 ? max_keys : 1;
    max_heads = max_heads > 1 ? max_heads : 1;
    head_dim = head_dim > 1 ? head_dim : 1;
    *floats = pb_kattn_scratch_floats(max_keys, max_heads, head_dim);
    *items = (size_t)max_heads * (size_t)max_m;
}

pb_status pb_kctx_reserve(pb_kctx *k, int max_m, int max_k, int max_keys, int max_heads, int head_dim)
{
    size_t floats, items;
    reserve_sizes(max_m, max_keys, max_heads, head_dim, &floats, &items);
    PB_CHECK(grow_xb(k, xb_words(max_m, max_k)));
    return grow(k, floats, items, ATTN_ITEM_BYTES);
}

uint64_t pb_kctx_scratch_bytes(int threads, int max_m, int max_k, int max_keys, int max_heads, int head_dim)
{
    size_t floats, items;
    reserve_sizes(max_m, max_keys, max_heads, head_dim, &floats, &items);
    return (uint64_t)(threads > 1 ? threads : 1) * floats * sizeof(float) + (uint64_t)items * ATTN_ITEM_BYTES +
           (uint64_t)xb_words(max_m, max_k) * sizeof(uint32_t);
}

int pb_kctx_threads(const pb_kctx *k)
{
    return k->threads;
}

size_t pb_kctx_scores_cap(const pb_kctx *k)
{
    return k->attn_cap;
}

float *const *pb_kctx_scores(const pb_kctx *k)
{
    return k->scores;
}

pb_status pb_kctx_items(pb_kctx *k, size_t n, size_t item_size, void **out)
{
    PB_CHECK(grow(k, 0, n, item_size));
    *out = k->items;
    return PB_OK;
}

void pb_kctx_run(pb_kctx *k, int n_items, pb_pool_fn fn, void *ctx)
{
    if (k->pool)
        pb_pool_run(k->pool, n_items, fn, ctx);
    else
        for (int i = 0; i < n_items; i++)
            fn(ctx, i, 0);
}

/* ---- matmul ---- */

/* K block of the many-tile path when it reads the panels in place: a group
 * of gmax[mr] panels over the block fills about half of a core's L2, so that
 * every row tile after the first reads the block from L2 while y's running
 * sums stay in cache across the group's blocks. Measured on Zen 5 (AVX-512,
 * 1 MiB L2, kern-bench): bf16 5632x2048 at M=32 298 -> 483 GFLOP/s, f32
 * 3072x768 at M=512 463 -> 507, against blocks of kc = 256 k. The block
 * changes no result: every element is one fma chain over k ascending, the
 * running sums stored and reloaded between blocks. */
static atomic_int kblock_forced; /* tests: > 0 overrides */

void pb_kmat_set_kblock(int kb)
{
    atomic_store(&kblock_forced, kb > 0 ? (kb + 1) & ~1 : 0);
}

static size_t l2_budget(void)
{
    static atomic_size_t cached;
    size_t b = atomic_load(&cached);
    if (!b) {
        long l2 = -1;
#ifdef _SC_LEVEL2_CACHE_SIZE
        l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
#endif
        b = l2 > 0 ? (size_t)l2 / 2 : (size_t)256 << 10; /* unknown: half of a 512 KiB L2 */
        b = b < ((size_t)128 << 10) ? (size_t)128 << 10 : b > ((size_t)2 << 20) ? (size_t)2 << 20 : b;
        atomic_store(&cached, b);
    }
    return b;
}

/* K block of the many-tile path for K of dt: a panel group's block in half
 * the L2 (pb_kops.kpf: in a quarter, the next unit prefetched beside it);
 * blocks of about equal size, even (q8, f8: whole groups; the last one shorter) */
static int kblock(const pb_kops *ops, pb_dtype dt, int K)
{
    const int forced = atomic_load(&kblock_forced), align = pb_kgrouped(dt) ? PB_KQ8 : 2;
    if (forced > 0)
        return (forced + align - 1) / align * align;
    const size_t per_k = (size_t)ops->gmax[ops->mr] * pb_kpanel_off(dt, PB_KQ8) / PB_KQ8;
    size_t kmax = l2_budget() / (ops->kpf ? 2 : 1) / per_k;
    kmax = kmax < (size_t)ops->kc ? (size_t)ops->kc : kmax;
    if ((size_t)K <= kmax)
        return (K + 1) & ~1;
    const size_t nb = ((size_t)K + kmax - 1) / kmax;
    return (int)((((size_t)K + nb - 1) / nb + (size_t)align - 1) / (size_t)align * (size_t)align);
}

/* Work items of a product: sizes that shrink as the work runs out (half of
 * a thread's share of what is left, in whole panel groups), so that the
 * threads finish within one group of each other: a step's hundreds of calls
 * each end with the threads waiting for the slowest. Batch-1 decode only
 * streams weights; for batched decode and prefill the shrinking items beat
 * even ones of about 4 a thread (session 12, 2 threads: SmolLM2 decode b32
 * and b64 +3-10%, TinyLlama-1.1B prefill and b32 +4-6%, GPT-2 the same). */
#define MM_MAX_ITEMS 128

/* what a call adds to kmat_mul's: NULL, or the pairs made already (pairs,
 * ldpairs; the AMX form: no conversion), or the glu form (half > 0,
 * pb_kmat_mul_glu's first product: items in gate panels [0, half), each
 * with its up panel q + half; y unused, out gets the activation's pairs,
 * row stride ldout words) */
typedef struct mm_extra {
    const uint32_t *pairs;
    size_t ldpairs;
    int half;
    pb_kact kact;
    uint32_t *out;
    size_t ldout;
} mm_extra;

typedef struct mm_job {
    const pb_kops *ops;
    const float *x;
    size_t ldx;
    int M;
    const pb_kmat *w;
    const float *bias;
    float *y;
    size_t ldy;
    int first[MM_MAX_ITEMS + 1]; /* item i is panels [first[i], first[i + 1]) */
    float *wconv; /* [threads][WCONV_FLOATS] */
    int kb;       /* K block of the many-tile path reading the panels in place */
    int pairs;    /* x holds bf16 pairs (pb_kops.xpairs) */
    int xshift;   /* 1: a k offset is halved (pb_kops.xwords 1), else taken as is (2 words a pair) */
    const float *xsrc; /* the f32 rows the pairs are made from, into xb (x then points there) */
    size_t ldxsrc;
    uint32_t *xb;
    int xrows;    /* rows per conversion item */
    int xzero;    /* the AMX form: each row's words past its pairs zeroed */
    int mchunk;   /* the AMX form's rows at a time */
    pb_krow_make make; /* NULL, or: rows made by make(mctx, r, row) (pb_kmat_mul_made) */
    void *mctx;
    const uint32_t *xa; /* the AMX form's pairs (xb, or pairs made before the call) */
    const mm_extra *ex; /* NULL, or what the call adds */
} mm_job;

static inline int nlast_of(const pb_kmat *w, int p_last)
{
    return p_last == w->npanels - 1 ? w->n_out - p_last * PB_KNR : PB_KNR;
}

static inline const void *panel_at(const pb_kmat *w, int p, int k0)
{
    return (const char *)w->data + (size_t)p * w->pstride * store_size(w->dt) + pb_kpanel_off(w->dt, (size_t)k0);
}

/* panels [p0, p1) with R rows of x at x, K block [k0, k0 + kc), in the
 * table's tiles (pb_kops.mm); pfd: the tiles' */
static void mm_rows_panels(const mm_job *j, int R, const float *x, float *y, int p0, int p1, int k0, int kc,
                           int accumulate, ptrdiff_t pfd)
{
    const pb_kmat *w = j->w;
    if (p0 < p1)
        j->ops->mm(R, p1 - p0, w->dt, x + (k0 >> j->xshift), j->ldx, panel_at(w, p0, k0), w->pstride, kc,
                   y + (size_t)p0 * PB_KNR, j->ldy, nlast_of(w, p1 - 1), accumulate, pfd);
}

/* The many-tile path's prefetch: the first row tile over a unit (a panel
 * group's K block) read it from memory at the rate of one tile's products
 * while the other tiles read the L2 (session 24, Zen 5: M = 16..64 ran at
 * 70-80% of M = 512's rate). The other tiles each prefetch the next unit:
 * for each line they read, the line pfd bytes on, in the same panels' next
 * K block, else in the next group's first (the last block may be a few k
 * shorter: the lines past it are the next group's, read soon after).
 * 0 where the item has no next unit, or its next group is shorter. */
static ptrdiff_t next_unit_pfd(const pb_kmat *w, int pg, int pe, int p1, int G, int k0, int kb)
{
    const size_t es = store_size(w->dt);
    if (k0 + kb < w->n_in) /* the same panels, the next block (blocks start at whole q8 groups) */
        return (ptrdiff_t)pb_kpanel_off(w->dt, (size_t)kb);
    if (pe - pg != G || p1 - pe < G)
        return 0;
    /* the next group's first block */
    return (ptrdiff_t)((size_t)G * w->pstride * es - pb_kpanel_off(w->dt, (size_t)k0));
}

/* The converting path's next unit (next_unit_pfd's: the same panels' next
 * K block, else the item's next group's first, here also a shorter one) as
 * lines: np panels (stride bytes apart) from at, bytes each; np 0 where the
 * item has none. */
typedef struct next_lines {
    const char *at;
    size_t bytes, stride;
    int np;
} next_lines;

/* the lines of np panels from p over the K block from k (kb long, or what is left); none where k
 * is past K */
static next_lines unit_lines(const pb_kmat *w, int p, int np, int k, int kb)
{
    const size_t es = store_size(w->dt);
    next_lines n = {NULL, 0, w->pstride * es, 0};
    if (k >= w->n_in)
        return n;
    n.at = panel_at(w, p, k);
    n.bytes = pb_kpanel_off(w->dt, (size_t)(w->n_in - k < kb ? w->n_in : k + kb)) - pb_kpanel_off(w->dt, (size_t)k);
    n.np = np;
    return n;
}

static next_lines next_unit_lines(const pb_kmat *w, int pg, int pe, int p1, int G, int k0, int kb)
{
    if (k0 + kb < w->n_in)
        return unit_lines(w, pg, pe - pg, k0 + kb, kb);
    /* the item's next group's first block */
    return unit_lines(w, pe, p1 - pe < G ? p1 - pe : G, pe < p1 ? 0 : w->n_in, kb);
}

/* Tile t of nt's share of the next unit's lines, toward the L1 (each tile a
 * slice, so that the requests spread over the unit's time): the next cvt
 * then reads the cache, not memory (session 27, AVX2 Zen 3, 2 threads,
 * alternated runs: SmolLM2 decode b32 +7-13%, TinyLlama b32 +5%; cvt had
 * 12.7% of SmolLM2 b32's time). The same before the in-place path's later
 * tiles (tables without kpf) measured no change at b8/b16: not done. */
static void prefetch_share(const next_lines *n, int t, int nt)
{
    const size_t lines = (n->bytes + 63) / 64, total = lines * (size_t)n->np;
    const size_t end = total * (size_t)(t + 1) / (size_t)nt;
    /* one division per panel the slice touches, not per line */
    for (size_t i = total * (size_t)t / (size_t)nt; i < end;) {
        const size_t q = i / lines, pend = (q + 1) * lines < end ? (q + 1) * lines : end;
        const char *panel = n->at + q * n->stride;
        for (; i < pend; i++)
            __builtin_prefetch(panel + (i - q * lines) * 64, 0, 3);
    }
}

/* Bytes of x's rows in a K block that the converting path keeps in cache
 * while all of an item's panels pass: a quarter of the L2 (with K blocks
 * forced by the tests, none: chunks of the fewest rows) */
static size_t x_budget(void)
{
    return atomic_load(&kblock_forced) > 0 ? 1 : l2_budget() / 2;
}

/* The L3 that cpu0 shares, from sysfs (glibc's sysconf can give the whole
 * socket's: 256 MiB on an EPYC VM whose L3 is 32 MiB); 0 where unknown */
static size_t l3_bytes(void)
{
    for (int i = 0; i < 8; i++) {
        char path[80], buf[32];
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/level", i);
        FILE *f = fopen(path, "r");
        if (!f)
            break;
        const int lv = fgets(buf, sizeof buf, f) ? atoi(buf) : 0;
        fclose(f);
        if (lv != 3)
            continue;
        snprintf(path, sizeof path, "/sys/devices/system/cpu/cpu0/cache/index%d/size", i);
        if (!(f = fopen(path, "r")))
            return 0;
        size_t n = 0;
        char unit = 0;
        const int got = fgets(buf, sizeof buf, f) ? sscanf(buf, "%zu%c", &n, &unit) : 0;
        fclose(f);
        if (got < 1)
            return 0;
        return unit == 'K' ? n << 10 : unit == 'M' ? n << 20 : unit == 'G' ? n << 30 : n;
    }
    return 0;
}

/* Whether the converting path takes x in row chunks (cvt_chunks): where all of x is more than
 * half the L3 (unknown: 8 MiB), so that each panel group would read it from memory. Where the
 * L3 holds it, reading it there once a group moves less than the chunks' running sums (y's
 * K / kc round trips): kern-bench at M = 512, SmolLM2's head 0.8x and TinyLlama's shapes no
 * faster in chunks, Llama-3-8B's down product (K 14336) 1.4x. With K blocks forced: always. */
static int x_chunked(int M, int K)
{
    if (atomic_load(&kblock_forced) > 0)
        return 1;
    static atomic_size_t cached;
    size_t b = atomic_load(&cached);
    if (!b) {
        const size_t l3 = l3_bytes();
        b = l3 ? l3 / 2 : (size_t)8 << 20;
        atomic_store(&cached, b);
    }
    return (size_t)M * (size_t)K * sizeof(float) > b;
}

/* the converting path's unit: panels [pg, pe) over K block [k0, k0 + kc) widened to f32 at wc */
static void cvt_unit(const mm_job *j, float *wc, int pg, int pe, int k0, int kc)
{
    for (int p = pg; p < pe; p++)
        j->ops->cvt(j->w->dt, panel_at(j->w, p, k0), kc, wc + (size_t)(p - pg) * kc * PB_KNR);
}

/* rows [r0, r1) of x times the unit at wc, into y (the running sums when k0 > 0); each row tile
 * prefetches its share of next */
static void cvt_tiles(const mm_job *j, const float *wc, const next_lines *next, int r0, int r1, int pg, int pe,
                      int k0, int kc)
{
    const pb_kops *ops = j->ops;
    const int mr = ops->mr, M = r1 - r0, nt = (M + mr - 1) / mr;
    for (int t = 0, r = r0; t < nt; r += pb_ktile_rows(M, nt, t), t++) {
        const int R = pb_ktile_rows(M, nt, t);
        prefetch_share(next, t, nt);
        ops->mm(R, pe - pg, PB_DT_F32, j->x + (size_t)r * j->ldx + k0, j->ldx, wc, (size_t)kc * PB_KNR, kc,
                j->y + (size_t)r * j->ldy + (size_t)pg * PB_KNR, j->ldy, nlast_of(j->w, pe - 1), k0 > 0, 0);
    }
}

/* The converting path where a K block of x's rows outgrows x_budget (prefill): rows in chunks
 * that fit it, outermost; in a chunk K blocks, then the item's panel groups, each converted and
 * taken by the chunk's row tiles. A chunk's block of x stays in the L2 while every panel of the
 * item passes, and is read from memory once, not once a panel group; y's running sums go
 * through the cache between K blocks. Every element is still one fma chain over k ascending. */
static void cvt_chunks(const mm_job *j, int worker, int p0, int p1, int KB)
{
    const pb_kmat *w = j->w;
    const int M = j->M, K = w->n_in, mr = j->ops->mr, G = j->ops->gmax[mr];
    int mc = (int)(x_budget() / ((size_t)KB * sizeof(float))) / mr * mr;
    mc = mc < 4 * mr ? 4 * mr : mc;
    const int nc = (M + mc - 1) / mc;
    mc = ((M + nc - 1) / nc + mr - 1) / mr * mr; /* chunks of about equal rows */
    float *wc = j->wconv + (size_t)worker * WCONV_FLOATS;
    for (int c0 = 0; c0 < M; c0 += mc) {
        const int c1 = c0 + mc < M ? c0 + mc : M;
        for (int k0 = 0; k0 < K; k0 += KB) {
            const int kc = K - k0 < KB ? K - k0 : KB;
            for (int pg = p0; pg < p1; pg += G) {
                const int pe = pg + G < p1 ? pg + G : p1;
                cvt_unit(j, wc, pg, pe, k0, kc);
                /* the next unit: the next group's block, else the first group's next block, else the
                 * next chunk's first */
                const next_lines next =
                    pe < p1 ? unit_lines(w, pe, p1 - pe < G ? p1 - pe : G, k0, KB)
                            : unit_lines(w, p0, p1 - p0 < G ? p1 - p0 : G, k0 + KB < K ? k0 + KB : c1 < M ? 0 : K, KB);
                cvt_tiles(j, wc, &next, c0, c1, pg, pe, k0, kc);
            }
        }
    }
}

/* y's columns of panels [p0, p1) += bias */
static void add_bias(const mm_job *j, int p0, int p1)
{
    if (!j->bias)
        return;
    const int n_out = j->w->n_out;
    const int c0 = p0 * PB_KNR, c1 = p1 * PB_KNR < n_out ? p1 * PB_KNR : n_out;
    for (int i = 0; i < j->M; i++)
        pb_krow_add(j->y + (size_t)i * j->ldy + c0, j->bias + c0, NULL, (size_t)(c1 - c0));
}

static void mm_item(void *ctx, int item, int worker)
{
    const mm_job *j = ctx;
    const pb_kops *ops = j->ops;
    const pb_kmat *w = j->w;
    const int p0 = j->first[item], p1 = j->first[item + 1];
    const int M = j->M, K = w->n_in, mr = ops->mr;
    if (M <= mr) {
        /* one register tile of rows: the whole K in registers */
        mm_rows_panels(j, M, j->x, j->y, p0, p1, 0, K, 0, 0);
    } else {
        /* panel groups outermost, then K blocks (the running sums go
         * through y, which stays in cache across a group's blocks), then
         * all row tiles over the group's block */
        const int G = ops->gmax[mr], nt = (M + mr - 1) / mr;
        const int cvt = w->dt != PB_DT_F32 && ops->cvt_min_m > 0 && M >= ops->cvt_min_m && !j->pairs;
        const int KB = cvt ? ops->kc : j->kb;
        if (cvt && (size_t)M * (size_t)KB * sizeof(float) > x_budget() && x_chunked(M, K)) {
            cvt_chunks(j, worker, p0, p1, KB);
            add_bias(j, p0, p1);
            return;
        }
        for (int pg = p0; pg < p1; pg += G) {
            const int pe = pg + G < p1 ? pg + G : p1;
            for (int k0 = 0; k0 < K; k0 += KB) {
                const int kc = K - k0 < KB ? K - k0 : KB;
                if (cvt) {
                    /* convert the group's block to f32 once (exact), then
                     * the f32 tiles: the same products in the same order */
                    float *wc = j->wconv + (size_t)worker * WCONV_FLOATS;
                    cvt_unit(j, wc, pg, pe, k0, kc);
                    const next_lines next = next_unit_lines(w, pg, pe, p1, G, k0, KB);
                    cvt_tiles(j, wc, &next, 0, M, pg, pe, k0, kc);
                    continue;
                }
                const ptrdiff_t pfd = ops->kpf ? next_unit_pfd(w, pg, pe, p1, G, k0, KB) : 0;
                for (int t = 0, r0 = 0; t < nt; r0 += pb_ktile_rows(M, nt, t), t++) {
                    const int R = pb_ktile_rows(M, nt, t);
                    mm_rows_panels(j, R, j->x + (size_t)r0 * j->ldx, j->y + (size_t)r0 * j->ldy, pg, pe, k0, kc,
                                   k0 > 0, t > 0 ? pfd : 0);
                }
            }
        }
    }
    add_bias(j, p0, p1);
}

/* the AMX form: all of the item's panels on the tile unit, the bias added
 * there (f16 and f32 weights split in the worker's wconv: K blocks of one
 * step or a few when the tests force K blocks) */
static void amx_item(void *ctx, int item, int worker)
{
    const mm_job *j = ctx;
    const int p0 = j->first[item], p1 = j->first[item + 1];
    const size_t sbytes = atomic_load(&kblock_forced) > 0 ? (size_t)12 << 10 : WCONV_FLOATS * sizeof(float);
    j->ops->amx(j->xa, j->ldx, j->M, j->mchunk, j->w, p0, p1, j->y, j->ldy, j->bias,
                j->wconv + (size_t)worker * WCONV_FLOATS, sbytes);
}

static void amx_glu_item(void *ctx, int item, int worker)
{
    (void)worker;
    const mm_job *j = ctx;
    const mm_extra *g = j->ex;
    j->ops->amx_glu(j->xa, j->ldx, j->M, j->mchunk, j->w, g->half, j->first[item], j->first[item + 1], j->bias,
                    g->kact, j->ops->glu_pairs, g->out, g->ldout);
}

static void xpairs_item(void *ctx, int item, int worker)
{
    const mm_job *j = ctx;
    const int r1 = (item + 1) * j->xrows < j->M ? (item + 1) * j->xrows : j->M;
    const size_t kp = ((size_t)j->w->n_in + 1) / 2;
    float *row = j->make ? j->wconv + (size_t)worker * WCONV_FLOATS : NULL;
    for (int r = item * j->xrows; r < r1; r++) {
        if (row)
            j->make(j->mctx, r, row);
        j->ops->xpairs(row ? row : j->xsrc + (size_t)r * j->ldxsrc, j->w->n_in, j->xb + (size_t)r * j->ldx);
        if (j->xzero)
            memset(j->xb + (size_t)r * j->ldx + kp, 0, (j->ldx - kp) * sizeof(uint32_t));
    }
}

/* the table a product of w takes: the bf16-product tables multiply bf16
 * weights only, other weights take the exact table beside them; the AMX
 * table takes every dtype (f16 and f32 split into bf16 pieces) */
static const pb_kops *table_for(const pb_kmat *w)
{
    const pb_kops *ops = pb_kops_active();
    if (pb_kgrouped(w->dt)) /* the exact tiles of every table (the AMX one's too) */
        return ops->exact ? ops->exact : ops;
    return ops->exact && !ops->amx && w->dt != PB_DT_BF16 ? ops->exact : ops;
}

/* rows per item of a pass over a call's M rows (the pairs, or made rows) */
static int rows_per_item(int M, int threads)
{
    return M >= 4 * threads ? (M + 4 * threads - 1) / (4 * threads) : M;
}

/* fn over items of per rows: on the calling thread where there is one item */
static void run_rows(pb_kctx *k, int M, int per, pb_pool_fn fn, void *ctx)
{
    const int n = (M + per - 1) / per;
    if (k->threads == 1 || n == 1)
        for (int i = 0; i < n; i++)
            fn(ctx, i, 0);
    else
        pb_kctx_run(k, n, fn, ctx);
}

/* make_item: rows of x made in place (pb_kmat_mul_made without pairs) */
typedef struct make_job {
    pb_krow_make make;
    void *ctx;
    float *x;
    size_t ldx;
    int M, per;
} make_job;

static void make_item(void *ctx, int item, int worker)
{
    (void)worker;
    const make_job *j = ctx;
    const int r1 = (item + 1) * j->per < j->M ? (item + 1) * j->per : j->M;
    for (int r = item * j->per; r < r1; r++)
        j->make(j->ctx, r, j->x + (size_t)r * j->ldx);
}

static pb_status kmat_mul(pb_kctx *k, const float *x, int ldx, int M, const pb_kmat *w, const float *bias, float *y,
                          int ldy, pb_krow_make make, void *mctx, const mm_extra *ex);

pb_status pb_kmat_mul(pb_kctx *k, const float *x, int ldx, int M, const pb_kmat *w, const float *bias, float *y,
                      int ldy)
{
    return kmat_mul(k, x, ldx, M, w, bias, y, ldy, NULL, NULL, NULL);
}

pb_status pb_kmat_mul_made(pb_kctx *k, pb_krow_make make, void *ctx, float *x, int ldx, int M, const pb_kmat *w,
                           const float *bias, float *y, int ldy)
{
    if (M <= 0)
        return PB_OK;
    if (ldx < w->n_in) /* (before any row is made into x) */
        return pb_error(PB_ERR_INTERNAL, "pb_kmat_mul_made: stride %d below %d", ldx, w->n_in);
    if (table_for(w)->xpairs && (size_t)w->n_in <= WCONV_FLOATS)
        return kmat_mul(k, x, ldx, M, w, bias, y, ldy, make, ctx, NULL);
    /* the products read x itself: its rows first */
    make_job j = {make, ctx, x, (size_t)ldx, M, rows_per_item(M, k->threads)};
    run_rows(k, M, j.per, make_item, &j);
    return pb_kmat_mul(k, x, ldx, M, w, bias, y, ldy);
}

/* the AMX form's rows at a time for rows of lp words of pairs: about half
 * the L2 (tests forcing K blocks: one row block) */
static int amx_mchunk(size_t lp)
{
    const size_t mc = atomic_load(&kblock_forced) > 0 ? 32 : l2_budget() / (lp * sizeof(uint32_t)) / 32 * 32;
    return mc < 32 ? 32 : mc > (1u << 20) ? 1 << 20 : (int)mc;
}

static pb_status kmat_mul(pb_kctx *k, const float *x, int ldx, int M, const pb_kmat *w, const float *bias, float *y,
                          int ldy, pb_krow_make make, void *mctx, const mm_extra *ex)
{
    if (M <= 0)
        return PB_OK;
    const int glu = ex && ex->half > 0;
    if ((!(ex && ex->pairs) && ldx < w->n_in) || (!glu && ldy < w->n_out))
        return pb_error(PB_ERR_INTERNAL, "pb_kmat_mul: strides %d/%d below [%d, %d]", ldx, ldy, w->n_out, w->n_in);
    const pb_kops *ops = table_for(w);
    mm_job j = {.ops = ops, .x = x, .ldx = (size_t)ldx, .M = M, .w = w, .bias = bias, .y = y, .ldy = (size_t)ldy,
                .wconv = k->wconv, .make = make, .mctx = mctx, .ex = ex};
    const int amx = ops->amx != NULL;
    const int G = glu ? 1 : amx ? 2 : j.ops->gmax[M <= j.ops->mr ? M : j.ops->mr];
    const int threads = k->threads;
    j.kb = M > j.ops->mr ? kblock(j.ops, w->dt, w->n_in) : 0; /* the many-tile path's only */
    if (ex && ex->pairs) { /* the AMX form, its pairs made by the caller */
        j.xa = ex->pairs;
        j.ldx = ex->ldpairs;
        j.mchunk = amx_mchunk(ex->ldpairs);
    } else if (j.ops->xpairs) {
        /* the bf16 products: x as bf16 pairs, converted once for all the
         * call's panels (per tile and panel group it cost a third of the
         * dot products' instructions) */
        const size_t lp = amx ? pb_kamx_ldxb(w->n_in) : ((size_t)w->n_in + 1) / 2 * (size_t)j.ops->xwords;
        const size_t rows = amx ? amx_rows(M) : (size_t)M;
        PB_CHECK(grow_xb(k, rows * lp)); /* reserved by pb_kctx_reserve; grown here for other callers */
        if (amx) {
            /* rows past M: zeros (A tiles of 16 rows; a call of fewer
             * rows has tiles of its rows); A chunks of about half the L2,
             * in row blocks of 32 */
            if (M > 16)
                memset(k->xb + (size_t)M * lp, 0, (rows - (size_t)M) * lp * sizeof(uint32_t));
            j.mchunk = amx_mchunk(lp);
            j.xzero = 1;
        }
        j.xsrc = x;
        j.ldxsrc = (size_t)ldx;
        j.xb = k->xb;
        j.xa = k->xb;
        j.x = (const float *)(const void *)k->xb;
        j.ldx = lp;
        j.pairs = 1;
        j.xshift = j.ops->xwords == 1;
        j.xrows = rows_per_item(M, threads);
        run_rows(k, M, j.xrows, xpairs_item, &j);
    }
    /* items in whole panel groups (the last may end in a partial one),
     * shrinking (above); at least 1/64 of the groups each, so the table
     * never fills */
    const int units = glu ? ex->half : w->npanels; /* the glu form: gate panels */
    const int groups = (units + G - 1) / G;
    const int least = (groups + MM_MAX_ITEMS / 2 - 1) / (MM_MAX_ITEMS / 2);
    int items = 0;
    for (int done = 0; done < groups;) {
        int n = (groups - done + 2 * threads - 1) / (2 * threads);
        n = n < least ? least : n;
        j.first[items++] = done * G;
        done += n < groups - done ? n : groups - done;
    }
    j.first[items] = units;
    pb_pool_fn fn = glu ? amx_glu_item : amx ? amx_item : mm_item;
    if (threads == 1 || items == 1)
        for (int i = 0; i < items; i++)
            fn(&j, i, 0);
    else
        pb_kctx_run(k, items, fn, &j);
    return PB_OK;
}

bool pb_kmat_glu_fits(const pb_kmat *gu, const pb_kmat *down, int M, size_t scratch_bytes)
{
    const pb_kops *ops = pb_kops_active();
    const int n = down->n_in;
    return ops && ops->amx_glu && ops->glu_pairs && gu->dt == PB_DT_BF16 && M > 16 && n > 0 && n % PB_KNR == 0 &&
           gu->n_out == 2 * n && amx_rows(M) * pb_kamx_ldxb(n) * sizeof(uint32_t) <= scratch_bytes;
}

pb_status pb_kmat_mul_glu(pb_kctx *k, const float *x, int ldx, int M, const pb_kmat *gu, const float *gu_bias,
                          pb_kact act, const pb_kmat *down, const float *down_bias, float *y, int ldy, void *scratch,
                          size_t scratch_bytes)
{
    if (M <= 0)
        return PB_OK;
    if (!pb_kmat_glu_fits(gu, down, M, scratch_bytes) || ((uintptr_t)scratch & 63))
        return pb_error(PB_ERR_INTERNAL, "pb_kmat_mul_glu: not the AMX form's call (%d rows, %d x %d, %zu bytes)", M,
                        gu->n_out, down->n_in, scratch_bytes);
    const int n = down->n_in;
    const size_t lp = pb_kamx_ldxb(n), rows = amx_rows(M), used = (size_t)n / 2;
    uint32_t *pairs = scratch;
    /* what the items do not write: each row's words past its pairs, and
     * the rows past M of the last A tiles: zeros, as pb_kmat_mul's pairs */
    for (int r = 0; r < M; r++)
        memset(pairs + (size_t)r * lp + used, 0, (lp - used) * sizeof(uint32_t));
    memset(pairs + (size_t)M * lp, 0, (rows - (size_t)M) * lp * sizeof(uint32_t));
    const mm_extra g = {.half = n / PB_KNR, .kact = act, .out = pairs, .ldout = lp};
    PB_CHECK(kmat_mul(k, x, ldx, M, gu, gu_bias, NULL, 0, NULL, NULL, &g));
    const mm_extra d = {.pairs = pairs, .ldpairs = lp};
    return kmat_mul(k, NULL, n, M, down, down_bias, y, ldy, NULL, NULL, &d);
}
