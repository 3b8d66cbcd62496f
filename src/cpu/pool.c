#include "config.h"
#include "cpu/pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>

#include "common/util.h"

typedef struct worker_arg { pb_pool *p; int index; } worker_arg;

struct pb_pool {
    int n_workers;
    pthread_t *tid;
    worker_arg *args;
    pthread_mutex_t mu;
    pthread_cond_t cv_work, cv_done;
    /* current job, guarded by mu except the item counter */
    unsigned long generation;
    pb_pool_fn fn;
    void *ctx;
    int n_items;
    atomic_int next;
    int busy;      /* workers still inside the current job */
    bool quit;
};

static void run_items(pb_pool *p, pb_pool_fn fn, void *ctx, int n, int worker)
{
    for (;;) {
        int i = atomic_fetch_add(&p->next, 1);
        if (i >= n)
            break;
        fn(ctx, i, worker);
    }
}

static void *worker(void *arg)
{
    pb_pool *p = ((worker_arg *)arg)->p;
    int index = ((worker_arg *)arg)->index;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (!p->quit && p->generation == seen)
            pthread_cond_wait(&p->cv_work, &p->mu);
        if (p->quit)
            break;
        seen = p->generation;
        pb_pool_fn fn = p->fn;
        void *ctx = p->ctx;
        int n = p->n_items;
        pthread_mutex_unlock(&p->mu);
        run_items(p, fn, ctx, n, index);
        pthread_mutex_lock(&p->mu);
        if (--p->busy == 0)
            pthread_cond_signal(&p->cv_done);
    }
    pthread_mutex_unlock(&p->mu);
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
    atomic_init(&p->next, 0);
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
    p->quit = true;
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
    pthread_mutex_lock(&p->mu);
    p->fn = fn;
    p->ctx = ctx;
    p->n_items = n_items;
    atomic_store(&p->next, 0);
    p->busy = p->n_workers;
    p->generation++;
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    run_items(p, fn, ctx, n_items, 0);
    pthread_mutex_lock(&p->mu);
    while (p->busy > 0)
        pthread_cond_wait(&p->cv_done, &p->mu);
    pthread_mutex_unlock(&p->mu);
}
