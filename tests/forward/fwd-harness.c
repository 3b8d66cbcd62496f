/* Forward-pass test harness: loads a checkpoint through the real loader
 * (config, index, plan of N stages, per-stage weights) and chains the stages.
 *
 *   fwd-harness golden MODEL WORK STAGES THREADS [CHUNK]
 *       reads WORK/prompts.txt (one prompt of token ids per line) and
 *       WORK/forced.txt (HF's greedy tokens per prompt); runs all prompts in
 *       mixed batches (prompt 1 prefilled in two chunks, or in chunks of CHUNK
 *       tokens, while the others decode, slots permuted) and writes WORK/out-STAGES/prefill_I.f32
 *       [P, vocab], decode_I.f32 [steps, vocab] (logits after feeding forced
 *       token k), and greedy_I.txt (a free-running greedy continuation).
 *   fwd-harness invariance MODEL THREADS
 *       16 sequences of mixed lengths in one batch (prefill, then decode
 *       steps) against each sequence alone: logits must be bit-identical
 *       (alone, every other decode step goes through the stage's backend
 *       buffers: pb_stage_input, pb_stage_run, pb_stage_output).
 *   fwd-harness memory MODEL SLOTS MAX_SEQ THREADS
 *       the plan's memory estimate against the peak RSS of the running stage
 *       (see cmd_memory); exit 1 when off by more than 10%.
 *   fwd-harness load MODEL
 *       only loads: exit code from the status (2 for config errors).
 *   fwd-harness loadbench MODEL RANKS STAGE REPS [THREADS]
 *       load time of one stage beside a plain read of its files (a figure,
 *       never pass/fail; contrib/bench/load.sh).
 * PB_WEIGHTS_DTYPE=stored|f32|bf16 in the environment: --weights-dtype;
 * PB_KV_DTYPE=auto|f32|f16|bf16: --kv-dtype; PB_MATMUL_PRECISION=f32|bf16|bf16-amx:
 * --matmul-precision (golden and invariance). */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend/stage.h"
#include "ckpt/ckpt.h"
#include "ckpt/plan.h"
#include "ckpt/weights.h"
#include "common/status.h"
#include "common/util.h"
#include "model/config.h"

#define MAX_PROMPTS 16
#define MAX_TOKS 256

typedef struct chain {
    pb_model_config cfg;
    pb_ckpt *ck;
    pb_plan *plan;
    int n;
    pb_stage *st[8];
    pb_backend *be;
    float *hidden[2];
    int V, H;
} chain;

/* PB_WEIGHTS_DTYPE=stored|f32|bf16 in the environment (default stored). */
static pb_wdtype weights_dtype(void)
{
    const char *e = getenv("PB_WEIGHTS_DTYPE");
    pb_wdtype w = PB_WDTYPE_STORED;
    if (e && *e && pb_wdtype_parse(e, &w) != 0)
        fprintf(stderr, "fwd-harness: PB_WEIGHTS_DTYPE=%s is not stored, f32 or bf16; using stored\n", e);
    return w;
}

/* PB_KV_DTYPE=auto|f32|f16|bf16 in the environment (default auto). */
static pb_kvdtype kv_dtype(void)
{
    const char *e = getenv("PB_KV_DTYPE");
    pb_kvdtype k = PB_KVDTYPE_AUTO;
    if (e && *e && pb_kvdtype_parse(e, &k) != 0)
        fprintf(stderr, "fwd-harness: PB_KV_DTYPE=%s is not auto, f32, f16 or bf16; using auto\n", e);
    return k;
}

/* PB_MATMUL_PRECISION=f32|bf16|bf16-amx in the environment: --matmul-precision (default f32) */
static pb_status matmul_precision(const pb_backend_ops *ops)
{
    const char *e = getenv("PB_MATMUL_PRECISION");
    pb_mmprec p = PB_MMPREC_DEFAULT;
    if (e && *e && pb_mmprec_parse(e, &p) != 0)
        return pb_error(PB_ERR_USAGE, "fwd-harness: PB_MATMUL_PRECISION=%s is not f32, bf16 or bf16-amx", e);
    return pb_mmprec_select(ops, p);
}

static void chain_free(chain *c)
{
    for (int i = 0; i < c->n; i++)
        pb_stage_free(c->st[i]);
    pb_backend_free(c->be);
    free(c->hidden[0]);
    free(c->hidden[1]);
    pb_plan_free(c->plan);
    pb_ckpt_close(c->ck);
    pb_model_config_free(&c->cfg);
}

static pb_status chain_open(chain *c, const char *dir, int n_stages, int slots, int max_seq, int max_tokens,
                            int threads)
{
    memset(c, 0, sizeof *c);
    pb_status st;
    PB_CHECK(pb_model_config_load(dir, &c->cfg));
    PB_CHECK(pb_ckpt_open(dir, NULL, &c->cfg, &c->ck));
    pb_split_spec spec = {.policy = PB_SPLIT_POLICY_EQUAL_SIZE, .n_stages = n_stages, .batch_size = slots,
                          .max_seq_len = max_seq};
    PB_CHECK(pb_plan_make(c->ck, &c->cfg, &spec, &c->plan));
    pb_stage_opts o = {.n_slots = slots, .max_seq_len = max_seq, .max_batch_tokens = max_tokens, .threads = threads,
                       .weights_dtype = weights_dtype(), .kv_dtype = kv_dtype()};
    /* PB_FWD_DEVICE=cuda: the same checks on the CUDA backend (GPU 0; contrib/gpu/check.sh) */
    const char *dev = getenv("PB_FWD_DEVICE");
    pb_backend_opts bo = {.threads = threads, .device = 0};
    PB_CHECK(pb_backend_create(dev && *dev ? dev : "cpu", &bo, &c->be));
    PB_CHECK(matmul_precision(c->be->ops));
    for (int i = 0; i < c->plan->n_stages; i++) {
        pb_weights *w = NULL;
        PB_CHECK(pb_weights_load(c->ck, &c->plan->stages[i], &w));
        st = pb_stage_create(&c->cfg, &c->plan->stages[i], w, c->be, &o, &c->st[i]);
        pb_weights_free(w); /* the stage keeps its own converted copy */
        if (st != PB_OK)
            return st;
        c->n++;
    }
    c->V = pb_stage_vocab_size(c->st[c->n - 1]);
    c->H = pb_stage_hidden_size(c->st[0]);
    for (int i = 0; i < 2; i++) {
        c->hidden[i] = malloc((size_t)max_tokens * c->H * sizeof(float));
        if (!c->hidden[i])
            return pb_error(PB_ERR_NOMEM, "harness: out of memory");
    }
    return PB_OK;
}

static pb_status chain_forward(chain *c, const pb_seq_batch *b, const int32_t *ids, float *logits, bool all)
{
    const void *in = ids;
    for (int i = 0; i < c->n; i++) {
        float *out = i == c->n - 1 ? logits : c->hidden[i % 2];
        PB_CHECK(pb_stage_forward(c->st[i], b, in, out, all));
        in = out;
    }
    return PB_OK;
}

static int read_lines(const char *path, int32_t toks[][MAX_TOKS], int *lens)
{
    FILE *f = fopen(path, "r");
    if (!f) {
        fprintf(stderr, "cannot open %s: %s\n", path, strerror(errno));
        return -1;
    }
    char line[8192];
    int n = 0;
    while (n < MAX_PROMPTS && fgets(line, sizeof line, f)) {
        int k = 0;
        char *p = line, *e;
        for (;;) {
            long v = strtol(p, &e, 10);
            if (e == p || k >= MAX_TOKS)
                break;
            toks[n][k++] = (int32_t)v;
            p = e;
        }
        lens[n++] = k;
    }
    fclose(f);
    return n;
}

static int write_f32(const char *dir, const char *stem, int i, const float *x, size_t n)
{
    char path[1200];
    snprintf(path, sizeof path, "%s/%s_%d.f32", dir, stem, i);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(x, sizeof(float), n, f) != n) {
        fprintf(stderr, "cannot write %s\n", path);
        if (f)
            fclose(f);
        return -1;
    }
    return fclose(f);
}

static int argmax(const float *x, int n)
{
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b])
            b = i;
    return b;
}

static int fail_status(pb_status st)
{
    fprintf(stderr, "fwd-harness: %s: %s\n", pb_strerror(st), pb_last_error());
    return pb_status_exit_code(st);
}

static int cmd_golden(const char *model, const char *work, int n_stages, int threads, int chunk)
{
    static int32_t prompts[MAX_PROMPTS][MAX_TOKS], forced[MAX_PROMPTS][MAX_TOKS];
    int plen[MAX_PROMPTS], flen[MAX_PROMPTS];
    char path[1200], outdir[1024];
    snprintf(path, sizeof path, "%s/prompts.txt", work);
    int np = read_lines(path, prompts, plen);
    snprintf(path, sizeof path, "%s/forced.txt", work);
    int nf = read_lines(path, forced, flen);
    if (np < 2 || nf != np) {
        fprintf(stderr, "need >= 2 prompts and as many forced lines\n");
        return 1;
    }
    snprintf(outdir, sizeof outdir, "%s/out-%d", work, n_stages);
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", outdir);
    if (system(cmd) != 0)
        return 1;

    chain c;
    int max_seq = 0;
    for (int i = 0; i < np; i++)
        if (plen[i] + flen[i] + 1 > max_seq)
            max_seq = plen[i] + flen[i] + 1;
    int max_tokens = 0;
    for (int i = 0; i < np; i++)
        max_tokens += plen[i] + flen[i]; /* LongRoPE: a whole sequence may be fed again */
    pb_status st = chain_open(&c, model, n_stages, np, max_seq, max_tokens, threads);
    if (st != PB_OK) {
        chain_free(&c);
        return fail_status(st);
    }
    if (c.n != n_stages) {
        fprintf(stderr, "plan made %d stages, asked %d\n", c.n, n_stages);
        chain_free(&c);
        return 1;
    }
    const int V = c.V;
    float *logits = malloc((size_t)max_tokens * V * sizeof(float));
    float *pre[MAX_PROMPTS], *dec[MAX_PROMPTS];
    for (int i = 0; i < np; i++) {
        pre[i] = malloc((size_t)plen[i] * V * sizeof(float));
        dec[i] = malloc((size_t)flen[i] * V * sizeof(float));
    }
    /* Sequence i uses slot (i + 2) % np; sequence 1 prefills in two chunks and lags one step. */
    int slot[MAX_PROMPTS], pos[MAX_PROMPTS], nt[MAX_PROMPTS], which[MAX_PROMPTS];
    /* LongRoPE: a prompt longer than original_max_position_embeddings uses the
     * long factors in every chunk, as the engine marks it (PB_SEQ_ROPE_LONG) */
    const int lr_orig = c.cfg.rope_scaling == PB_ROPE_SCALE_LONGROPE ? c.cfg.rope_original_max_position : 0;
    bool rl[MAX_PROMPTS] = {false};
    int done_pre[MAX_PROMPTS] = {0}, done_dec[MAX_PROMPTS] = {0};
    int32_t ids[MAX_PROMPTS * MAX_TOKS];
    int rc = 0;
    for (int step = 0;; step++) {
        int ns = 0, T = 0;
        for (int i = 0; i < np; i++) {
            int n, p;
            const int32_t *src;
            if (done_pre[i] < plen[i]) {
                p = done_pre[i];
                n = plen[i] - p;
                if (i == 1 && chunk > 0 && n > chunk)
                    n = chunk;
                else if (i == 1 && chunk <= 0 && step == 0 && plen[i] > 1)
                    n = plen[i] / 2;
                src = prompts[i] + p;
            } else if (done_dec[i] < flen[i]) {
                p = plen[i] + done_dec[i];
                n = 1;
                src = forced[i] + done_dec[i];
            } else {
                continue;
            }
            which[ns] = i;
            rl[ns] = lr_orig && plen[i] > lr_orig;
            slot[ns] = (i + 2) % np;
            pos[ns] = p;
            nt[ns] = n;
            memcpy(ids + T, src, (size_t)n * sizeof(int32_t));
            T += n;
            ns++;
        }
        if (ns == 0)
            break;
        pb_seq_batch b = {ns, slot, pos, nt, rl, NULL, NULL};
        st = chain_forward(&c, &b, ids, logits, true);
        if (st != PB_OK) {
            rc = fail_status(st);
            goto out;
        }
        int row = 0;
        for (int s = 0; s < ns; s++) {
            int i = which[s];
            for (int k = 0; k < nt[s]; k++, row++) {
                const float *lg = logits + (size_t)row * V;
                if (done_pre[i] < plen[i])
                    memcpy(pre[i] + (size_t)done_pre[i]++ * V, lg, (size_t)V * sizeof(float));
                else
                    memcpy(dec[i] + (size_t)done_dec[i]++ * V, lg, (size_t)V * sizeof(float));
            }
        }
    }
    for (int i = 0; i < np; i++)
        if (write_f32(outdir, "prefill", i, pre[i], (size_t)plen[i] * V) || write_f32(outdir, "decode", i, dec[i], (size_t)flen[i] * V)) {
            rc = 1;
            goto out;
        }

    /* Free-running greedy: all prompts prefilled together, then decode steps
     * together. LongRoPE: as HF's Phi-3 generate(), a sequence growing past
     * original_max_position_embeddings is fed again whole (its cache dropped),
     * so that every position uses the long factors. */
    {
        static int32_t gen[MAX_PROMPTS][MAX_TOKS];
        int T = 0;
        for (int i = 0; i < np; i++) {
            slot[i] = i;
            pos[i] = 0;
            nt[i] = plen[i];
            memcpy(ids + T, prompts[i], (size_t)plen[i] * sizeof(int32_t));
            T += plen[i];
        }
        pb_seq_batch b = {np, slot, pos, nt, NULL, NULL, NULL};
        for (int k = 0; k < flen[0]; k++) {
            st = chain_forward(&c, &b, ids, logits, false);
            if (st != PB_OK) {
                rc = fail_status(st);
                goto out;
            }
            T = 0;
            for (int i = 0; i < np; i++) {
                gen[i][k] = argmax(logits + (size_t)i * V, V);
                pos[i] += nt[i];
                nt[i] = 1;
                if (lr_orig && pos[i] == lr_orig) {
                    pos[i] = 0;
                    nt[i] = plen[i] + k + 1;
                    memcpy(ids + T, prompts[i], (size_t)plen[i] * sizeof(int32_t));
                    memcpy(ids + T + plen[i], gen[i], (size_t)(k + 1) * sizeof(int32_t));
                } else {
                    ids[T] = gen[i][k];
                }
                T += nt[i];
            }
        }
        for (int i = 0; i < np; i++) {
            snprintf(path, sizeof path, "%s/greedy_%d.txt", outdir, i);
            FILE *f = fopen(path, "w");
            if (!f) {
                rc = 1;
                goto out;
            }
            for (int k = 0; k < flen[0]; k++)
                fprintf(f, "%s%d", k ? " " : "", (int)gen[i][k]);
            fprintf(f, "\n");
            fclose(f);
        }
    }
out:
    for (int i = 0; i < np; i++) {
        free(pre[i]);
        free(dec[i]);
    }
    free(logits);
    chain_free(&c);
    return rc;
}

/* 16 sequences of mixed lengths: every sequence's logits from the batch must
 * equal, bit for bit, those of the same sequence run alone. */
/* One-stage forward through the stage's backend buffers (pb_stage_input,
 * pb_stage_run, pb_stage_output): the path a device pipeline takes. */
static pb_status stage_run_dev(chain *c, const pb_seq_batch *b, const int32_t *ids, float *logits)
{
    pb_backend *be = c->be;
    int T = 0;
    for (int i = 0; i < b->n_seqs; i++)
        T += b->n_tokens[i];
    pb_buf in = pb_stage_input(c->st[0]), out = pb_stage_output(c->st[0]);
    if (c->n != 1 || in.dtype != PB_DT_I32 || out.dtype != PB_DT_F32 || (size_t)T > in.n ||
        (size_t)b->n_seqs * c->V > out.n)
        return pb_error(PB_ERR_INTERNAL, "harness: stage buffers do not fit");
    PB_CHECK(be->ops->upload(be, in.data, ids, (size_t)T * sizeof(int32_t)));
    PB_CHECK(pb_stage_run(c->st[0], b));
    PB_CHECK(be->ops->download(be, logits, out.data, (size_t)b->n_seqs * c->V * sizeof(float)));
    return be->ops->sync(be);
}

static int cmd_invariance(const char *model, int threads)
{
    enum { NS = 16, STEPS = 4 };
    chain c;
    const int max_seq = 40;
    int lens[NS];
    int total = 0;
    for (int i = 0; i < NS; i++) {
        lens[i] = 1 + (i * 7) % 23; /* 1 .. 23 */
        total += lens[i];
    }
    pb_status st = chain_open(&c, model, 1, NS, max_seq, total, threads);
    if (st != PB_OK) {
        chain_free(&c);
        return fail_status(st);
    }
    const int V = c.V;
    int rc = 0;
    int32_t *ids = malloc((size_t)total * sizeof(int32_t));
    float *batch = malloc((size_t)total * V * sizeof(float)), *alone = malloc((size_t)total * V * sizeof(float));
    float *bdec = malloc((size_t)NS * STEPS * V * sizeof(float)), *adec = malloc((size_t)V * sizeof(float));
    int slot[NS], pos[NS], nt[NS];
    unsigned seed = 12345;
    for (int t = 0; t < total; t++) {
        seed = seed * 1103515245u + 12345u;
        ids[t] = (int32_t)((seed >> 8) % (unsigned)V);
    }
    /* batch: prefill all, then STEPS decode steps of all, with token (step * 13 + i) % V */
    for (int i = 0; i < NS; i++) {
        slot[i] = NS - 1 - i;
        pos[i] = 0;
        nt[i] = lens[i];
    }
    pb_seq_batch b = {NS, slot, pos, nt, NULL, NULL, NULL};
    st = chain_forward(&c, &b, ids, batch, true);
    for (int k = 0; k < STEPS && st == PB_OK; k++) {
        int32_t dids[NS];
        for (int i = 0; i < NS; i++) {
            pos[i] = lens[i] + k;
            nt[i] = 1;
            dids[i] = (int32_t)((k * 13 + i) % V);
        }
        /* mix: the last decode step also carries a fresh prefill in no other slot: none free, so vary order */
        st = chain_forward(&c, &b, dids, bdec + (size_t)k * NS * V, false);
    }
    if (st != PB_OK) {
        rc = fail_status(st);
        goto out;
    }
    /* alone, each in slot 0 */
    int off = 0, mism = 0;
    for (int i = 0; i < NS; i++) {
        int s0 = 0, p0 = 0, n0 = lens[i];
        pb_seq_batch one = {1, &s0, &p0, &n0, NULL, NULL, NULL};
        st = chain_forward(&c, &one, ids + off, alone, true);
        if (st != PB_OK) {
            rc = fail_status(st);
            goto out;
        }
        if (memcmp(alone, batch + (size_t)off * V, (size_t)lens[i] * V * sizeof(float)) != 0) {
            fprintf(stderr, "sequence %d (length %d): prefill logits differ alone vs in the batch\n", i, lens[i]);
            mism++;
        }
        for (int k = 0; k < STEPS; k++) {
            int32_t t = (int32_t)((k * 13 + i) % V);
            p0 = lens[i] + k;
            n0 = 1;
            /* odd steps through the backend buffers: the same bits */
            st = k % 2 ? stage_run_dev(&c, &one, &t, adec) : chain_forward(&c, &one, &t, adec, false);
            if (st != PB_OK) {
                rc = fail_status(st);
                goto out;
            }
            if (memcmp(adec, bdec + ((size_t)k * NS + i) * V, (size_t)V * sizeof(float)) != 0) {
                fprintf(stderr, "sequence %d: decode step %d logits differ alone vs in the batch\n", i, k);
                mism++;
            }
        }
        off += lens[i];
    }
    printf("batch invariance: %d sequences, %d mismatches\n", NS, mism);
    rc = mism ? 1 : 0;
out:
    free(ids);
    free(batch);
    free(alone);
    free(bdec);
    free(adec);
    chain_free(&c);
    return rc;
}

static long status_kib(const char *key)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        return -1;
    char line[256];
    long v = -1;
    size_t k = strlen(key);
    while (fgets(line, sizeof line, f))
        if (strncmp(line, key, k) == 0 && line[k] == ':') {
            v = strtol(line + k + 1, NULL, 10);
            break;
        }
    fclose(f);
    return v;
}

/* The plan's estimate (weights + KV + activations) against the peak RSS of
 * the running stage: process RSS before loading is subtracted, and the peak
 * is reset (/proc/self/clear_refs) once the stage holds its own weights and
 * the loader's buffers are freed, so it covers creating nothing but running
 * a full batch: every slot prefilled in batches of max_batch_tokens, then
 * decode steps of all slots until max_seq_len. */
static int cmd_memory(const char *model, int slots, int max_seq, int threads)
{
    long base = status_kib("VmRSS");
    pb_model_config cfg;
    pb_ckpt *ck = NULL;
    pb_plan *plan = NULL;
    pb_weights *w = NULL;
    pb_stage *stage = NULL;
    pb_backend *be = NULL;
    int32_t *ids = NULL;
    float *logits = NULL;
    int *slot = NULL, *pos = NULL, *nt = NULL;
    pb_status st;
    int rc = 1;
    memset(&cfg, 0, sizeof cfg);
    PB_CHECK_GOTO(pb_model_config_load(model, &cfg), st, fail);
    PB_CHECK_GOTO(pb_ckpt_open(model, NULL, &cfg, &ck), st, fail);
    pb_split_spec spec = {.policy = PB_SPLIT_POLICY_EQUAL_SIZE, .n_stages = 1, .batch_size = slots, .max_seq_len = max_seq};
    PB_CHECK_GOTO(pb_plan_make(ck, &cfg, &spec, &plan), st, fail);
    int mbt = pb_stage_batch_tokens(0, slots, slots, max_seq);
    pb_stage_opts o = {.n_slots = slots, .max_seq_len = max_seq, .max_batch_tokens = mbt, .threads = threads,
                       .weights_dtype = weights_dtype(), .kv_dtype = kv_dtype()};
    PB_CHECK_GOTO(pb_stage_plan_memory(plan, &cfg, ck, pb_backend_ops_of("cpu"), &o), st, fail);
    PB_CHECK_GOTO(pb_weights_load(ck, &plan->stages[0], &w), st, fail);
    pb_backend_opts bo = {.threads = threads};
    PB_CHECK_GOTO(pb_backend_create("cpu", &bo, &be), st, fail);
    PB_CHECK_GOTO(pb_stage_create(&cfg, &plan->stages[0], w, be, &o, &stage), st, fail);
    pb_weights_free(w);
    w = NULL;
    pb_ckpt_close(ck);
    ck = NULL;
    long after_load_peak = status_kib("VmHWM");
    FILE *cr = fopen("/proc/self/clear_refs", "w");
    bool reset = cr && fputs("5", cr) >= 0;
    if (cr)
        reset = (fclose(cr) == 0) && reset;

    const int V = pb_stage_vocab_size(stage);
    ids = calloc((size_t)mbt, sizeof *ids);
    logits = calloc((size_t)slots * V, sizeof *logits);
    slot = calloc((size_t)slots, sizeof(int));
    pos = calloc((size_t)slots, sizeof(int));
    nt = calloc((size_t)slots, sizeof(int));
    if (!ids || !logits || !slot || !pos || !nt) {
        fprintf(stderr, "out of memory\n");
        goto done;
    }
    for (int i = 0; i < mbt; i++)
        ids[i] = (int32_t)((i * 7 + 3) % V);
    /* prefill: each slot gets max_seq / 2 tokens, packed into batches of at most mbt tokens */
    int fill = max_seq / 2, s = 0;
    while (s < slots) {
        int ns = 0, T = 0;
        while (s < slots && T + fill <= mbt) {
            slot[ns] = s;
            pos[ns] = 0;
            nt[ns] = fill;
            T += fill;
            ns++;
            s++;
        }
        if (ns == 0) {
            fprintf(stderr, "max_batch_tokens %d < %d\n", mbt, fill);
            goto done;
        }
        pb_seq_batch b = {ns, slot, pos, nt, NULL, NULL, NULL};
        PB_CHECK_GOTO(pb_stage_forward(stage, &b, ids, logits, false), st, fail);
    }
    for (int p = fill; p < max_seq; p++) {
        for (int i = 0; i < slots; i++) {
            slot[i] = i;
            pos[i] = p;
            nt[i] = 1;
        }
        pb_seq_batch b = {slots, slot, pos, nt, NULL, NULL, NULL};
        PB_CHECK_GOTO(pb_stage_forward(stage, &b, ids, logits, false), st, fail);
    }
    {
        long peak = status_kib("VmHWM");
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        const pb_stage_plan *sp = &plan->stages[0];
        double est = (double)sp->mem_total / 1024.0, meas = (double)(peak - base);
        double err = (est - meas) / meas;
        printf("plan: weights %.1f MiB + kv %.1f MiB + act %.1f MiB = %.1f MiB; measured peak RSS of the running "
               "stage %.1f MiB (process peak %.1f MiB incl. loading %.1f MiB, baseline %.1f MiB): estimate off by %+.1f%%%s\n",
               sp->mem_weights / 1048576.0, sp->mem_kv / 1048576.0, sp->mem_act / 1048576.0, est / 1024.0,
               meas / 1024.0, peak / 1024.0, after_load_peak / 1024.0, base / 1024.0, 100 * err,
               reset ? "" : " (peak reset unavailable: includes loading)");
        (void)ru;
        /* for scripts: the whole process's peak over loading and running, less the baseline */
        long whole = (peak > after_load_peak ? peak : after_load_peak) - base;
        printf("figures: peak_rss=%lld weights=%llu kv=%llu act=%llu\n", (long long)whole * 1024,
               (unsigned long long)sp->mem_weights, (unsigned long long)sp->mem_kv, (unsigned long long)sp->mem_act);
#if defined(__SANITIZE_ADDRESS__)
        /* ASan's shadow memory and quarantine inflate RSS: the figure is
         * printed, the 10% check belongs to the normal build. */
        printf("(AddressSanitizer build: RSS comparison not checked)\n");
        rc = 0;
#else
        rc = fabs(err) <= 0.10 ? 0 : 1;
#endif
    }
    goto done;
fail:
    rc = fail_status(st);
done:
    free(ids);
    free(logits);
    free(slot);
    free(pos);
    free(nt);
    pb_stage_free(stage);
    pb_backend_free(be);
    pb_weights_free(w);
    pb_plan_free(plan);
    pb_ckpt_close(ck);
    pb_model_config_free(&cfg);
    return rc;
}

/* Plain sequential read of the stage's files, whole files, 1 MiB at a time. */
static double plain_read(const pb_stage_plan *sp, uint64_t *bytes)
{
    static char buf[1 << 20];
    double t0 = pb_now();
    *bytes = 0;
    for (int f = 0; f < sp->n_files; f++) {
        int fd = open(sp->files[f].path, O_RDONLY);
        if (fd < 0)
            return -1;
        ssize_t r;
        while ((r = read(fd, buf, sizeof buf)) > 0)
            *bytes += (uint64_t)r;
        close(fd);
    }
    return pb_now() - t0;
}

/* Drops the page cache of the stage's files (posix_fadvise DONTNEED: these
 * files only, no root needed, other processes' files untouched), so the next
 * read comes from the disk. 0 when every file was advised. */
static int drop_cache(const pb_stage_plan *sp)
{
    int rc = 0;
    for (int f = 0; f < sp->n_files; f++) {
        int fd = open(sp->files[f].path, O_RDONLY);
        if (fd < 0 || posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) != 0)
            rc = -1;
        if (fd >= 0)
            close(fd);
    }
    return rc;
}

/* One load of the stage through a --weights-cache file at path (a new
 * backend each time, as a run makes): seconds, or -1; *hit tells whether the
 * file was sound and mapped. */
static double cached_load(const pb_model_config *cfg, const pb_ckpt *ck, const pb_stage_plan *sp,
                          const pb_stage_opts *o, const char *path, int threads, bool *hit)
{
    double t0 = pb_now(), t = -1;
    pb_backend *be = NULL;
    pb_weights *w = NULL;
    pb_stage *stg = NULL;
    pb_backend_opts bo = {.threads = threads};
    if (pb_backend_create("cpu", &bo, &be) == PB_OK &&
        be->ops->weights_cache(be, path, "fwd-harness loadbench") == PB_OK) {
        *hit = be->ops->weights_cached(be);
        if (pb_weights_load_ex(ck, sp, !*hit, &w) == PB_OK && pb_stage_create(cfg, sp, w, be, o, &stg) == PB_OK)
            t = pb_now() - t0;
    }
    pb_weights_free(w);
    pb_stage_free(stg);
    pb_backend_free(be);
    return t;
}

/* Load time of stage STAGE of RANKS (pb_weights_load + pb_stage_create with
 * one slot of 16 tokens, weights as PB_WEIGHTS_DTYPE says), best of REPS,
 * beside a plain sequential read of the same files in the same run. */
static int cmd_loadbench(const char *model, int ranks, int stage, int reps, int threads)
{
    pb_model_config cfg;
    pb_ckpt *ck = NULL;
    pb_plan *plan = NULL;
    pb_backend *be = NULL;
    pb_status st = PB_OK;
    int rc = 0;
    PB_CHECK_GOTO(pb_model_config_load(model, &cfg), st, fail);
    PB_CHECK_GOTO(pb_ckpt_open(model, NULL, &cfg, &ck), st, fail);
    pb_split_spec spec = {.policy = PB_SPLIT_POLICY_EQUAL_SIZE, .n_stages = ranks, .batch_size = 1, .max_seq_len = 16};
    PB_CHECK_GOTO(pb_plan_make(ck, &cfg, &spec, &plan), st, fail);
    if (stage < 0 || stage >= plan->n_stages) {
        fprintf(stderr, "stage %d of %d\n", stage, plan->n_stages);
        rc = 2;
        goto done;
    }
    pb_backend_opts bo = {.threads = threads};
    PB_CHECK_GOTO(pb_backend_create("cpu", &bo, &be), st, fail);
    const pb_stage_plan *sp = &plan->stages[stage];
    pb_stage_opts o = {.n_slots = 1, .max_seq_len = 16, .max_batch_tokens = 16, .threads = threads,
                       .weights_dtype = weights_dtype(), .kv_dtype = kv_dtype()};
    double best_load = 1e30, best_read = 1e30;
    uint64_t file_bytes = 0, read_bytes = 0, kept = 0;
    for (int r = 0; r < reps; r++) {
        double tr = plain_read(sp, &file_bytes);
        if (tr < 0) {
            fprintf(stderr, "cannot read the stage's files\n");
            rc = 1;
            goto done;
        }
        if (tr < best_read)
            best_read = tr;
        double t0 = pb_now();
        pb_weights *w = NULL;
        pb_stage *stg = NULL;
        PB_CHECK_GOTO(pb_weights_load(ck, sp, &w), st, fail);
        st = pb_stage_create(&cfg, sp, w, be, &o, &stg);
        read_bytes = pb_weights_bytes_read(w);
        pb_weights_free(w);
        double tl = pb_now() - t0;
        if (st != PB_OK)
            goto fail;
        kept = pb_stage_weight_bytes(stg);
        pb_stage_free(stg);
        if (tl < best_load)
            best_load = tl;
    }
    /* the same once from a cold page cache (the files' pages dropped before each) */
    double cold_load = -1, cold_read = -1;
    if (drop_cache(sp) == 0) {
        cold_read = plain_read(sp, &file_bytes);
        double t0 = pb_now();
        pb_weights *w = NULL;
        pb_stage *stg = NULL;
        if (drop_cache(sp) == 0 && pb_weights_load(ck, sp, &w) == PB_OK) {
            st = pb_stage_create(&cfg, sp, w, be, &o, &stg);
            pb_weights_free(w);
            if (st != PB_OK)
                goto fail;
            cold_load = pb_now() - t0;
            pb_stage_free(stg);
        }
    }
    /* through a --weights-cache file: written by the first load, mapped by
     * the others; warm, then with the file's pages dropped */
    char cpath[64];
    snprintf(cpath, sizeof cpath, "/tmp/pb-loadbench-%ld.pbw", (long)getpid());
    double best_cached = 1e30, cold_cached = -1, cread = -1;
    bool hit = false;
    for (int r = 0; r <= reps; r++) {
        double t = cached_load(&cfg, ck, sp, &o, cpath, threads, &hit);
        if (r > 0 && hit && t > 0 && t < best_cached)
            best_cached = t;
    }
    struct stat cst;
    int cfd = open(cpath, O_RDONLY);
    if (cfd >= 0 && fstat(cfd, &cst) == 0) {
        static char cbuf[1 << 20];
        double t0 = pb_now();
        while (read(cfd, cbuf, sizeof cbuf) > 0) {
        }
        cread = pb_now() - t0;
        if (posix_fadvise(cfd, 0, 0, POSIX_FADV_DONTNEED) == 0 && drop_cache(sp) == 0)
            cold_cached = cached_load(&cfg, ck, sp, &o, cpath, threads, &hit);
        if (!hit)
            cold_cached = -1;
    }
    if (cfd >= 0)
        close(cfd);
    unlink(cpath);
    printf("stage %d of %d: layers %d-%d, %d files, weights kept %s: %.1f MB\n", stage, ranks, sp->layer_begin,
           sp->layer_end - 1, sp->n_files, pb_wdtype_name(o.weights_dtype), kept / 1e6);
    printf("  warm page cache, best of %d:\n", reps);
    printf("  stage load (pb_weights_load + pb_stage_create): %.1f MB in %.4f s = %.1f MB/s\n", read_bytes / 1e6,
           best_load, read_bytes / best_load / 1e6);
    printf("  plain sequential read of its files:              %.1f MB in %.4f s = %.1f MB/s\n", file_bytes / 1e6,
           best_read, file_bytes / best_read / 1e6);
    if (cold_load > 0 && cold_read > 0) {
        printf("  cold page cache (these files' pages dropped before each, posix_fadvise DONTNEED):\n");
        printf("  stage load:  %.1f MB in %.4f s = %.1f MB/s\n", read_bytes / 1e6, cold_load, read_bytes / cold_load / 1e6);
        printf("  plain read:  %.1f MB in %.4f s = %.1f MB/s\n", file_bytes / 1e6, cold_read, file_bytes / cold_read / 1e6);
    }
    if (best_cached < 1e30 && cread > 0) {
        printf("  with --weights-cache (the packed file mapped, every matrix's checksum verified), warm: %.1f MB "
               "in %.4f s = %.1f MB/s; a plain read of that file %.1f MB/s\n", (double)cst.st_size / 1e6,
               best_cached, (double)cst.st_size / best_cached / 1e6, (double)cst.st_size / cread / 1e6);
        if (cold_cached > 0)
            printf("  with --weights-cache, cold (its pages and the checkpoint's dropped): %.4f s = %.1f MB/s\n",
                   cold_cached, (double)cst.st_size / cold_cached / 1e6);
    }
    goto done;
fail:
    rc = fail_status(st);
done:
    pb_backend_free(be);
    pb_plan_free(plan);
    pb_ckpt_close(ck);
    pb_model_config_free(&cfg);
    return rc;
}

static int cmd_load(const char *model)
{
    chain c;
    pb_status st = chain_open(&c, model, 1, 1, 8, 8, 1);
    chain_free(&c);
    if (st != PB_OK)
        return fail_status(st);
    printf("loaded\n");
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 6 && strcmp(argv[1], "golden") == 0)
        return cmd_golden(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), argc >= 7 ? atoi(argv[6]) : 0);
    if (argc >= 4 && strcmp(argv[1], "invariance") == 0)
        return cmd_invariance(argv[2], atoi(argv[3]));
    if (argc >= 6 && strcmp(argv[1], "memory") == 0)
        return cmd_memory(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    if (argc >= 6 && strcmp(argv[1], "loadbench") == 0)
        return cmd_loadbench(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]), argc > 6 ? atoi(argv[6]) : 1);
    if (argc >= 3 && strcmp(argv[1], "load") == 0)
        return cmd_load(argv[2]);
    fprintf(stderr, "usage: fwd-harness golden MODEL WORK STAGES THREADS | invariance MODEL THREADS | load MODEL | "
            "loadbench MODEL RANKS STAGE REPS [THREADS]\n");
    return 2;
}
