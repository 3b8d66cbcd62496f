/* AMX path of the bf16 products (--matmul-precision bf16-amx): bf16 weights
 * times activations rounded to bf16 on the tile unit (tdpbf16ps), where the
 * CPU has AMX-TILE and AMX-BF16 (Intel Xeon from Sapphire Rapids on) and
 * the kernel grants the process its tile state.
 *
 * The packed bf16 panels (kern_impl.h) are already the tile unit's B layout:
 * 16 rows of 64 bytes hold 16 k pairs of 16 columns, so a panel's k pairs
 * 16s .. 16s + 15 are one B tile at (32 s) * 16 elements, rows 64 bytes
 * apart. The activations are bf16 pairs (pb_kxpairs), rows padded to whole
 * 64-byte tiles of 32 k with zeros: A tiles of 16 rows (of all the rows of
 * a call of fewer). C tiles hold as many rows by 16 columns in f32. Blocks
 * of 2 x 2 C tiles (tmm0-3; A in tmm4-5, B in tmm6-7) run over the whole K
 * (calls of up to 16 rows: 1 x 4, B in tmm5-7, four weight streams at once),
 * a call's rows in chunks of about half the L2, the A chunk read from there
 * by every pair of panels.
 *
 * Results: tdpbf16ps sums each k pair's products in its own way (measured in
 * session 15: 49-62% of elements differ from every model of vdpbf16ps), so
 * these are not the bits of the other bf16-product paths. They are
 * batch-invariant all the same: each element's chain is one tdpbf16ps per
 * 32 k, ascending, from a zero C tile, whatever the number of rows, the
 * element's row in its tile, the tile's place or the thread.
 *
 * f16 and f32 weights (split products): each weight is the exact sum of
 * P bf16 pieces, P = 2 for f16 (11 significant bits: the leading 8, then
 * the other 3) and 3 for f32 (8 + 8 + 8), each piece the truncation of what
 * the ones before left (a subtraction that is exact: Sterbenz). A panel's
 * K block is split into a worker's scratch as P B tiles a step (piece by
 * piece, 1 KiB apart), and every step's A tile multiplies the P of them in
 * turn: each element's chain is the P tdpbf16ps of a step, the steps
 * ascending, C carried through y between K blocks (stored and loaded as
 * f32: exact). So the activations are rounded to bf16 as for bf16 weights,
 * the weights are exact (but for pieces below bf16's normal range, 2^-126,
 * which the tile unit reads as zero: weights of magnitude below about
 * 2^-110 for f32; never for f16), and the chain depends on K only: still
 * batch-invariant. */
#include "config.h"

#include "cpu/kern_impl.h"

#ifdef PB_KERN_AMX
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cpuid.h>

#define TGTA __attribute__((target("amx-tile,amx-bf16,avx512f,avx2")))
#define INLA static inline __attribute__((always_inline)) TGTA

#ifndef PFD
#define PFD 4 /* prefetch distance in B tiles */
#endif
#ifndef PFD2
/* and farther, into the L2 (T1): decode batches of 32-64 rows, TinyLlama
 * b32 371 -> 377 tok/s, b64 515 -> 537, SmolLM2 b64 2049 -> 2084 (medians
 * of 3-4, interleaved); 16 and 32 steps measured lower in kern-bench */
#define PFD2 8
#endif
#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

bool pb_kamx_detect(void)
{
    unsigned a, b, c, d;
    if (__get_cpuid_max(0, NULL) < 7)
        return false;
    __cpuid_count(7, 0, a, b, c, d);
    const int amx_bf16 = (d >> 22) & 1, amx_tile = (d >> 24) & 1;
    if (!amx_bf16 || !amx_tile)
        return false;
    __get_cpuid(1, &a, &b, &c, &d);
    if (!((c >> 27) & 1)) /* OSXSAVE */
        return false;
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 0x60000u) != 0x60000u) /* XTILECFG, XTILEDATA enabled by the OS */
        return false;
    /* Linux hands out the tile data state on request, per process */
    return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
}

/* palette 1, all 8 tiles 16 rows of 64 bytes: tmm0-3 C, tmm4-5 A, tmm6-7 B
 * (fewer rows: tmm5 is a B tile of block_1x4) */
typedef struct __attribute__((aligned(64))) tilecfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tilecfg;

/* C and A tiles of rows rows (16, or all of a call's fewer) */
static TGTA void tiles_config(int rows)
{
    tilecfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int t = 0; t < 8; t++) {
        cfg.colsb[t] = 64;
        cfg.rows[t] = t < 5 ? rows : 16;
    }
    _tile_loadconfig(&cfg);
}

/* C tile t (rows < nr and columns < nc valid) into y: straight when whole;
 * then + bias (bp: the tile's 16 columns of it, or NULL; pb_krow_add, as the
 * separate pass over y adds it, while the rows are in L1) */
#define STORE_C(t, yp, ldy, nr, nc, bp)                                                                              \
    do {                                                                                                             \
        if ((nr) == 16 && (nc) == 16) {                                                                              \
            _tile_stored(t, (yp), (long)((ldy) * sizeof(float)));                                                   \
        } else {                                                                                                     \
            _tile_stored(t, ctmp, 64);                                                                               \
            for (int i_ = 0; i_ < (nr); i_++)                                                                        \
                memcpy((yp) + (size_t)i_ * (ldy), ctmp[i_], (size_t)(nc) * sizeof(float));                          \
        }                                                                                                            \
        for (int i_ = 0; (bp) && i_ < (nr); i_++)                                                                    \
            pb_krow_add((yp) + (size_t)i_ * (ldy), (bp), NULL, (size_t)(nc));                                        \
    } while (0)

/* C tile t from y (rows < nr and columns < nc; the rest zero) where acc,
 * else zero: a K block after the first continues the chains */
#define LOAD_C(t, yp, ldy, nr, nc, acc)                                                                              \
    do {                                                                                                             \
        if (!(acc)) {                                                                                                \
            _tile_zero(t);                                                                                           \
        } else if ((nr) == 16 && (nc) == 16) {                                                                       \
            _tile_loadd(t, (yp), (long)((ldy) * sizeof(float)));                                                    \
        } else {                                                                                                     \
            memset(ctmp, 0, sizeof ctmp);                                                                            \
            for (int i_ = 0; i_ < (nr); i_++)                                                                        \
                memcpy(ctmp[i_], (yp) + (size_t)i_ * (ldy), (size_t)(nc) * sizeof(float));                          \
            _tile_loadd(t, ctmp, 64);                                                                                \
        }                                                                                                            \
    } while (0)

/* 16 NR rows of x (a: A tiles, row stride lda bytes) by 16 NC columns (b0,
 * b1: the panels at k = 0, their B tiles 1 KiB apart) over steps tiles of 32
 * k; bt0/bt1: the last step's B tiles (a zero-padded copy where K is not a
 * whole number of steps; NULL for split panels, whose tiles are whole); pf:
 * the B tiles PFD steps ahead prefetched into L1 and PFD2 steps ahead into
 * L2 (where the panels come from memory, not from the previous row block). P > 1:
 * split panels (a worker's scratch, whole tiles): step s's P pieces at (s P
 * + q) KiB, and C from y where acc (a K block after the first). bias: the
 * block's 16 NC columns of it, added as C is stored (NULL: none, or not the
 * last K block). */
INLA void block(const int NR, const int NC, const int P, const char *a, size_t lda, const char *b0, const char *b1,
                const char *bt0, const char *bt1, int steps, float *y, size_t ldy, int nr, int nc0, int nc1, int pf,
                int acc, const float *bias)
{
    float ctmp[16][16] __attribute__((aligned(64)));
    const int nr0 = nr < 16 ? nr : 16;
    float *y1 = y + 16 * ldy;
    LOAD_C(0, y, ldy, nr0, nc0, acc);
    if (NC == 2)
        LOAD_C(1, y + 16, ldy, nr0, nc1, acc);
    if (NR == 2) {
        LOAD_C(2, y1, ldy, nr - 16, nc0, acc);
        if (NC == 2)
            LOAD_C(3, y1 + 16, ldy, nr - 16, nc1, acc);
    }
    for (int s = 0; s < steps; s++) {
        const char *pa = a + (size_t)s * 64;
        const int last = bt0 && s == steps - 1;
        if (pf && PFD > 0) /* (few rows: the weights streamed once) */
            for (int l = 0; l < 16; l++) {
                _mm_prefetch(b0 + (size_t)(s + PFD) * 1024 + 64 * l, _MM_HINT_T0);
                if (NC == 2)
                    _mm_prefetch(b1 + (size_t)(s + PFD) * 1024 + 64 * l, _MM_HINT_T0);
#if PFD2 > 0
                _mm_prefetch(b0 + (size_t)(s + PFD2) * 1024 + 64 * l, _MM_HINT_T1);
                if (NC == 2)
                    _mm_prefetch(b1 + (size_t)(s + PFD2) * 1024 + 64 * l, _MM_HINT_T1);
#endif
            }
        for (int q = 0; q < P; q++) { /* the step's pieces (P = 1: its tile), A loaded with the first */
            const size_t o = ((size_t)s * P + (size_t)q) * 1024;
            _tile_loadd(6, last ? bt0 : b0 + o, 64);
            if (q == 0)
                _tile_loadd(4, pa, (long)lda);
            if (NC == 2)
                _tile_loadd(7, last ? bt1 : b1 + o, 64);
            _tile_dpbf16ps(0, 4, 6);
            if (NC == 2)
                _tile_dpbf16ps(1, 4, 7);
            if (NR == 2) {
                if (q == 0)
                    _tile_loadd(5, pa + 16 * lda, (long)lda);
                _tile_dpbf16ps(2, 5, 6);
                if (NC == 2)
                    _tile_dpbf16ps(3, 5, 7);
            }
        }
    }
    const float *bias1 = bias ? bias + 16 : NULL;
    STORE_C(0, y, ldy, nr0, nc0, bias);
    if (NC == 2)
        STORE_C(1, y + 16, ldy, nr0, nc1, bias1);
    if (NR == 2) {
        STORE_C(2, y1, ldy, nr - 16, nc0, bias);
        if (NC == 2)
            STORE_C(3, y1 + 16, ldy, nr - 16, nc1, bias1);
    }
}

/* 16 or fewer rows by 4 panels (b, pbytes apart; whole K tiles except the
 * last, bt[0..3]): C in tmm0-3, A in tmm4, B in tmm5-7 (the fourth panel's
 * into tmm5 again once the first's product has read it). P > 1: split
 * panels as block's, C from y where acc; bias as block's. */
INLA void block_1x4(const int P, const char *a, size_t lda, const char *b, size_t pbytes, const char *const bt[4],
                    int steps, float *y, size_t ldy, int nr, const int nc[4], int acc, const float *bias)
{
    float ctmp[16][16] __attribute__((aligned(64)));
    LOAD_C(0, y, ldy, nr, nc[0], acc);
    LOAD_C(1, y + 16, ldy, nr, nc[1], acc);
    LOAD_C(2, y + 32, ldy, nr, nc[2], acc);
    LOAD_C(3, y + 48, ldy, nr, nc[3], acc);
    for (int s = 0; s < steps; s++) {
        const int last = bt && s == steps - 1;
        if (P == 1) /* (split panels lie in the worker's scratch) */
            for (int l = 0; l < 16; l++)
                for (int q = 0; q < 4; q++)
                    _mm_prefetch(b + q * pbytes + (size_t)(s + PFD) * 1024 + 64 * l, _MM_HINT_T0);
        _tile_loadd(4, a + (size_t)s * 64, (long)lda);
        for (int q = 0; q < P; q++) {
            const size_t o = ((size_t)s * P + (size_t)q) * 1024;
            _tile_loadd(5, last ? bt[0] : b + o, 64);
            _tile_loadd(6, last ? bt[1] : b + pbytes + o, 64);
            _tile_dpbf16ps(0, 4, 5);
            _tile_loadd(7, last ? bt[2] : b + 2 * pbytes + o, 64);
            _tile_dpbf16ps(1, 4, 6);
            _tile_loadd(5, last ? bt[3] : b + 3 * pbytes + o, 64);
            _tile_dpbf16ps(2, 4, 7);
            _tile_dpbf16ps(3, 4, 5);
        }
    }
    STORE_C(0, y, ldy, nr, nc[0], bias);
    STORE_C(1, y + 16, ldy, nr, nc[1], bias ? bias + 16 : NULL);
    STORE_C(2, y + 32, ldy, nr, nc[2], bias ? bias + 32 : NULL);
    STORE_C(3, y + 48, ldy, nr, nc[3], bias ? bias + 48 : NULL);
}

typedef void (*block_fn)(const char *, size_t, const char *, const char *, const char *, const char *, int, float *,
                         size_t, int, int, int, int, int, const float *);
typedef void (*block4_fn)(const char *, size_t, const char *, size_t, const char *const[4], int, float *, size_t, int,
                          const int[4], int, const float *);

#define BLOCK_FN(NR, NC, P)                                                                                          \
    static TGTA void block_##NR##x##NC##_##P(const char *a, size_t lda, const char *b0, const char *b1,              \
                                             const char *bt0, const char *bt1, int steps, float *y, size_t ldy,      \
                                             int nr, int nc0, int nc1, int pf, int acc, const float *bias)           \
    {                                                                                                                \
        block(NR, NC, P, a, lda, b0, b1, bt0, bt1, steps, y, ldy, nr, nc0, nc1, pf, acc, bias);                      \
    }
#define BLOCK4_FN(P)                                                                                                 \
    static TGTA void block_1x4_##P(const char *a, size_t lda, const char *b, size_t pbytes, const char *const bt[4], \
                                   int steps, float *y, size_t ldy, int nr, const int nc[4], int acc,                \
                                   const float *bias)                                                                \
    {                                                                                                                \
        block_1x4(P, a, lda, b, pbytes, bt, steps, y, ldy, nr, nc, acc, bias);                                       \
    }
#define BLOCKS_OF(P) BLOCK_FN(2, 2, P) BLOCK_FN(2, 1, P) BLOCK_FN(1, 2, P) BLOCK_FN(1, 1, P) BLOCK4_FN(P)
BLOCKS_OF(1)
BLOCKS_OF(2)
BLOCKS_OF(3)

/* by pieces (1: bf16 panels, 2: split f16, 3: split f32): [rows > 16][two panels] */
static const block_fn blocks[4][2][2] = {
    {{NULL, NULL}, {NULL, NULL}},
    {{block_1x1_1, block_1x2_1}, {block_2x1_1, block_2x2_1}},
    {{block_1x1_2, block_1x2_2}, {block_2x1_2, block_2x2_2}},
    {{block_1x1_3, block_1x2_3}, {block_2x1_3, block_2x2_3}},
};
static const block4_fn blocks4[4] = {NULL, block_1x4_1, block_1x4_2, block_1x4_3};

/* valid columns of panel p (the last may be partial) */
static inline int cols_of(const pb_kmat *w, int p)
{
    return p == w->npanels - 1 ? w->n_out - p * PB_KNR : PB_KNR;
}

/* the last B tile of w's bf16 panel at panel as the tile unit must read
 * it: in place where the panel ends on a whole tile, else a copy in dst of
 * its pairs (K / 2 % 16 of them), zeros after, and the last pair's second k
 * zero where K is odd (past K: a KV cache's next key) */
static const char *last_tile(const pb_kmat *w, const char *panel, char dst[1024])
{
    const int kp = (w->n_in + 1) / 2, tail = kp % 16, odd = w->n_in & 1;
    const char *bt = panel + (size_t)((kp + 15) / 16 - 1) * 1024;
    if (!tail && !odd)
        return bt;
    const int n = tail ? tail : 16;
    memcpy(dst, bt, (size_t)n * 64);
    memset(dst + n * 64, 0, (size_t)(16 - n) * 64);
    if (odd)
        for (int c = 0; c < 16; c++)
            memset(dst + (n - 1) * 64 + c * 4 + 2, 0, 2);
    return dst;
}

/* step s (k 32 s .. 32 s + 31) of an f16 or f32 panel (element (k, c) at
 * k * 16 + c, K rows) as P bf16 B tiles at dst, 1 KiB apart: row i of piece
 * q holds the pair (k = 32 s + 2 i, k + 1) of the 16 columns (k past K: 0),
 * the P pieces summing to the weight exactly (the truncations above) */
INLA void split_step(const int P, pb_dtype dt, const void *panel, int K, int s, char *dst)
{
    const __m512i top = _mm512_set1_epi32((int)0xffff0000u);
    for (int i = 0; i < 16; i++) {
        const int k = 32 * s + 2 * i;
        __m512 v[2];
        for (int h = 0; h < 2; h++) {
            if (k + h >= K)
                v[h] = _mm512_setzero_ps();
            else if (dt == PB_DT_F16)
                v[h] = _mm512_cvtph_ps(_mm256_loadu_si256(
                    (const __m256i *)(const void *)((const uint16_t *)panel + (size_t)(k + h) * 16)));
            else
                v[h] = _mm512_loadu_ps((const float *)panel + (size_t)(k + h) * 16);
        }
        for (int q = 0; q < P; q++) {
            const __m512i a = _mm512_castps_si512(v[0]), b = _mm512_castps_si512(v[1]);
            /* a's top half low, b's high: (srl(a) & ~top) | (b & top) */
            _mm512_storeu_si512((void *)(dst + (size_t)q * 1024 + (size_t)i * 64),
                                _mm512_ternarylogic_epi32(_mm512_srli_epi32(a, 16), b, top, 0xd8));
            if (q + 1 < P) { /* what the piece leaves: exact */
                v[0] = _mm512_sub_ps(v[0], _mm512_castsi512_ps(_mm512_and_si512(a, top)));
                v[1] = _mm512_sub_ps(v[1], _mm512_castsi512_ps(_mm512_and_si512(b, top)));
            }
        }
    }
}

/* steps [s0, s0 + ns) of n panels from p of w split into dst: panel i's
 * step s0 + t at (i ns + t) P KiB */
static TGTA void split_panels(int P, const pb_kmat *w, int p, int n, int s0, int ns, char *dst)
{
    const size_t esz = w->dt == PB_DT_F16 ? 2 : 4;
    for (int t = 0; t < ns; t++)
        for (int i = 0; i < n; i++) {
            const char *panel = (const char *)w->data + (size_t)(p + i) * w->pstride * esz;
            char *d = dst + (size_t)i * ns * P * 1024;
            if (P == 2)
                split_step(2, w->dt, panel, w->n_in, s0 + t, d + (size_t)t * 2 * 1024);
            else
                split_step(3, w->dt, panel, w->n_in, s0 + t, d + (size_t)t * 3 * 1024);
        }
}

/* f16 or f32 w (split products): a chunk's rows over panels [p0, p1), each
 * group of panels (4 where the call has up to 16 rows, else 2) split a K
 * block at a time into scratch (the block as many steps as fit) */
static TGTA void split_mul(const uint32_t *xb, size_t lda, int M, int mc, int me, const pb_kmat *w, int p0, int p1,
                           float *y, size_t ldy, const float *bias, char *scratch, size_t scratch_bytes)
{
    const int P = w->dt == PB_DT_F16 ? 2 : 3;
    const int steps = ((w->n_in + 1) / 2 + 15) / 16;
    for (int p = p0; p < p1;) {
        const int four = M <= 16 && p + 4 <= p1, n = four ? 4 : p + 1 < p1 ? 2 : 1;
        size_t fit = scratch_bytes / ((size_t)n * P * 1024);
        const int kb = fit < 1 ? 1 : fit > (size_t)steps ? steps : (int)fit;
        const int nc[4] = {cols_of(w, p), n > 1 ? cols_of(w, p + 1) : 0, four ? cols_of(w, p + 2) : 0,
                           four ? cols_of(w, p + 3) : 0};
        for (int s0 = 0; s0 < steps; s0 += kb) {
            const int ns = steps - s0 < kb ? steps - s0 : kb;
            const size_t pbytes = (size_t)ns * P * 1024;
            const float *bp = bias && s0 + ns == steps ? bias + (size_t)p * PB_KNR : NULL; /* the last K block */
            split_panels(P, w, p, n, s0, ns, scratch);
            const char *a = (const char *)xb + (size_t)s0 * 64;
            if (four) {
                blocks4[P](a + (size_t)mc * lda, lda, scratch, pbytes, NULL, ns,
                           y + (size_t)mc * ldy + (size_t)p * PB_KNR, ldy, me - mc, nc, s0 > 0, bp);
                continue;
            }
            for (int r = mc; r < me; r += 32) {
                const int nr = me - r < 32 ? me - r : 32;
                blocks[P][nr > 16][n == 2](a + (size_t)r * lda, lda, scratch, scratch + pbytes, NULL, NULL, ns,
                                           y + (size_t)r * ldy + (size_t)p * PB_KNR, ldy, nr, nc[0], nc[1], 0, s0 > 0,
                                           bp);
            }
        }
        p += n;
    }
}

/* The gated MLP's first product fused with its activation (pb_kops.amx_glu):
 * gate panel q and its up panel q + half (n = 16 half columns each, bf16)
 * as one 2 x 2 block's two columns, its C tiles stored to an L1 buffer;
 * rows (glu_pairs) adds the bias, takes act(gate) * up as act does and
 * makes the 16 results' pairs as xpairs does, into out at word 8 q of each
 * row: the bits of the product into y, act's pass and xpairs' of the next
 * product's rows, without the [M, 2n] f32 rows in between. */
TGTA void pb_kamx_glu(const uint32_t *xb, size_t ldxb, int M, int mchunk, const pb_kmat *w, int half, int q0, int q1,
                      const float *bias, pb_kact act, pb_kglu_pairs rows, uint32_t *out, size_t ldout)
{
    const int steps = ((w->n_in + 1) / 2 + 15) / 16;
    const size_t lda = ldxb * sizeof(uint32_t), pbytes = w->pstride * sizeof(uint16_t);
    _Alignas(64) char btail[2][1024];
    float cb[32][32] __attribute__((aligned(64))); /* a block's rows: gate columns, then up */
    tiles_config(M < 16 ? M : 16);
    for (int mc = 0; mc < M; mc += mchunk) {
        const int me = M - mc < mchunk ? M : mc + mchunk;
        for (int q = q0; q < q1; q++) {
            const char *b0 = (const char *)w->data + (size_t)q * pbytes;
            const char *b1 = (const char *)w->data + (size_t)(q + half) * pbytes;
            const char *bt0 = last_tile(w, b0, btail[0]), *bt1 = last_tile(w, b1, btail[1]);
            for (int r = mc; r < me; r += 32) {
                const int nr = me - r < 32 ? me - r : 32;
                blocks[1][nr > 16][1]((const char *)(xb + (size_t)r * ldxb), lda, b0, b1, bt0, bt1, steps, &cb[0][0],
                                      32, nr, 16, 16, nr <= 16 || (M <= 64 && r == mc), 0, NULL);
                rows(act, &cb[0][0], 32, nr, bias ? bias + (size_t)q * PB_KNR : NULL,
                     bias ? bias + (size_t)(q + half) * PB_KNR : NULL, out + (size_t)r * ldout + (size_t)q * (PB_KNR / 2),
                     ldout);
            }
        }
    }
    _tile_release();
}

TGTA void pb_kamx_mul(const uint32_t *xb, size_t ldxb, int M, int mchunk, const pb_kmat *w, int p0, int p1,
                      float *y, size_t ldy, const float *bias, void *scratch, size_t scratch_bytes)
{
    const int steps = ((w->n_in + 1) / 2 + 15) / 16; /* B tiles per panel (of k pairs) */
    const size_t lda = ldxb * sizeof(uint32_t);
    const size_t pbytes = w->pstride * sizeof(uint16_t);
    _Alignas(64) char btail[2][1024];
    /* fewer than 16 rows: tiles of that many rows (each row's sums are the
     * same; the tile unit's time goes with its rows: decode 4-7% faster) */
    tiles_config(M < 16 ? M : 16);
    for (int mc = 0; mc < M; mc += mchunk) {
        const int me = M - mc < mchunk ? M : mc + mchunk;
        if (w->dt != PB_DT_BF16) {
            split_mul(xb, lda, M, mc, me, w, p0, p1, y, ldy, bias, scratch, scratch_bytes);
            continue;
        }
        int pstart = p0;
        if (M <= 16) /* decode batches: 4 panels at a time (TinyLlama b8 +2%) */
            for (; pstart + 4 <= p1; pstart += 4) {
                const char *b = (const char *)w->data + (size_t)pstart * pbytes;
                _Alignas(64) char bq[4][1024];
                const char *bt[4];
                int nc[4];
                for (int q = 0; q < 4; q++) {
                    bt[q] = last_tile(w, b + q * pbytes, bq[q]);
                    nc[q] = cols_of(w, pstart + q);
                }
                block_1x4_1((const char *)(xb + (size_t)mc * ldxb), lda, b, pbytes, bt, steps,
                            y + (size_t)mc * ldy + (size_t)pstart * PB_KNR, ldy, me - mc, nc, 0,
                            bias ? bias + (size_t)pstart * PB_KNR : NULL);
            }
        for (int p = pstart; p < p1; p += 2) {
            const int two = p + 1 < p1;
            const char *b0 = (const char *)w->data + (size_t)p * pbytes;
            const char *b1 = two ? b0 + pbytes : b0;
            const char *bt0 = last_tile(w, b0, btail[0]), *bt1 = last_tile(w, b1, btail[1]);
            const int nc0 = cols_of(w, p), nc1 = cols_of(w, p + 1);
            for (int r = mc; r < me; r += 32) {
                const int nr = me - r < 32 ? me - r : 32;
                /* B prefetched: by a block of up to 16 rows (as ever), and
                 * by the first row block of a call of up to 64 rows (decode
                 * batches: TinyLlama b32 341 -> 372 tok/s, b64 489 -> 523,
                 * SmolLM2 b32 1657 -> 1773, b64 within 2%; a prefill's
                 * larger calls gain nothing or lose a few %) */
                blocks[1][nr > 16][two](
                    (const char *)(xb + (size_t)r * ldxb), lda, b0, b1, bt0, bt1, steps, y + (size_t)r * ldy +
                    (size_t)p * PB_KNR, ldy, nr, nc0, nc1, nr <= 16 || (M <= 64 && r == mc), 0,
                    bias ? bias + (size_t)p * PB_KNR : NULL);
            }
        }
    }
    _tile_release();
}

#else

bool pb_kamx_detect(void)
{
    return false;
}

#endif
