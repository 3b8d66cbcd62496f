/* Process bootstrap through PMIx: who am I (rank, world size, local rank,
 * node), a small key-value exchange with timeouts, and job-wide abort.
 *
 * Launched by a PMIx server (mpirun, srun --mpi=pmix) the job's ranks come
 * from PMIx. Alone (PMIx_Init answers "unreachable") the process is a
 * singleton: world size 1, and put/commit/fence are no-ops. Under Slurm with
 * SLURM_NTASKS > 1 (or any other launcher that says there are several tasks)
 * but no PMIx server, init refuses instead of running N copies as rank 0. */
#ifndef PB_NET_BOOTSTRAP_H
#define PB_NET_BOOTSTRAP_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"

typedef struct pb_bootstrap pb_bootstrap;

/* Default seconds a fence or get may take before it fails (PMIX_TIMEOUT). */
#define PB_BOOTSTRAP_TIMEOUT_S 120

pb_status pb_bootstrap_init(pb_bootstrap **out);
/* PMIx_Finalize (when initialised); accepts NULL. */
void pb_bootstrap_free(pb_bootstrap *b);

int pb_bootstrap_rank(const pb_bootstrap *b);
int pb_bootstrap_size(const pb_bootstrap *b);
int pb_bootstrap_local_rank(const pb_bootstrap *b);
int pb_bootstrap_local_size(const pb_bootstrap *b);
const char *pb_bootstrap_node(const pb_bootstrap *b);   /* host name of this rank */
const char *pb_bootstrap_job_id(const pb_bootstrap *b); /* PMIx namespace, "singleton" alone */
bool pb_bootstrap_is_singleton(const pb_bootstrap *b);

/* Publish a value under key (at most 511 bytes of key, any bytes of value)
 * for the other ranks; visible to them after commit + fence. */
pb_status pb_bootstrap_put(pb_bootstrap *b, const char *key, const void *data, size_t len);
pb_status pb_bootstrap_commit(pb_bootstrap *b);
/* Barrier over all ranks that also collects the committed data; fails with
 * PB_ERR_NET after timeout_s seconds (0 = PB_BOOTSTRAP_TIMEOUT_S). */
pb_status pb_bootstrap_fence(pb_bootstrap *b, int timeout_s);
/* Fetch the value rank `rank` put under key; *data is malloc'd (caller frees)
 * and NUL-terminated beyond *len for convenience. Fails after timeout_s. */
pb_status pb_bootstrap_get(pb_bootstrap *b, int rank, const char *key, int timeout_s,
                           void **data, size_t *len);

/* Cores this rank may use without oversubscribing its node: the CPUs of its
 * affinity mask (cgroup cpuset, the launcher's binding), each CPU split
 * equally among the ranks on the same node whose masks hold it. So 2 ranks
 * on a 2-core node get 1 each whether unbound or bound one core each.
 * Collective: every rank calls it (one fence). At least 1. */
pb_status pb_bootstrap_cpu_share(pb_bootstrap *b, int timeout_s, int *cores);

/* Abort every rank of the job (PMIx_Abort), with msg and the exit code of st.
 * Returns only when that is impossible (singleton, or PMIx refused): the
 * caller then returns its status as usual. */
void pb_bootstrap_abort(pb_bootstrap *b, pb_status st, const char *msg);

#endif
