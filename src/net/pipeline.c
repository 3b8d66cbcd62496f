#include "config.h"
#include "net/pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "backend/stage.h"
#include "common/log.h"
#include "common/util.h"

enum {
    MSG_HELLO = 0x10,
    MSG_MB = 0x11,
    MSG_RESULT = 0x12,
    MSG_STATS = 0x13,
    MSG_END = 0x14,
};

#define HELLO_MAGIC 0x4C504250u /* "PBPL" */
#define HELLO_VERSION 1u
#define HELLO_BYTES 40
#define STATS_REC_BYTES 80
/* Waits that only end when the other ranks answer (setup, report, end). */
#define CONTROL_TIMEOUT_S 300.0

static void put_f64(uint8_t *p, double d)
{
    uint64_t v;
    memcpy(&v, &d, 8);
    pb_put_u64le(p, v);
}
static double get_f64(const uint8_t *p)
{
    uint64_t v = pb_get_u64le(p);
    double d;
    memcpy(&d, &v, 8);
    return d;
}

uint64_t pb_pipeline_plan_hash(int n_stages, const int *layer_begin, const int *layer_end)
{
    uint64_t h = 1469598103934665603ull;
    for (int i = 0; i < n_stages; i++) {
        uint32_t v[2] = {(uint32_t)layer_begin[i], (uint32_t)layer_end[i]};
        for (int k = 0; k < 2; k++)
            for (int b = 0; b < 4; b++) h = (h ^ ((v[k] >> (8 * b)) & 0xffu)) * 1099511628211ull;
    }
    return h;
}

static const char *msg_name(uint32_t type)
{
    switch (type) {
    case MSG_HELLO: return "HELLO";
    case MSG_MB: return "MB";
    case MSG_RESULT: return "RESULT";
    case MSG_STATS: return "STATS";
    case MSG_END: return "END";
    default: return "unknown";
    }
}

static void make_hello(uint8_t *h, int world, const pb_pipeline_cfg *cfg)
{
    pb_put_u32le(h, HELLO_MAGIC);
    pb_put_u32le(h + 4, HELLO_VERSION);
    pb_put_u32le(h + 8, (uint32_t)world);
    pb_put_u32le(h + 12, (uint32_t)cfg->hidden);
    pb_put_u32le(h + 16, (uint32_t)cfg->lim.n_slots);
    pb_put_u32le(h + 20, (uint32_t)cfg->lim.max_seq_len);
    pb_put_u32le(h + 24, (uint32_t)cfg->lim.max_batch_tokens);
    pb_put_u32le(h + 28, (uint32_t)cfg->lim.vocab);
    pb_put_u64le(h + 32, cfg->plan_hash);
}

/* A HELLO from rank `from` must describe the same pipeline as ours. */
static pb_status check_hello(const pb_msg *m, int from, int me, int world,
                             const pb_pipeline_cfg *cfg)
{
    uint8_t want[HELLO_BYTES];
    make_hello(want, world, cfg);
    if (m->type != MSG_HELLO || m->len != HELLO_BYTES)
        return pb_error(PB_ERR_NET, "rank %d sent %s (%zu bytes) where the pipeline setup was expected",
                        from, msg_name(m->type), m->len);
    if (memcmp(m->data, want, 12) != 0)
        return pb_error(PB_ERR_NET, "rank %d: pipeline setup message of another version or world size",
                        from);
    if (memcmp(m->data + 12, want + 12, 20) != 0)
        return pb_error(PB_ERR_CONFIG,
                        "rank %d and rank %d disagree on the pipeline (hidden %u/%u, slots %u/%u, "
                        "max_seq_len %u/%u, batch tokens %u/%u, vocab %u/%u): start every rank "
                        "with the same options",
                        me, 0, pb_get_u32le(want + 12), pb_get_u32le(m->data + 12), pb_get_u32le(want + 16),
                        pb_get_u32le(m->data + 16), pb_get_u32le(want + 20), pb_get_u32le(m->data + 20),
                        pb_get_u32le(want + 24), pb_get_u32le(m->data + 24), pb_get_u32le(want + 28),
                        pb_get_u32le(m->data + 28));
    if (pb_get_u64le(m->data + 32) != cfg->plan_hash)
        return pb_error(PB_ERR_CONFIG,
                        "rank %d planned a different split of the layers, or keeps its weights or KV "
                        "cache or multiplies in another precision, than rank 0: start every rank with "
                        "the same model and options (--split-policy, --weights-dtype, --kv-dtype, "
                        "--matmul-precision) and the same PB_CPU_ISA",
                        me);
    return PB_OK;
}

static void metrics_pack(uint8_t *p, const pb_stage_metrics *s)
{
    pb_put_u32le(p, (uint32_t)s->rank);
    pb_put_u32le(p + 4, 0);
    pb_put_u64le(p + 8, s->microbatches);
    put_f64(p + 16, s->busy_seconds);
    put_f64(p + 24, s->recv_wait_seconds);
    put_f64(p + 32, s->send_wait_seconds);
    put_f64(p + 40, s->wall_seconds);
    pb_put_u64le(p + 48, s->bytes_sent);
    pb_put_u64le(p + 56, s->bytes_recv);
    pb_put_u64le(p + 64, s->peak_rss_bytes);
    pb_put_u64le(p + 72, s->plan_mem_bytes);
}

static void metrics_unpack(const uint8_t *p, pb_stage_metrics *s)
{
    s->rank = (int32_t)pb_get_u32le(p);
    s->microbatches = pb_get_u64le(p + 8);
    s->busy_seconds = get_f64(p + 16);
    s->recv_wait_seconds = get_f64(p + 24);
    s->send_wait_seconds = get_f64(p + 32);
    s->wall_seconds = get_f64(p + 40);
    s->bytes_sent = pb_get_u64le(p + 48);
    s->bytes_recv = pb_get_u64le(p + 56);
    s->peak_rss_bytes = pb_get_u64le(p + 64);
    s->plan_mem_bytes = pb_get_u64le(p + 72);
}

/* A STATS message holds the records of ranks 0..count-1 in order; append
 * ours (rank `me`) and forward it. */
static pb_status stats_append(pb_transport *t, const pb_msg *m, const pb_stage_metrics *mine)
{
    if (m->len < 4)
        return pb_error(PB_ERR_NET, "rank %d sent a truncated STATS message", t->prev);
    uint32_t count = pb_get_u32le(m->data);
    if (count != (uint32_t)t->rank || m->len != 4 + (size_t)count * STATS_REC_BYTES)
        return pb_error(PB_ERR_NET, "rank %d sent a STATS message with %u records (%zu bytes) to rank %d",
                        t->prev, count, m->len, t->rank);
    for (uint32_t i = 0; i < count; i++)
        if (pb_get_u32le(m->data + 4 + (size_t)i * STATS_REC_BYTES) != i)
            return pb_error(PB_ERR_NET, "STATS message from rank %d: record %u is not rank %u",
                            t->prev, i, i);
    uint8_t rec[STATS_REC_BYTES];
    metrics_pack(rec, mine);
    pb_put_u32le(m->data, count + 1);
    const void *bufs[2] = {m->data, rec};
    size_t lens[2] = {m->len, sizeof rec};
    return pb_transport_send(t, MSG_STATS, bufs, lens, 2);
}

/* Buffers for one stage's forward pass. */
typedef struct stage_io {
    pb_microbatch mb;
    pb_mb_batch batch;      /* mb as the stage's batch */
    float *out;             /* [max(max_batch_tokens * hidden, n_slots * vocab)] */
    size_t out_floats;
} stage_io;

static void stage_io_free(stage_io *io)
{
    pb_mb_release(&io->mb);
    pb_mb_batch_free(&io->batch);
    free(io->out);
}

static pb_status stage_io_init(stage_io *io, const pb_pipeline_cfg *cfg)
{
    memset(io, 0, sizeof *io);
    const pb_mb_limits *l = &cfg->lim;
    if (cfg->hidden < 1 || l->n_slots < 1 || l->max_batch_tokens < 1 || l->vocab < 1 ||
        l->max_seq_len < 1)
        return pb_error(PB_ERR_INTERNAL, "pipeline: bad hidden size or limits");
    size_t a, b;
    if (!pb_mul_ok((size_t)l->max_batch_tokens, (size_t)cfg->hidden, &a) ||
        !pb_mul_ok((size_t)l->n_slots, (size_t)l->vocab, &b))
        return pb_error(PB_ERR_NOMEM, "pipeline: buffer size overflows");
    io->out_floats = a > b ? a : b;
    pb_status st;
    PB_CHECK_GOTO(pb_mb_init(&io->mb, l->n_slots, l->max_batch_tokens), st, fail);
    PB_CHECK_GOTO(pb_mb_batch_init(&io->batch, l->n_slots), st, fail);
    PB_CHECK_GOTO(pb_calloc(io->out_floats, sizeof(float), &io->out), st, fail);
    return PB_OK;
fail:
    stage_io_free(io);
    return st;
}

/* Run the stage on io->mb with input `in` into io->out. */
static pb_status stage_run(stage_io *io, pb_stage *stage, const void *in, pb_slot_sampler *sampler,
                           pb_mb_result *res)
{
    const pb_microbatch *mb = &io->mb;
    pb_seq_batch b = pb_mb_batch_of(&io->batch, mb);
    if (sampler) /* the last stage: forward and sample */
        return pb_slot_sampler_stage(sampler, stage, &b, in, mb, io->out, res);
    return pb_stage_forward(stage, &b, in, io->out, false);
}

/* Send io->mb (packed bytes pk/pklen) with hidden states io->out. */
static pb_status send_mb(pb_transport *t, const void *pk, size_t pklen, const stage_io *io,
                         int hidden)
{
    uint8_t n[8];
    pb_put_u64le(n, pklen);
    const void *bufs[3] = {n, pk, io->out};
    size_t lens[3] = {8, pklen, (size_t)io->mb.n_tokens * (size_t)hidden * sizeof(float)};
    return pb_transport_send(t, MSG_MB, bufs, lens, 3);
}

/* ---- ranks > 0 ---- */

pb_status pb_pipeline_run_worker(pb_transport *t, pb_stage *stage, const pb_pipeline_cfg *cfg,
                                 bool is_last)
{
    pb_status st;
    stage_io io;
    pb_slot_sampler *sampler = NULL;
    pb_mb_result res = {0};
    uint8_t *rbuf = NULL;
    size_t rcap = 0;
    pb_msg m = {0};
    pb_stage_metrics me = {.rank = t->rank, .plan_mem_bytes = cfg->plan_mem};
    double t_first = 0;
    size_t hidden_bytes_max = 0;

    PB_CHECK(stage_io_init(&io, cfg));
    if (pb_stage_hidden_size(stage) != cfg->hidden ||
        (is_last && pb_stage_vocab_size(stage) != cfg->lim.vocab)) {
        st = pb_error(PB_ERR_INTERNAL, "pipeline: stage sizes differ from the pipeline's");
        goto fail;
    }
    hidden_bytes_max = (size_t)cfg->lim.max_batch_tokens * (size_t)cfg->hidden * sizeof(float);
    if (is_last) {
        PB_CHECK_GOTO(pb_slot_sampler_create(cfg->lim.n_slots, cfg->lim.max_seq_len,
                                             cfg->lim.vocab, &sampler), st, fail);
        PB_CHECK_GOTO(pb_slot_sampler_set_eos(sampler, cfg->lim.eos_ids, cfg->lim.n_eos), st, fail);
        PB_CHECK_GOTO(pb_mb_result_init(&res, cfg->lim.n_slots), st, fail);
        rcap = pb_mb_result_max_size(cfg->lim.n_slots, cfg->lim.max_batch_tokens, cfg->lim.hidden);
        PB_CHECK_GOTO(pb_malloc(rcap, &rbuf), st, fail);
    }

    /* Setup: rank 0's HELLO must match our configuration; pass it on. */
    PB_CHECK_GOTO(pb_transport_recv(t, CONTROL_TIMEOUT_S, &m), st, fail);
    PB_CHECK_GOTO(check_hello(&m, t->prev, t->rank, t->size, cfg), st, fail);
    PB_CHECK_GOTO(pb_transport_send1(t, MSG_HELLO, m.data, m.len), st, fail);
    pb_msg_release(&m);
    pb_log_verbose("pipeline: stage %d ready (%s)", t->rank, is_last ? "last, samples" : "middle");

    for (;;) {
        double w0 = pb_now();
        PB_CHECK_GOTO(pb_transport_recv(t, -1, &m), st, fail);
        double w1 = pb_now();
        if (t_first > 0)
            me.recv_wait_seconds += w1 - w0;
        if (m.type == MSG_END) {
            pb_transport_closing(t);
            PB_CHECK_GOTO(pb_transport_send1(t, MSG_END, NULL, 0), st, fail);
            PB_CHECK_GOTO(pb_transport_flush(t, CONTROL_TIMEOUT_S), st, fail);
            break;
        }
        if (m.type == MSG_STATS) {
            pb_transport_stats ts;
            pb_transport_get_stats(t, &ts);
            me.bytes_sent = ts.bytes_sent;
            me.bytes_recv = ts.bytes_recv;
            me.send_wait_seconds = ts.send_wait_seconds;
            me.wall_seconds = t_first > 0 ? pb_now() - t_first : 0;
            me.peak_rss_bytes = pb_peak_rss_bytes();
            PB_CHECK_GOTO(stats_append(t, &m, &me), st, fail);
            pb_msg_release(&m);
            continue;
        }
        if (m.type != MSG_MB) {
            st = pb_error(PB_ERR_NET, "rank %d sent an unexpected %s message (type %u) to stage %d",
                          t->prev, msg_name(m.type), m.type, t->rank);
            goto fail;
        }
        if (t_first == 0)
            t_first = w1;
        /* MB: u64 n, n bytes of micro-batch, hidden states of its tokens. */
        uint64_t n = m.len >= 8 ? pb_get_u64le(m.data) : UINT64_MAX;
        if (n > m.len - 8 || m.len < 8) {
            st = pb_error(PB_ERR_NET, "rank %d sent a malformed micro-batch message (%zu bytes)",
                          t->prev, m.len);
            goto fail;
        }
        st = pb_mb_unpack(m.data + 8, (size_t)n, &cfg->lim, &io.mb);
        if (st != PB_OK) {
            st = pb_error_ctx(PB_ERR_NET, "micro-batch from rank %d", t->prev);
            goto fail;
        }
        size_t hbytes = m.len - 8 - (size_t)n;
        size_t want = (size_t)io.mb.n_tokens * (size_t)cfg->hidden * sizeof(float);
        if (hbytes != want || hbytes > hidden_bytes_max) {
            st = pb_error(PB_ERR_NET,
                          "micro-batch %llu from rank %d: %zu bytes of hidden states, expected %zu "
                          "(%d tokens x %d)",
                          (unsigned long long)io.mb.tag, t->prev, hbytes, want, io.mb.n_tokens,
                          cfg->hidden);
            goto fail;
        }
        double c0 = pb_now();
        PB_CHECK_GOTO(stage_run(&io, stage, m.data + 8 + n, is_last ? sampler : NULL, &res), st, fail);
        if (is_last) {
            size_t rlen = pb_mb_result_packed_size(&res);
            PB_CHECK_GOTO(pb_mb_result_pack(&res, rbuf, rcap, &rlen), st, fail);
            me.busy_seconds += pb_now() - c0;
            PB_CHECK_GOTO(pb_transport_send1(t, MSG_RESULT, rbuf, rlen), st, fail);
        } else {
            me.busy_seconds += pb_now() - c0;
            PB_CHECK_GOTO(send_mb(t, m.data + 8, (size_t)n, &io, cfg->hidden), st, fail);
        }
        me.microbatches++;
        pb_msg_release(&m);
    }
    pb_msg_release(&m);
    pb_log_verbose("pipeline: stage %d done: %llu micro-batches, busy %.2f s, waiting %.2f s",
                   t->rank, (unsigned long long)me.microbatches, me.busy_seconds,
                   me.recv_wait_seconds);
    st = PB_OK;
fail:
    pb_msg_release(&m);
    free(rbuf);
    pb_mb_result_release(&res);
    pb_slot_sampler_free(sampler);
    stage_io_free(&io);
    if (st != PB_OK)
        return pb_error_ctx(st, "pipeline stage %d", t->rank);
    return st;
}

/* ---- rank 0 ---- */

struct pb_net_pipe {
    pb_transport *t;
    pb_stage *stage;
    pb_pipeline_cfg cfg;
    int depth;
    stage_io io;
    uint8_t *pk;     /* packed micro-batch */
    size_t pk_cap;
    int in_flight;
    bool broken, ended;
    uint64_t submitted;
    double t_first, t_last, busy;
    pb_pipeline_report last; /* last collected report */
};

static pb_status net_submit(void *self, const pb_microbatch *mb)
{
    pb_net_pipe *np = self;
    if (np->broken)
        return pb_error(PB_ERR_NET, "the pipeline is broken");
    size_t need = pb_mb_packed_size(mb), used = 0;
    if (need > np->pk_cap) {
        PB_CHECK(pb_realloc_array(&np->pk, need, 1));
        np->pk_cap = need;
    }
    PB_CHECK(pb_mb_pack(mb, np->pk, np->pk_cap, &used));
    /* Work on our own validated copy, exactly what the next rank will see. */
    PB_CHECK(pb_mb_unpack(np->pk, used, &np->cfg.lim, &np->io.mb));
    double c0 = pb_now();
    if (np->t_first == 0)
        np->t_first = c0;
    pb_status st = stage_run(&np->io, np->stage, np->io.mb.tokens, NULL, NULL);
    np->busy += pb_now() - c0;
    if (st == PB_OK)
        st = send_mb(np->t, np->pk, used, &np->io, np->cfg.hidden);
    if (st != PB_OK) {
        np->broken = true;
        return st;
    }
    np->in_flight++;
    np->submitted++;
    return PB_OK;
}

static pb_status net_wait(void *self, pb_mb_result *res)
{
    pb_net_pipe *np = self;
    if (np->broken)
        return pb_error(PB_ERR_NET, "the pipeline is broken");
    if (np->in_flight <= 0)
        return pb_error(PB_ERR_INTERNAL, "net pipe: nothing in flight");
    pb_msg m;
    pb_status st = pb_transport_recv(np->t, -1, &m);
    if (st == PB_OK && m.type != MSG_RESULT)
        st = pb_error(PB_ERR_NET, "rank %d sent %s where a result was expected", np->t->prev,
                      msg_name(m.type));
    if (st == PB_OK) {
        st = pb_mb_result_unpack(m.data, m.len, np->cfg.lim.vocab, np->cfg.lim.hidden, res);
        if (st != PB_OK)
            st = pb_error_ctx(PB_ERR_NET, "result from rank %d", np->t->prev);
    }
    pb_msg_release(&m);
    if (st != PB_OK) {
        np->broken = true;
        return st;
    }
    np->in_flight--;
    np->t_last = pb_now();
    return PB_OK;
}

pb_status pb_net_pipe_report(pb_net_pipe *np, pb_pipeline_report *rep)
{
    memset(rep, 0, sizeof *rep);
    pb_transport *t = np->t;
    if (t->size > PB_PIPE_MAX_STAGES)
        return pb_error(PB_ERR_UNSUPPORTED, "more than %d stages", PB_PIPE_MAX_STAGES);
    if (np->broken || np->ended)
        return pb_error(PB_ERR_NET, "the pipeline is %s", np->broken ? "broken" : "closed");
    if (np->in_flight)
        return pb_error(PB_ERR_INTERNAL, "pipeline report with %d micro-batches in flight",
                        np->in_flight);
    pb_transport_stats ts;
    pb_transport_get_stats(t, &ts);
    pb_stage_metrics me = {
        .rank = 0,
        .microbatches = np->submitted,
        .busy_seconds = np->busy,
        .recv_wait_seconds = ts.recv_wait_seconds,
        .send_wait_seconds = ts.send_wait_seconds,
        .wall_seconds = np->t_first > 0 ? pb_now() - np->t_first : 0,
        .bytes_sent = ts.bytes_sent,
        .bytes_recv = ts.bytes_recv,
        .peak_rss_bytes = pb_peak_rss_bytes(),
        .plan_mem_bytes = np->cfg.plan_mem,
    };
    uint8_t msg[4 + STATS_REC_BYTES];
    pb_put_u32le(msg, 1);
    metrics_pack(msg + 4, &me);
    pb_msg m = {0};
    pb_status st;
    PB_CHECK_GOTO(pb_transport_send1(t, MSG_STATS, msg, sizeof msg), st, fail);
    PB_CHECK_GOTO(pb_transport_recv(t, CONTROL_TIMEOUT_S, &m), st, fail);
    if (m.type != MSG_STATS || m.len != 4 + (size_t)t->size * STATS_REC_BYTES ||
        pb_get_u32le(m.data) != (uint32_t)t->size) {
        st = pb_error(PB_ERR_NET, "rank %d answered the metrics request with %s (%zu bytes)",
                      t->prev, msg_name(m.type), m.len);
        goto fail;
    }
    rep->n_stages = t->size;
    for (int i = 0; i < t->size; i++) {
        metrics_unpack(m.data + 4 + (size_t)i * STATS_REC_BYTES, &rep->stage[i]);
        if (rep->stage[i].rank != i) {
            st = pb_error(PB_ERR_NET, "metrics record %d names rank %d", i, rep->stage[i].rank);
            goto fail;
        }
    }
    pb_msg_release(&m);
    rep->microbatches = np->submitted;
    rep->chunks = np->depth;
    rep->wall_seconds = np->t_last > np->t_first ? np->t_last - np->t_first : 0;
    double busy = 0;
    for (int i = 0; i < rep->n_stages; i++) busy += rep->stage[i].busy_seconds;
    if (rep->wall_seconds > 0) {
        rep->bubble_measured = 1.0 - busy / ((double)rep->n_stages * rep->wall_seconds);
        if (rep->bubble_measured < 0)
            rep->bubble_measured = 0;
    }
    double p = rep->n_stages, mm = (double)rep->microbatches;
    rep->bubble_filldrain = mm > 0 ? (p - 1) / (mm + p - 1) : 0;
    np->last = *rep;
    return PB_OK;
fail:
    pb_msg_release(&m);
    np->broken = true;
    return st;
}

static pb_status net_stats(void *self, pb_pipe_stats *out)
{
    pb_net_pipe *np = self;
    memset(out, 0, sizeof *out);
    if (!np->in_flight && !np->broken && !np->ended) {
        pb_pipeline_report rep;
        PB_CHECK(pb_net_pipe_report(np, &rep));
    }
    const pb_pipeline_report *r = &np->last;
    out->n_stages = r->n_stages ? r->n_stages : np->t->size;
    for (int i = 0; i < out->n_stages && i < PB_PIPE_MAX_STAGES; i++)
        out->busy_seconds[i] = r->stage[i].busy_seconds;
    out->busy_seconds[0] = np->busy;
    out->wall_seconds = r->wall_seconds;
    return PB_OK;
}

/* END round trip: every worker forwards END and returns. */
static void net_end(pb_net_pipe *np)
{
    if (np->ended || np->broken)
        return;
    np->ended = true;
    pb_msg m = {0};
    pb_status st = pb_transport_send1(np->t, MSG_END, NULL, 0);
    /* Rank 1 may hang up as soon as it has passed END on. */
    pb_transport_closing(np->t);
    /* Results still in flight are dropped (the driver stopped early). */
    while (st == PB_OK) {
        st = pb_transport_recv(np->t, CONTROL_TIMEOUT_S, &m);
        if (st != PB_OK)
            break;
        uint32_t type = m.type;
        pb_msg_release(&m);
        if (type == MSG_END)
            break;
        if (type != MSG_RESULT) {
            st = pb_error(PB_ERR_NET, "rank %d sent %s while the pipeline was closing",
                          np->t->prev, msg_name(type));
            break;
        }
    }
    if (st != PB_OK)
        pb_log_error("closing the pipeline: %s", pb_last_error());
}

static void net_destroy(void *self)
{
    pb_net_pipe *np = self;
    if (!np)
        return;
    net_end(np);
    stage_io_free(&np->io);
    free(np->pk);
    free(np);
}

static const pb_pipe_ops net_ops = {
    .name = "tcp-pipeline",
    .submit = net_submit,
    .wait = net_wait,
    .stats = net_stats,
    .destroy = net_destroy,
};

pb_status pb_net_pipe_create(pb_transport *t, pb_stage *stage0, const pb_pipeline_cfg *cfg,
                             int depth, pb_pipe **out, pb_net_pipe **view)
{
    *out = NULL;
    if (view)
        *view = NULL;
    if (t->rank != 0 || t->size < 2 || depth < 1)
        return pb_error(PB_ERR_INTERNAL, "net pipe: rank %d of %d, depth %d", t->rank, t->size,
                        depth);
    if (pb_stage_hidden_size(stage0) != cfg->hidden)
        return pb_error(PB_ERR_INTERNAL, "net pipe: stage 0 hidden size %d, pipeline says %d",
                        pb_stage_hidden_size(stage0), cfg->hidden);
    pb_net_pipe *np;
    PB_CHECK(pb_calloc(1, sizeof *np, &np));
    np->t = t;
    np->stage = stage0;
    np->cfg = *cfg;
    np->depth = depth;
    pb_status st = stage_io_init(&np->io, cfg);
    if (st != PB_OK) {
        free(np);
        return st;
    }
    /* Every rank checks our HELLO against its own configuration. */
    uint8_t h[HELLO_BYTES];
    make_hello(h, t->size, cfg);
    pb_msg m = {0};
    PB_CHECK_GOTO(pb_transport_send1(t, MSG_HELLO, h, sizeof h), st, fail);
    PB_CHECK_GOTO(pb_transport_recv(t, CONTROL_TIMEOUT_S, &m), st, fail);
    PB_CHECK_GOTO(check_hello(&m, t->prev, 0, t->size, cfg), st, fail);
    pb_msg_release(&m);
    if (view)
        *view = np;
    return pb_pipe_create(&net_ops, np, depth, &cfg->lim, out);
fail:
    pb_msg_release(&m);
    np->broken = true;
    net_destroy(np);
    return pb_error_ctx(st, "setting up the pipeline");
}

void pb_pipeline_report_print(const pb_pipeline_report *rep, FILE *fp)
{
    double wall = rep->wall_seconds;
    for (int i = 0; i < rep->n_stages; i++) {
        const pb_stage_metrics *s = &rep->stage[i];
        fprintf(fp,
                "stage %d (rank %d): busy %.1f%% (%.2f s), waiting on receive %.2f s, "
                "%llu micro-batches, sent %.1f MiB, peak RSS %.1f MiB (plan %.1f MiB)\n",
                i, s->rank, wall > 0 ? 100.0 * s->busy_seconds / wall : 0.0, s->busy_seconds,
                s->recv_wait_seconds, (unsigned long long)s->microbatches,
                (double)s->bytes_sent / 1048576.0, (double)s->peak_rss_bytes / 1048576.0,
                (double)s->plan_mem_bytes / 1048576.0);
    }
    fprintf(fp,
            "pipeline: %d stages, %llu micro-batches (%d in flight), bubble measured %.1f%%, "
            "FillDrain (p-1)/(m+p-1) %.1f%%\n",
            rep->n_stages, (unsigned long long)rep->microbatches, rep->chunks,
            100.0 * rep->bubble_measured, 100.0 * rep->bubble_filldrain);
}

pb_status pb_pipeline_report_json(const pb_pipeline_report *rep, char **out)
{
    *out = NULL;
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    if (!o || !arr) {
        cJSON_Delete(o);
        cJSON_Delete(arr);
        return pb_error(PB_ERR_NOMEM, "pipeline report: out of memory");
    }
    cJSON_AddItemToObject(o, "stages", arr);
    double wall = rep->wall_seconds;
    for (int i = 0; i < rep->n_stages; i++) {
        const pb_stage_metrics *s = &rep->stage[i];
        cJSON *e = cJSON_CreateObject();
        if (!e)
            break;
        cJSON_AddItemToArray(arr, e);
        cJSON_AddNumberToObject(e, "stage", i);
        cJSON_AddNumberToObject(e, "rank", s->rank);
        cJSON_AddNumberToObject(e, "busy_seconds", s->busy_seconds);
        cJSON_AddNumberToObject(e, "busy_fraction", wall > 0 ? s->busy_seconds / wall : 0);
        cJSON_AddNumberToObject(e, "recv_wait_seconds", s->recv_wait_seconds);
        cJSON_AddNumberToObject(e, "send_wait_seconds", s->send_wait_seconds);
        cJSON_AddNumberToObject(e, "microbatches", (double)s->microbatches);
        cJSON_AddNumberToObject(e, "bytes_sent", (double)s->bytes_sent);
        cJSON_AddNumberToObject(e, "bytes_received", (double)s->bytes_recv);
        cJSON_AddNumberToObject(e, "peak_rss_bytes", (double)s->peak_rss_bytes);
        cJSON_AddNumberToObject(e, "plan_mem_bytes", (double)s->plan_mem_bytes);
    }
    cJSON_AddNumberToObject(o, "microbatches", (double)rep->microbatches);
    cJSON_AddNumberToObject(o, "chunks", rep->chunks);
    cJSON_AddNumberToObject(o, "wall_seconds", rep->wall_seconds);
    cJSON_AddNumberToObject(o, "bubble_measured", rep->bubble_measured);
    cJSON_AddNumberToObject(o, "bubble_filldrain", rep->bubble_filldrain);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    if (!s)
        return pb_error(PB_ERR_NOMEM, "pipeline report: out of memory");
    *out = s;
    return PB_OK;
}
