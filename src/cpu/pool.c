#include "config.h"
#include "cpu/pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <time.h>

#include "common/util.h"

typedef struct worker_arg { pb_pool *p; int index; } worker_arg;

/* How long a thread spins for the next job, or for the others to finish,
 * before it sleeps on a condition variable. A forward pass hands out a job
 * every few tens of microseconds; a futex wake costs about that much again.
 * Spinning is bounded, so an idle pool (between batches, or a rank waiting
 * on its pipeline neighbour) sleeps. */
#define SPIN_NS 200000L
/* After this long of the spin, each turn yields the core instead of pausing
 * on it: where threads outnumber cores (several ranks on one machine) the
 * thread being waited for may need it. */
#define PAUSE_NS 20000L

struct pb_pool {
    int n_workers;
    pthread_t *tid;
    worker_arg *args;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    /* the current job: written by pb_pool_run before it publishes generation */
    pb_pool_fn fn;
    void *ctx;
    int n_items;
    atomic_ulong generation; /* bumped once per job (release); workers wait for a change */
    atomic_int next;         /* next item to take */
    atomic_int busy;         /* workers still inside the current job */
    atomic_int sleepers;     /* workers asleep (or about to be) on cv_work */
    atomic_int waiter;       /* 1 while the caller sleeps on cv_done */
    atomic_bool quit;
};

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

static long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000000000L + ts.tv_nsec;
}

typedef struct spin { int i, yielding; long t0; } spin;

/* One turn of a bounded spin; false once it has lasted SPIN_NS. */
static bool spin_more(spin *s)
{
    if (s->yielding || (++s->i & 63) == 0) {
        const long t = now_ns();
        if (!s->t0)
            s->t0 = t;
        else if (t - s->t0 > SPIN_NS)
            return false;
        else if (t - s->t0 > PAUSE_NS)
            s->yielding = 1;
    }
    if (s->yielding)
        sched_yield();
    else
        cpu_relax();
    return true;
}

static void run_items(pb_pool *p, pb_pool_fn fn, void *ctx, int n, int worker)
{
    for (;;) {
        int i = atomic_fetch_add(&p->next, 1);
        if (i >= n)
            break;
        fn(ctx, i, worker);
    }
}

/* Wait until the generation is no longer seen (or quit): spin, then sleep.
 * The sleeper count and the generation are a Dekker pair with
 * pb_pool_run's store of the generation and its read of the count (both
 * sequentially consistent): either the worker sees the new job before it
 * sleeps, or the caller sees the sleeper and wakes it under the mutex. */
static unsigned long wait_job(pb_pool *p, unsigned long seen)
{
    unsigned long g;
    spin sp = {0};
    do {
        g = atomic_load_explicit(&p->generation, memory_order_acquire);
        if (g != seen || atomic_load_explicit(&p->quit, memory_order_relaxed))
            return g;
    } while (spin_more(&sp));
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->sleepers, 1);
    while ((g = atomic_load(&p->generation)) == seen && !atomic_load(&p->quit))
        pthread_cond_wait(&p->cv_work, &p->mu);
    atomic_fetch_sub(&p->sleepers, 1);
    pthread_mutex_unlock(&p->mu);
    return g;
}

static void *worker(void *arg)
{
    pb_pool *p = ((worker_arg *)arg)->p;
    int index = ((worker_arg *)arg)->index;
    unsigned long seen = 0;
    for (;;) {
        seen = wait_job(p, seen);
        if (atomic_load(&p->quit))
            break;
        run_items(p, p->fn, p->ctx, p->n_items, index);
        /* the last one out wakes the caller if it sleeps (Dekker pair with
         * the caller's store of waiter and its read of busy) */
        if (atomic_fetch_sub(&p->busy, 1) == 1 && atomic_load(&p->waiter)) {
            pthread_mutex_lock(&p->mu);
            pthread_cond_signal(&p->cv_done);
            pthread_mutex_unlock(&p->mu);
        }
    }
    return NULL;
}

pb_status pb_pool_create(int threads, pb_pool **out)
{
    *out = NULL;
    if (threads < 1)
        threads = 1;
    pb_pool *p = calloc(1, sizeof *p);
    if (!p)
        return pb_error(PB_ERR_NOMEM, "out of memory creating a thread pool");
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    atomic_init(&p->generation, 0);
    atomic_init(&p->next, 0);
    atomic_init(&p->busy, 0);
    atomic_init(&p->sleepers, 0);
    atomic_init(&p->waiter, 0);
    atomic_init(&p->quit, false);
    if (threads > 1) {
        p->tid = calloc((size_t)threads - 1, sizeof *p->tid);
        p->args = calloc((size_t)threads - 1, sizeof *p->args);
        if (!p->tid || !p->args) {
            pb_pool_free(p);
            return pb_error(PB_ERR_NOMEM, "out of memory creating a thread pool");
        }
        for (int i = 0; i < threads - 1; i++) {
            p->args[i].p = p;
            p->args[i].index = i + 1;
            if (pthread_create(&p->tid[i], NULL, worker, &p->args[i]) != 0) {
                pb_pool_free(p);
                return pb_error(PB_ERR_INTERNAL, "cannot start compute thread %d of %d", i + 2, threads);
            }
            p->n_workers++;
        }
    }
    *out = p;
    return PB_OK;
}

void pb_pool_free(pb_pool *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->mu);
    atomic_store(&p->quit, true);
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (int i = 0; i < p->n_workers; i++)
        pthread_join(p->tid[i], NULL);
    free(p->tid);
    free(p->args);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    free(p);
}

int pb_pool_threads(const pb_pool *p) { return p->n_workers + 1; }

void pb_pool_run(pb_pool *p, int n_items, pb_pool_fn fn, void *ctx)
{
    if (n_items <= 0)
        return;
    if (p->n_workers == 0 || n_items == 1) {
        for (int i = 0; i < n_items; i++)
            fn(ctx, i, 0);
        return;
    }
    /* no worker is inside a job here (the last pb_pool_run waited for
     * busy == 0), so the job's fields can be written plainly */
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n_items;
    atomic_store(&p->next, 0);
    atomic_store(&p->busy, p->n_workers);
    atomic_fetch_add(&p->generation, 1); /* publishes the job (seq_cst, so also a release) */
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv_work);
        pthread_mutex_unlock(&p->mu);
    }
    run_items(p, fn, ctx, n_items, 0);
    spin sp = {0};
    while (atomic_load_explicit(&p->busy, memory_order_acquire) > 0)
        if (!spin_more(&sp)) {
            pthread_mutex_lock(&p->mu);
            atomic_store(&p->waiter, 1);
            while (atomic_load(&p->busy) > 0)
                pthread_cond_wait(&p->cv_done, &p->mu);
            atomic_store(&p->waiter, 0);
            pthread_mutex_unlock(&p->mu);
            break;
        }
}
