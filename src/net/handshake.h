/* Connection setup between ring neighbours (internal to the TCP transport).
 *
 * Knowing the job id is not enough to join a pipeline: anyone on a cluster
 * can read it. Rank 0 draws a random secret and shares it through PMIx, which
 * only the job's own processes can read; every connection then proves, in
 * both directions, that each end knows it, without the secret going on the
 * wire (challenge and response, HMAC-SHA512-256 from libsodium):
 *
 *   connector -> acceptor  HELLO 64 B: "PBH2", version, world, src rank,
 *                          dst rank, job-id hash, nonce_c[32]
 *   acceptor -> connector  CHAL 72 B:  "PBCH", 0, nonce_a[32],
 *                          HMAC(secret, "accept" label | HELLO | nonce_a)
 *   connector -> acceptor  RESP 40 B:  "PBRS", 0,
 *                          HMAC(secret, "connect" label | HELLO | nonce_a)
 *   acceptor -> connector  OK 8 B:     "PBOK", 0
 *
 * Both nonces are fresh per connection, so an answer recorded from another
 * connection is worth nothing; the two labels differ, so one side's proof
 * cannot be reflected back as the other's. A connection that fails any step
 * is logged and dropped, and the rank keeps waiting for its real peer until
 * the deadline. Several connections are handled at once, so a stranger that
 * connects and stays silent cannot block the real peer. */
#ifndef PB_NET_HANDSHAKE_H
#define PB_NET_HANDSHAKE_H

#include <netinet/in.h>
#include <stdint.h>

#include "common/status.h"
#include "net/addr.h"

#define PB_HS_SECRET_BYTES 32

typedef struct pb_hs_cfg {
    int rank, world, next, prev;
    uint64_t job;                      /* hash of the job id: tells other jobs apart early */
    const uint8_t *secret;             /* PB_HS_SECRET_BYTES shared by the job's ranks */
    const char *next_host, *prev_host; /* for messages */
    pb_netaddr next_addr;              /* where the next rank listens (IPv4 or IPv6, port set) */
    int listen_fd;                     /* listening socket the previous rank connects to */
    double deadline;                   /* pb_now() time by which both links must be up */
} pb_hs_cfg;

/* Fill secret with PB_HS_SECRET_BYTES from getrandom(2). */
pb_status pb_hs_new_secret(uint8_t *secret);

/* Connect to the next rank and accept the previous one, both proven; the
 * two sockets are returned blocking. Fails with PB_ERR_NET at the deadline. */
pb_status pb_hs_connect_ring(const pb_hs_cfg *cfg, int *send_fd, int *recv_fd);

#endif
