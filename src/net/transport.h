/* Transport between pipeline stages: a table of operations behind an opaque
 * handle (TCP for CPU ranks; NCCL comes with the CUDA backend).
 *
 * Topology: a ring. Rank r sends only to next = (r + 1) % size and receives
 * only from prev = (r - 1 + size) % size, each over its own link, which is
 * all a pipeline needs (stage r -> r + 1, last stage -> rank 0).
 *
 * Messages are framed and validated on arrival (magic, type, per-link
 * sequence number, size limit): a malformed frame breaks the link with an
 * error naming the peer rank, never reaches the caller. Sending copies the
 * message into a queue that a progress thread writes while the caller
 * computes; a receiving thread reads ahead, so communication overlaps
 * compute. A peer that dies (connection reset or closed) is detected by
 * those threads at once: the next send or recv fails, naming that rank. */
#ifndef PB_NET_TRANSPORT_H
#define PB_NET_TRANSPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct pb_bootstrap pb_bootstrap;

/* One received message: type and payload (malloc'd, owned by the caller
 * after recv: release with pb_msg_release). */
typedef struct pb_msg {
    uint32_t type;   /* >= 1, chosen by the layer above */
    uint8_t *data;
    size_t len;
} pb_msg;
void pb_msg_release(pb_msg *m);

/* Counters of one transport (this rank's view). */
typedef struct pb_transport_stats {
    uint64_t bytes_sent, bytes_recv;  /* payload + framing */
    uint64_t msgs_sent, msgs_recv;
    double recv_wait_seconds;         /* time callers spent blocked in recv */
    double send_wait_seconds;         /* time callers spent blocked on a full send queue */
} pb_transport_stats;

typedef struct pb_transport pb_transport;

typedef struct pb_transport_ops {
    const char *name;
    /* Queue one message made of nbufs pieces (copied before returning) to
     * the next rank. Blocks only while the send queue is full. */
    pb_status (*send)(pb_transport *t, uint32_t type, const void *const *bufs,
                      const size_t *lens, int nbufs);
    /* Next message from the previous rank; timeout_s < 0 waits for ever.
     * PB_ERR_NET on timeout or broken link. */
    pb_status (*recv)(pb_transport *t, double timeout_s, pb_msg *out);
    /* Wait until every queued message has been handed to the network. */
    pb_status (*flush)(pb_transport *t, double timeout_s);
    /* From now on the peers may close their links: a hang-up seen on the
     * send link is the orderly end, not a failure. */
    void (*closing)(pb_transport *t);
    void (*get_stats)(pb_transport *t, pb_transport_stats *out);
    void (*destroy)(pb_transport *t);
} pb_transport_ops;

struct pb_transport {
    const pb_transport_ops *ops;
    int rank, size;  /* this rank and the world */
    int next, prev;  /* ring neighbours */
};

/* Generic front-ends. */
pb_status pb_transport_send(pb_transport *t, uint32_t type, const void *const *bufs,
                            const size_t *lens, int nbufs);
/* For implementations: a queued message, and a FIFO of them that its user
 * guards with its own lock. n is the user's count: pb_msgq_push adds one,
 * pb_msgq_pop takes one off, pb_msgq_take leaves it (a send queue counts the
 * message being written until it is written). */
typedef struct pb_qmsg {
    struct pb_qmsg *next;
    uint32_t type;
    size_t len;
    uint8_t *data;
} pb_qmsg;
typedef struct pb_msgq {
    pb_qmsg *head, *tail;
    int n;
} pb_msgq;
/* A message of nbufs pieces checked (type != 0, total within max_msg;
 * errors name `who`) and copied into one new queued message *out. */
pb_status pb_qmsg_gather(const char *who, uint32_t type, const void *const *bufs, const size_t *lens, int nbufs,
                         size_t max_msg, pb_qmsg **out);
/* a message of len bytes (data uninitialized, NULL when len is 0), NULL when out of memory */
pb_qmsg *pb_qmsg_alloc(uint32_t type, size_t len);
void pb_qmsg_free(pb_qmsg *m);
void pb_msgq_push(pb_msgq *q, pb_qmsg *m);
/* the first message off the queue, NULL when it is empty; n unchanged */
pb_qmsg *pb_msgq_take(pb_msgq *q);
/* the first message (the queue is not empty) handed to *out, n - 1 */
void pb_msgq_pop(pb_msgq *q, pb_msg *out);
/* frees every queued message, n less their count */
void pb_msgq_drop(pb_msgq *q);
pb_status pb_transport_send1(pb_transport *t, uint32_t type, const void *buf, size_t len);
pb_status pb_transport_recv(pb_transport *t, double timeout_s, pb_msg *out);
pb_status pb_transport_flush(pb_transport *t, double timeout_s);
void pb_transport_closing(pb_transport *t);
void pb_transport_get_stats(pb_transport *t, pb_transport_stats *out);
void pb_transport_free(pb_transport *t); /* NULL-safe */

/* TCP: listen on a routable address, IPv4 or IPv6 (or that of `iface`:
 * net/addr.h's pb_net_pick),
 * publish the endpoint through the bootstrap (put/commit/fence/get, all with
 * timeouts), connect to the next rank and accept the previous one; each
 * link proves that both ends know the job's secret, which rank 0 draws and
 * shares through PMIx (handshake.h). Peers on the same host (same host
 * name and boot id) are reached over loopback. max_msg_bytes bounds every
 * payload accepted from the network. Needs a world of at least 2. */
typedef struct pb_tcp_opts {
    const char *iface;      /* NULL = any routable address */
    int family;             /* PB_IP_AUTO (0), PB_IP_4 or PB_IP_6 (net/addr.h) */
    size_t max_msg_bytes;   /* 0 = 1 GiB */
    int timeout_s;          /* endpoint exchange and connection setup; 0 = 120 */
    int max_queued;         /* messages queued per direction; 0 = 64 */
    const char *tag;        /* names this transport's bootstrap keys when a job makes
                             * several (letters, digits, '_'; at most 32); NULL = none */
} pb_tcp_opts;

pb_status pb_transport_tcp_create(pb_bootstrap *b, const pb_tcp_opts *opts, pb_transport **out);

/* Whether a TCP transport's link to the next rank (to_next) or from the
 * previous rank is down (the peer hung up, died or broke the protocol), with
 * the reason naming the rank in why. For transports that use a TCP link for
 * control; false for any other transport. */
bool pb_transport_tcp_link_down(pb_transport *t, bool to_next, char *why, size_t cap);

/* NCCL (src/cuda/transport_nccl.cu, built when configure finds NCCL): the
 * payloads travel GPU to GPU through NCCL, one two-rank communicator per
 * link (rank r -> r + 1), whose unique id the sending rank draws and shares
 * through PMIx. A TCP control link beside it (pb_tcp_opts: address, job
 * secret) carries each message's type and size, small messages whole, and
 * notices at once a peer that dies, which NCCL alone may never report.
 * `device` is this rank's CUDA device (local rank % visible devices). Two
 * ranks on one GPU work too (over NCCL's sockets: NCCL refuses to share a
 * device otherwise). Needs a world of at least 2; without NCCL in the build
 * it returns PB_ERR_NOT_AVAILABLE. A recv timeout breaks the transport (its
 * communicators are aborted): callers treat it as the end of the job. */
typedef struct pb_nccl_opts {
    pb_tcp_opts ctl;   /* the control link; ctl.max_msg_bytes (0 = 1 GiB) bounds every
                        * payload, ctl.timeout_s (0 = 120) the setup, ctl.max_queued (0 = 64)
                        * the messages queued per direction */
    long inline_max;   /* payloads of at most this many bytes go whole on the control
                        * link; 0 = 8192, < 0 = none (every payload through NCCL) */
} pb_nccl_opts;

pb_status pb_transport_nccl_create(pb_bootstrap *b, int device, const pb_nccl_opts *opts,
                                   pb_transport **out);
/* The same over an existing TCP transport made with opts->ctl, which becomes
 * the control link: owned from the call on (freed with the NCCL transport,
 * or at once on failure). */
pb_status pb_transport_nccl_create_over(pb_bootstrap *b, int device, pb_transport *ctl,
                                        const pb_nccl_opts *opts, pb_transport **out);

/* The job's transport (collective). gpu: this rank's CUDA device, or -1 on
 * the CPU. NCCL when every rank has a GPU and the build has NCCL, else TCP;
 * the environment variable PB_TRANSPORT=auto|tcp|nccl of rank 0 forces one
 * (nccl with a rank on the CPU is refused, naming it). The TCP links come
 * first (each rank listens before any fence) and carry NCCL's control. */
pb_status pb_transport_create(pb_bootstrap *b, int gpu, const pb_tcp_opts *tcp,
                              pb_transport **out);
/* After pb_transport_create: whether every rank of the job is on a GPU (as
 * each published it for the transport's choice; no fence of its own). */
pb_status pb_transport_all_gpu(pb_bootstrap *b, bool *all);

#endif
