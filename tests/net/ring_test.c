/* Transport ring check, run under mpirun and srun by the test scripts.
 *   ring_test [--iface NAME] [--ip-family auto|4|6] [--debug] [--rounds N] [--window W]
 *       rank 0 keeps W messages of varying sizes going round the ring; every
 *       rank checks each payload (pattern, size, order) and forwards it.
 *   ring_test --oversize     (2 ranks) rank 1 accepts at most 1 MiB; rank 0
 *       sends 2 MiB: rank 1 must reject the frame, rank 0 must see rank 1 go.
 *   ring_test --die R        rank R kills itself after 50 messages; the others must
 *       report rank R's failure (and pb_transport_tcp_link_down says so) and
 *       abort the job (PMIx_Abort).
 *   ring_test --tag NAME     a first transport stays idle while a second one,
 *       whose bootstrap keys carry NAME, runs the ring (two in one job, as
 *       the NCCL transport's control link beside a TCP one).
 *   ring_test --select G0,G1,..  pb_transport_create with rank r's GPU Gr
 *       (-1: none), printing the transport it chose (PB_TRANSPORT applies). */
#include "config.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "common/util.h"
#include "net/addr.h"
#include "net/bootstrap.h"
#include "net/transport.h"

#define MSG_DATA 7u

/* Payload of message i: a header (i, len) then bytes derived from i. */
static size_t msg_len(uint64_t i) { return 16 + (size_t)((i * 2654435761u) % 300000u); }
static void fill(uint8_t *p, uint64_t i, size_t len)
{
    memcpy(p, &i, 8);
    uint64_t l = len;
    memcpy(p + 8, &l, 8);
    for (size_t k = 16; k < len; k++) p[k] = (uint8_t)((k * 31u) ^ (i * 7u));
}
static int check(const pb_msg *m, uint64_t want)
{
    if (m->type != MSG_DATA || m->len < 16)
        return 0;
    uint64_t i, l;
    memcpy(&i, m->data, 8);
    memcpy(&l, m->data + 8, 8);
    if (i != want || l != m->len || l != msg_len(i))
        return 0;
    for (size_t k = 16; k < m->len; k++)
        if (m->data[k] != (uint8_t)((k * 31u) ^ (i * 7u)))
            return 0;
    return 1;
}

int main(int argc, char **argv)
{
    const char *iface = NULL, *tag = NULL, *select = NULL;
    int rounds = 200, window = 4, die = -1, oversize = 0, family = PB_IP_AUTO;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--iface") && i + 1 < argc) iface = argv[++i];
        else if (!strcmp(argv[i], "--tag") && i + 1 < argc) tag = argv[++i];
        else if (!strcmp(argv[i], "--select") && i + 1 < argc) select = argv[++i];
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--window") && i + 1 < argc) window = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--die") && i + 1 < argc) die = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--oversize")) oversize = 1;
        else if (!strcmp(argv[i], "--debug")) pb_log_set_level(PB_LOG_DEBUG);
        else if (!strcmp(argv[i], "--ip-family") && i + 1 < argc) {
            if (pb_ip_family_parse(argv[++i], &family) != PB_OK) {
                fprintf(stderr, "ring_test: %s\n", pb_last_error());
                return 2;
            }
        }
        else { fprintf(stderr, "ring_test: bad argument %s\n", argv[i]); return 2; }
    }
    pb_bootstrap *b = NULL;
    pb_transport *t = NULL, *idle = NULL;
    uint8_t *buf = NULL;
    pb_status st = pb_bootstrap_init(&b);
    if (st != PB_OK) {
        fprintf(stderr, "ring_test: %s\n", pb_last_error());
        return 1;
    }
    int rank = pb_bootstrap_rank(b), size = pb_bootstrap_size(b), rc = 1;
    pb_tcp_opts o = {.iface = iface, .family = family, .timeout_s = 60, .max_queued = 8};
    if (oversize && rank == 1)
        o.max_msg_bytes = 1 << 20;
    if (tag) {
        if ((st = pb_transport_tcp_create(b, &o, &idle)) != PB_OK)
            goto fail;
        o.tag = tag;
    }
    if (select) {
        int gpu = -1; /* this rank's entry of the list */
        const char *p = select;
        for (int r = 0; r < rank && p; r++)
            if ((p = strchr(p, ',')))
                p++;
        if (p)
            gpu = atoi(p);
        if ((st = pb_transport_create(b, gpu, &o, &t)) != PB_OK)
            goto fail;
        printf("rank %d: transport %s\n", rank, t->ops->name);
    } else if ((st = pb_transport_tcp_create(b, &o, &t)) != PB_OK)
        goto fail;
    if ((st = pb_malloc(1 << 22, &buf)) != PB_OK)
        goto fail;

    if (oversize) {
        if (rank == 0) {
            fill(buf, 1, 2u << 20);
            if ((st = pb_transport_send1(t, MSG_DATA, buf, 2u << 20)) != PB_OK)
                goto fail;
            pb_msg m;
            st = pb_transport_recv(t, 60, &m);
            pb_msg_release(&m);
            if (st == PB_OK) {
                fprintf(stderr, "ring_test: rank 0 got a reply to an oversized message\n");
                goto out;
            }
            printf("rank 0 saw: %s\n", pb_last_error());
        } else {
            pb_msg m;
            st = pb_transport_recv(t, 60, &m);
            pb_msg_release(&m);
            if (st == PB_OK) {
                fprintf(stderr, "ring_test: rank 1 accepted an oversized message\n");
                goto out;
            }
            printf("rank 1 saw: %s\n", pb_last_error());
        }
        rc = 0;
        goto out;
    }

    uint64_t sent = 0, got = 0;
    if (rank == 0) {
        while (got < (uint64_t)rounds) {
            while (sent < (uint64_t)rounds && sent - got < (uint64_t)window) {
                size_t len = msg_len(sent);
                fill(buf, sent, len);
                if ((st = pb_transport_send1(t, MSG_DATA, buf, len)) != PB_OK)
                    goto fail;
                sent++;
            }
            pb_msg m;
            if ((st = pb_transport_recv(t, -1, &m)) != PB_OK)
                goto fail;
            int ok = check(&m, got);
            pb_msg_release(&m);
            if (!ok) {
                fprintf(stderr, "ring_test: rank 0: message %llu came back wrong\n",
                        (unsigned long long)got);
                goto out;
            }
            got++;
        }
    } else {
        for (; got < (uint64_t)rounds; got++) {
            pb_msg m;
            if ((st = pb_transport_recv(t, -1, &m)) != PB_OK)
                goto fail;
            int ok = check(&m, got);
            if (ok)
                st = pb_transport_send1(t, MSG_DATA, m.data, m.len);
            pb_msg_release(&m);
            if (!ok) {
                fprintf(stderr, "ring_test: rank %d: message %llu arrived wrong\n", rank,
                        (unsigned long long)got);
                goto out;
            }
            if (st != PB_OK)
                goto fail;
            if (rank == die && got == 50) {
                fflush(NULL);
                raise(SIGKILL);
            }
        }
    }
    if ((st = pb_transport_flush(t, 60)) != PB_OK)
        goto fail;
    pb_transport_closing(t);
    if ((st = pb_bootstrap_fence(b, 60)) != PB_OK)
        goto fail;
    pb_transport_stats s;
    pb_transport_get_stats(t, &s);
    printf("rank %d of %d: %llu messages round the ring ok, %llu bytes sent\n", rank, size,
           (unsigned long long)got, (unsigned long long)s.bytes_sent);
    rc = 0;
    goto out;
fail:
    fprintf(stderr, "ring_test: rank %d: %s\n", rank, pb_last_error());
    for (int k = 0; t && k < 2; k++) {
        char why[512];
        if (pb_transport_tcp_link_down(t, k == 0, why, sizeof why))
            fprintf(stderr, "ring_test: rank %d: link %s rank %d down: %s\n", rank,
                    k == 0 ? "to" : "from", k == 0 ? t->next : t->prev, why);
    }
    pb_bootstrap_abort(b, st, pb_last_error());
out:
    free(buf);
    pb_transport_free(t);
    pb_transport_free(idle);
    pb_bootstrap_free(b);
    return rc;
}
