/* A small fixed thread pool: pb_pool_run(p, n, fn, ctx) calls fn(ctx, i, worker) for
 * i in [0, n) on the workers and the calling thread, and returns when all are
 * done. Items are taken in order from a shared counter; each item must write
 * only its own outputs, so results do not depend on the schedule. */
#ifndef PB_CPU_POOL_H
#define PB_CPU_POOL_H

#include "common/status.h"

typedef struct pb_pool pb_pool;
/* worker: 0 for the calling thread, 1 .. threads-1 for the pool's workers. */
typedef void (*pb_pool_fn)(void *ctx, int item, int worker);

pb_status pb_pool_create(int threads, pb_pool **out); /* threads - 1 workers */
void pb_pool_free(pb_pool *p);
int pb_pool_threads(const pb_pool *p);
void pb_pool_run(pb_pool *p, int n_items, pb_pool_fn fn, void *ctx);

#endif
