/* NCCL transport check on a GPU machine, run by tests/net/nccl.sh under
 * mpirun -np 2 (the two ranks are each other's next and prev).
 *   nccl_test --probe        alone: exit 77 (saying why) without NCCL in the
 *       build or without a visible GPU, else 0.
 *   nccl_test --exchange [--inline N] [--same-device] [--rounds N]
 *       rank 0 keeps several messages in flight to rank 1, which checks each
 *       and sends it back; sizes from 0 bytes to 4 MiB (around the inline
 *       limit too), 1-3 pieces, several types. Done over TCP, then over NCCL:
 *       every message must equal its generator, and each rank must have
 *       received the same messages in the same order over both, with the
 *       same message and byte counts. --same-device puts both ranks on
 *       device 0 (NCCL then links them through its sockets).
 *   nccl_test --timeout      each rank waits 2 s for a message that never
 *       comes: PB_ERR_NET naming the peer, and the transport is broken after.
 *   nccl_test --die R        rank R kills itself mid-stream; the other must
 *       fail with PB_ERR_NET naming rank R and abort the job. */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/util.h"
#include "cuda/cuda.h"
#include "net/bootstrap.h"
#include "net/transport.h"

#define MAX_LEN ((size_t)4 << 20)

static size_t g_inline = 8192; /* the NCCL transport's inline limit in this run */

/* Size of message i: fixed edge cases first, then a spread up to 4 MiB. */
static size_t msg_len(uint64_t i)
{
    const size_t edge[] = {0, 1, 7, 8, 4095, 4096, 65536, (size_t)1 << 20, (3u << 20) + 5, MAX_LEN};
    const size_t n_edge = sizeof edge / sizeof edge[0];
    if (i < n_edge)
        return edge[i];
    if (i < n_edge + 3) /* just under, at and over the inline limit */
        return g_inline + (size_t)(i - n_edge) - 1 + (g_inline == 0);
    uint64_t h = (i * 2654435761u) ^ (i >> 3);
    switch (i % 4) {
    case 0: return (size_t)(h % 64);
    case 1: return (size_t)(h % 20000);
    case 2: return (size_t)(h % 600000);
    default: return (size_t)(h % MAX_LEN);
    }
}
static uint32_t msg_type(uint64_t i) { return 1 + (uint32_t)(i % 5); }
static uint8_t msg_byte(uint64_t i, size_t k)
{
    return (uint8_t)((k * 131u) ^ (i * 7u) ^ (k >> 9));
}
static void fill(uint8_t *p, uint64_t i, size_t len)
{
    for (size_t k = 0; k < len; k++) p[k] = msg_byte(i, k);
}
static int check(const pb_msg *m, uint64_t i)
{
    if (m->type != msg_type(i) || m->len != msg_len(i))
        return 0;
    for (size_t k = 0; k < m->len; k++)
        if (m->data[k] != msg_byte(i, k))
            return 0;
    return 1;
}

typedef struct digest {
    uint32_t type;
    uint64_t len, hash;
} digest;
static digest digest_of(const pb_msg *m)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t k = 0; k < m->len; k++) h = (h ^ m->data[k]) * 1099511628211ull;
    digest d = {m->type, m->len, h};
    return d;
}

/* Send message i in 1-3 pieces. */
static pb_status send_msg(pb_transport *t, uint64_t i, uint8_t *buf)
{
    size_t len = msg_len(i);
    fill(buf, i, len);
    int np = 1 + (int)(i % 3);
    const void *bufs[3];
    size_t lens[3], off = 0;
    for (int p = 0; p < np; p++) {
        size_t end = p == np - 1 ? len : len * (size_t)(p + 1) / (size_t)np;
        bufs[p] = buf + off;
        lens[p] = end - off;
        off = end;
    }
    return pb_transport_send(t, msg_type(i), bufs, lens, np);
}

/* The echo protocol; every received message's digest goes to dg[]. *bad is
 * set when a message arrived wrong. */
static pb_status echo(pb_transport *t, int rounds, int window, int die, uint8_t *buf, digest *dg,
                      int *bad)
{
    pb_status st = PB_OK;
    uint64_t sent = 0, got = 0;
    *bad = 0;
    while (got < (uint64_t)rounds) {
        if (t->rank == 0)
            while (sent < (uint64_t)rounds && sent - got < (uint64_t)window) {
                PB_CHECK(send_msg(t, sent, buf));
                sent++;
            }
        pb_msg m;
        PB_CHECK(pb_transport_recv(t, 120, &m));
        dg[got] = digest_of(&m);
        if (!check(&m, got)) {
            fprintf(stderr, "nccl_test: rank %d (%s): message %llu (%zu bytes, type %u) arrived "
                    "wrong\n", t->rank, t->ops->name, (unsigned long long)got, m.len, m.type);
            *bad = 1;
            pb_msg_release(&m);
            return PB_OK;
        }
        if (t->rank == 1)
            st = pb_transport_send1(t, m.type, m.data, m.len);
        pb_msg_release(&m);
        PB_CHECK(st);
        got++;
        if (t->rank == die && got == 40) {
            fflush(NULL);
            raise(SIGKILL);
        }
    }
    return pb_transport_flush(t, 120);
}

static int probe(void)
{
#ifndef PB_HAVE_NCCL
    printf("nccl_test: skipped: this build has no NCCL (no GPU support)\n");
    return 77;
#else
    const char *why = NULL;
    int n = pb_cuda_device_count(&why);
    if (n <= 0) {
        printf("nccl_test: skipped: no CUDA device visible (%s)\n", why ? why : "none");
        return 77;
    }
    printf("nccl_test: %d CUDA device(s)\n", n);
    return 0;
#endif
}

int main(int argc, char **argv)
{
    enum { EXCHANGE, TIMEOUT, DIE } mode = EXCHANGE;
    int rounds = 300, die = -1, same_device = 0, have_mode = 0;
    long inline_max = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--probe"))
            return probe();
        else if (!strcmp(argv[i], "--exchange")) mode = EXCHANGE, have_mode = 1;
        else if (!strcmp(argv[i], "--timeout")) mode = TIMEOUT, have_mode = 1;
        else if (!strcmp(argv[i], "--die") && i + 1 < argc) mode = DIE, have_mode = 1, die = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--inline") && i + 1 < argc) inline_max = atol(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--same-device")) same_device = 1;
        else { fprintf(stderr, "nccl_test: bad argument %s\n", argv[i]); return 2; }
    }
    if (!have_mode || rounds < 60) {
        fprintf(stderr, "nccl_test: give --probe, --exchange, --timeout or --die R (rounds >= 60)\n");
        return 2;
    }
    g_inline = inline_max < 0 ? 0 : inline_max == 0 ? 8192 : (size_t)inline_max;

    pb_bootstrap *b = NULL;
    pb_transport *tcp = NULL, *nc = NULL;
    uint8_t *buf = NULL;
    digest *dg_tcp = NULL, *dg_nc = NULL;
    int rc = 1, bad = 0;
    pb_status st = pb_bootstrap_init(&b);
    if (st != PB_OK) {
        fprintf(stderr, "nccl_test: %s\n", pb_last_error());
        return 1;
    }
    int rank = pb_bootstrap_rank(b), size = pb_bootstrap_size(b);
    if (size != 2) {
        fprintf(stderr, "nccl_test: run me with 2 ranks (world %d)\n", size);
        goto out;
    }
    const char *why = NULL;
    int ndev = pb_cuda_device_count(&why);
    if (ndev <= 0) {
        fprintf(stderr, "nccl_test: no CUDA device (%s)\n", why ? why : "?");
        goto out;
    }
    int device = same_device ? 0 : pb_bootstrap_local_rank(b) % ndev;
    if ((st = pb_malloc(MAX_LEN, &buf)) != PB_OK ||
        (st = pb_calloc((size_t)rounds, sizeof *dg_tcp, &dg_tcp)) != PB_OK ||
        (st = pb_calloc((size_t)rounds, sizeof *dg_nc, &dg_nc)) != PB_OK)
        goto fail;

    pb_nccl_opts no;
    memset(&no, 0, sizeof no);
    no.ctl.timeout_s = 60;
    no.ctl.max_queued = 8;
    no.inline_max = inline_max;

    if (mode == TIMEOUT) {
        if ((st = pb_transport_nccl_create(b, device, &no, &nc)) != PB_OK)
            goto fail;
        pb_msg m;
        double t0 = pb_now();
        st = pb_transport_recv(nc, 2, &m);
        double waited = pb_now() - t0;
        char want[64];
        snprintf(want, sizeof want, "no message from rank %d within 2 s", 1 - rank);
        if (st != PB_ERR_NET || !strstr(pb_last_error(), want) || waited < 1.9 || waited > 30) {
            fprintf(stderr, "nccl_test: rank %d: timeout gave status %d after %.1f s: %s\n", rank,
                    (int)st, waited, pb_last_error());
            pb_msg_release(&m);
            goto out;
        }
        if (pb_transport_send1(nc, 1, "x", 1) != PB_ERR_NET) {
            fprintf(stderr, "nccl_test: rank %d: the transport still sends after a timeout\n", rank);
            goto out;
        }
        /* Both time out before either closes (a closed link would be reported first). */
        if ((st = pb_bootstrap_fence(b, 60)) != PB_OK)
            goto fail;
        printf("rank %d: timeout ok: %s\n", rank, want);
        rc = 0;
        goto out;
    }

    if (mode == EXCHANGE) {
        pb_tcp_opts to = {.timeout_s = 60, .max_queued = 8};
        if ((st = pb_transport_tcp_create(b, &to, &tcp)) != PB_OK)
            goto fail;
        if ((st = echo(tcp, rounds, 6, -1, buf, dg_tcp, &bad)) != PB_OK)
            goto fail;
        if (bad)
            goto out;
    }
    if ((st = pb_transport_nccl_create(b, device, &no, &nc)) != PB_OK)
        goto fail;
    if ((st = echo(nc, rounds, 6, die, buf, dg_nc, &bad)) != PB_OK)
        goto fail;
    if (bad || mode == DIE)
        goto out;

    for (int i = 0; i < rounds; i++)
        if (memcmp(&dg_tcp[i], &dg_nc[i], sizeof dg_tcp[i]) != 0) {
            fprintf(stderr, "nccl_test: rank %d: message %d differs between tcp and nccl\n", rank, i);
            goto out;
        }
    pb_transport_stats a, c;
    pb_transport_get_stats(tcp, &a);
    pb_transport_get_stats(nc, &c);
    if (a.msgs_sent != c.msgs_sent || a.msgs_recv != c.msgs_recv || a.bytes_sent != c.bytes_sent ||
        a.bytes_recv != c.bytes_recv || c.msgs_recv != (uint64_t)rounds) {
        fprintf(stderr, "nccl_test: rank %d: stats differ: tcp %llu/%llu msgs %llu/%llu bytes, "
                "nccl %llu/%llu msgs %llu/%llu bytes\n", rank,
                (unsigned long long)a.msgs_sent, (unsigned long long)a.msgs_recv,
                (unsigned long long)a.bytes_sent, (unsigned long long)a.bytes_recv,
                (unsigned long long)c.msgs_sent, (unsigned long long)c.msgs_recv,
                (unsigned long long)c.bytes_sent, (unsigned long long)c.bytes_recv);
        goto out;
    }
    pb_transport_closing(nc);
    pb_transport_closing(tcp);
    if ((st = pb_bootstrap_fence(b, 60)) != PB_OK)
        goto fail;
    printf("rank %d on device %d: nccl and tcp delivered the same %d messages (%llu bytes sent)\n",
           rank, device, rounds, (unsigned long long)c.bytes_sent);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "nccl_test: rank %d: %s\n", rank, pb_last_error());
    pb_bootstrap_abort(b, st, pb_last_error());
out:
    pb_transport_free(nc);
    pb_transport_free(tcp);
    free(buf);
    free(dg_tcp);
    free(dg_nc);
    pb_bootstrap_free(b);
    return rc;
}
