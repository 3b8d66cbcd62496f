/* GQA attention over an f32, f16 or bf16 KV cache, as two small matrix products per work
 * item on the matmul's register tiles (pb_kops.mm). A work item is
 * (sequence, KV head, block of query tokens); its rows are the (token, query
 * head) pairs of the group, and it streams that head's cache once per tile of
 * rows:
 *   scores  S[rows, keys] = Q[rows, hd] K^T   (K stored transposed in panels of
 *                                             16 keys: a panel is the matmul's
 *                                             packed weight layout)
 *   output  O[rows, hd]   = P[rows, keys] V   (V stored in panels of 16 dims)
 * Each score is one fma chain over d ascending, then times scale; the softmax
 * sums in 16 lanes from the query's first key; each output element is one
 * fma chain over the query's keys ascending, then times 1 / sum. So a query's
 * result depends only on its position and the cache, never on the other
 * rows of its tile, the batch, the thread count or the ISA path. A decode
 * call of too few items for the threads runs them in the split form (below):
 * the same products cut into more jobs, the same bits.
 *
 * An f16 cache holds the keys and values rounded to f16 (nearest even) in
 * the same layout; the products read it as the matmul reads f16 weights
 * (widened exactly in registers), so its results are those of an f32 cache
 * holding the rounded values, bit for bit. A bf16 cache likewise, in the
 * matmul's bf16 layout: pairs of consecutive k (d for K, keys for V) share a
 * 32-bit lane, so its K panels have kd = head_dim rounded up to even rows; a
 * product over V that starts at an odd key takes that key alone first (the
 * same fma).
 *
 * Cache layout of one sequence and layer (cap = cache_len rounded up to 16,
 * so that K is whole panels; hd16 = head_dim rounded up to 16; KV head g at
 * g * cap * hd16 elements):
 *   K: key j, dim d at (j / 16) * 16 * hd + d * 16 + j % 16
 *   V: key j, dim d at (d / 16) * cap * 16 + j * 16 + d % 16
 * bf16 (hd = kd): K at (j / 16) * 16 * kd + (d / 2) * 32 + (j % 16) * 2 + d % 2,
 * V at (d / 16) * cap * 16 + (j / 2) * 32 + (d % 16) * 2 + j % 2.
 * The scores of a panel's keys past a query's last are computed (from
 * whatever the cache holds there) and never read.
 *
 * Under --matmul-precision bf16-amx a bf16 cache's panels are the AMX tile
 * unit's B tiles as they lie (a K panel: pairs of dims by 16 keys; a V
 * panel: pairs of keys by 16 dims), and both products run there (amx_*
 * below), with the queries and the softmax weights rounded to bf16. */
#include "config.h"

#include <float.h>
#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "cpu/kern_impl.h"

#define QB_MAX 16 /* query tokens per item */
#define PREFILL_ROWS 64                   /* rows an item's scratch holds at least (pb_kattn_scratch_floats) */
#define PREFILL_FLOATS ((size_t)1 << 20) /* ... while their scores take at most these floats */
#define STORE_TOKENS 64 /* tokens of a KV head a store item writes */
#define CHUNK 64  /* keys an f16/bf16 cache is widened in at a time for items of several row tiles */

static inline size_t round16(size_t n)
{
    return (n + 15) & ~(size_t)15;
}

/* positions a cache holds for cache_len: whole K panels of 16 keys (a
 * narrow last panel cost every item that reached it a scalar copy; at most
 * 15 positions more) */
static inline int cap_of(int cache_len)
{
    return (int)round16((size_t)cache_len);
}

/* rows of a K panel of dt (bf16: pairs of dims) */
static inline int kd_of(pb_dtype dt, int head_dim)
{
    return dt == PB_DT_BF16 ? head_dim + (head_dim & 1) : head_dim;
}

size_t pb_kattn_cache_elems(pb_dtype dt, int cache_len, int n_kv_heads, int head_dim)
{
    (void)dt; /* every dtype: the same positions and rows (bf16 pairs fit in them) */
    return (size_t)n_kv_heads * (size_t)cap_of(cache_len) * round16((size_t)head_dim);
}

void pb_kattn_copy_range(pb_dtype dt, int cache_len, int n_kv_heads, int head_dim, void *dst_k, void *dst_v,
                         const void *src_k, const void *src_v, int from, int n)
{
    if (n > cache_len)
        n = cache_len;
    if (from < 0)
        from = 0;
    if (n <= from)
        return;
    const size_t es = pb_dtype_size(dt), cap = (size_t)cap_of(cache_len), hd16 = round16((size_t)head_dim);
    const size_t head = cap * hd16, keys = round16((size_t)n), k0 = (size_t)from / 16 * 16;
    const size_t kd = (size_t)kd_of(dt, head_dim);
    for (int g = 0; g < n_kv_heads; g++) {
        /* K: panels of 16 keys, one after another */
        const size_t kb = ((size_t)g * head + k0 * kd) * es;
        memcpy((char *)dst_k + kb, (const char *)src_k + kb, (keys - k0) * kd * es);
        /* V: each panel of 16 dims holds every key in turn (bf16: pairs of keys) */
        for (size_t d0 = 0; d0 < hd16; d0 += 16) {
            const size_t vb = ((size_t)g * head + d0 * cap + k0 * 16) * es;
            memcpy((char *)dst_v + vb, (const char *)src_v + vb, (keys - k0) * 16 * es);
        }
    }
}

/* index of K element (key j, dim d) in a KV head's cache of dt */
static inline size_t k_index(pb_dtype dt, int kd, int j, int d)
{
    if (dt != PB_DT_BF16)
        return (size_t)(j / 16) * 16 * kd + (size_t)d * 16 + j % 16;
    return (size_t)(j / 16) * 16 * kd + (size_t)(d / 2) * 32 + (size_t)(j % 16) * 2 + d % 2;
}

/* index of V element (key j, dim d) in a KV head's cache of dt */
static inline size_t v_index(pb_dtype dt, int cap, int j, int d)
{
    if (dt != PB_DT_BF16)
        return (size_t)(d / 16) * cap * 16 + (size_t)j * 16 + d % 16;
    return (size_t)(d / 16) * cap * 16 + (size_t)(j / 2) * 32 + (size_t)(d % 16) * 2 + j % 2;
}

/* A score row of an item over keys [jbase, jend): 16 floats of header ([0] =
 * 1 / sum, [1] = the largest score), then the keys from the first key's
 * panel to the last key's panel. */
static size_t score_ld(int jbase, int jend)
{
    return 16 + round16((size_t)jend) - ((size_t)jbase & ~(size_t)15);
}

/* The AMX form's keys of an item (jbase, jend): from the multiple of 32 at or
 * before its first, so that every query's value products take the same
 * tiles of 32 keys whatever item it is in */
static inline int amx_k0(int jbase)
{
    return jbase & ~31;
}

/* The AMX form's scratch (amx_area): Q's and the weights' rows as bf16
 * pairs (pb_kamx_ldxb apart, rows to a multiple of 16), 64-byte aligned;
 * none where the CPU cannot run it (counted whether or not bf16-amx is on
 * now, so that turning it on after pb_kctx_reserve finds room) */
static size_t amx_scratch(size_t rows, int hd, int jbase, int jend)
{
    if (!pb_cpu_amx_available())
        return 0;
    return round16(rows) * (pb_kamx_ldxb(hd) + pb_kamx_ldxb(jend - amx_k0(jbase))) + 16;
}

/* floats a row's query takes in an item's scratch: hd, or as bf16 pairs
 * (the dots form: (hd + 1) / 2 pairs of 1 or 2 words) */
static inline size_t q_floats(int hd)
{
    return (size_t)hd + (size_t)(hd & 1);
}

/* An item's scratch: per row its scores, Q (q_floats) and O (hd16), then a
 * chunk of an f16 or bf16 cache widened (CHUNK keys of K panels,
 * [CHUNK / 16][hd][16], and of V, [hd16 / 16][CHUNK][16]). */
static size_t item_scratch(size_t rows, int hd, int jbase, int jend)
{
    return rows * (score_ld(jbase, jend) + q_floats(hd) + round16((size_t)hd)) +
           CHUNK * ((size_t)hd + 1 + round16((size_t)hd)) + /* + 1: a bf16 cache's K rows are even */
           amx_scratch(rows, hd, jbase, jend);
}

size_t pb_kattn_scratch_floats(int max_keys, int max_heads, int head_dim)
{
    /* one token with every query head over every key, and at least
     * PREFILL_ROWS rows (a prefill block of several tokens per item: each K
     * and V tile read serves more rows; kern-bench, SmolLM2's prefill with
     * bf16-amx: 1.49 ms at 9 rows, 0.97 at 48) while their scores stay
     * within PREFILL_FLOATS */
    size_t rows = (size_t)max_heads;
    size_t want = PREFILL_FLOATS / (size_t)(max_keys > 1 ? max_keys : 1);
    want = want < PREFILL_ROWS ? want : PREFILL_ROWS;
    rows = want > rows ? want : rows;
    return item_scratch(rows, head_dim, 0, max_keys);
}

typedef struct attn_item {
    int seq, kvh, q0, q1; /* token indices within the sequence */
} attn_item;
_Static_assert(sizeof(attn_item) == 16, "kern_mat.c reserves 16 bytes a work item");

typedef struct attn_job {
    const pb_kattn_args *a;
    const pb_kops *ops;
    const pb_kops *amx; /* the AMX table where bf16-amx is on and the cache bf16, else NULL */
    const pb_kops *dots; /* the bf16-product table where --matmul-precision bf16 is on and the cache bf16 */
    const attn_item *items;
    float *const *scores;
} attn_job;

static inline int first_key(const pb_kattn_args *a, int p)
{
    return a->window > 0 && p - a->window + 1 > 0 ? p - a->window + 1 : 0;
}

static size_t item_floats(const pb_kattn_args *a, int s, int q0, int q1)
{
    const int G = a->n_heads / a->n_kv_heads;
    return item_scratch((size_t)(q1 - q0) * G, a->head_dim, first_key(a, a->pos[s] + q0), a->pos[s] + q1);
}

/* What a work item's rows share. Row r = (token i - q0) * G + head hh. */
typedef struct item_ctx {
    const pb_kattn_args *a;
    const pb_kops *ops;   /* the tiles: the exact table, or the dots form's (attn_job.dots) */
    pb_dtype dt;          /* the cache's elements */
    int q0, g, G, hd, hd16, kd, pos0, tok0, jb16;
    int vp0, vp1;         /* V's dims panels the value products write (all but in the split form) */
    size_t ld, ps_v;      /* score row stride; V's panel stride (cap * 16) */
    const void *kc, *vc;  /* this KV head's K panels and V panels */
    float *sc, *qs, *os;  /* rows of scores (ld apart), Q (hd apart; dots_item's pairs q_floats), O (hd16) */
} item_ctx;

/* row r's query */
static inline const float *query(const item_ctx *c, int r)
{
    return c->a->q + (size_t)(c->tok0 + c->q0 + r / c->G) * c->a->q_stride + (size_t)(c->g * c->G + r % c->G) * c->hd;
}

static inline float *score_row(const item_ctx *c, int r) /* [j] = key j */
{
    return c->sc + (size_t)r * c->ld + 16 - c->jb16;
}

/* row r's keys [a0, a1) */
static inline void row_keys(const item_ctx *c, int r, int *a0, int *a1)
{
    const int p = c->pos0 + c->q0 + r / c->G;
    *a0 = first_key(c->a, p);
    *a1 = p + 1;
}

/* the element at index i of a cache of dt */
static inline const void *at(const void *base, pb_dtype dt, size_t i)
{
    return (const char *)base + i * (dt == PB_DT_F32 ? 4 : 2);
}

/* out[R rows, panels [p0, p1)] = x[R rows, kc] times the panels of dt at w
 * (ps elements apart), in the tiles of panels the ISA path has for R rows */
static void mm_panels(const item_ctx *c, int R, const float *x, size_t ldx, pb_dtype dt, const void *w, size_t ps,
                      int kc, float *out, size_t ldo, int p0, int p1, int accumulate)
{
    if (p0 < p1)
        c->ops->mm(R, p1 - p0, dt, x, ldx, at(w, dt, (size_t)p0 * ps), ps, kc, out, ldo, 16, accumulate, 0);
}

/* x[i] *= scale for i < n; returns their largest (the max of a set, in any
 * order: 8 running maxima, so that the loop vectorizes) */
static float scale_max(float *x, int n, float scale)
{
    float m8[8];
    for (int t = 0; t < 8; t++)
        m8[t] = -INFINITY;
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int t = 0; t < 8; t++) {
            const float v = x[i + t] * scale;
            x[i + t] = v;
            m8[t] = v > m8[t] ? v : m8[t];
        }
    for (; i < n; i++) {
        const float v = x[i] * scale;
        x[i] = v;
        m8[0] = v > m8[0] ? v : m8[0];
    }
    float m = m8[0];
    for (int t = 1; t < 8; t++)
        m = m8[t] > m ? m8[t] : m;
    return m;
}

/* Row r's scores of keys [j0, j1) times the scale (ALiBi's bias added, soft-
 * capped); returns their largest (-INFINITY for none) */
static float scale_keys(const item_ctx *c, int r, int j0, int j1)
{
    const pb_kattn_args *a = c->a;
    float *row = score_row(c, r);
    if (!a->alibi && a->softcap <= 0)
        return j0 < j1 ? scale_max(row + j0, j1 - j0, a->scale) : -INFINITY;
    const int h = c->g * c->G + r % c->G;
    const float slope = a->alibi ? a->alibi[h] : 0.0f;
    float m = -INFINITY;
    for (int j = j0; j < j1; j++) {
        float v = row[j] * a->scale;
        if (a->alibi) {
            const float b = slope * (float)j; /* Bloom: slope * key position */
            v = v + b;
        }
        if (a->softcap > 0) /* HF: tanh(score / cap) * cap, in f32 */
            v = tanhf(v / a->softcap) * a->softcap;
        row[j] = v;
        m = v > m ? v : m;
    }
    return m;
}

/* The K panels [*p0, *p1) that rows [r0, r0 + R) read: those of the union
 * of their keys. */
static void tile_panels(const item_ctx *c, int r0, int R, int *p0, int *p1)
{
    int u0, u1, t;
    row_keys(c, r0, &u0, &t);
    row_keys(c, r0 + R - 1, &t, &u1);
    *p0 = u0 / 16;
    *p1 = (u1 + 15) / 16;
}

/* Scores of rows [r0, r0 + R) over their whole K panels [pa, pb), read from
 * w (elements of dt) where panel q0 starts. */
static void scores_mm(const item_ctx *c, int r0, int R, pb_dtype dt, const void *w, int q0, int pa, int pb)
{
    if (pa < pb)
        mm_panels(c, R, c->qs + (size_t)r0 * c->hd, (size_t)c->hd, dt, w, (size_t)16 * c->kd, c->hd,
                  score_row(c, r0) + (size_t)pa * 16, c->ld, pa - q0, pb - q0, 0);
}

/* Scores of rows [r0, r0 + R) over the union of their keys (a score a row
 * does not see is computed too, into its own scratch, and never read), the
 * products already done when `done`; each row's largest score goes to its
 * header [1]. */
static void scores_tile(const item_ctx *c, int r0, int R, bool done)
{
    int p0, p1;
    tile_panels(c, r0, R, &p0, &p1);
    if (!done)
        scores_mm(c, r0, R, c->dt, c->kc, 0, p0, p1);
    for (int r = r0; r < r0 + R; r++) {
        int a0, a1;
        row_keys(c, r, &a0, &a1);
        c->sc[(size_t)r * c->ld + 1] = scale_keys(c, r, a0, a1);
    }
}

/* Keys [k0, k1) of V widened to f32: dims panel p at w + p * (k1 - k0) * 16,
 * key j at (j - k0) * 16 in it. */
typedef struct vchunk {
    int k0, k1;
    const float *w;
} vchunk;

/* O rows [r0, r0 + R) += weights over keys [j0, j1) (those in ch when ch)
 * times V */
static void values_part(const item_ctx *c, int r0, int R, int j0, int j1, const vchunk *ch)
{
    if (ch) {
        j0 = j0 > ch->k0 ? j0 : ch->k0;
        j1 = j1 < ch->k1 ? j1 : ch->k1;
    }
    if (j0 >= j1)
        return;
    const pb_dtype dt = ch ? PB_DT_F32 : c->dt;
    if (dt == PB_DT_BF16 && (j0 & 1)) {
        /* a pair's second key: alone, as the tiles would take it (one fma) */
        const float *x = score_row(c, r0) + j0;
        for (int d = c->vp0 * 16; d < c->vp1 * 16; d++) {
            const float v = pb_bf16_to_f32(((const uint16_t *)c->vc)[v_index(dt, (int)(c->ps_v / 16), j0, d)]);
            for (int r = 0; r < R; r++) {
                float *o = c->os + (size_t)(r0 + r) * c->hd16 + d;
                *o = fmaf(x[(size_t)r * c->ld], v, *o);
            }
        }
        if (++j0 >= j1)
            return;
    }
    const void *w = ch ? (const void *)(ch->w + (size_t)(j0 - ch->k0) * 16) : at(c->vc, c->dt, (size_t)j0 * 16);
    mm_panels(c, R, score_row(c, r0) + j0, c->ld, dt, w, ch ? (size_t)(ch->k1 - ch->k0) * 16 : c->ps_v, j1 - j0,
              c->os + (size_t)r0 * c->hd16 + (size_t)c->vp0 * 16, (size_t)c->hd16, c->vp0, c->vp1, 1);
}

/* Weighted values of rows [r0, r0 + R): the keys all of them see,
 * [last a0, first a1), in one product; before and after them each row's own
 * keys alone, so that every row's chains run over its keys ascending. With
 * ch, only the keys of that chunk (called for the chunks in ascending order,
 * each row's chains continue from one to the next). */
static void values_tile(const item_ctx *c, int r0, int R, const vchunk *ch)
{
    int A, B, t;
    row_keys(c, r0 + R - 1, &A, &t);
    row_keys(c, r0, &t, &B);
    const bool shared = A < B; /* else each row's keys alone */
    for (int r = r0; r < r0 + R; r++) {
        int a0, a1;
        row_keys(c, r, &a0, &a1);
        values_part(c, r, 1, a0, shared ? A : a1, ch);
    }
    if (!shared)
        return;
    values_part(c, r0, R, A, B, ch);
    for (int r = r0; r < r0 + R; r++) {
        int a0, a1;
        row_keys(c, r, &a0, &a1);
        values_part(c, r, 1, B, a1, ch);
    }
}

/* bf16-amx on a bf16 cache (attn_job.amx): the item's two products on the
 * tile unit (pb_kops.amx). The cache's panels are its B tiles as they lie:
 * a K panel holds 16 keys by pairs of dims, a V panel 16 dims by pairs of
 * keys. The queries and the softmax weights are rounded to bf16 pairs, as
 * in PyTorch's bf16 attention; scores and outputs sum in f32 on the unit,
 * each score one tdpbf16ps chain over the dims, each output one over the
 * tiles of 32 keys from the multiple of 32 at or before the query's first
 * (zero weights outside its keys add exact zeros), ascending: a query's
 * result depends on its position and the cache only, as above. The area:
 * amx_scratch's, after the widened chunk (unused here). */
static uint32_t *amx_area(const item_ctx *c, int rows)
{
    const float *end = c->os + (size_t)rows * c->hd16 + CHUNK * ((size_t)c->hd + 1 + (size_t)c->hd16);
    return (uint32_t *)(((uintptr_t)end + 63) & ~(uintptr_t)63);
}

/* rows [rows, the next multiple of 16) of an A operand: zeros (past 16 rows
 * the tiles have 16) */
static void amx_pad_rows(uint32_t *x, size_t ld, int rows)
{
    if (rows > 16)
        memset(x + (size_t)rows * ld, 0, (round16((size_t)rows) - (size_t)rows) * ld * sizeof *x);
}

/* scores of the item's rows over the K panels of their keys; qa: its area */
static void amx_scores(const attn_job *j, const item_ctx *c, int rows, uint32_t *qa)
{
    const size_t ldq = pb_kamx_ldxb(c->hd), kp = ((size_t)c->hd + 1) / 2;
    for (int r = 0; r < rows; r++) {
        j->amx->xpairs(query(c, r), c->hd, qa + (size_t)r * ldq);
        memset(qa + (size_t)r * ldq + kp, 0, (ldq - kp) * sizeof *qa);
    }
    amx_pad_rows(qa, ldq, rows);
    int p0, p1;
    tile_panels(c, 0, rows, &p0, &p1);
    const pb_kmat k = {.dt = PB_DT_BF16, .n_out = (p1 - p0) * 16, .n_in = c->hd, .npanels = p1 - p0,
                       .pstride = (size_t)16 * c->kd,
                       .data = (void *)(uintptr_t)at(c->kc, PB_DT_BF16, (size_t)p0 * 16 * c->kd)};
    j->amx->amx(qa, ldq, rows, (rows + 31) & ~31, &k, 0, p1 - p0, score_row(c, 0) + (size_t)p0 * 16, c->ld, NULL, NULL,
                0);
}

/* O rows = the rows' softmax weights (zero outside each row's keys) times V
 * over keys [amx_k0(jbase), jend), each row's 1 / sum into its header; pa:
 * the area past Q's. The scores are raw products unless transformed (ALiBi,
 * soft-cap: scores_tile's, the scale applied), so the scale goes into
 * softmax_bf16 (the same bits as scaling in place first). */
static void amx_values(const attn_job *j, const item_ctx *c, int rows, int jbase, int jend, uint32_t *pa)
{
    const pb_kattn_args *a = c->a;
    const int k0 = amx_k0(jbase), n = jend - k0;
    const size_t ldp = pb_kamx_ldxb(n);
    const bool raw = !a->alibi && a->softcap <= 0;
    for (int r = 0; r < rows; r++) {
        int a0, a1;
        row_keys(c, r, &a0, &a1);
        if (!raw)
            scores_tile(c, r, 1, true);
        /* the pairs as bf16 values in key order: key k0 + i at [i] */
        uint16_t *d = (uint16_t *)(void *)(pa + (size_t)r * ldp);
        memset(d, 0, (size_t)(a0 - k0) * sizeof *d);
        const float sum = j->amx->softmax_bf16(score_row(c, r) + a0, a1 - a0, raw ? a->scale : 1.0f, d + (a0 - k0));
        c->sc[(size_t)r * c->ld] = 1.0f / sum;
        memset(d + (a1 - k0), 0, (2 * ldp - (size_t)(a1 - k0)) * sizeof *d);
    }
    amx_pad_rows(pa, ldp, rows);
    const pb_kmat v = {.dt = PB_DT_BF16, .n_out = c->hd, .n_in = n, .npanels = c->hd16 / 16, .pstride = c->ps_v,
                       .data = (void *)(uintptr_t)at(c->vc, PB_DT_BF16, (size_t)k0 * 16)};
    j->amx->amx(pa, ldp, rows, (rows + 31) & ~31, &v, 0, c->hd16 / 16, c->os, (size_t)c->hd16, NULL, NULL, 0);
}

/* --matmul-precision bf16 on a bf16 cache (attn_job.dots): the item's two
 * products on the bf16 products' tiles (c->ops: vdpbf16ps, or its emulation,
 * the same bits), reading the cache's panels as bf16 weights: a K panel is
 * pairs of dims by 16 keys, a V panel pairs of keys by 16 dims. The queries
 * and the softmax weights are rounded to bf16 (xpairs), as in the AMX form
 * and PyTorch's bf16 attention; each score is one chain over the pairs of
 * dims ascending, each output one over the pairs of keys from the even key
 * at or before the query's first to the pair of its last, ascending: the
 * weights of the keys in a row tile's pairs that the query does not see are
 * 0, and their products add exact zeros to a sum that starts at +0 (an
 * unstored odd key is 0 too: store_kv). So a query's result depends on its
 * position and the cache only, as above. The pairs: Q's in the rows' Q
 * area, the weights' over each row's own scores (with softmax_bf16 in its
 * pass, else DOTS_SEG keys at a time through a buffer: pair i lands at or
 * before the scores it is made of). */
#define DOTS_SEG 128

static void dots_item(const item_ctx *c, int rows, int jend)
{
    const pb_kops *dots = c->ops;
    const size_t xw = (size_t)dots->xwords, ldq = q_floats(c->hd);
    /* the scale, softmax and pairs in one pass where the table has it (its
     * pairs are bf16 in key order: xwords 1, which kern-test holds it to);
     * scores transformed (ALiBi, soft-cap) take scores_tile's first, the
     * scale with them */
    const bool fused = dots->softmax_bf16, raw = !c->a->alibi && c->a->softcap <= 0;
    uint32_t *qp = (uint32_t *)(void *)c->qs;
    for (int r = 0; r < rows; r++)
        dots->xpairs(query(c, r), c->hd, qp + (size_t)r * ldq);
    const int mr = dots->mr, nt = (rows + mr - 1) / mr;
    for (int t = 0, r0 = 0; t < nt; r0 += pb_ktile_rows(rows, nt, t), t++) {
        const int R = pb_ktile_rows(rows, nt, t);
        int p0, p1;
        tile_panels(c, r0, R, &p0, &p1);
        mm_panels(c, R, (const float *)(const void *)(qp + (size_t)r0 * ldq), ldq, PB_DT_BF16, c->kc,
                  (size_t)16 * c->kd, c->hd, score_row(c, r0) + (size_t)p0 * 16, c->ld, p0, p1, 0);
        if (!fused || !raw)
            scores_tile(c, r0, R, true); /* the scale (ALiBi, soft-cap), each row's largest */
    }
    /* each row's weights over [jb16, ke), 0 outside its keys, then as pairs
     * from its first score's place */
    const int jb16 = c->jb16, ke = (jend + 1) & ~1;
    for (int r = 0; r < rows; r++) {
        int a0, a1;
        row_keys(c, r, &a0, &a1);
        float *row = score_row(c, r);
        if (fused) { /* one pass to the weights' bf16 (pb_kops.softmax_bf16), over the scores */
            uint16_t *d = (uint16_t *)(void *)(row + jb16);
            const float sum = dots->softmax_bf16(row + a0, a1 - a0, raw ? c->a->scale : 1.0f, d + (a0 - jb16));
            c->sc[(size_t)r * c->ld] = 1.0f / sum;
            memset(d, 0, (size_t)(a0 - jb16) * sizeof *d);
            memset(d + (a1 - jb16), 0, (size_t)(ke - a1) * sizeof *d);
            continue;
        }
        const float sum = dots->expsum(row + a0, a1 - a0, c->sc[(size_t)r * c->ld + 1]);
        c->sc[(size_t)r * c->ld] = 1.0f / sum;
        memset(row + jb16, 0, (size_t)(a0 - jb16) * sizeof *row);
        memset(row + a1, 0, (size_t)(ke - a1) * sizeof *row);
        uint32_t *out = (uint32_t *)(void *)(row + jb16), buf[DOTS_SEG * 2];
        for (int s0 = jb16; s0 < ke; s0 += DOTS_SEG) {
            const int n = ke - s0 < DOTS_SEG ? ke - s0 : DOTS_SEG;
            dots->xpairs(row + s0, n, buf);
            memcpy(out + (size_t)(s0 - jb16) / 2 * xw, buf, (size_t)n / 2 * xw * sizeof *buf);
        }
    }
    for (int t = 0, r0 = 0; t < nt; r0 += pb_ktile_rows(rows, nt, t), t++) {
        const int R = pb_ktile_rows(rows, nt, t);
        int k0, k1, u;
        row_keys(c, r0, &k0, &u);
        row_keys(c, r0 + R - 1, &u, &k1);
        k0 &= ~1;
        k1 = (k1 + 1) & ~1;
        const float *x = (const float *)(const void *)((const uint32_t *)(const void *)(score_row(c, r0) + jb16) +
                                                       (size_t)(k0 - jb16) / 2 * xw);
        mm_panels(c, R, x, c->ld, PB_DT_BF16, at(c->vc, PB_DT_BF16, (size_t)k0 * 16), c->ps_v, k1 - k0,
                  c->os + (size_t)r0 * c->hd16, (size_t)c->hd16, 0, c->hd16 / 16, 0);
    }
}

#ifdef __SSE2__
/* pb_f32_to_bf16 of x[0..3] in four lanes */
static inline __m128i bf16x4(const float *x)
{
    const __m128i u = _mm_castps_si128(_mm_loadu_ps(x)), hi = _mm_srli_epi32(u, 16);
    const __m128i r = _mm_srli_epi32(
        _mm_add_epi32(_mm_add_epi32(u, _mm_set1_epi32(0x7fff)), _mm_and_si128(hi, _mm_set1_epi32(1))), 16);
    const __m128i nan = _mm_cmpgt_epi32(_mm_and_si128(u, _mm_set1_epi32(0x7fffffff)), _mm_set1_epi32(0x7f800000));
    return _mm_or_si128(_mm_and_si128(nan, _mm_or_si128(hi, _mm_set1_epi32(0x40))), _mm_andnot_si128(nan, r));
}
#endif

#ifdef __SSE2__
/* pb_f32_to_f16 of x[0..3] in the low halves of four lanes (the high halves
 * copies of the sign: ready for _mm_packs_epi32), branch-free: the same
 * three cases (inf or NaN beyond the range, subnormal by a float addition,
 * else rebiased with the odd bit as tie-break) */
static inline __m128i f16x4(const float *x)
{
    const __m128i u = _mm_castps_si128(_mm_loadu_ps(x)), sign = _mm_and_si128(u, _mm_set1_epi32((int)0x80000000u));
    const __m128i a = _mm_xor_si128(u, sign);
    const __m128i big = _mm_cmpgt_epi32(a, _mm_set1_epi32(0x477fffff));
    const __m128i nan = _mm_cmpgt_epi32(a, _mm_set1_epi32(0x7f800000));
    const __m128i small = _mm_cmplt_epi32(a, _mm_set1_epi32(0x38800000));
    const __m128i hb = _mm_or_si128(_mm_and_si128(nan, _mm_set1_epi32(0x7e00)),
                                    _mm_andnot_si128(nan, _mm_set1_epi32(0x7c00)));
    const __m128i hs = _mm_sub_epi32(_mm_castps_si128(_mm_add_ps(_mm_castsi128_ps(a), _mm_set1_ps(0.5f))),
                                     _mm_set1_epi32(0x3f000000));
    const __m128i hn = _mm_srli_epi32(
        _mm_add_epi32(_mm_add_epi32(a, _mm_set1_epi32((int)0xc8000fffu)),
                      _mm_and_si128(_mm_srli_epi32(a, 13), _mm_set1_epi32(1))), 13);
    __m128i h = _mm_or_si128(_mm_and_si128(small, hs), _mm_andnot_si128(small, hn));
    h = _mm_or_si128(_mm_and_si128(big, hb), _mm_andnot_si128(big, h));
    h = _mm_or_si128(h, _mm_srli_epi32(sign, 16));
    return _mm_srai_epi32(_mm_slli_epi32(h, 16), 16);
}
#endif

/* two bf16 at p (4-byte aligned: an even element of the cache) */
static inline void store_u32(uint16_t *p, uint32_t w)
{
    memcpy(p, &w, sizeof w);
}

/* this step's keys and values of sequence s, its new tokens [i0, i1), KV
 * heads [g0, g1), into its cache at their positions (an f16 cache's range
 * was checked by kv_f16_range); the layouts of k_index and v_index, a row
 * at a time */
static void store_kv(const pb_kattn_args *a, int s, int g0, int g1, int i0, int i1)
{
    const pb_dtype dt = a->kv_dtype;
    const int hd = a->head_dim, cap = cap_of(a->cache_len), kd = kd_of(dt, hd);
    const size_t head = (size_t)cap * round16((size_t)hd), vps = (size_t)cap * 16; /* V's panel stride */
    for (int i = i0; i < i1; i++) {
        const int j = a->pos[s] + i;
        const float *k = a->k + (size_t)(a->tok_start[s] + i) * a->kv_stride;
        const float *v = a->v + (size_t)(a->tok_start[s] + i) * a->kv_stride;
        for (int g = g0; g < g1; g++) {
            const float *kr = k + (size_t)g * hd, *vr = v + (size_t)g * hd;
            const size_t kb = (size_t)g * head + k_index(dt, kd, j, 0), vb = (size_t)g * head + v_index(dt, cap, j, 0);
            if (dt == PB_DT_F32) {
                float *kc = (float *)a->k_cache[s] + kb, *vc = (float *)a->v_cache[s] + vb;
                for (int d = 0; d < hd; d++)
                    kc[(size_t)d * 16] = kr[d];
                for (int d0 = 0; d0 < hd; d0 += 16)
                    memcpy(vc + (size_t)(d0 / 16) * vps, vr + d0, (size_t)(hd - d0 < 16 ? hd - d0 : 16) * sizeof(float));
            } else if (dt == PB_DT_F16) {
                uint16_t *kc = (uint16_t *)a->k_cache[s] + kb, *vc = (uint16_t *)a->v_cache[s] + vb;
                int d = 0;
#ifdef __SSE2__
                for (; d + 4 <= hd; d += 4) { /* K: four dims 16 elements apart; V: four of a panel's line */
                    uint16_t h[8];
                    _mm_storeu_si128((__m128i *)(void *)h, _mm_packs_epi32(f16x4(kr + d), f16x4(vr + d)));
                    for (int t = 0; t < 4; t++)
                        kc[(size_t)(d + t) * 16] = h[t];
                    memcpy(vc + (size_t)(d / 16) * vps + d % 16, h + 4, 4 * sizeof *h);
                }
#endif
                for (; d < hd; d++) {
                    kc[(size_t)d * 16] = pb_f32_to_f16(kr[d]);
                    vc[(size_t)(d / 16) * vps + d % 16] = pb_f32_to_f16(vr[d]);
                }
            } else { /* bf16: K pairs of dims 32 elements apart, V keys in pairs */
                uint16_t *kc = (uint16_t *)a->k_cache[s] + kb, *vc = (uint16_t *)a->v_cache[s] + vb;
                int d = 0;
#ifdef __SSE2__
                for (; d + 4 <= hd; d += 4) { /* two pairs of dims: two words */
                    const __m128i b = bf16x4(kr + d), w = _mm_or_si128(b, _mm_srli_epi64(b, 16));
                    store_u32(kc + (size_t)(d / 2) * 32, (uint32_t)_mm_cvtsi128_si32(w));
                    store_u32(kc + (size_t)(d / 2 + 1) * 32, (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(w, 8)));
                }
#endif
                for (; d + 1 < hd; d += 2) /* a pair of dims: one word */
                    store_u32(kc + (size_t)(d / 2) * 32,
                              pb_f32_to_bf16(kr[d]) | (uint32_t)pb_f32_to_bf16(kr[d + 1]) << 16);
                if (d < hd) /* an odd head_dim: its pad dim 0 (the dots and AMX forms multiply it by Q's 0) */
                    store_u32(kc + (size_t)(d / 2) * 32, pb_f32_to_bf16(kr[d]));
                if (j % 2 == 0 && i + 1 < i1) { /* this key and the next: one word per dim */
                    const float *vn = vr + a->kv_stride;
                    d = 0;
#ifdef __SSE2__
                    for (; d + 4 <= hd; d += 4) /* 4 dims of a panel's line (16 | d) */
                        _mm_storeu_si128((__m128i *)(void *)(vc + (size_t)(d / 16) * vps + (size_t)(d % 16) * 2),
                                         _mm_or_si128(bf16x4(vr + d), _mm_slli_epi32(bf16x4(vn + d), 16)));
#endif
                    for (; d < hd; d++)
                        store_u32(vc + (size_t)(d / 16) * vps + (size_t)(d % 16) * 2,
                                  pb_f32_to_bf16(vr[d]) | (uint32_t)pb_f32_to_bf16(vn[d]) << 16);
                } else if (j % 2 == 0 && i + 1 == a->n_tokens[s]) {
                    /* the sequence's last key, even: the odd one beside it 0
                     * until stored (the dots and AMX forms read it with
                     * weight 0: never what a sequence before left there,
                     * maybe NaN). (The last of a store item but not of the
                     * sequence: its low half only, the next item storing
                     * the odd key's half at the same time.) */
                    for (d = 0; d < hd; d++)
                        store_u32(vc + (size_t)(d / 16) * vps + (size_t)(d % 16) * 2, pb_f32_to_bf16(vr[d]));
                } else if (j % 2 == 0 || i == i0) { /* (an odd key after an even one here: stored with it) */
                    for (d = 0; d < hd; d++)
                        vc[(size_t)(d / 16) * vps + (size_t)(d % 16) * 2] = pb_f32_to_bf16(vr[d]);
                }
            }
        }
    }
}

/* a store item: tokens [q0, q1) of one sequence's KV head */
static void store_item_run(void *ctx, int item, int worker)
{
    (void)worker;
    const attn_job *j = ctx;
    const attn_item *it = &j->items[item];
    store_kv(j->a, it->seq, it->kvh, it->kvh + 1, it->q0, it->q1);
}

/* The context of the item (sequence s, KV head g, query tokens [q0, q1)) on
 * the tiles of ops, its scratch (scores, Q, O: item_scratch) at sc */
static item_ctx item_init(const pb_kattn_args *a, const pb_kops *ops, int s, int g, int q0, int q1, float *sc)
{
    const int hd = a->head_dim, G = a->n_heads / a->n_kv_heads, pos0 = a->pos[s];
    const int jbase = first_key(a, pos0 + q0), rows = (q1 - q0) * G, hd16 = (int)round16((size_t)hd);
    const pb_dtype dt = a->kv_dtype;
    const int cap = cap_of(a->cache_len);
    const size_t head = (size_t)cap * (size_t)hd16, ld = score_ld(jbase, pos0 + q1);
    return (item_ctx){
        .a = a, .ops = ops, .dt = dt, .q0 = q0, .g = g, .G = G, .hd = hd, .hd16 = hd16, .kd = kd_of(dt, hd),
        .pos0 = pos0, .tok0 = a->tok_start[s], .jb16 = jbase & ~15, .vp0 = 0, .vp1 = hd16 / 16, .ld = ld,
        .ps_v = (size_t)cap * 16, .kc = at(a->k_cache[s], dt, (size_t)g * head),
        .vc = at(a->v_cache[s], dt, (size_t)g * head), .sc = sc, .qs = sc + (size_t)rows * ld,
        .os = sc + (size_t)rows * (ld + q_floats(hd)),
    };
}

static void attn_item_run(void *ctx, int item, int worker)
{
    const attn_job *j = ctx;
    const pb_kattn_args *a = j->a;
    const pb_kops *ops = j->ops;
    const attn_item *it = &j->items[item];
    if (it->q0 == 0 && it->q1 == a->n_tokens[it->seq]) /* the sequence's one item for this KV head (decode) */
        store_kv(a, it->seq, it->kvh, it->kvh + 1, 0, it->q1); /* its keys' lines are then in cache for the reads */
    float *sc = j->scores[worker];
    const item_ctx c = item_init(a, j->dots ? j->dots : ops, it->seq, it->kvh, it->q0, it->q1, sc);
    const int hd = c.hd, G = c.G, hd16 = c.hd16, kd = c.kd, cap = (int)(c.ps_v / 16);
    const int jbase = first_key(a, c.pos0 + it->q0), jend = c.pos0 + it->q1; /* keys [jbase, jend) */
    const int rows = (it->q1 - it->q0) * G;
    const pb_dtype dt = c.dt;
    const size_t ld = c.ld;
    const void *kc = c.kc;
    const size_t od = (size_t)a->n_heads * hd;
    if (j->dots) {
        dots_item(&c, rows, jend);
        goto out;
    }
    for (int r = 0; r < rows && !j->amx; r++) /* the rows' queries, hd apart (the AMX form takes them as pairs) */
        memcpy(c.qs + (size_t)r * hd, query(&c, r), (size_t)hd * sizeof(float));
    const int mr = ops->mr, nt = (rows + mr - 1) / mr;
    /* an f16 or bf16 cache read by many row tiles (prefill): widened once, a
     * chunk of keys at a time, for all of them (the same products, in the
     * same order); with up to 3 tiles reading it in place is as fast
     * (kern-bench) */
    const bool chunked = !j->amx && dt != PB_DT_F32 && nt >= 4;
    uint32_t *qa = j->amx ? amx_area(&c, rows) : NULL;
    if (j->amx)
        amx_scores(j, &c, rows, qa);
    float *kw = sc + (size_t)rows * (ld + q_floats(hd) + (size_t)hd16); /* item_scratch */
    float *vw = kw + CHUNK * (size_t)kd;
    if (chunked) {
        const int P0 = jbase / 16, PF = (jend + 15) / 16;
        for (int q0 = P0; q0 < PF; q0 += CHUNK / 16) {
            const int q1 = q0 + CHUNK / 16 < PF ? q0 + CHUNK / 16 : PF;
            ops->cvt(dt, at(kc, dt, (size_t)q0 * 16 * kd), (q1 - q0) * kd, kw);
            for (int t = 0, r0 = 0; t < nt; r0 += pb_ktile_rows(rows, nt, t), t++) {
                int p0, p1;
                tile_panels(&c, r0, pb_ktile_rows(rows, nt, t), &p0, &p1);
                scores_mm(&c, r0, pb_ktile_rows(rows, nt, t), PB_DT_F32, kw, q0, p0 > q0 ? p0 : q0, p1 < q1 ? p1 : q1);
            }
        }
    }
    if (j->amx) {
        /* the softmax and the weights' pairs in one pass a row; O written whole */
        amx_values(j, &c, rows, jbase, jend, qa + round16((size_t)rows) * pb_kamx_ldxb(hd));
        goto out;
    }
    for (int t = 0, r0 = 0; t < nt; r0 += pb_ktile_rows(rows, nt, t), t++)
        scores_tile(&c, r0, pb_ktile_rows(rows, nt, t), chunked);
    /* softmax weights (unnormalized) and 1 / sum */
    for (int r = 0; r < rows; r++) {
        int lo, end;
        row_keys(&c, r, &lo, &end);
        const float sum = ops->expsum(score_row(&c, r) + lo, end - lo, sc[(size_t)r * ld + 1]);
        sc[(size_t)r * ld] = 1.0f / sum;
    }
    memset(c.os, 0, (size_t)rows * (size_t)hd16 * sizeof(float));
    if (chunked) {
        for (int k0 = jbase & ~15; k0 < jend; k0 += CHUNK) {
            const vchunk ch = {k0, k0 + CHUNK < jend ? k0 + CHUNK : jend, vw};
            for (int p = 0; p < hd16 / 16; p++)
                ops->cvt(dt, at(c.vc, dt, (size_t)p * cap * 16 + (size_t)k0 * 16), ch.k1 - k0,
                         vw + (size_t)p * (size_t)(ch.k1 - k0) * 16);
            for (int t = 0, r0 = 0; t < nt; r0 += pb_ktile_rows(rows, nt, t), t++)
                values_tile(&c, r0, pb_ktile_rows(rows, nt, t), &ch);
        }
    } else {
        for (int t = 0, r0 = 0; t < nt; r0 += pb_ktile_rows(rows, nt, t), t++)
            values_tile(&c, r0, pb_ktile_rows(rows, nt, t), NULL);
    }
out:
    for (int r = 0; r < rows; r++) {
        const float inv = sc[(size_t)r * ld], *o = c.os + (size_t)r * hd16;
        pb_krow_mul(a->out + (size_t)(c.tok0 + it->q0 + r / G) * od + (size_t)(c.g * G + r % G) * hd, o, inv,
                    (size_t)hd);
    }
}

/* ---- the split form ----
 * A decode call of fewer (sequence, KV head) items than keep the threads
 * equally busy (batch 1 with 3 KV heads over 2 threads, 8 over 16) runs
 * each item's products as several jobs: its scores by blocks of SPLIT_KEYS
 * keys (the last block's job storing the new key and value first; the job
 * that scores an item's last block takes its softmax), then, after the
 * pool's barrier, its weighted values by dims panels of 16. Every score,
 * sum and output element is computed as in the item form, so the two forms
 * give the same bits and either may run: the form depends on the call, the
 * results do not. Each item's scores, Q and O lie in one thread's scratch
 * (split_run). The exact tiles only: the dots and AMX forms (bf16 products
 * over a bf16 cache) keep the item form. */
#define SPLIT_KEYS 256 /* keys of a scoring job (16 K panels) */
/* The split form where the threads the item form leaves idle would read at
 * least this much of the cache (its items' average bytes times ceil(n / T)
 * - n / T: n items over T threads). kern-bench on Zen 3, 2 threads, cold
 * cache: SmolLM2's 3 KV heads at 1024 keys (0.5 x 512 KiB) 0-12% faster,
 * at 512 keys mixed; one KV head of 256 dims at 512 keys 1.3-1.8x faster,
 * at 256 keys mixed. */
#define SPLIT_MIN_BYTES ((size_t)256 << 10)

static atomic_int split_forced; /* tests: > 0 every decode call it fits, in blocks of that many keys; < 0 none */

void pb_kattn_set_split(int keys)
{
    atomic_store(&split_forced, keys > 0 ? (keys + 15) & ~15 : keys);
}

typedef struct split_item {
    item_ctx c;       /* sc, qs, os: in a thread's scratch; vp0, vp1: all panels */
    float *bmax;      /* [row][block]: each block's largest scaled score */
    int seq, bp, nblk, job0; /* its sequence; scoring blocks of bp panels (from its first key's), their
                              * number; its first job */
    atomic_int left;  /* blocks not yet scored */
} split_item;

typedef struct split_job {
    split_item *items;
    int n;
} split_job;

/* the item and block of scoring job i */
static split_item *split_find(const split_job *sj, int i, int *b)
{
    int lo = 0;
    while (lo + 1 < sj->n && sj->items[lo + 1].job0 <= i)
        lo++;
    *b = i - sj->items[lo].job0;
    return &sj->items[lo];
}

static void split_scores_run(void *ctx, int job, int worker)
{
    (void)worker;
    const split_job *sj = ctx;
    int b;
    split_item *it = split_find(sj, job, &b);
    const item_ctx *c = &it->c;
    const int rows = c->G, nt = (rows + c->ops->mr - 1) / c->ops->mr;
    const int P0 = c->jb16 / 16, PF = (c->pos0 + 1 + 15) / 16;
    const int q0 = P0 + b * it->bp, q1 = q0 + it->bp < PF ? q0 + it->bp : PF;
    if (b == it->nblk - 1) /* the block of the new key: stored before it is read */
        store_kv(c->a, it->seq, c->g, c->g + 1, 0, 1);
    for (int t = 0, r0 = 0; t < nt; r0 += pb_ktile_rows(rows, nt, t), t++)
        scores_mm(c, r0, pb_ktile_rows(rows, nt, t), c->dt, c->kc, 0, q0, q1);
    int a0, a1;
    row_keys(c, 0, &a0, &a1); /* (every row's: one token) */
    const int j0 = a0 > q0 * 16 ? a0 : q0 * 16, j1 = a1 < q1 * 16 ? a1 : q1 * 16;
    for (int r = 0; r < rows; r++)
        it->bmax[(size_t)r * it->nblk + b] = scale_keys(c, r, j0, j1);
    if (atomic_fetch_sub_explicit(&it->left, 1, memory_order_acq_rel) != 1)
        return;
    for (int r = 0; r < rows; r++) { /* the last block scored: the softmax's sums */
        float m = -INFINITY;
        for (int k = 0; k < it->nblk; k++)
            m = it->bmax[(size_t)r * it->nblk + k] > m ? it->bmax[(size_t)r * it->nblk + k] : m;
        c->sc[(size_t)r * c->ld + 1] = m;
        c->sc[(size_t)r * c->ld] = 1.0f / c->ops->expsum(score_row(c, r) + a0, a1 - a0, m);
    }
}

/* values job: item job / panels, dims panel job % panels */
static void split_values_run(void *ctx, int job, int worker)
{
    (void)worker;
    const split_job *sj = ctx;
    const int np = sj->items[0].c.hd16 / 16;
    item_ctx c = sj->items[job / np].c;
    c.vp0 = job % np;
    c.vp1 = c.vp0 + 1;
    const int rows = c.G, nt = (rows + c.ops->mr - 1) / c.ops->mr;
    for (int t = 0, r0 = 0; t < nt; r0 += pb_ktile_rows(rows, nt, t), t++)
        values_tile(&c, r0, pb_ktile_rows(rows, nt, t), NULL);
    const int d0 = c.vp0 * 16, n = c.hd - d0 < 16 ? c.hd - d0 : 16;
    const size_t od = (size_t)c.a->n_heads * c.hd;
    for (int r = 0; r < rows; r++)
        pb_krow_mul(c.a->out + (size_t)c.tok0 * od + (size_t)(c.g * rows + r) * c.hd + d0,
                    c.os + (size_t)r * c.hd16 + d0, c.sc[(size_t)r * c.ld], (size_t)n);
}

/* The split form for this call if it applies (a decode call of the exact
 * tiles whose items leave threads idle, or forced), placed in the threads'
 * scratch; false (nothing done) where not. */
static bool split_run(pb_kctx *k, const pb_kattn_args *a, const pb_kops *ops)
{
    const int T = pb_kctx_threads(k), mode = atomic_load(&split_forced);
    if (mode < 0 || (T < 2 && mode == 0))
        return false;
    int n = 0;
    double keys = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        if (a->n_tokens[s] > 1)
            return false; /* prefill: items enough */
        if (a->n_tokens[s] == 1)
            n += a->n_kv_heads, keys += (double)a->n_kv_heads * (a->pos[s] + 1 - first_key(a, a->pos[s]));
    }
    if (n == 0)
        return false;
    if (mode == 0) {
        const double idle = (double)((n + T - 1) / T) - (double)n / T; /* items' time a thread waits */
        const double item = keys / n * 2.0 * a->head_dim * (double)pb_dtype_size(a->kv_dtype);
        if (idle * item < (double)SPLIT_MIN_BYTES)
            return false;
    }
    /* the items, then each thread's scratch floats they take */
    void *buf;
    const size_t tail = ((size_t)T * sizeof(size_t) + sizeof(split_item) - 1) / sizeof(split_item);
    if (pb_kctx_items(k, (size_t)n + tail, sizeof(split_item), &buf) != PB_OK)
        return false;
    split_item *items = buf;
    size_t *used = (size_t *)(void *)(items + n);
    memset(used, 0, (size_t)T * sizeof *used);
    const size_t cap = pb_kctx_scores_cap(k);
    float *const *scr = pb_kctx_scores(k);
    const int bp = (mode > 0 ? mode : SPLIT_KEYS) / 16;
    const int G = a->n_heads / a->n_kv_heads, hd = a->head_dim, hd16 = (int)round16((size_t)hd);
    int i = 0, jobs = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        if (a->n_tokens[s] != 1)
            continue;
        const int pos = a->pos[s], jbase = first_key(a, pos), jb16 = jbase & ~15;
        const int nblk = ((pos + 1 + 15) / 16 - jb16 / 16 + bp - 1) / bp;
        const size_t ld = score_ld(jbase, pos + 1);
        const size_t fl = (size_t)G * (ld + q_floats(hd) + (size_t)hd16 + (size_t)nblk);
        for (int g = 0; g < a->n_kv_heads; g++, i++) {
            const int w = i % T;
            if (used[w] + fl > cap)
                return false;
            split_item *it = &items[i];
            it->c = item_init(a, ops, s, g, 0, 1, scr[w] + used[w]);
            used[w] += (fl + 15) & ~(size_t)15;
            it->bmax = it->c.os + (size_t)G * hd16;
            it->seq = s, it->bp = bp, it->nblk = nblk, it->job0 = jobs;
            atomic_init(&it->left, nblk);
            jobs += nblk;
            for (int r = 0; r < G; r++)
                memcpy(it->c.qs + (size_t)r * hd, query(&it->c, r), (size_t)hd * sizeof(float));
            memset(it->c.os, 0, (size_t)G * (size_t)hd16 * sizeof(float));
        }
    }
    split_job sj = {items, n};
    pb_kctx_run(k, jobs, split_scores_run, &sj);
    pb_kctx_run(k, n * (hd16 / 16), split_values_run, &sj);
    return true;
}

/* Query tokens per item for sequence s: the most (up to QB_MAX) whose
 * scratch fits in cap floats; 0 when not even one token fits. */
static int pick_qb(const pb_kattn_args *a, int s, size_t cap)
{
    const int nt = a->n_tokens[s];
    for (int q = QB_MAX; q >= 1; q /= 2) {
        int fits = 1;
        for (int q0 = 0; q0 < nt && fits; q0 += q)
            fits = item_floats(a, s, q0, q0 + q < nt ? q0 + q : nt) <= cap;
        if (fits)
            return q;
    }
    return 0;
}

/* An f16 cache refuses a finite key or value beyond its range (it would
 * become infinite, and the attention NaN); bf16 has f32's range. |x| >=
 * 65520 is exactly what rounds to infinity (the tie between 65504 and 2^16
 * goes to the even 2^16): one compare, not a conversion, on the main thread
 * before the items convert. */
static pb_status kv_f16_range(const pb_kattn_args *a, int s)
{
    const int hd = a->head_dim, n = a->n_kv_heads * hd;
    for (int i = 0; i < a->n_tokens[s]; i++) {
        const float *k = a->k + (size_t)(a->tok_start[s] + i) * a->kv_stride;
        const float *v = a->v + (size_t)(a->tok_start[s] + i) * a->kv_stride;
        /* the token's row at once (a loop the compiler vectorizes; NaN
         * fails both compares), the head found only when one is out */
        int out = 0;
        for (int d = 0; d < n; d++) {
            const float x = fabsf(k[d]), y = fabsf(v[d]);
            out |= (x >= 65520.0f && x <= FLT_MAX) | (y >= 65520.0f && y <= FLT_MAX);
        }
        for (int g = 0; g < a->n_kv_heads && out; g++)
            for (int d = 0; d < hd; d++) {
                const float x = k[(size_t)g * hd + d], y = v[(size_t)g * hd + d];
                if ((fabsf(x) >= 65520.0f && isfinite(x)) || (fabsf(y) >= 65520.0f && isfinite(y)))
                    return pb_error(PB_ERR_UNSUPPORTED,
                                    "--kv-dtype f16: a key or value of KV head %d at position %d is beyond half "
                                    "precision's range (65504); run with --kv-dtype f32", g, a->pos[s] + i);
            }
    }
    return PB_OK;
}

pb_status pb_kattn_run(pb_kctx *k, const pb_kattn_args *a)
{
    if (a->n_heads <= 0 || a->n_kv_heads <= 0 || a->n_heads % a->n_kv_heads || a->head_dim <= 0)
        return pb_error(PB_ERR_INTERNAL, "attention: %d heads over %d KV heads of dim %d", a->n_heads,
                        a->n_kv_heads, a->head_dim);
    if (a->kv_dtype != PB_DT_F32 && a->kv_dtype != PB_DT_F16 && a->kv_dtype != PB_DT_BF16)
        return pb_error(PB_ERR_INTERNAL, "attention: a KV cache of %s (f32, f16 or bf16 here)",
                        pb_dtype_name(a->kv_dtype));
    const size_t cap = pb_kctx_scores_cap(k);
    size_t n_items = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        if (a->n_tokens[s] <= 0)
            continue;
        if (a->pos[s] < 0 || a->pos[s] + a->n_tokens[s] > a->cache_len)
            return pb_error(PB_ERR_INTERNAL, "attention: sequence %d at positions %d..%d of a cache of %d", s,
                            a->pos[s], a->pos[s] + a->n_tokens[s] - 1, a->cache_len);
        const int q = pick_qb(a, s, cap);
        if (!q)
            return pb_error(PB_ERR_NOMEM, "attention: %zu floats of scratch per thread needed, %zu reserved",
                            item_floats(a, s, a->n_tokens[s] - 1, a->n_tokens[s]), cap);
        if (a->kv_dtype == PB_DT_F16) /* (before anything is stored) */
            PB_CHECK(kv_f16_range(a, s));
        n_items += (size_t)a->n_kv_heads * (size_t)((a->n_tokens[s] + q - 1) / q);
    }
    const pb_kops *ops = pb_kops_active();
    /* over a bf16 cache the bf16 products' tables (vdpbf16ps or its
     * emulation; the AMX unit); else the exact tiles */
    const bool bf = a->kv_dtype == PB_DT_BF16;
    attn_job j = {a, ops->exact ? ops->exact : ops, ops->amx && bf ? ops : NULL,
                  ops->xpairs && !ops->amx && bf ? ops : NULL, NULL, pb_kctx_scores(k)};
    if (!j.amx && !j.dots && split_run(k, a, j.ops))
        return PB_OK;
    void *buf;
    PB_CHECK(pb_kctx_items(k, n_items, sizeof(attn_item), &buf));
    attn_item *items = buf;
    /* a sequence whose new keys several items read (a prefill block): its
     * keys and values stored first, by the pool, in items of STORE_TOKENS
     * tokens of one KV head (no more items than the attention's below) */
    size_t n = 0;
    for (int s = 0; s < a->n_seqs; s++)
        if (a->n_tokens[s] > 0 && pick_qb(a, s, cap) < a->n_tokens[s])
            for (int g = 0; g < a->n_kv_heads; g++)
                for (int i0 = 0; i0 < a->n_tokens[s]; i0 += STORE_TOKENS)
                    items[n++] = (attn_item){s, g, i0, i0 + STORE_TOKENS < a->n_tokens[s] ? i0 + STORE_TOKENS
                                                                                              : a->n_tokens[s]};
    if (n > 0)
        pb_kctx_run(k, (int)n, store_item_run, &(attn_job){.a = a, .items = items});
    n = 0;
    for (int s = 0; s < a->n_seqs; s++) {
        if (a->n_tokens[s] <= 0)
            continue;
        const int q = pick_qb(a, s, cap);
        for (int g = 0; g < a->n_kv_heads; g++)
            for (int q0 = 0; q0 < a->n_tokens[s]; q0 += q)
                items[n++] = (attn_item){s, g, q0, q0 + q < a->n_tokens[s] ? q0 + q : a->n_tokens[s]};
    }
    j.items = items;
    pb_kctx_run(k, (int)n, attn_item_run, &j);
    return PB_OK;
}
