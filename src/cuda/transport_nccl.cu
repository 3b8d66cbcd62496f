// NCCL transport (pb_transport_ops, net/transport.h): payloads go GPU to GPU
// through NCCL, with a TCP control link beside them.
//
// Communicators. One two-rank communicator per link r -> next: the sending
// rank is 0 in it and draws its ncclUniqueId, the receiving rank is 1; the
// ids go through PMIx (put, commit, fence, get of "pb.nccl.id"). So every
// rank has a send communicator (to next) used only by its sender thread, and
// a receive communicator (from prev) used only by its receiver thread: NCCL
// communicators are not thread safe, and one communicator carrying both
// directions would serialise them (all operations of a communicator run in
// the order they were issued), so in a ring of 2, where rank 0 <-> rank 1 are
// each other's next and prev, two sends posted first on both sides would wait
// for each other for ever. With a communicator per direction each one carries
// sends only one way and receives in the same order; nothing waits in a cycle.
// The communicators are non-blocking (config.blocking = 0) and created in one
// group, so both (each waits for its peer) are set up concurrently, within a
// deadline; NCCL_COMM_BLOCKING=1 makes them blocking, which the group keeps
// free of deadlock too.
//
// Control link. NCCL needs the receiver to post a receive of the exact size,
// and a receive posted before the peer has anything to send would stay on the
// GPU indefinitely (and any device-wide synchronisation, e.g. cudaFree, by
// anyone in this process would then hang). So each message is announced on a
// TCP link (tcp.c: authenticated with the job's secret) by a 24-byte
// descriptor (u32 magic "PBNC", u32 type, u64 length, u32 mode, u32 0);
// small payloads (inline_max) travel inline after it. The receiver posts its
// ncclRecv only after the announcement, and the sender enqueues its ncclSend
// right after announcing, with nothing in between that waits on the device:
// every NCCL operation in flight has its partner enqueued or about to be.
// (Not the other way round: a pair's first send/recv also connects the pair,
// which needs both sides; setup does that for both links, one byte each way,
// so that messages never wait for a connection.) The TCP link also reports at once a peer that dies (NCCL itself
// does not notice a dead peer on its P2P or shared-memory paths), so that a
// killed rank ends the job within seconds: the waiting thread aborts its
// communicator (ncclCommAbort) and the caller gets PB_ERR_NET naming the rank.
//
// Data path (per message): the caller's pieces are copied to a host queue
// (send returns at once); the sender thread copies the message to a device
// staging buffer on its own stream (cudaMemcpyAsync, host -> device), enqueues
// ncclSend on the same stream and an event after it, and polls the event
// (plus ncclCommGetAsyncError and the control link). The receiver thread
// reads ahead: ncclRecv into its staging buffer, event, then device -> host
// into the message handed to recv(). Both streams are non-blocking and of
// the highest priority, so transfers overlap the stage's compute on other
// streams. Staging buffers grow with cudaMallocAsync/cudaFreeAsync on those
// streams (no device-wide synchronisation). Later, stages whose activations
// already live on the device can ncclSend/ncclRecv those buffers directly and
// skip both staging copies; the descriptor protocol stays the same.
#include "config.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

extern "C" {
#include "common/log.h"
#include "common/util.h"
#include "net/addr.h"
#include "net/bootstrap.h"
#include "net/transport.h"
}
#include "cuda/check.h"

#define DESC_MAGIC 0x434E4250u // "PBNC"
#define DESC_BYTES 24
#define CTL_MSG 1u      // the only message type on the control link
#define MODE_INLINE 0u  // payload follows the descriptor on the control link
#define MODE_NCCL 1u    // payload follows through NCCL
#define FRAME_BYTES 32  // counted per message in the stats, as tcp.c counts its frame
#define ID_KEY "pb.nccl.id"
#define GPU_KEY "pb.nccl.gpu"
#define DEFAULT_INLINE 8192
#define CLOSE_WAIT_S 10.0 // orderly communicator teardown before aborting it
#define SLICE_S 0.2       // the receiver thread checks for stop this often

namespace {

// One direction: its communicator, stream, event and staging buffer. Only
// the thread of that direction touches it while the transport runs.
struct dir_t {
    ncclComm_t comm;
    cudaStream_t stream;
    cudaEvent_t done;
    void *dev;
    size_t dev_cap;
    bool pending; // an NCCL operation is enqueued and not known to be complete
};

struct nccl_tr {
    pb_transport base; // first: a nccl_tr * is a pb_transport *
    pb_transport *ctl; // TCP control link
    int device;
    dir_t tx, rx;
    pthread_t sender, receiver;
    bool sender_started, receiver_started;
    pthread_mutex_t mu;
    pthread_cond_t cv; // broadcast on every state change

    pb_msgq sq; // n: queued + the one being sent
    pb_msgq rq;

    bool broken;     // failure: every call fails with err, communicators are aborted
    bool recv_ended; // the receiver thread stopped (recv_err); queued messages still count
    bool closing, stop;
    char err[512], recv_err[512];
    size_t max_msg, inline_max;
    int max_queued;
    pb_transport_stats stats;
};

void abstime_after(struct timespec *ts, double s)
{
    clock_gettime(CLOCK_MONOTONIC, ts);
    time_t whole = (time_t)s;
    long ns = (long)((s - (double)whole) * 1e9);
    ts->tv_sec += whole;
    ts->tv_nsec += ns;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec++;
        ts->tv_nsec -= 1000000000L;
    }
}

bool past(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

// Back off while polling: spin briefly (latency), then sleep 50 us.
void backoff(unsigned *spins)
{
    if ((*spins)++ < 200) {
        sched_yield();
        return;
    }
    struct timespec ts = {0, 50000};
    nanosleep(&ts, NULL);
}

// Record a failure (first one wins) and wake everybody. Called with mu held.
void set_broken_locked(nccl_tr *c, const char *why)
{
    if (!c->broken) {
        c->broken = true;
        snprintf(c->err, sizeof c->err, "%s", why && *why ? why : "NCCL transport failed");
    }
    pthread_cond_broadcast(&c->cv);
}

void set_broken(nccl_tr *c, const char *why)
{
    pthread_mutex_lock(&c->mu);
    set_broken_locked(c, why);
    pthread_mutex_unlock(&c->mu);
}

bool quitting(nccl_tr *c)
{
    pthread_mutex_lock(&c->mu);
    bool q = c->stop || c->broken;
    pthread_mutex_unlock(&c->mu);
    return q;
}

// A non-blocking communicator may answer ncclInProgress while it enqueues;
// wait until it is ready for the next call (or fails).
pb_status comm_settle(nccl_tr *c, ncclComm_t comm, ncclResult_t r, const char *what, int peer)
{
    unsigned spins = 0;
    while (r == ncclInProgress) {
        if (quitting(c))
            return pb_error(PB_ERR_NET, "%s rank %d abandoned: the transport is closing", what,
                            peer);
        backoff(&spins);
        PB_NCCL_CHECK(ncclCommGetAsyncError(comm, &r));
    }
    if (r != ncclSuccess) {
        (void)cudaGetLastError();
        return pb_error(PB_ERR_NET, "NCCL %s rank %d failed: %s (%s)", what, peer,
                        ncclGetErrorString(r), ncclGetLastError(comm));
    }
    return PB_OK;
}

// Staging buffer of at least n bytes, grown on the direction's stream.
pb_status ensure_staging(dir_t *d, size_t n)
{
    if (n <= d->dev_cap)
        return PB_OK;
    size_t cap = d->dev_cap ? d->dev_cap : (size_t)1 << 20;
    while (cap < n)
        cap = cap > SIZE_MAX / 2 ? n : cap * 2;
    if (d->dev) {
        PB_CUDA_CHECK(cudaFreeAsync(d->dev, d->stream));
        d->dev = NULL;
        d->dev_cap = 0;
    }
    PB_CUDA_CHECK(cudaMallocAsync(&d->dev, cap, d->stream));
    d->dev_cap = cap;
    return PB_OK;
}

// Wait for the direction's event: done, or the communicator reports an
// error, or the control link to that peer goes down, or the transport stops.
pb_status wait_done(nccl_tr *c, dir_t *d, bool to_next)
{
    int peer = to_next ? c->base.next : c->base.prev;
    const char *what = to_next ? "send to" : "receive from";
    unsigned spins = 0;
    for (;;) {
        cudaError_t e = cudaEventQuery(d->done);
        if (e == cudaSuccess)
            return PB_OK;
        if (e != cudaErrorNotReady)
            PB_CUDA_CHECK(e);
        ncclResult_t ar = ncclSuccess;
        PB_NCCL_CHECK(ncclCommGetAsyncError(d->comm, &ar));
        if (ar != ncclSuccess && ar != ncclInProgress)
            return pb_error(PB_ERR_NET, "NCCL %s rank %d failed: %s (%s)", what, peer,
                            ncclGetErrorString(ar), ncclGetLastError(d->comm));
        char why[512];
        if (pb_transport_tcp_link_down(c->ctl, to_next, why, sizeof why))
            return pb_error(PB_ERR_NET, "%s", why);
        if (quitting(c))
            return pb_error(PB_ERR_NET, "NCCL %s rank %d abandoned: the transport is closing",
                            what, peer);
        backoff(&spins);
    }
}

// Abort a direction's communicator when an operation may still be on the
// device (NCCL cannot cancel one otherwise). Only its own thread calls this.
void abort_if_pending(dir_t *d)
{
    if (d->pending && d->comm) {
        (void)ncclCommAbort(d->comm);
        (void)cudaGetLastError();
        d->comm = NULL;
        d->pending = false;
    }
}

void put_desc(uint8_t *p, uint32_t type, uint64_t len, uint32_t mode)
{
    pb_put_u32le(p, DESC_MAGIC);
    pb_put_u32le(p + 4, type);
    pb_put_u64le(p + 8, len);
    pb_put_u32le(p + 16, mode);
    pb_put_u32le(p + 20, 0);
}

pb_status send_one(nccl_tr *c, const pb_qmsg *m)
{
    uint8_t desc[DESC_BYTES];
    if (m->len <= c->inline_max) {
        put_desc(desc, m->type, m->len, MODE_INLINE);
        const void *bufs[2] = {desc, m->data};
        size_t lens[2] = {DESC_BYTES, m->len};
        return pb_transport_send(c->ctl, CTL_MSG, bufs, lens, m->len ? 2 : 1);
    }
    dir_t *d = &c->tx;
    PB_CHECK(ensure_staging(d, m->len));
    // m->data is pageable: the copy is staged before the call returns.
    PB_CUDA_CHECK(cudaMemcpyAsync(d->dev, m->data, m->len, cudaMemcpyHostToDevice, d->stream));
    // Announce, then enqueue the send at once (see the top comment).
    put_desc(desc, m->type, m->len, MODE_NCCL);
    PB_CHECK(pb_transport_send1(c->ctl, CTL_MSG, desc, DESC_BYTES));
    d->pending = true;
    PB_CHECK(comm_settle(c, d->comm, ncclSend(d->dev, m->len, ncclUint8, 1, d->comm, d->stream),
                         "send to", c->base.next));
    PB_CUDA_CHECK(cudaEventRecord(d->done, d->stream));
    PB_CHECK(wait_done(c, d, true));
    d->pending = false;
    return PB_OK;
}

void *sender_main(void *arg)
{
    nccl_tr *c = (nccl_tr *)arg;
    if (cudaSetDevice(c->device) != cudaSuccess) {
        (void)cudaGetLastError();
        set_broken(c, "NCCL sender thread: cudaSetDevice failed");
    }
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stop && !c->broken && !c->sq.head)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop || c->broken)
            break;
        pb_qmsg *m = pb_msgq_take(&c->sq);
        pthread_mutex_unlock(&c->mu);

        pb_status st = send_one(c, m);
        char why[512];
        if (st != PB_OK)
            snprintf(why, sizeof why, "%s", pb_last_error());
        size_t total = FRAME_BYTES + m->len;
        pb_qmsg_free(m);

        pthread_mutex_lock(&c->mu);
        c->sq.n--;
        if (st != PB_OK) {
            set_broken_locked(c, why);
        } else {
            c->stats.bytes_sent += total;
            c->stats.msgs_sent++;
        }
        pthread_cond_broadcast(&c->cv);
    }
    pb_msgq_drop(&c->sq); // what can no longer be sent
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    abort_if_pending(&c->tx);
    return NULL;
}

// Receive one NCCL payload of len bytes into a new host buffer.
pb_status recv_one(nccl_tr *c, size_t len, uint8_t **out)
{
    *out = NULL;
    dir_t *d = &c->rx;
    PB_CHECK(ensure_staging(d, len));
    d->pending = true;
    PB_CHECK(comm_settle(c, d->comm, ncclRecv(d->dev, len, ncclUint8, 0, d->comm, d->stream),
                         "receive from", c->base.prev));
    PB_CUDA_CHECK(cudaEventRecord(d->done, d->stream));
    PB_CHECK(wait_done(c, d, false));
    d->pending = false;
    uint8_t *buf = (uint8_t *)malloc(len);
    if (!buf)
        return pb_error(PB_ERR_NOMEM, "out of memory receiving %zu bytes from rank %d", len,
                        c->base.prev);
    // To pageable memory the copy is synchronous; the stream is otherwise idle.
    cudaError_t e = cudaMemcpyAsync(buf, d->dev, len, cudaMemcpyDeviceToHost, d->stream);
    if (e == cudaSuccess)
        e = cudaStreamSynchronize(d->stream);
    if (e != cudaSuccess) {
        free(buf);
        PB_CUDA_CHECK(e);
    }
    *out = buf;
    return PB_OK;
}

// One message from the control link (and NCCL): PB_OK with *got set, PB_OK
// with *got false on a quiet slice, or an error (link down, bad message).
pb_status recv_next(nccl_tr *c, pb_qmsg **got)
{
    *got = NULL;
    pb_msg m = {0, NULL, 0};
    pb_status st = pb_transport_recv(c->ctl, SLICE_S, &m);
    if (st != PB_OK) {
        char why[512];
        if (pb_transport_tcp_link_down(c->ctl, false, why, sizeof why))
            return pb_error(PB_ERR_NET, "%s", why);
        pthread_mutex_lock(&c->mu);
        bool closing = c->closing;
        pthread_mutex_unlock(&c->mu);
        if (!closing && pb_transport_tcp_link_down(c->ctl, true, why, sizeof why))
            return pb_error(PB_ERR_NET, "%s", why);
        pb_clear_error();
        return PB_OK; // nothing this slice
    }
    uint32_t type = 0, mode = 0, magic = 0, resv = 0;
    uint64_t len = 0;
    if (m.len >= DESC_BYTES) {
        magic = pb_get_u32le(m.data);
        type = pb_get_u32le(m.data + 4);
        len = pb_get_u64le(m.data + 8);
        mode = pb_get_u32le(m.data + 16);
        resv = pb_get_u32le(m.data + 20);
    }
    bool ok = m.type == CTL_MSG && m.len >= DESC_BYTES && magic == DESC_MAGIC && resv == 0 &&
              type != 0 && len <= c->max_msg &&
              ((mode == MODE_INLINE && m.len == DESC_BYTES + len) ||
               (mode == MODE_NCCL && m.len == DESC_BYTES && len > 0));
    if (!ok) {
        st = pb_error(PB_ERR_NET,
                      "malformed control message from rank %d (%zu bytes: type %u, mode %u, "
                      "%llu bytes, limit %zu)",
                      c->base.prev, m.len, type, mode, (unsigned long long)len, c->max_msg);
        pb_msg_release(&m);
        return st;
    }
    // Back-pressure: take no more than max_queued messages ahead of the caller.
    pthread_mutex_lock(&c->mu);
    while (!c->stop && !c->broken && c->rq.n >= c->max_queued)
        pthread_cond_wait(&c->cv, &c->mu);
    bool quit = c->stop || c->broken;
    pthread_mutex_unlock(&c->mu);
    if (quit) {
        pb_msg_release(&m);
        return PB_OK;
    }
    pb_qmsg *q = (pb_qmsg *)calloc(1, sizeof *q);
    if (!q) {
        pb_msg_release(&m);
        return pb_error(PB_ERR_NOMEM, "out of memory receiving from rank %d", c->base.prev);
    }
    q->type = type;
    q->len = (size_t)len;
    if (mode == MODE_INLINE) {
        if (len) {
            memmove(m.data, m.data + DESC_BYTES, (size_t)len);
            q->data = m.data; // malloc'd by the control link: pb_msg_release frees it
            m.data = NULL;
        }
        pb_msg_release(&m);
    } else {
        pb_msg_release(&m);
        st = recv_one(c, (size_t)len, &q->data);
        if (st != PB_OK) {
            free(q);
            return st;
        }
    }
    *got = q;
    return PB_OK;
}

void *receiver_main(void *arg)
{
    nccl_tr *c = (nccl_tr *)arg;
    char why[512] = "";
    if (cudaSetDevice(c->device) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(why, sizeof why, "NCCL receiver thread: cudaSetDevice failed");
    }
    while (!why[0] && !quitting(c)) {
        pb_qmsg *q = NULL;
        pb_status st = recv_next(c, &q);
        if (st != PB_OK) {
            snprintf(why, sizeof why, "%s", pb_last_error());
            break;
        }
        if (!q)
            continue;
        pthread_mutex_lock(&c->mu);
        pb_msgq_push(&c->rq, q);
        c->stats.bytes_recv += FRAME_BYTES + q->len;
        c->stats.msgs_recv++;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_lock(&c->mu);
    c->recv_ended = true;
    if (why[0]) {
        snprintf(c->recv_err, sizeof c->recv_err, "%s", why);
        // A payload cut off mid-way leaves the link unusable: abort.
        if (c->rx.pending)
            set_broken_locked(c, why);
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    abort_if_pending(&c->rx);
    return NULL;
}

// ---- the operations ----

pb_status nccl_send(pb_transport *t, uint32_t type, const void *const *bufs, const size_t *lens,
                    int nbufs)
{
    nccl_tr *c = (nccl_tr *)t;
    pb_qmsg *m;
    PB_CHECK(pb_qmsg_gather("nccl", type, bufs, lens, nbufs, c->max_msg, &m));

    pthread_mutex_lock(&c->mu);
    double t0 = pb_now();
    while (!c->broken && c->sq.n >= c->max_queued)
        pthread_cond_wait(&c->cv, &c->mu);
    c->stats.send_wait_seconds += pb_now() - t0;
    if (c->broken) {
        pb_status st = pb_error(PB_ERR_NET, "%s", c->err);
        pthread_mutex_unlock(&c->mu);
        pb_qmsg_free(m);
        return st;
    }
    pb_msgq_push(&c->sq, m);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return PB_OK;
}

pb_status nccl_recv(pb_transport *t, double timeout_s, pb_msg *out)
{
    nccl_tr *c = (nccl_tr *)t;
    out->type = 0;
    out->data = NULL;
    out->len = 0;
    struct timespec deadline;
    if (timeout_s >= 0)
        abstime_after(&deadline, timeout_s);
    pb_status st = PB_OK;
    pthread_mutex_lock(&c->mu);
    double t0 = pb_now();
    for (;;) {
        if (c->rq.head)
            break;
        if (c->broken) {
            st = pb_error(PB_ERR_NET, "%s", c->err);
            goto out;
        }
        if (c->recv_ended) {
            st = pb_error(PB_ERR_NET, "%s", c->recv_err[0] ? c->recv_err : "link closed");
            goto out;
        }
        if (timeout_s >= 0 && past(&deadline)) {
            // A transfer may be under way on the device: the communicators
            // are aborted (the threads see broken) rather than left behind.
            char why[160];
            snprintf(why, sizeof why, "no message from rank %d within %.0f s", t->prev, timeout_s);
            set_broken_locked(c, why);
            st = pb_error(PB_ERR_NET, "%s", why);
            goto out;
        }
        if (timeout_s >= 0)
            pthread_cond_timedwait(&c->cv, &c->mu, &deadline);
        else
            pthread_cond_wait(&c->cv, &c->mu);
    }
    pb_msgq_pop(&c->rq, out);
    pthread_cond_broadcast(&c->cv); // room for the receiver thread
out:
    c->stats.recv_wait_seconds += pb_now() - t0;
    pthread_mutex_unlock(&c->mu);
    return st;
}

pb_status nccl_flush(pb_transport *t, double timeout_s)
{
    nccl_tr *c = (nccl_tr *)t;
    struct timespec deadline;
    double t0 = pb_now();
    if (timeout_s >= 0)
        abstime_after(&deadline, timeout_s);
    pb_status st = PB_OK;
    pthread_mutex_lock(&c->mu);
    while (c->sq.n > 0 && !c->broken) {
        if (timeout_s >= 0 && past(&deadline)) {
            st = pb_error(PB_ERR_NET, "sending to rank %d did not finish within %.0f s", t->next,
                          timeout_s);
            break;
        }
        if (timeout_s >= 0)
            pthread_cond_timedwait(&c->cv, &c->mu, &deadline);
        else
            pthread_cond_wait(&c->cv, &c->mu);
    }
    if (st == PB_OK && c->broken)
        st = pb_error(PB_ERR_NET, "%s", c->err);
    pthread_mutex_unlock(&c->mu);
    if (st != PB_OK)
        return st;
    // Inline messages and announcements still queued on the control link.
    double left = timeout_s < 0 ? -1 : timeout_s - (pb_now() - t0);
    return pb_transport_flush(c->ctl, timeout_s < 0 ? -1 : (left > 0 ? left : 0));
}

void nccl_closing(pb_transport *t)
{
    nccl_tr *c = (nccl_tr *)t;
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    pthread_mutex_unlock(&c->mu);
    pb_transport_closing(c->ctl);
}

void nccl_get_stats(pb_transport *t, pb_transport_stats *out)
{
    nccl_tr *c = (nccl_tr *)t;
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    pthread_mutex_unlock(&c->mu);
}

// Orderly teardown (finalize, wait up to CLOSE_WAIT_S, destroy), or abort.
void comm_close(ncclComm_t comm, bool orderly, int peer)
{
    if (!comm)
        return;
    if (orderly) {
        ncclResult_t r = ncclCommFinalize(comm);
        double t_end = pb_now() + CLOSE_WAIT_S;
        unsigned spins = 0;
        while (r == ncclInProgress && pb_now() < t_end) {
            backoff(&spins);
            if (ncclCommGetAsyncError(comm, &r) != ncclSuccess)
                r = ncclInternalError;
        }
        if (r == ncclSuccess) {
            (void)ncclCommDestroy(comm);
            (void)cudaGetLastError();
            return;
        }
        pb_log_warn("NCCL link with rank %d did not close in order (%s): aborting it", peer,
                    r == ncclInProgress ? "timed out" : ncclGetErrorString(r));
    }
    (void)ncclCommAbort(comm);
    (void)cudaGetLastError();
}

void dir_free(dir_t *d)
{
    if (d->dev) {
        (void)cudaFreeAsync(d->dev, d->stream);
        (void)cudaStreamSynchronize(d->stream);
    }
    if (d->done)
        (void)cudaEventDestroy(d->done);
    if (d->stream)
        (void)cudaStreamDestroy(d->stream);
    (void)cudaGetLastError();
    memset(d, 0, sizeof *d);
}

void nccl_destroy(pb_transport *t)
{
    nccl_tr *c = (nccl_tr *)t;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->sender_started)
        pthread_join(c->sender, NULL);
    if (c->receiver_started)
        pthread_join(c->receiver, NULL);
    // The threads aborted any communicator with an operation in flight; the
    // others close in order unless the transport broke.
    (void)cudaSetDevice(c->device);
    comm_close(c->tx.comm, !c->broken, c->base.next);
    comm_close(c->rx.comm, !c->broken, c->base.prev);
    c->tx.comm = c->rx.comm = NULL;
    dir_free(&c->tx);
    dir_free(&c->rx);
    pb_transport_free(c->ctl);
    pb_msgq_drop(&c->rq);
    pb_msgq_drop(&c->sq);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

const pb_transport_ops nccl_ops = {
    "nccl", nccl_send, nccl_recv, nccl_flush, nccl_closing, nccl_get_stats, nccl_destroy,
};

// ---- setup ----

// "host boot-id pci-bus-id" of this rank's GPU, to find ranks sharing one.
void gpu_identity(int device, char *out, size_t cap)
{
    char host[256] = "localhost", boot[128] = "-", bus[64] = "?";
    if (gethostname(host, sizeof host - 1) != 0 || !host[0])
        snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = '\0';
    for (char *p = host; *p; p++)
        if (*p == ' ' || *p == '\n')
            *p = '_';
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        char line[128];
        if (fgets(line, sizeof line, f)) {
            line[strcspn(line, " \r\n")] = '\0';
            if (line[0])
                snprintf(boot, sizeof boot, "%s", line);
        }
        fclose(f);
    }
    if (cudaDeviceGetPCIBusId(bus, (int)sizeof bus, device) != cudaSuccess) {
        (void)cudaGetLastError();
        snprintf(bus, sizeof bus, "device%d", device);
    }
    snprintf(out, cap, "%s %s %s", host, boot, bus);
}

// NCCL refuses two ranks of a communicator on one GPU ("Duplicate GPU
// detected"). When a neighbour shares ours, give this process its own NCCL
// host identity, so NCCL links them through its network (socket) transport.
// Must run before the first NCCL call of the process (NCCL reads it then).
pb_status share_gpu_setup(nccl_tr *c, pb_bootstrap *b, int timeout_s, const char *iface, int family)
{
    char mine[512];
    gpu_identity(c->device, mine, sizeof mine);
    PB_CHECK(pb_bootstrap_put(b, GPU_KEY, mine, strlen(mine)));
    PB_CHECK(pb_bootstrap_commit(b));
    PB_CHECK(pb_bootstrap_fence(b, timeout_s));
    int shared = -1;
    for (int k = 0; k < 2; k++) {
        int peer = k == 0 ? c->base.next : c->base.prev;
        void *v = NULL;
        size_t n = 0;
        PB_CHECK(pb_bootstrap_get(b, peer, GPU_KEY, timeout_s, &v, &n));
        if (n == strlen(mine) && memcmp(v, mine, n) == 0)
            shared = peer;
        free(v);
    }
    if (shared >= 0) {
        const char *hid = getenv("NCCL_HOSTID");
        if (hid && *hid) {
            pb_log_warn("rank %d shares its GPU with rank %d but NCCL_HOSTID=%s is set: NCCL "
                        "will refuse unless it differs between them", c->base.rank, shared, hid);
        } else {
            char id[320];
            snprintf(id, sizeof id, "%.200s-pb-rank%d", pb_bootstrap_node(b), c->base.rank);
            if (setenv("NCCL_HOSTID", id, 1) != 0)
                return pb_error(PB_ERR_NET, "setenv NCCL_HOSTID: %s", strerror(errno));
            pb_log_verbose("nccl: rank %d shares its GPU with rank %d: NCCL_HOSTID=%s (NCCL's "
                           "socket transport between them)", c->base.rank, shared, id);
        }
    }
    if (iface && !getenv("NCCL_SOCKET_IFNAME") && setenv("NCCL_SOCKET_IFNAME", iface, 1) != 0)
        return pb_error(PB_ERR_NET, "setenv NCCL_SOCKET_IFNAME: %s", strerror(errno));
    // --ip-family 4 or 6: NCCL's sockets too, unless NCCL_SOCKET_FAMILY is set
    const char *fam = family == PB_IP_6 ? "AF_INET6" : family == PB_IP_4 ? "AF_INET" : NULL;
    if (fam && !getenv("NCCL_SOCKET_FAMILY") && setenv("NCCL_SOCKET_FAMILY", fam, 1) != 0)
        return pb_error(PB_ERR_NET, "setenv NCCL_SOCKET_FAMILY: %s", strerror(errno));
    return PB_OK;
}

pb_status dir_init(dir_t *d, int priority)
{
    PB_CUDA_CHECK(cudaStreamCreateWithPriority(&d->stream, cudaStreamNonBlocking, priority));
    PB_CUDA_CHECK(cudaEventCreateWithFlags(&d->done, cudaEventDisableTiming));
    return PB_OK;
}

// Poll both communicators until neither is in progress: an error, the
// control link going down or the deadline ends it. what: "setup", "connection".
pb_status settle_both(nccl_tr *c, double t_end, int timeout_s, const char *what)
{
    unsigned spins = 0;
    for (;;) {
        ncclResult_t a = ncclInProgress, b = ncclInProgress;
        PB_NCCL_CHECK(ncclCommGetAsyncError(c->tx.comm, &a));
        PB_NCCL_CHECK(ncclCommGetAsyncError(c->rx.comm, &b));
        if (a != ncclSuccess && a != ncclInProgress)
            return pb_error(PB_ERR_NET, "NCCL link to rank %d: %s failed: %s (%s)", c->base.next,
                            what, ncclGetErrorString(a), ncclGetLastError(c->tx.comm));
        if (b != ncclSuccess && b != ncclInProgress)
            return pb_error(PB_ERR_NET, "NCCL link from rank %d: %s failed: %s (%s)",
                            c->base.prev, what, ncclGetErrorString(b),
                            ncclGetLastError(c->rx.comm));
        if (a == ncclSuccess && b == ncclSuccess)
            return PB_OK;
        char why[512];
        if (pb_transport_tcp_link_down(c->ctl, true, why, sizeof why) ||
            pb_transport_tcp_link_down(c->ctl, false, why, sizeof why))
            return pb_error(PB_ERR_NET, "NCCL %s: %s", what, why);
        if (pb_now() > t_end)
            return pb_error(PB_ERR_NET, "NCCL links with ranks %d and %d: %s not done within %d s",
                            c->base.next, c->base.prev, what, timeout_s);
        if (spins < 1000)
            backoff(&spins);
        else
            usleep(1000);
    }
}

// ncclGroupEnd after calls that may have failed: the first error wins.
pb_status group_end(ncclResult_t r1, ncclResult_t r2, const char *what)
{
    ncclResult_t r3 = ncclGroupEnd();
    ncclResult_t r = r1 != ncclSuccess && r1 != ncclInProgress   ? r1
                     : r2 != ncclSuccess && r2 != ncclInProgress ? r2
                                                                 : r3;
    if (r != ncclSuccess && r != ncclInProgress) {
        (void)cudaGetLastError();
        return pb_error(PB_ERR_NET, "NCCL %s: %s", what, ncclGetErrorString(r));
    }
    return PB_OK;
}

// Both link communicators, in one group: each waits for its peer, so they
// must be set up concurrently (ranks r and r + 1 wait on each other's).
pb_status comms_init(nccl_tr *c, const ncclUniqueId *mine, const ncclUniqueId *prev_id,
                     int timeout_s)
{
    ncclConfig_t cfg = NCCL_CONFIG_INITIALIZER;
    cfg.blocking = 0;
    double t_end = pb_now() + timeout_s;
    PB_NCCL_CHECK(ncclGroupStart());
    ncclResult_t r1 = ncclCommInitRankConfig(&c->tx.comm, 2, *mine, 0, &cfg);
    ncclResult_t r2 = ncclCommInitRankConfig(&c->rx.comm, 2, *prev_id, 1, &cfg);
    PB_CHECK(group_end(r1, r2, "ncclCommInitRankConfig"));
    if (!c->tx.comm || !c->rx.comm)
        return pb_error(PB_ERR_NET, "NCCL: ncclCommInitRankConfig gave no communicator");
    return settle_both(c, t_end, timeout_s, "setup");
}

// Connect both links now: NCCL connects a pair at its first send/recv, with
// both sides taking part. One byte each way, in one group for the same
// reason as above, within the setup deadline.
pb_status connect_links(nccl_tr *c, int timeout_s)
{
    double t_end = pb_now() + timeout_s;
    PB_CHECK(ensure_staging(&c->tx, 1));
    PB_CHECK(ensure_staging(&c->rx, 1));
    PB_CUDA_CHECK(cudaMemsetAsync(c->tx.dev, 0x5a, 1, c->tx.stream));
    c->tx.pending = c->rx.pending = true;
    PB_NCCL_CHECK(ncclGroupStart());
    ncclResult_t r1 = ncclSend(c->tx.dev, 1, ncclUint8, 1, c->tx.comm, c->tx.stream);
    ncclResult_t r2 = ncclRecv(c->rx.dev, 1, ncclUint8, 0, c->rx.comm, c->rx.stream);
    PB_CHECK(group_end(r1, r2, "connecting the links"));
    PB_CHECK(settle_both(c, t_end, timeout_s, "connection"));
    PB_CUDA_CHECK(cudaEventRecord(c->tx.done, c->tx.stream));
    PB_CUDA_CHECK(cudaEventRecord(c->rx.done, c->rx.stream));
    for (int k = 0; k < 2; k++) {
        dir_t *d = k == 0 ? &c->tx : &c->rx;
        unsigned spins = 0;
        for (;;) {
            cudaError_t e = cudaEventQuery(d->done);
            if (e == cudaSuccess)
                break;
            if (e != cudaErrorNotReady)
                PB_CUDA_CHECK(e);
            PB_CHECK(settle_both(c, t_end, timeout_s, "first transfer"));
            if (pb_now() > t_end)
                return pb_error(PB_ERR_NET, "NCCL link %s rank %d: first transfer not done "
                                "within %d s", k == 0 ? "to" : "from",
                                k == 0 ? c->base.next : c->base.prev, timeout_s);
            backoff(&spins);
        }
        d->pending = false;
    }
    uint8_t got = 0;
    PB_CUDA_CHECK(cudaMemcpyAsync(&got, c->rx.dev, 1, cudaMemcpyDeviceToHost, c->rx.stream));
    PB_CUDA_CHECK(cudaStreamSynchronize(c->rx.stream));
    if (got != 0x5a)
        return pb_error(PB_ERR_NET, "NCCL link from rank %d: first byte %#x, expected 0x5a",
                        c->base.prev, got);
    return PB_OK;
}

pb_status setup(nccl_tr *c, pb_bootstrap *b, const pb_nccl_opts *o)
{
    int timeout_s = o->ctl.timeout_s > 0 ? o->ctl.timeout_s : PB_BOOTSTRAP_TIMEOUT_S;
    int ndev = 0;
    PB_CUDA_CHECK(cudaGetDeviceCount(&ndev));
    if (c->device < 0 || c->device >= ndev)
        return pb_error(PB_ERR_DEVICE, "rank %d: CUDA device %d does not exist (%d visible)",
                        c->base.rank, c->device, ndev);
    PB_CUDA_CHECK(cudaSetDevice(c->device));
    int pools = 0;
    PB_CUDA_CHECK(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, c->device));
    if (!pools)
        return pb_error(PB_ERR_DEVICE, "CUDA device %d has no stream-ordered allocator "
                        "(cudaMallocAsync), which the NCCL transport needs", c->device);

    // The control link first (unless given): from here a rank that fails
    // shows at once on its neighbours' links.
    if (!c->ctl) {
        pb_tcp_opts to = o->ctl;
        to.tag = "nccl";
        to.timeout_s = timeout_s;
        to.max_msg_bytes = DESC_BYTES + c->inline_max;
        to.max_queued = c->max_queued;
        PB_CHECK(pb_transport_tcp_create(b, &to, &c->ctl));
    }

    // Before any NCCL call: NCCL reads its environment once.
    PB_CHECK(share_gpu_setup(c, b, timeout_s, o->ctl.iface, o->ctl.family));

    // This rank draws the id of its link to next; the previous rank's comes
    // through PMIx.
    ncclUniqueId mine, prev_id;
    PB_NCCL_CHECK(ncclGetUniqueId(&mine));
    PB_CHECK(pb_bootstrap_put(b, ID_KEY, &mine, sizeof mine));
    PB_CHECK(pb_bootstrap_commit(b));
    PB_CHECK(pb_bootstrap_fence(b, timeout_s));
    void *v = NULL;
    size_t n = 0;
    PB_CHECK(pb_bootstrap_get(b, c->base.prev, ID_KEY, timeout_s, &v, &n));
    if (n != sizeof prev_id) {
        free(v);
        return pb_error(PB_ERR_NET, "rank %d published a %zu-byte NCCL id (expected %zu)",
                        c->base.prev, n, sizeof prev_id);
    }
    memcpy(&prev_id, v, sizeof prev_id);
    free(v);

    int least = 0, greatest = 0;
    PB_CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least, &greatest));
    PB_CHECK(dir_init(&c->tx, greatest));
    PB_CHECK(dir_init(&c->rx, greatest));
    PB_CHECK(comms_init(c, &mine, &prev_id, timeout_s));
    PB_CHECK(connect_links(c, timeout_s));

    if (pthread_create(&c->sender, NULL, sender_main, c) != 0)
        return pb_error(PB_ERR_NET, "cannot start the NCCL sender thread");
    c->sender_started = true;
    if (pthread_create(&c->receiver, NULL, receiver_main, c) != 0)
        return pb_error(PB_ERR_NET, "cannot start the NCCL receiver thread");
    c->receiver_started = true;
    return PB_OK;
}

// ctl: an existing TCP transport to use as the control link (owned from
// here on), or NULL to make one.
pb_status create(pb_bootstrap *b, int device, const pb_nccl_opts *opts, pb_transport *ctl,
                 pb_transport **out)
{
    *out = NULL;
    int rank = pb_bootstrap_rank(b), size = pb_bootstrap_size(b);
    if (size < 2) {
        pb_transport_free(ctl);
        return pb_error(PB_ERR_INTERNAL, "nccl transport needs at least 2 ranks (world %d)", size);
    }
    pb_nccl_opts o;
    if (opts)
        o = *opts;
    else
        memset(&o, 0, sizeof o);

    nccl_tr *c = (nccl_tr *)calloc(1, sizeof *c);
    if (!c) {
        pb_transport_free(ctl);
        return pb_error(PB_ERR_NOMEM, "nccl transport: out of memory");
    }
    c->ctl = ctl;
    c->base.ops = &nccl_ops;
    c->base.rank = rank;
    c->base.size = size;
    c->base.next = (rank + 1) % size;
    c->base.prev = (rank + size - 1) % size;
    c->device = device;
    c->max_msg = o.ctl.max_msg_bytes ? o.ctl.max_msg_bytes : (size_t)1 << 30;
    c->inline_max = o.inline_max < 0 ? 0 : o.inline_max == 0 ? DEFAULT_INLINE : (size_t)o.inline_max;
    size_t room = c->max_msg > DESC_BYTES ? c->max_msg - DESC_BYTES : 0; // a given control
    if (c->inline_max > room)                                           // link takes max_msg
        c->inline_max = room;
    c->max_queued = o.ctl.max_queued > 0 ? o.ctl.max_queued : 64;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);

    pb_status st = setup(c, b, &o);
    if (st != PB_OK) {
        char why[1024];
        snprintf(why, sizeof why, "%s", pb_last_error());
        c->broken = true; // abort whatever was set up
        nccl_destroy(&c->base);
        return pb_error(st, "nccl transport (rank %d of %d, CUDA device %d): %s", rank, size,
                        device, why);
    }
    pb_log_verbose("nccl: rank %d on CUDA device %d linked to rank %d and from rank %d "
                   "(payloads over %zu bytes through NCCL)", rank, device, c->base.next,
                   c->base.prev, c->inline_max);
    *out = &c->base;
    return PB_OK;
}

} // namespace

extern "C" pb_status pb_transport_nccl_create(pb_bootstrap *b, int device, const pb_nccl_opts *opts,
                                              pb_transport **out)
{
    return create(b, device, opts, NULL, out);
}

extern "C" pb_status pb_transport_nccl_create_over(pb_bootstrap *b, int device, pb_transport *ctl,
                                                   const pb_nccl_opts *opts, pb_transport **out)
{
    *out = NULL;
    if (!ctl)
        return pb_error(PB_ERR_INTERNAL, "nccl transport: no control link");
    return create(b, device, opts, ctl, out);
}
