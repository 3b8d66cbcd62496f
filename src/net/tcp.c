/* TCP transport: one link to the next rank (send only) and one from the
 * previous rank (receive only), a sender and a receiver thread per rank.
 *
 * Frame (32 bytes, little-endian), then `len` payload bytes:
 *   u32 magic "PBNF", u32 type (>= 1), u64 seq (1, 2, ... per link),
 *   u64 len (<= max_msg_bytes), u32 0, u32 FNV-1a of the 28 bytes before.
 * Before any frame, each connection proves both ends know the job's secret
 * (handshake.h). */
#include "config.h"
#include "net/transport.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"
#include "net/bootstrap.h"
#include "net/handshake.h"

#define FRAME_MAGIC 0x464E4250u /* "PBNF" */
#define FRAME_BYTES 32
#define EP_KEY "pb.tcp.endpoint"
#define SECRET_KEY "pb.tcp.secret"

/* ---- little-endian helpers ---- */
static uint32_t fnv1a32(const uint8_t *p, size_t n)
{
    uint32_t h = 2166136261u;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 16777619u;
    return h;
}
static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

void pb_msg_release(pb_msg *m)
{
    if (!m)
        return;
    free(m->data);
    m->data = NULL;
    m->len = 0;
}

/* ---- generic front-ends ---- */
pb_status pb_qmsg_gather(const char *who, uint32_t type, const void *const *bufs, const size_t *lens, int nbufs,
                         size_t max_msg, pb_qmsg **out)
{
    *out = NULL;
    if (type == 0 || nbufs < 0)
        return pb_error(PB_ERR_INTERNAL, "%s send: bad message type or piece count", who);
    size_t n = 0;
    for (int i = 0; i < nbufs; i++)
        if (!pb_add_ok(n, lens[i], &n))
            return pb_error(PB_ERR_INTERNAL, "%s send: message size overflows", who);
    if (n > max_msg)
        return pb_error(PB_ERR_INTERNAL, "%s send: %zu-byte message exceeds the limit of %zu", who, n, max_msg);
    pb_qmsg *m = pb_qmsg_alloc(type, n);
    if (!m)
        return pb_error(PB_ERR_NOMEM, "%s send: out of memory for %zu bytes", who, n);
    size_t off = 0;
    for (int i = 0; i < nbufs; i++) {
        if (lens[i])
            memcpy(m->data + off, bufs[i], lens[i]);
        off += lens[i];
    }
    *out = m;
    return PB_OK;
}

pb_qmsg *pb_qmsg_alloc(uint32_t type, size_t len)
{
    pb_qmsg *m = calloc(1, sizeof *m);
    uint8_t *d = len ? malloc(len) : NULL;
    if (!m || (len && !d)) {
        free(m);
        free(d);
        return NULL;
    }
    m->type = type;
    m->len = len;
    m->data = d;
    return m;
}

void pb_qmsg_free(pb_qmsg *m)
{
    if (m)
        free(m->data);
    free(m);
}

void pb_msgq_push(pb_msgq *q, pb_qmsg *m)
{
    m->next = NULL;
    if (q->tail)
        q->tail->next = m;
    else
        q->head = m;
    q->tail = m;
    q->n++;
}

pb_qmsg *pb_msgq_take(pb_msgq *q)
{
    pb_qmsg *m = q->head;
    if (m) {
        q->head = m->next;
        if (!q->head)
            q->tail = NULL;
    }
    return m;
}

void pb_msgq_pop(pb_msgq *q, pb_msg *out)
{
    pb_qmsg *m = pb_msgq_take(q);
    q->n--;
    out->type = m->type;
    out->data = m->data;
    out->len = m->len;
    free(m);
}

void pb_msgq_drop(pb_msgq *q)
{
    for (pb_qmsg *m; (m = pb_msgq_take(q));) {
        pb_qmsg_free(m);
        q->n--;
    }
}

pb_status pb_transport_send(pb_transport *t, uint32_t type, const void *const *bufs,
                            const size_t *lens, int nbufs)
{
    return t->ops->send(t, type, bufs, lens, nbufs);
}
pb_status pb_transport_send1(pb_transport *t, uint32_t type, const void *buf, size_t len)
{
    const void *bufs[1] = {buf};
    size_t lens[1] = {len};
    return t->ops->send(t, type, bufs, lens, 1);
}
pb_status pb_transport_recv(pb_transport *t, double timeout_s, pb_msg *out)
{
    return t->ops->recv(t, timeout_s, out);
}
pb_status pb_transport_flush(pb_transport *t, double timeout_s)
{
    return t->ops->flush(t, timeout_s);
}
void pb_transport_closing(pb_transport *t) { t->ops->closing(t); }
void pb_transport_get_stats(pb_transport *t, pb_transport_stats *out) { t->ops->get_stats(t, out); }
void pb_transport_free(pb_transport *t)
{
    if (t)
        t->ops->destroy(t);
}

/* ---- the TCP implementation ---- */
typedef struct tcp {
    pb_transport base; /* first: a tcp * is a pb_transport * */
    int send_fd, recv_fd;
    int wake[2]; /* pipe that wakes the sender thread */
    pthread_t sender, receiver;
    bool sender_started, receiver_started;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* broadcast on every state change */

    pb_msgq sq; /* n: queued + the one being written */
    bool writing;
    pb_msgq rq;
    uint64_t send_seq, recv_seq;

    bool send_broken, recv_broken, closing, stop;
    char send_err[512], recv_err[512];
    size_t max_msg;
    int max_queued;
    pb_transport_stats stats;

    char next_host[256], prev_host[256];
} tcp;

static void abstime_after(struct timespec *ts, double s)
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

/* Wait on the condition until woken or the deadline (NULL = none). */
static void cv_wait(tcp *c, const struct timespec *deadline)
{
    if (deadline)
        pthread_cond_timedwait(&c->cv, &c->mu, deadline);
    else
        pthread_cond_wait(&c->cv, &c->mu);
}

static bool past(const struct timespec *deadline)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

static void wake_sender(tcp *c)
{
    char x = 1;
    ssize_t n = write(c->wake[1], &x, 1);
    (void)n; /* a full pipe already wakes it */
}

/* Write all of iov (modified); 0, or an errno value. */
static int write_all(int fd, struct iovec *iov, int n)
{
    while (n > 0) {
        struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t w = sendmsg(fd, &mh, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        size_t left = (size_t)w;
        while (n > 0 && left >= iov->iov_len) {
            left -= iov->iov_len;
            iov++;
            n--;
        }
        if (n > 0) {
            iov->iov_base = (char *)iov->iov_base + left;
            iov->iov_len -= left;
        }
    }
    return 0;
}

/* Read exactly n bytes: 0 ok, -1 clean EOF before the first byte, else an
 * errno value (EPIPE for EOF in the middle). */
static int read_all(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = recv(fd, (char *)buf + got, n - got, 0);
        if (r == 0)
            return got == 0 ? -1 : EPIPE;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        got += (size_t)r;
    }
    return 0;
}

static void mark_send_broken(tcp *c, const char *why)
{
    pthread_mutex_lock(&c->mu);
    if (!c->send_broken) {
        c->send_broken = true;
        snprintf(c->send_err, sizeof c->send_err, "%s", why);
    }
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
}

static void describe_hangup(tcp *c, int peer, const char *host, int err, char *buf, size_t cap)
{
    if (err == -1 || err == EPIPE || err == ECONNRESET)
        snprintf(buf, cap,
                 "rank %d (on %s) closed its connection to rank %d unexpectedly: "
                 "rank %d failed or was killed",
                 peer, host, c->base.rank, peer);
    else
        snprintf(buf, cap, "connection between rank %d and rank %d (on %s) failed: %s",
                 c->base.rank, peer, host, strerror(err));
}

static void *sender_main(void *arg)
{
    tcp *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stop && !c->sq.head && !c->send_broken) {
            pthread_mutex_unlock(&c->mu);
            /* Idle: watch the send link for a hang-up (the peer never
             * writes on it) and the wake pipe for new messages. */
            struct pollfd pf[2] = {{.fd = c->send_fd, .events = POLLIN},
                                   {.fd = c->wake[0], .events = POLLIN}};
            int pr = poll(pf, 2, -1);
            if (pr > 0 && (pf[1].revents & POLLIN)) {
                char junk[64];
                while (read(c->wake[0], junk, sizeof junk) > 0) {
                }
            }
            if (pr > 0 && (pf[0].revents & (POLLIN | POLLHUP | POLLERR))) {
                char b;
                ssize_t r = recv(c->send_fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
                char why[512];
                if (r > 0)
                    snprintf(why, sizeof why,
                             "rank %d sent data on a send-only link to rank %d: protocol error",
                             c->base.next, c->base.rank);
                else if (r == 0 || (errno != EAGAIN && errno != EINTR))
                    describe_hangup(c, c->base.next, c->next_host, r == 0 ? -1 : errno, why,
                                    sizeof why);
                else
                    why[0] = '\0';
                if (why[0])
                    mark_send_broken(c, why);
            }
            pthread_mutex_lock(&c->mu);
        }
        if (c->stop || c->send_broken)
            break;
        pb_qmsg *m = pb_msgq_take(&c->sq);
        c->writing = true;
        uint64_t seq = ++c->send_seq;
        pthread_mutex_unlock(&c->mu);

        uint8_t hdr[FRAME_BYTES];
        pb_put_u32le(hdr, FRAME_MAGIC);
        pb_put_u32le(hdr + 4, m->type);
        pb_put_u64le(hdr + 8, seq);
        pb_put_u64le(hdr + 16, m->len);
        pb_put_u32le(hdr + 24, 0);
        pb_put_u32le(hdr + 28, fnv1a32(hdr, 28));
        struct iovec iov[2] = {{hdr, FRAME_BYTES}, {m->data, m->len}};
        int err = write_all(c->send_fd, iov, m->len ? 2 : 1);
        size_t total = FRAME_BYTES + m->len;
        pb_qmsg_free(m);

        char why[512];
        if (err)
            describe_hangup(c, c->base.next, c->next_host, err, why, sizeof why);
        pthread_mutex_lock(&c->mu);
        c->writing = false;
        c->sq.n--;
        if (err && !c->send_broken) {
            c->send_broken = true;
            snprintf(c->send_err, sizeof c->send_err, "%s", why);
        } else if (!err) {
            c->stats.bytes_sent += total;
            c->stats.msgs_sent++;
        }
        pthread_cond_broadcast(&c->cv);
    }
    pb_msgq_drop(&c->sq); /* what can no longer be sent */
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void *receiver_main(void *arg)
{
    tcp *c = arg;
    char why[512] = "";
    for (;;) {
        uint8_t hdr[FRAME_BYTES];
        int err = read_all(c->recv_fd, hdr, sizeof hdr);
        if (err) {
            describe_hangup(c, c->base.prev, c->prev_host, err, why, sizeof why);
            break;
        }
        uint32_t magic = pb_get_u32le(hdr), type = pb_get_u32le(hdr + 4);
        uint64_t seq = pb_get_u64le(hdr + 8), len = pb_get_u64le(hdr + 16);
        uint32_t resv = pb_get_u32le(hdr + 24), check = pb_get_u32le(hdr + 28);
        uint64_t want_seq = c->recv_seq + 1;
        if (magic != FRAME_MAGIC || resv != 0 || check != fnv1a32(hdr, 28)) {
            snprintf(why, sizeof why, "malformed frame from rank %d (bad magic or checksum)",
                     c->base.prev);
            break;
        }
        if (type == 0 || seq != want_seq || len > c->max_msg) {
            snprintf(why, sizeof why,
                     "invalid frame from rank %d: type %u, sequence %llu (expected %llu), "
                     "%llu bytes (limit %zu)",
                     c->base.prev, type, (unsigned long long)seq, (unsigned long long)want_seq,
                     (unsigned long long)len, c->max_msg);
            break;
        }
        pb_qmsg *m = pb_qmsg_alloc(type, (size_t)len);
        if (!m) {
            snprintf(why, sizeof why, "out of memory receiving %llu bytes from rank %d",
                     (unsigned long long)len, c->base.prev);
            break;
        }
        if (len && (err = read_all(c->recv_fd, m->data, (size_t)len)) != 0) {
            pb_qmsg_free(m);
            describe_hangup(c, c->base.prev, c->prev_host, err == -1 ? EPIPE : err, why,
                            sizeof why);
            break;
        }
        pthread_mutex_lock(&c->mu);
        c->recv_seq = seq;
        /* Back-pressure: stop reading (TCP flow control does the rest). */
        while (!c->stop && c->rq.n >= c->max_queued)
            pthread_cond_wait(&c->cv, &c->mu);
        if (c->stop) {
            pthread_mutex_unlock(&c->mu);
            pb_qmsg_free(m);
            break;
        }
        pb_msgq_push(&c->rq, m);
        c->stats.bytes_recv += FRAME_BYTES + m->len;
        c->stats.msgs_recv++;
        pthread_cond_broadcast(&c->cv);
        pthread_mutex_unlock(&c->mu);
    }
    pthread_mutex_lock(&c->mu);
    c->recv_broken = true;
    if (!c->stop)
        snprintf(c->recv_err, sizeof c->recv_err, "%s", why);
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static pb_status tcp_send(pb_transport *t, uint32_t type, const void *const *bufs,
                          const size_t *lens, int nbufs)
{
    tcp *c = (tcp *)t;
    pb_qmsg *m;
    PB_CHECK(pb_qmsg_gather("tcp", type, bufs, lens, nbufs, c->max_msg, &m));

    pthread_mutex_lock(&c->mu);
    double t0 = pb_now();
    while (!c->send_broken && c->sq.n >= c->max_queued)
        pthread_cond_wait(&c->cv, &c->mu);
    c->stats.send_wait_seconds += pb_now() - t0;
    if (c->send_broken) {
        pb_status st = pb_error(PB_ERR_NET, "%s", c->send_err);
        pthread_mutex_unlock(&c->mu);
        pb_qmsg_free(m);
        return st;
    }
    pb_msgq_push(&c->sq, m);
    pthread_mutex_unlock(&c->mu);
    wake_sender(c);
    return PB_OK;
}

static pb_status tcp_recv(pb_transport *t, double timeout_s, pb_msg *out)
{
    tcp *c = (tcp *)t;
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
        if (c->recv_broken) {
            st = pb_error(PB_ERR_NET, "%s", c->recv_err[0] ? c->recv_err : "link closed");
            goto out;
        }
        if (c->send_broken && !c->closing) {
            st = pb_error(PB_ERR_NET, "%s", c->send_err);
            goto out;
        }
        if (timeout_s >= 0 && past(&deadline)) {
            st = pb_error(PB_ERR_NET, "no message from rank %d within %.0f s", t->prev,
                          timeout_s);
            goto out;
        }
        cv_wait(c, timeout_s >= 0 ? &deadline : NULL);
    }
    pb_msgq_pop(&c->rq, out);
    pthread_cond_broadcast(&c->cv); /* room for the receiver thread */
out:
    c->stats.recv_wait_seconds += pb_now() - t0;
    pthread_mutex_unlock(&c->mu);
    return st;
}

static pb_status tcp_flush(pb_transport *t, double timeout_s)
{
    tcp *c = (tcp *)t;
    struct timespec deadline;
    if (timeout_s >= 0)
        abstime_after(&deadline, timeout_s);
    pb_status st = PB_OK;
    pthread_mutex_lock(&c->mu);
    while (c->sq.n > 0 && !c->send_broken) {
        if (timeout_s >= 0 && past(&deadline)) {
            st = pb_error(PB_ERR_NET, "sending to rank %d did not finish within %.0f s",
                          t->next, timeout_s);
            break;
        }
        cv_wait(c, timeout_s >= 0 ? &deadline : NULL);
    }
    if (st == PB_OK && c->sq.n > 0)
        st = pb_error(PB_ERR_NET, "%s", c->send_err);
    pthread_mutex_unlock(&c->mu);
    return st;
}

static void tcp_closing(pb_transport *t)
{
    tcp *c = (tcp *)t;
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    pthread_mutex_unlock(&c->mu);
}

static void tcp_get_stats(pb_transport *t, pb_transport_stats *out)
{
    tcp *c = (tcp *)t;
    pthread_mutex_lock(&c->mu);
    *out = c->stats;
    pthread_mutex_unlock(&c->mu);
}

static void tcp_destroy(pb_transport *t)
{
    tcp *c = (tcp *)t;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);
    if (c->send_fd >= 0)
        shutdown(c->send_fd, SHUT_RDWR);
    if (c->recv_fd >= 0)
        shutdown(c->recv_fd, SHUT_RDWR);
    if (c->wake[1] >= 0)
        wake_sender(c);
    if (c->sender_started)
        pthread_join(c->sender, NULL);
    if (c->receiver_started)
        pthread_join(c->receiver, NULL);
    pb_msgq_drop(&c->rq);
    pb_msgq_drop(&c->sq);
    if (c->send_fd >= 0)
        close(c->send_fd);
    if (c->recv_fd >= 0)
        close(c->recv_fd);
    for (int i = 0; i < 2; i++)
        if (c->wake[i] >= 0)
            close(c->wake[i]);
    pthread_cond_destroy(&c->cv);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static const pb_transport_ops tcp_ops;

bool pb_transport_tcp_link_down(pb_transport *t, bool to_next, char *why, size_t cap)
{
    if (cap)
        why[0] = '\0';
    if (!t || t->ops != &tcp_ops)
        return false;
    tcp *c = (tcp *)t;
    pthread_mutex_lock(&c->mu);
    bool down = to_next ? c->send_broken : c->recv_broken;
    if (down && to_next)
        snprintf(why, cap, "%s", c->send_err);
    else if (down)
        snprintf(why, cap, "%s", c->recv_err[0] ? c->recv_err : "link closed");
    pthread_mutex_unlock(&c->mu);
    return down;
}

static const pb_transport_ops tcp_ops = {
    .name = "tcp",
    .send = tcp_send,
    .recv = tcp_recv,
    .flush = tcp_flush,
    .closing = tcp_closing,
    .get_stats = tcp_get_stats,
    .destroy = tcp_destroy,
};

/* ---- connection setup ---- */

/* Host identity: host name and kernel boot id, so that "same host" means the
 * same running kernel, not merely the same name. */
static void host_identity(char *host, size_t hcap, char *boot, size_t bcap)
{
    if (gethostname(host, hcap - 1) != 0 || !host[0])
        snprintf(host, hcap, "localhost");
    host[hcap - 1] = '\0';
    for (char *p = host; *p; p++)
        if (*p == ' ' || *p == '\n')
            *p = '_';
    snprintf(boot, bcap, "-");
    FILE *f = fopen("/proc/sys/kernel/random/boot_id", "r");
    if (f) {
        char line[128];
        if (fgets(line, sizeof line, f)) {
            line[strcspn(line, " \r\n")] = '\0';
            if (line[0])
                snprintf(boot, bcap, "%s", line);
        }
        fclose(f);
    }
}

/* The address to listen on and publish (addr.h's pb_net_pick over this
 * host's interfaces). */
static pb_status pick_address(const char *iface, int family, pb_netaddr *addr)
{
    struct ifaddrs *ifs = NULL;
    if (getifaddrs(&ifs) != 0)
        return pb_error(PB_ERR_NET, "getifaddrs: %s", strerror(errno));
    pb_status st = pb_net_pick(ifs, iface, family, addr);
    freeifaddrs(ifs);
    return st;
}

/* Parse "pbtcp1 PORT HOST BOOTID ADDR" (validated; ADDR numeric IPv4 or
 * IPv6, a link-local one reached through scope_iface). */
static pb_status parse_endpoint(const char *s, size_t len, int rank, const char *scope_iface,
                                char *host, size_t hcap, char *boot, size_t bcap, pb_netaddr *addr)
{
    char h[256], b[128], a[64];
    unsigned p = 0;
    int used = 0;
    if (len > 600 || strlen(s) != len ||
        sscanf(s, "pbtcp1 %u %255s %127s %63s%n", &p, h, b, a, &used) != 4 ||
        (size_t)used != len || p == 0 || p > 65535)
        return pb_error(PB_ERR_NET, "rank %d published a malformed TCP endpoint", rank);
    pb_status st = pb_net_peer(a, (uint16_t)p, scope_iface, addr);
    if (st != PB_OK)
        return pb_error_ctx(st, "rank %d's TCP endpoint", rank);
    snprintf(host, hcap, "%s", h);
    snprintf(boot, bcap, "%s", b);
    return PB_OK;
}

pb_status pb_transport_tcp_create(pb_bootstrap *b, const pb_tcp_opts *opts, pb_transport **out)
{
    *out = NULL;
    int rank = pb_bootstrap_rank(b), size = pb_bootstrap_size(b);
    if (size < 2)
        return pb_error(PB_ERR_INTERNAL, "tcp transport needs at least 2 ranks (world %d)", size);
    pb_tcp_opts o = opts ? *opts : (pb_tcp_opts){0};
    if (!o.max_msg_bytes)
        o.max_msg_bytes = (size_t)1 << 30;
    if (o.timeout_s <= 0)
        o.timeout_s = PB_BOOTSTRAP_TIMEOUT_S;
    if (o.max_queued <= 0)
        o.max_queued = 64;
    /* Bootstrap keys of this transport: "pb.tcp.endpoint[.TAG]", "pb.tcp.secret[.TAG]". */
    char ep_key[64], secret_key[64];
    size_t tag_len = o.tag ? strlen(o.tag) : 0;
    if (o.tag && (tag_len == 0 || tag_len > 32 || strspn(o.tag, "abcdefghijklmnopqrstuvwxyz"
                                                                  "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                                                  "0123456789_") != tag_len))
        return pb_error(PB_ERR_INTERNAL, "tcp transport: bad tag '%s'", o.tag);
    snprintf(ep_key, sizeof ep_key, "%s%s%s", EP_KEY, o.tag ? "." : "", o.tag ? o.tag : "");
    snprintf(secret_key, sizeof secret_key, "%s%s%s", SECRET_KEY, o.tag ? "." : "",
             o.tag ? o.tag : "");

    tcp *c = calloc(1, sizeof *c);
    if (!c)
        return pb_error(PB_ERR_NOMEM, "tcp transport: out of memory");
    c->base.ops = &tcp_ops;
    c->base.rank = rank;
    c->base.size = size;
    c->base.next = (rank + 1) % size;
    c->base.prev = (rank + size - 1) % size;
    c->send_fd = c->recv_fd = c->wake[0] = c->wake[1] = -1;
    c->max_msg = o.max_msg_bytes;
    c->max_queued = o.max_queued;
    pthread_mutex_init(&c->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&c->cv, &ca);
    pthread_condattr_destroy(&ca);
    snprintf(c->next_host, sizeof c->next_host, "?");
    snprintf(c->prev_host, sizeof c->prev_host, "?");

    pb_status st = PB_OK;
    int lfd = -1;
    void *ep = NULL;
    size_t eplen = 0;
    uint8_t secret[PB_HS_SECRET_BYTES];

    pb_netaddr pub;
    PB_CHECK_GOTO(pick_address(o.iface, o.family, &pub), st, fail);
    lfd = socket(pb_net_af(&pub), SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) {
        st = pb_error(PB_ERR_NET, "socket: %s", strerror(errno));
        goto fail;
    }
    /* With --iface listen on that address only, else on all of its family
     * (peers on this host come over loopback, others over the published
     * address). */
    pb_netaddr la;
    if (o.iface)
        la = pub;
    else
        pb_net_any(pb_net_af(&pub), &la);
    socklen_t sl = sizeof la.sa;
    if (bind(lfd, (const struct sockaddr *)&la.sa, la.len) != 0 || listen(lfd, 16) != 0 ||
        getsockname(lfd, (struct sockaddr *)&la.sa, &sl) != 0) {
        char astr[PB_NETADDR_TEXT];
        pb_net_text(&la, astr, sizeof astr);
        st = pb_error(PB_ERR_NET, "listening for rank %d at %s: %s", c->base.prev, astr, strerror(errno));
        goto fail;
    }
    char host[256], boot[128], astr[INET6_ADDRSTRLEN], mine[600];
    host_identity(host, sizeof host, boot, sizeof boot);
    pb_net_host_text(&pub, astr, sizeof astr);
    snprintf(mine, sizeof mine, "pbtcp1 %u %s %s %s", (unsigned)pb_net_port(&la), host, boot, astr);
    pb_log_debug("tcp endpoint: %s", mine);
    PB_CHECK_GOTO(pb_bootstrap_put(b, ep_key, mine, strlen(mine)), st, fail);
    /* Rank 0 draws the job's secret; PMIx hands it to the job's ranks only. */
    if (rank == 0) {
        PB_CHECK_GOTO(pb_hs_new_secret(secret), st, fail);
        PB_CHECK_GOTO(pb_bootstrap_put(b, secret_key, secret, sizeof secret), st, fail);
    }
    PB_CHECK_GOTO(pb_bootstrap_commit(b), st, fail);
    PB_CHECK_GOTO(pb_bootstrap_fence(b, o.timeout_s), st, fail);
    if (rank != 0) {
        PB_CHECK_GOTO(pb_bootstrap_get(b, 0, secret_key, o.timeout_s, &ep, &eplen), st, fail);
        if (eplen != sizeof secret) {
            st = pb_error(PB_ERR_NET, "rank 0 published a %zu-byte job secret (expected %zu)",
                          eplen, sizeof secret);
            goto fail;
        }
        memcpy(secret, ep, sizeof secret);
        sodium_memzero(ep, eplen);
        free(ep);
        ep = NULL;
    }

    pb_hs_cfg hs = {.rank = rank, .world = size, .next = c->base.next, .prev = c->base.prev,
                    .job = fnv1a64(pb_bootstrap_job_id(b)), .secret = secret,
                    .next_host = c->next_host, .prev_host = c->prev_host, .listen_fd = lfd,
                    .deadline = pb_now() + o.timeout_s};
    /* Where the next rank listens; the previous rank's host, for messages. */
    for (int k = 0; k < 2; k++) {
        int peer = k == 0 ? c->base.next : c->base.prev;
        PB_CHECK_GOTO(pb_bootstrap_get(b, peer, ep_key, o.timeout_s, &ep, &eplen), st, fail);
        char phost[256], pboot[128];
        pb_netaddr paddr;
        PB_CHECK_GOTO(parse_endpoint(ep, eplen, peer, o.iface, phost, sizeof phost, pboot, sizeof pboot,
                                     &paddr), st, fail);
        free(ep);
        ep = NULL;
        if (k == 1) {
            snprintf(c->prev_host, sizeof c->prev_host, "%s", phost);
            break;
        }
        snprintf(c->next_host, sizeof c->next_host, "%s", phost);
        bool same_host = !o.iface && strcmp(phost, host) == 0 && strcmp(pboot, boot) == 0 &&
                         strcmp(pboot, "-") != 0;
        if (same_host) /* it listens on every address of its family */
            pb_net_loopback_of(&paddr, &hs.next_addr);
        else
            hs.next_addr = paddr;
        char nstr[PB_NETADDR_TEXT];
        pb_net_text(&hs.next_addr, nstr, sizeof nstr);
        pb_log_debug("tcp: rank %d (%s) listens at %s", peer, phost, nstr);
    }
    st = pb_hs_connect_ring(&hs, &c->send_fd, &c->recv_fd);
    sodium_memzero(secret, sizeof secret);
    if (st != PB_OK)
        goto fail;
    close(lfd);
    lfd = -1;

    if (pipe(c->wake) != 0) {
        st = pb_error(PB_ERR_NET, "pipe: %s", strerror(errno));
        goto fail;
    }
    for (int i = 0; i < 2; i++) {
        fcntl(c->wake[i], F_SETFD, FD_CLOEXEC);
        fcntl(c->wake[i], F_SETFL, fcntl(c->wake[i], F_GETFL) | O_NONBLOCK);
    }
    if (pthread_create(&c->sender, NULL, sender_main, c) != 0) {
        st = pb_error(PB_ERR_NET, "cannot start the tcp sender thread");
        goto fail;
    }
    c->sender_started = true;
    if (pthread_create(&c->receiver, NULL, receiver_main, c) != 0) {
        st = pb_error(PB_ERR_NET, "cannot start the tcp receiver thread");
        goto fail;
    }
    c->receiver_started = true;
    pb_log_verbose("tcp: connected to rank %d (%s) and from rank %d (%s)", c->base.next,
                   c->next_host, c->base.prev, c->prev_host);
    *out = &c->base;
    return PB_OK;

fail:
    sodium_memzero(secret, sizeof secret);
    free(ep);
    if (lfd >= 0)
        close(lfd);
    tcp_destroy(&c->base);
    return pb_error_ctx(st, "tcp transport (rank %d of %d)", rank, size);
}
