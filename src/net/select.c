/* Which transport a job's ranks use: NCCL when every rank is on a GPU and
 * the build has NCCL, TCP otherwise; PB_TRANSPORT (as rank 0 sees it)
 * forces one. Every rank publishes its GPU and PB_TRANSPORT, so all of them
 * decide alike; the TCP links are made in any case (NCCL's control link). */
#include "config.h"
#include "net/transport.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "net/bootstrap.h"

#define SEL_KEY "pb.transport"

/* Rank r's published choice "G M" (its GPU, -1 none; its PB_TRANSPORT mode). */
static pb_status choice_of(pb_bootstrap *b, int r, int timeout_s, int *g, int *m)
{
    void *v = NULL;
    size_t n = 0;
    PB_CHECK(pb_bootstrap_get(b, r, SEL_KEY, timeout_s, &v, &n));
    const int ok = sscanf((const char *)v, "%d %d", g, m) == 2 && *g >= -1 && *m >= -1 && *m <= 2;
    free(v);
    return ok ? PB_OK : pb_error(PB_ERR_NET, "rank %d published a malformed transport choice", r);
}

pb_status pb_transport_all_gpu(pb_bootstrap *b, bool *all)
{
    *all = true;
    for (int r = 0; r < pb_bootstrap_size(b); r++) {
        int g = -1, m = 0;
        PB_CHECK(choice_of(b, r, 0, &g, &m));
        *all = *all && g >= 0;
    }
    return PB_OK;
}

/* "auto" | "tcp" | "nccl"; anything else is refused (by rank 0, named). */
static pb_status mode_of(const char *v, int *mode)
{
    if (!v || !*v || !strcmp(v, "auto"))
        *mode = 0;
    else if (!strcmp(v, "tcp"))
        *mode = 1;
    else if (!strcmp(v, "nccl"))
        *mode = 2;
    else
        return pb_error(PB_ERR_USAGE, "PB_TRANSPORT=%s: expected auto, tcp or nccl", v);
    return PB_OK;
}

pb_status pb_transport_create(pb_bootstrap *b, int gpu, const pb_tcp_opts *tcp,
                              pb_transport **out)
{
    *out = NULL;
    int rank = pb_bootstrap_rank(b), size = pb_bootstrap_size(b);
    if (size < 2)
        return pb_error(PB_ERR_INTERNAL, "a transport needs at least 2 ranks (world %d)", size);
    int mode = 0;
    const char *env = getenv("PB_TRANSPORT");
    pb_status bad = mode_of(env, &mode);
    if (bad != PB_OK)
        mode = -1;
    /* "G M": this rank's GPU (-1 none) and its PB_TRANSPORT (-1 invalid); rank 0's
     * counts. Published by the TCP setup's own commit and fence: the links are
     * made first, so that every rank listens before it waits for the others. */
    char mine[32];
    snprintf(mine, sizeof mine, "%d %d", gpu < 0 ? -1 : gpu, mode);
    PB_CHECK(pb_bootstrap_put(b, SEL_KEY, mine, strlen(mine)));
    pb_transport *t = NULL;
    PB_CHECK(pb_transport_tcp_create(b, tcp, &t));
    int timeout_s = tcp && tcp->timeout_s > 0 ? tcp->timeout_s : 0;
    int no_gpu = -1; /* the first rank without a GPU */
    pb_status st = PB_OK;
    for (int r = 0; r < size && st == PB_OK; r++) {
        int g = -1, m = 0;
        st = choice_of(b, r, timeout_s, &g, &m);
        if (st != PB_OK)
            break;
        if (g < 0 && no_gpu < 0)
            no_gpu = r;
        if (r == 0)
            mode = m;
    }
    if (st == PB_OK && mode < 0)
        st = rank == 0 ? pb_error(PB_ERR_USAGE, "PB_TRANSPORT=%s: expected auto, tcp or nccl", env)
                       : pb_error(PB_ERR_USAGE, "rank 0 refused its PB_TRANSPORT");
#ifdef PB_HAVE_NCCL
    bool built = true;
#else
    bool built = false;
#endif
    bool nccl = mode == 2 || (mode == 0 && built && no_gpu < 0);
    if (st == PB_OK && nccl && no_gpu >= 0)
        st = pb_error(PB_ERR_USAGE, "PB_TRANSPORT=nccl: rank %d has no GPU (--device)", no_gpu);
    if (st != PB_OK) {
        pb_transport_free(t);
        return st;
    }
    if (bad != PB_OK)
        pb_log_warn("PB_TRANSPORT=%s ignored: rank 0's setting counts", env);
    if (!nccl) {
        pb_log_verbose("transport: tcp%s", mode == 1 ? " (PB_TRANSPORT)" : "");
        *out = t;
        return PB_OK;
    }
    pb_nccl_opts o;
    memset(&o, 0, sizeof o);
    if (tcp)
        o.ctl = *tcp;
    pb_log_verbose("transport: nccl on GPU %d%s", gpu, mode == 2 ? " (PB_TRANSPORT)" : "");
    return pb_transport_nccl_create_over(b, gpu, t, &o, out);
}
