/* Connection setup between ring neighbours with mutual proof of the job
 * secret (protocol in handshake.h). One poll loop drives the outgoing link
 * (connect, retry, prove) and every incoming candidate at once, since each
 * rank is both a connector and an acceptor and waiting on one side alone
 * would deadlock the ring. */
#include "config.h"
#include "net/handshake.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sodium.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/util.h"

#define HS_VERSION 2u
#define HELLO_MAGIC 0x32484250u /* "PBH2" */
#define CHAL_MAGIC 0x48434250u  /* "PBCH" */
#define RESP_MAGIC 0x53524250u  /* "PBRS" */
#define OK_MAGIC 0x4B4F4250u    /* "PBOK" */
#define NONCE_BYTES 32
#define TAG_BYTES crypto_auth_hmacsha512256_BYTES
#define HELLO_BYTES 64
#define CHAL_BYTES (8 + NONCE_BYTES + TAG_BYTES)
#define RESP_BYTES (8 + TAG_BYTES)
#define OK_BYTES 8
#define MAX_PENDING 8         /* incoming candidates handled at once */
#define STEP_SECONDS 10.0     /* one handshake step may take this long */
#define RETRY_SECONDS 0.1     /* between connection attempts */
#define MAX_REFUSALS_LOGGED 16

static const char LABEL_ACCEPT[] = "pippy-batch tcp v2: accepting rank";
static const char LABEL_CONNECT[] = "pippy-batch tcp v2: connecting rank";

_Static_assert(TAG_BYTES == 32, "HMAC-SHA512-256 tags are 32 bytes");
_Static_assert(crypto_auth_hmacsha512256_KEYBYTES == PB_HS_SECRET_BYTES, "key size");

pb_status pb_hs_new_secret(uint8_t *secret)
{
    size_t got = 0;
    while (got < PB_HS_SECRET_BYTES) {
        ssize_t r = getrandom(secret + got, PB_HS_SECRET_BYTES - got, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return pb_error(PB_ERR_NET, "getrandom: %s", strerror(errno));
        }
        got += (size_t)r;
    }
    return PB_OK;
}

/* HMAC(secret, label | hello | nonce_a) */
static void proof(const uint8_t *secret, const char *label, const uint8_t *hello,
                  const uint8_t *nonce_a, uint8_t *tag)
{
    crypto_auth_hmacsha512256_state s;
    crypto_auth_hmacsha512256_init(&s, secret, PB_HS_SECRET_BYTES);
    crypto_auth_hmacsha512256_update(&s, (const unsigned char *)label, strlen(label) + 1);
    crypto_auth_hmacsha512256_update(&s, hello, HELLO_BYTES);
    crypto_auth_hmacsha512256_update(&s, nonce_a, NONCE_BYTES);
    crypto_auth_hmacsha512256_final(&s, tag);
    sodium_memzero(&s, sizeof s);
}

static bool proof_ok(const uint8_t *secret, const char *label, const uint8_t *hello,
                     const uint8_t *nonce_a, const uint8_t *tag)
{
    uint8_t want[TAG_BYTES];
    proof(secret, label, hello, nonce_a, want);
    return sodium_memcmp(want, tag, TAG_BYTES) == 0;
}

static void tune_socket(int fd)
{
    int one = 1, idle = 10, intvl = 2, cnt = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* Detect a peer whose host vanished within ~16 s. */
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof idle);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof intvl);
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof cnt);
}

static void set_blocking(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0)
        fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
}

/* The handshake messages are tiny and each socket's buffer is empty when
 * one is sent, so a send that does not take it whole is a dead link. */
static bool send_whole(int fd, const uint8_t *p, size_t n)
{
    ssize_t w;
    do
        w = send(fd, p, n, MSG_NOSIGNAL | MSG_DONTWAIT);
    while (w < 0 && errno == EINTR);
    return w == (ssize_t)n;
}

/* Read what is there towards `need` bytes: 1 complete, 0 not yet, -1 closed
 * or failed. */
static int read_some(int fd, uint8_t *buf, size_t *got, size_t need)
{
    while (*got < need) {
        ssize_t r = recv(fd, buf + *got, need - *got, MSG_DONTWAIT);
        if (r == 0)
            return -1;
        if (r < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
        }
        *got += (size_t)r;
    }
    return 1;
}

static void make_hello(const pb_hs_cfg *c, uint8_t *h)
{
    memset(h, 0, HELLO_BYTES);
    pb_put_u32le(h, HELLO_MAGIC);
    pb_put_u32le(h + 4, HS_VERSION);
    pb_put_u32le(h + 8, (uint32_t)c->world);
    pb_put_u32le(h + 12, (uint32_t)c->rank);
    pb_put_u32le(h + 16, (uint32_t)c->next);
    pb_put_u64le(h + 20, c->job);
    randombytes_buf(h + 32, NONCE_BYTES);
}

/* Why a HELLO is not the previous rank of this job, or NULL. */
static const char *hello_problem(const pb_hs_cfg *c, const uint8_t *h)
{
    if (pb_get_u32le(h) != HELLO_MAGIC)
        return "not a pippy-batch handshake";
    if (pb_get_u32le(h + 4) != HS_VERSION)
        return "another protocol version";
    if (pb_get_u64le(h + 20) != c->job)
        return "another job";
    if (pb_get_u32le(h + 8) != (uint32_t)c->world || pb_get_u32le(h + 12) != (uint32_t)c->prev ||
        pb_get_u32le(h + 16) != (uint32_t)c->rank || pb_get_u32le(h + 28) != 0)
        return "wrong world size or ranks";
    return NULL;
}

/* ---- the outgoing link ---- */
enum { OUT_IDLE, OUT_CONNECTING, OUT_CHAL, OUT_OK, OUT_DONE };
typedef struct out_link {
    int state, fd;
    double retry_at, step_deadline;
    uint8_t hello[HELLO_BYTES];
    uint8_t buf[CHAL_BYTES];
    size_t got;
    int n_unproven; /* listeners that failed to prove themselves */
    char last_err[256];
} out_link;

static void out_retry(out_link *o, const char *why)
{
    if (o->fd >= 0)
        close(o->fd);
    o->fd = -1;
    o->state = OUT_IDLE;
    o->retry_at = pb_now() + RETRY_SECONDS;
    snprintf(o->last_err, sizeof o->last_err, "%s", why);
}

static bool out_send_hello(const pb_hs_cfg *c, out_link *o)
{
    tune_socket(o->fd);
    make_hello(c, o->hello);
    if (!send_whole(o->fd, o->hello, HELLO_BYTES)) {
        out_retry(o, "the connection closed before the handshake");
        return false;
    }
    o->state = OUT_CHAL;
    o->got = 0;
    o->step_deadline = pb_now() + STEP_SECONDS;
    return true;
}

/* Start a connection attempt; PB_ERR_NET only for errors a retry cannot mend. */
static pb_status out_start(const pb_hs_cfg *c, out_link *o)
{
    o->fd = socket(pb_net_af(&c->next_addr), SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (o->fd < 0)
        return pb_error(PB_ERR_NET, "socket: %s", strerror(errno));
    int rc = connect(o->fd, (const struct sockaddr *)&c->next_addr.sa, c->next_addr.len);
    if (rc == 0) {
        out_send_hello(c, o);
        return PB_OK;
    }
    int err = errno;
    if (err == EINPROGRESS) {
        o->state = OUT_CONNECTING;
        o->step_deadline = pb_now() + STEP_SECONDS;
        return PB_OK;
    }
    if (err == ECONNREFUSED || err == EAGAIN || err == EINTR || err == ETIMEDOUT) {
        out_retry(o, strerror(err));
        return PB_OK;
    }
    char astr[PB_NETADDR_TEXT];
    pb_net_text(&c->next_addr, astr, sizeof astr);
    close(o->fd);
    o->fd = -1;
    return pb_error(PB_ERR_NET, "connecting to rank %d at %s (%s): %s", c->next, astr, c->next_host,
                    strerror(err));
}

static pb_status out_event(const pb_hs_cfg *c, out_link *o, short revents)
{
    if (o->state == OUT_CONNECTING) {
        int err = 0;
        socklen_t sl = sizeof err;
        if (getsockopt(o->fd, SOL_SOCKET, SO_ERROR, &err, &sl) != 0)
            err = errno;
        if (err == 0 && (revents & POLLOUT)) {
            out_send_hello(c, o);
            return PB_OK;
        }
        if (err == 0)
            return PB_OK;
        if (err == ECONNREFUSED || err == ETIMEDOUT || err == EAGAIN) {
            out_retry(o, strerror(err));
            return PB_OK;
        }
        char astr[PB_NETADDR_TEXT];
        pb_net_text(&c->next_addr, astr, sizeof astr);
        return pb_error(PB_ERR_NET, "connecting to rank %d at %s (%s): %s", c->next, astr, c->next_host,
                        strerror(err));
    }
    size_t need = o->state == OUT_CHAL ? CHAL_BYTES : OK_BYTES;
    int r = read_some(o->fd, o->buf, &o->got, need);
    if (r < 0) {
        out_retry(o, "the peer closed the connection during the handshake");
        return PB_OK;
    }
    if (r == 0)
        return PB_OK;
    if (o->state == OUT_CHAL) {
        if (pb_get_u32le(o->buf) != CHAL_MAGIC || pb_get_u32le(o->buf + 4) != 0 ||
            !proof_ok(c->secret, LABEL_ACCEPT, o->hello, o->buf + 8, o->buf + 8 + NONCE_BYTES)) {
            /* Someone else listens where rank next published its endpoint
             * (said once; the retries every 0.1 s only at -vv). */
            char astr[PB_NETADDR_TEXT];
            pb_net_text(&c->next_addr, astr, sizeof astr);
            (o->n_unproven++ ? pb_log_debug : pb_log_warn)("tcp: the listener at rank %d's endpoint (%s, %s) did not "
                                                           "prove it belongs to this job; retrying", c->next,
                                                           c->next_host, astr);
            out_retry(o, "the listener did not prove it belongs to this job");
            return PB_OK;
        }
        uint8_t resp[RESP_BYTES];
        pb_put_u32le(resp, RESP_MAGIC);
        pb_put_u32le(resp + 4, 0);
        proof(c->secret, LABEL_CONNECT, o->hello, o->buf + 8, resp + 8);
        if (!send_whole(o->fd, resp, sizeof resp)) {
            out_retry(o, "the peer closed the connection during the handshake");
            return PB_OK;
        }
        o->state = OUT_OK;
        o->got = 0;
        return PB_OK;
    }
    if (pb_get_u32le(o->buf) != OK_MAGIC || pb_get_u32le(o->buf + 4) != 0) {
        out_retry(o, "the peer answered the handshake wrongly");
        return PB_OK;
    }
    o->state = OUT_DONE;
    return PB_OK;
}

/* ---- incoming candidates ---- */
typedef struct cand {
    int fd; /* -1: free */
    bool want_resp; /* HELLO answered; waiting for the proof */
    double step_deadline;
    uint8_t hello[HELLO_BYTES];
    uint8_t nonce[NONCE_BYTES];
    uint8_t buf[HELLO_BYTES];
    size_t got;
    char who[PB_NETADDR_TEXT]; /* address:port */
} cand;

static void cand_refuse(const pb_hs_cfg *c, cand *k, const char *why, int *n_refused)
{
    if (*n_refused < MAX_REFUSALS_LOGGED)
        pb_log_warn("tcp: rank %d refused a connection from %s: %s; still waiting for rank %d (on %s)",
                    c->rank, k->who, why, c->prev, c->prev_host);
    else if (*n_refused == MAX_REFUSALS_LOGGED)
        pb_log_warn("tcp: rank %d: further refused connections are not logged", c->rank);
    (*n_refused)++;
    close(k->fd);
    k->fd = -1;
}

/* Progress one candidate; true when it proved to be the previous rank. */
static bool cand_event(const pb_hs_cfg *c, cand *k, int *n_refused)
{
    size_t need = k->want_resp ? RESP_BYTES : HELLO_BYTES;
    int r = read_some(k->fd, k->buf, &k->got, need);
    if (r < 0) {
        cand_refuse(c, k, "closed during the handshake", n_refused);
        return false;
    }
    if (r == 0)
        return false;
    if (!k->want_resp) {
        const char *why = hello_problem(c, k->buf);
        if (why) {
            cand_refuse(c, k, why, n_refused);
            return false;
        }
        memcpy(k->hello, k->buf, HELLO_BYTES);
        randombytes_buf(k->nonce, NONCE_BYTES);
        uint8_t chal[CHAL_BYTES];
        pb_put_u32le(chal, CHAL_MAGIC);
        pb_put_u32le(chal + 4, 0);
        memcpy(chal + 8, k->nonce, NONCE_BYTES);
        proof(c->secret, LABEL_ACCEPT, k->hello, k->nonce, chal + 8 + NONCE_BYTES);
        if (!send_whole(k->fd, chal, sizeof chal)) {
            cand_refuse(c, k, "closed during the handshake", n_refused);
            return false;
        }
        k->want_resp = true;
        k->got = 0;
        k->step_deadline = pb_now() + STEP_SECONDS;
        return false;
    }
    if (pb_get_u32le(k->buf) != RESP_MAGIC || pb_get_u32le(k->buf + 4) != 0 ||
        !proof_ok(c->secret, LABEL_CONNECT, k->hello, k->nonce, k->buf + 8)) {
        cand_refuse(c, k, "no proof of the job's secret", n_refused);
        return false;
    }
    uint8_t ok[OK_BYTES];
    pb_put_u32le(ok, OK_MAGIC);
    pb_put_u32le(ok + 4, 0);
    if (!send_whole(k->fd, ok, sizeof ok)) {
        cand_refuse(c, k, "closed during the handshake", n_refused);
        return false;
    }
    return true;
}

static void cand_accept(const pb_hs_cfg *c, cand *cands, int *n_refused)
{
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    int fd = accept(c->listen_fd, (struct sockaddr *)&sa, &sl);
    if (fd < 0)
        return; /* EAGAIN, ECONNABORTED, ...: the next poll tells */
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    /* A free slot, else the oldest candidate makes way: the real peer
     * answers within a round trip, a silent stranger ages out first. */
    cand *k = NULL;
    for (int i = 0; i < MAX_PENDING && !k; i++)
        if (cands[i].fd < 0)
            k = &cands[i];
    if (!k) {
        k = &cands[0];
        for (int i = 1; i < MAX_PENDING; i++)
            if (cands[i].step_deadline < k->step_deadline)
                k = &cands[i];
        cand_refuse(c, k, "too slow while other connections wait", n_refused);
    }
    memset(k, 0, sizeof *k);
    k->fd = fd;
    k->step_deadline = pb_now() + STEP_SECONDS;
    pb_netaddr from;
    pb_net_from_sockaddr((const struct sockaddr *)&sa, sl, &from);
    pb_net_text(&from, k->who, sizeof k->who);
    tune_socket(fd);
}

pb_status pb_hs_connect_ring(const pb_hs_cfg *c, int *send_fd, int *recv_fd)
{
    *send_fd = *recv_fd = -1;
    if (sodium_init() < 0)
        return pb_error(PB_ERR_NET, "libsodium failed to initialise");
    int fl = fcntl(c->listen_fd, F_GETFL);
    if (fl < 0 || fcntl(c->listen_fd, F_SETFL, fl | O_NONBLOCK) != 0)
        return pb_error(PB_ERR_NET, "listening socket: %s", strerror(errno));

    pb_status st = PB_OK;
    out_link o = {.state = OUT_IDLE, .fd = -1, .retry_at = 0, .last_err = "no attempt yet"};
    cand cands[MAX_PENDING];
    for (int i = 0; i < MAX_PENDING; i++)
        cands[i].fd = -1;
    int in_fd = -1, n_refused = 0;

    while (o.state != OUT_DONE || in_fd < 0) {
        double now = pb_now();
        if (now >= c->deadline) {
            char astr[PB_NETADDR_TEXT];
            pb_net_text(&c->next_addr, astr, sizeof astr);
            if (in_fd < 0)
                st = pb_error(PB_ERR_NET, "rank %d (on %s) did not connect and prove it "
                              "belongs to this job within the timeout", c->prev, c->prev_host);
            else
                st = pb_error(PB_ERR_NET, "connecting to rank %d (on %s, at %s): %s", c->next, c->next_host,
                              astr, o.last_err);
            goto out;
        }
        if (o.state == OUT_IDLE && now >= o.retry_at)
            PB_CHECK_GOTO(out_start(c, &o), st, out);
        /* Retrying is safe until our proof is sent; after that the peer may
         * already hold this connection as its link, so wait for its OK. */
        if ((o.state == OUT_CONNECTING || o.state == OUT_CHAL) && now >= o.step_deadline)
            out_retry(&o, "the peer did not answer the handshake");
        for (int i = 0; i < MAX_PENDING; i++)
            if (cands[i].fd >= 0 && now >= cands[i].step_deadline)
                cand_refuse(c, &cands[i], "handshake timed out", &n_refused);

        /* poll set: [0] outgoing, [1] listener, [2..] candidates */
        struct pollfd pf[2 + MAX_PENDING];
        int map[2 + MAX_PENDING], n = 0;
        if (o.fd >= 0 && o.state != OUT_DONE) {
            pf[n] = (struct pollfd){.fd = o.fd,
                                    .events = o.state == OUT_CONNECTING ? POLLOUT : POLLIN};
            map[n++] = -2;
        }
        if (in_fd < 0) {
            pf[n] = (struct pollfd){.fd = c->listen_fd, .events = POLLIN};
            map[n++] = -1;
            for (int i = 0; i < MAX_PENDING; i++)
                if (cands[i].fd >= 0) {
                    pf[n] = (struct pollfd){.fd = cands[i].fd, .events = POLLIN};
                    map[n++] = i;
                }
        }
        int pr = poll(pf, (nfds_t)n, 50);
        if (pr < 0 && errno != EINTR) {
            st = pb_error(PB_ERR_NET, "poll: %s", strerror(errno));
            goto out;
        }
        for (int j = 0; pr > 0 && j < n; j++) {
            if (!pf[j].revents)
                continue;
            if (map[j] == -2) {
                PB_CHECK_GOTO(out_event(c, &o, pf[j].revents), st, out);
            } else if (map[j] == -1) {
                cand_accept(c, cands, &n_refused);
            } else if (in_fd < 0 && cands[map[j]].fd >= 0 &&
                       cand_event(c, &cands[map[j]], &n_refused)) {
                in_fd = cands[map[j]].fd;
                cands[map[j]].fd = -1;
            }
        }
    }
    for (int i = 0; i < MAX_PENDING; i++)
        if (cands[i].fd >= 0)
            cand_refuse(c, &cands[i], "the real rank connected first", &n_refused);
    set_blocking(o.fd);
    set_blocking(in_fd);
    *send_fd = o.fd;
    *recv_fd = in_fd;
    o.fd = in_fd = -1;
    if (n_refused)
        pb_log_warn("tcp: rank %d refused %d connection%s that did not prove to be rank %d of "
                    "this job", c->rank, n_refused, n_refused == 1 ? "" : "s", c->prev);
out:
    if (o.fd >= 0)
        close(o.fd);
    if (in_fd >= 0)
        close(in_fd);
    for (int i = 0; i < MAX_PENDING; i++)
        if (cands[i].fd >= 0)
            close(cands[i].fd);
    return st;
}
