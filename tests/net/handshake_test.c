/* The ring handshake (src/net/handshake.c) in one process: two threads play
 * ranks 0 and 1 of a world of 2, the main thread plays a stranger that knows
 * the job id (so its HELLO is perfect) but not the secret.
 *   1. Strangers connect to rank 1 before rank 0 exists: one reflects rank
 *      1's own proof, one guesses, one names another job, one stays silent.
 *      None gets an OK; then the real rank 0 starts and both links come up,
 *      paired correctly (a byte each way).
 *   2. The stranger listens where rank 0 will connect and answers rank 0's
 *      HELLO with a well-formed challenge and a wrong proof: rank 0 never
 *      sends its own proof to it.
 *   3. Ranks that hold different secrets never connect: both fail at the
 *      deadline, naming the rank that did not prove itself. */
#include "config.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/status.h"
#include "common/util.h"
#include "net/handshake.h"
#include "../check.h"

#define JOB 0x1234567890abcdefull


static int listener(uint16_t *port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 16) != 0 ||
        getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
        perror("listener");
        exit(1);
    }
    *port = ntohs(sa.sin_port);
    return fd;
}

static int dial(uint16_t port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
        perror("dial");
        exit(1);
    }
    return fd;
}

/* Read up to n bytes within timeout_ms; returns bytes read, stops at EOF
 * (*eof set). */
static size_t read_for(int fd, uint8_t *buf, size_t n, int timeout_ms, int *eof)
{
    size_t got = 0;
    *eof = 0;
    double end = pb_now() + timeout_ms / 1000.0;
    while (got < n) {
        int left = (int)((end - pb_now()) * 1000);
        struct pollfd pf = {.fd = fd, .events = POLLIN};
        if (left <= 0 || poll(&pf, 1, left) <= 0)
            break;
        ssize_t r = recv(fd, buf + got, n - got, 0);
        if (r <= 0) {
            *eof = 1;
            break;
        }
        got += (size_t)r;
    }
    return got;
}

static void hello(uint8_t *h, int world, int src, int dst, uint64_t job)
{
    memset(h, 0, 64);
    pb_put_u32le(h, 0x32484250u);
    pb_put_u32le(h + 4, 2);
    pb_put_u32le(h + 8, (uint32_t)world);
    pb_put_u32le(h + 12, (uint32_t)src);
    pb_put_u32le(h + 16, (uint32_t)dst);
    pb_put_u64le(h + 20, job);
    for (int i = 0; i < 32; i++) h[32 + i] = (uint8_t)(i * 37 + 11);
}

typedef struct rank_run {
    pb_hs_cfg cfg;
    pthread_t th;
    pb_status st;
    int send_fd, recv_fd;
    char err[2048];
} rank_run;

static void *rank_main(void *arg)
{
    rank_run *r = arg;
    r->st = pb_hs_connect_ring(&r->cfg, &r->send_fd, &r->recv_fd);
    snprintf(r->err, sizeof r->err, "%s", r->st == PB_OK ? "" : pb_last_error());
    return NULL;
}

static void setup(rank_run *r, int rank, const uint8_t *secret, int lfd, uint16_t next_port,
                  double seconds)
{
    memset(r, 0, sizeof *r);
    r->cfg = (pb_hs_cfg){.rank = rank, .world = 2, .next = 1 - rank, .prev = 1 - rank,
                         .job = JOB, .secret = secret, .next_host = "here", .prev_host = "here",
                         .listen_fd = lfd, .deadline = pb_now() + seconds};
    if (pb_net_peer("127.0.0.1", next_port, NULL, &r->cfg.next_addr) != PB_OK)
        abort();
}

static void strangers_first(const uint8_t *secret)
{
    uint16_t p0, p1;
    int l0 = listener(&p0), l1 = listener(&p1);
    rank_run r0, r1;
    setup(&r1, 1, secret, l1, p0, 60);
    pthread_create(&r1.th, NULL, rank_main, &r1);

    int silent = dial(p1);
    uint8_t h[64], buf[128], resp[40];
    int eof;

    /* reflect: answer the challenge with the rank's own proof */
    int s = dial(p1);
    hello(h, 2, 0, 1, JOB);
    send(s, h, 64, MSG_NOSIGNAL);
    size_t n = read_for(s, buf, 72, 20000, &eof);
    CHECK(n == 72 && pb_get_u32le(buf) == 0x48434250u, "reflect: no challenge (%zu bytes)", n);
    pb_put_u32le(resp, 0x53524250u);
    pb_put_u32le(resp + 4, 0);
    memcpy(resp + 8, buf + 40, 32);
    send(s, resp, sizeof resp, MSG_NOSIGNAL);
    n = read_for(s, buf, sizeof buf, 20000, &eof);
    CHECK(n == 0 && eof, "reflect: let in (%zu bytes back)", n);
    close(s);

    /* guess */
    s = dial(p1);
    send(s, h, 64, MSG_NOSIGNAL);
    n = read_for(s, buf, 72, 20000, &eof);
    CHECK(n == 72, "guess: no challenge");
    memset(resp + 8, 0x5a, 32);
    send(s, resp, sizeof resp, MSG_NOSIGNAL);
    n = read_for(s, buf, sizeof buf, 20000, &eof);
    CHECK(n == 0 && eof, "guess: let in (%zu bytes back)", n);
    close(s);

    /* another job */
    s = dial(p1);
    hello(h, 2, 0, 1, JOB + 1);
    send(s, h, 64, MSG_NOSIGNAL);
    n = read_for(s, buf, sizeof buf, 20000, &eof);
    CHECK(n == 0 && eof, "other job: answered (%zu bytes)", n);
    close(s);

    /* now the real rank 0 */
    setup(&r0, 0, secret, l0, p1, 60);
    pthread_create(&r0.th, NULL, rank_main, &r0);
    pthread_join(r0.th, NULL);
    pthread_join(r1.th, NULL);
    CHECK(r0.st == PB_OK, "rank 0: %s", r0.err);
    CHECK(r1.st == PB_OK, "rank 1: %s", r1.err);
    n = read_for(silent, buf, sizeof buf, 20000, &eof);
    CHECK(n == 0 && eof, "silent stranger: not dropped");
    close(silent);
    if (r0.st == PB_OK && r1.st == PB_OK) {
        uint8_t a = 'a', b = 'b', x = 0, y = 0;
        CHECK(write(r0.send_fd, &a, 1) == 1 && read_for(r1.recv_fd, &x, 1, 5000, &eof) == 1 &&
                  x == 'a', "rank 0 -> rank 1 link");
        CHECK(write(r1.send_fd, &b, 1) == 1 && read_for(r0.recv_fd, &y, 1, 5000, &eof) == 1 &&
                  y == 'b', "rank 1 -> rank 0 link");
        close(r0.send_fd);
        close(r0.recv_fd);
        close(r1.send_fd);
        close(r1.recv_fd);
    }
    close(l0);
    close(l1);
}

static void fake_listener(const uint8_t *secret)
{
    uint16_t p0, pf;
    int l0 = listener(&p0), lf = listener(&pf);
    rank_run r0;
    setup(&r0, 0, secret, l0, pf, 3);
    pthread_create(&r0.th, NULL, rank_main, &r0);
    int s = accept(lf, NULL, NULL);
    uint8_t h[64], chal[72], buf[64];
    int eof;
    size_t n = read_for(s, h, 64, 20000, &eof);
    CHECK(n == 64 && pb_get_u32le(h) == 0x32484250u, "rank 0 sent no HELLO");
    pb_put_u32le(chal, 0x48434250u);
    pb_put_u32le(chal + 4, 0);
    memset(chal + 8, 7, 64);
    send(s, chal, sizeof chal, MSG_NOSIGNAL);
    n = read_for(s, buf, sizeof buf, 20000, &eof);
    CHECK(n == 0, "rank 0 answered a stranger's challenge with %zu bytes", n);
    close(s);
    pthread_join(r0.th, NULL);
    CHECK(r0.st == PB_ERR_NET, "rank 0 connected to a stranger");
    close(l0);
    close(lf);
}

static void different_secrets(const uint8_t *secret)
{
    uint8_t other[PB_HS_SECRET_BYTES];
    memcpy(other, secret, sizeof other);
    other[5] ^= 1;
    uint16_t p0, p1;
    int l0 = listener(&p0), l1 = listener(&p1);
    rank_run r0, r1;
    setup(&r0, 0, secret, l0, p1, 3);
    setup(&r1, 1, other, l1, p0, 3);
    pthread_create(&r0.th, NULL, rank_main, &r0);
    pthread_create(&r1.th, NULL, rank_main, &r1);
    pthread_join(r0.th, NULL);
    pthread_join(r1.th, NULL);
    CHECK(r0.st == PB_ERR_NET && strstr(r0.err, "rank 1 (on here) did not connect and prove"),
          "rank 0: %s", r0.err);
    CHECK(r1.st == PB_ERR_NET && strstr(r1.err, "rank 0 (on here) did not connect and prove"),
          "rank 1: %s", r1.err);
    close(l0);
    close(l1);
}

int main(void)
{
    uint8_t secret[PB_HS_SECRET_BYTES], again[PB_HS_SECRET_BYTES];
    if (pb_hs_new_secret(secret) != PB_OK || pb_hs_new_secret(again) != PB_OK) {
        fprintf(stderr, "%s\n", pb_last_error());
        return 1;
    }
    CHECK(memcmp(secret, again, sizeof secret) != 0, "two secrets are equal");
    strangers_first(secret);
    fake_listener(secret);
    different_secrets(secret);
    if (check_failures)
        return 1;
    printf("handshake: ok\n");
    return 0;
}
