#include "config.h"
#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>

static int g_level = PB_LOG_INFO;
static int g_rank = 0, g_world = 1;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

void pb_log_set_level(int level) { g_level = level; }
int pb_log_level(void) { return g_level; }
void pb_log_set_rank(int rank, int world) { g_rank = rank; g_world = world; }

static void vlog(const char *tag, const char *fmt, va_list ap)
{
    pthread_mutex_lock(&g_lock);
    if (g_world > 1)
        fprintf(stderr, "pippy-batch[rank %d/%d]: %s", g_rank, g_world, tag);
    else
        fprintf(stderr, "pippy-batch: %s", tag);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    fflush(stderr);
    pthread_mutex_unlock(&g_lock);
}

#define PB_DEFINE_LOG(fn, minlevel, tag)          \
    void fn(const char *fmt, ...)                 \
    {                                             \
        if (g_level < (minlevel)) return;         \
        va_list ap;                               \
        va_start(ap, fmt);                        \
        vlog(tag, fmt, ap);                       \
        va_end(ap);                               \
    }

/* errors are shown even with -q */
PB_DEFINE_LOG(pb_log_error, PB_LOG_QUIET, "error: ")
PB_DEFINE_LOG(pb_log_warn, PB_LOG_INFO, "warning: ")
PB_DEFINE_LOG(pb_log_info, PB_LOG_INFO, "")
PB_DEFINE_LOG(pb_log_verbose, PB_LOG_VERBOSE, "")
PB_DEFINE_LOG(pb_log_debug, PB_LOG_DEBUG, "debug: ")
