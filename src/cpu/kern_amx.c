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
 * element's row in its tile, the tile's place or the thread. */
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

/* C tile t (rows < nr and columns < nc valid) into y: straight when whole */
#define STORE_C(t, yp, ldy, nr, nc)                                                                                  \
    do {                                                                                                             \
        if ((nr) == 16 && (nc) == 16) {                                                                              \
            _tile_stored(t, (yp), (long)((ldy) * sizeof(float)));                                                   \
        } else {                                                                                                     \
            _tile_stored(t, ctmp, 64);                                                                               \
            for (int i_ = 0; i_ < (nr); i_++)                                                                        \
                memcpy((yp) + (size_t)i_ * (ldy), ctmp[i_], (size_t)(nc) * sizeof(float));                          \
        }                                                                                                            \
    } while (0)

/* 16 NR rows of x (a: A tiles, row stride lda bytes) by 16 NC columns (b0,
 * b1: the panels at k = 0, their B tiles 1 KiB apart) over steps tiles of 32
 * k; bt0/bt1: the last step's B tiles (a zero-padded copy where K is not a
 * whole number of steps); pf: the B tiles PFD steps ahead prefetched (where
 * the panels come from memory, not from the previous row block) */
INLA void block(const int NR, const int NC, const char *a, size_t lda, const char *b0, const char *b1,
                const char *bt0, const char *bt1, int steps, float *y, size_t ldy, int nr, int nc0, int nc1, int pf)
{
    float ctmp[16][16] __attribute__((aligned(64)));
    _tile_zero(0);
    if (NC == 2)
        _tile_zero(1);
    if (NR == 2) {
        _tile_zero(2);
        if (NC == 2)
            _tile_zero(3);
    }
    for (int s = 0; s < steps; s++) {
        const int last = s == steps - 1;
        const char *pa = a + (size_t)s * 64;
        if (pf && PFD > 0) /* (few rows: the weights streamed once) */
            for (int l = 0; l < 16; l++) {
                _mm_prefetch(b0 + (size_t)(s + PFD) * 1024 + 64 * l, _MM_HINT_T0);
                if (NC == 2)
                    _mm_prefetch(b1 + (size_t)(s + PFD) * 1024 + 64 * l, _MM_HINT_T0);
            }
        _tile_loadd(6, last ? bt0 : b0 + (size_t)s * 1024, 64);
        _tile_loadd(4, pa, (long)lda);
        if (NC == 2)
            _tile_loadd(7, last ? bt1 : b1 + (size_t)s * 1024, 64);
        _tile_dpbf16ps(0, 4, 6);
        if (NC == 2)
            _tile_dpbf16ps(1, 4, 7);
        if (NR == 2) {
            _tile_loadd(5, pa + 16 * lda, (long)lda);
            _tile_dpbf16ps(2, 5, 6);
            if (NC == 2)
                _tile_dpbf16ps(3, 5, 7);
        }
    }
    const int nr0 = nr < 16 ? nr : 16;
    STORE_C(0, y, ldy, nr0, nc0);
    if (NC == 2)
        STORE_C(1, y + 16, ldy, nr0, nc1);
    if (NR == 2) {
        float *y1 = y + 16 * ldy;
        STORE_C(2, y1, ldy, nr - 16, nc0);
        if (NC == 2)
            STORE_C(3, y1 + 16, ldy, nr - 16, nc1);
    }
}

/* 16 or fewer rows by 4 panels (b, pbytes apart; whole K tiles except the
 * last, bt[0..3]): C in tmm0-3, A in tmm4, B in tmm5-7 (the fourth panel's
 * into tmm5 again once the first's product has read it) */
static TGTA void block_1x4(const char *a, size_t lda, const char *b, size_t pbytes, const char *const bt[4],
                           int steps, float *y, size_t ldy, int nr, const int nc[4])
{
    float ctmp[16][16] __attribute__((aligned(64)));
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    for (int s = 0; s < steps; s++) {
        const int last = s == steps - 1;
        const size_t o = (size_t)s * 1024;
        for (int l = 0; l < 16; l++)
            for (int q = 0; q < 4; q++)
                _mm_prefetch(b + q * pbytes + o + (size_t)PFD * 1024 + 64 * l, _MM_HINT_T0);
        _tile_loadd(4, a + (size_t)s * 64, (long)lda);
        _tile_loadd(5, last ? bt[0] : b + o, 64);
        _tile_loadd(6, last ? bt[1] : b + pbytes + o, 64);
        _tile_dpbf16ps(0, 4, 5);
        _tile_loadd(7, last ? bt[2] : b + 2 * pbytes + o, 64);
        _tile_dpbf16ps(1, 4, 6);
        _tile_loadd(5, last ? bt[3] : b + 3 * pbytes + o, 64);
        _tile_dpbf16ps(2, 4, 7);
        _tile_dpbf16ps(3, 4, 5);
    }
    STORE_C(0, y, ldy, nr, nc[0]);
    STORE_C(1, y + 16, ldy, nr, nc[1]);
    STORE_C(2, y + 32, ldy, nr, nc[2]);
    STORE_C(3, y + 48, ldy, nr, nc[3]);
}

#define BLOCK_FN(NR, NC)                                                                                             \
    static TGTA void block_##NR##x##NC(const char *a, size_t lda, const char *b0, const char *b1, const char *bt0,   \
                                       const char *bt1, int steps, float *y, size_t ldy, int nr, int nc0, int nc1,   \
                                       int pf)                                                                       \
    {                                                                                                                \
        block(NR, NC, a, lda, b0, b1, bt0, bt1, steps, y, ldy, nr, nc0, nc1, pf);                                    \
    }
BLOCK_FN(2, 2)
BLOCK_FN(2, 1)
BLOCK_FN(1, 2)
BLOCK_FN(1, 1)

/* valid columns of panel p (the last may be partial) */
static inline int cols_of(const pb_kmat *w, int p)
{
    return p == w->npanels - 1 ? w->n_out - p * PB_KNR : PB_KNR;
}

/* a panel's last B tile (at bt) as the tile unit must read it: its pairs
 * (tail of them, 0: all 16), zeros after, and the last pair's second k zero
 * where K is odd (past K: a KV cache's next key) */
static void last_tile(char dst[1024], const char *bt, int tail, int odd)
{
    const int n = tail ? tail : 16;
    memcpy(dst, bt, (size_t)n * 64);
    memset(dst + n * 64, 0, (size_t)(16 - n) * 64);
    if (odd)
        for (int c = 0; c < 16; c++)
            memset(dst + (n - 1) * 64 + c * 4 + 2, 0, 2);
}

TGTA void pb_kamx_mul(const uint32_t *xb, size_t ldxb, int M, int mchunk, const pb_kmat *w, int p0, int p1,
                      float *y, size_t ldy)
{
    typedef void (*block_fn)(const char *, size_t, const char *, const char *, const char *, const char *, int,
                             float *, size_t, int, int, int, int);
    static const block_fn blocks[2][2] = {{block_1x1, block_1x2}, {block_2x1, block_2x2}};
    const int kp = (w->n_in + 1) / 2;          /* k pairs */
    const int steps = (kp + 15) / 16;          /* B tiles per panel */
    const int tail = kp % 16;                  /* pairs of the last, partial one (0: whole) */
    const int odd = w->n_in & 1;               /* the last pair holds one k */
    const size_t lda = ldxb * sizeof(uint32_t);
    const size_t pbytes = w->pstride * sizeof(uint16_t);
    _Alignas(64) char btail[2][1024];
    /* fewer than 16 rows: tiles of that many rows (each row's sums are the
     * same; the tile unit's time goes with its rows: decode 4-7% faster) */
    tiles_config(M < 16 ? M : 16);
    for (int mc = 0; mc < M; mc += mchunk) {
        const int me = M - mc < mchunk ? M : mc + mchunk;
        int pstart = p0;
        if (M <= 16) /* decode batches: 4 panels at a time (TinyLlama b8 +2%) */
            for (; pstart + 4 <= p1; pstart += 4) {
                const char *b = (const char *)w->data + (size_t)pstart * pbytes;
                _Alignas(64) char bq[4][1024];
                const char *bt[4];
                int nc[4];
                for (int q = 0; q < 4; q++) {
                    bt[q] = b + q * pbytes + (size_t)(steps - 1) * 1024;
                    if (tail || odd) {
                        last_tile(bq[q], bt[q], tail, odd);
                        bt[q] = bq[q];
                    }
                    nc[q] = cols_of(w, pstart + q);
                }
                block_1x4((const char *)(xb + (size_t)mc * ldxb), lda, b, pbytes, bt, steps,
                          y + (size_t)mc * ldy + (size_t)pstart * PB_KNR, ldy, me - mc, nc);
            }
        for (int p = pstart; p < p1; p += 2) {
            const int two = p + 1 < p1;
            const char *b0 = (const char *)w->data + (size_t)p * pbytes;
            const char *b1 = two ? b0 + pbytes : b0;
            const char *bt0 = b0 + (size_t)(steps - 1) * 1024, *bt1 = b1 + (size_t)(steps - 1) * 1024;
            if (tail || odd) { /* the panels end mid-tile */
                last_tile(btail[0], bt0, tail, odd);
                last_tile(btail[1], bt1, tail, odd);
                bt0 = btail[0];
                bt1 = btail[1];
            }
            const int nc0 = cols_of(w, p), nc1 = cols_of(w, p + 1);
            for (int r = mc; r < me; r += 32) {
                const int nr = me - r < 32 ? me - r : 32;
                /* B prefetched: by a block of up to 16 rows (as ever), and
                 * by the first row block of a call of up to 64 rows (decode
                 * batches: TinyLlama b32 341 -> 372 tok/s, b64 489 -> 523,
                 * SmolLM2 b32 1657 -> 1773, b64 within 2%; a prefill's
                 * larger calls gain nothing or lose a few %) */
                blocks[nr > 16][two](
                    (const char *)(xb + (size_t)r * ldxb), lda, b0, b1, bt0, bt1, steps, y + (size_t)r * ldy +
                    (size_t)p * PB_KNR, ldy, nr, nc0, nc1, nr <= 16 || (M <= 64 && r == mc));
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
