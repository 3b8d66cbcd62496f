#include "config.h"
#include "common/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int g_level = PB_LOG_INFO;
static int g_rank = 0, g_world = 1;
static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;

void pb_log_set_level(int level) { g_level = level; }
int pb_log_level(void) { return g_level; }
void pb_log_set_rank(int rank, int world) { g_rank = rank; g_world = world; }

/* One log line goes out in one write(2): stderr is unbuffered, so separate
 * fprintf calls for prefix, message and newline would let the lines of ranks
 * sharing one pipe or file (mpirun, srun) interleave mid-line.  A write of at
 * most PIPE_BUF bytes to a pipe is atomic; longer lines are written whole from
 * one buffer all the same. */
static void vlog(const char *tag, const char *fmt, va_list ap)
{
    char stackbuf[4096], *buf = stackbuf;
    int n0;
    if (g_world > 1)
        n0 = snprintf(stackbuf, sizeof stackbuf, "pippy-batch[rank %d/%d]: %s", g_rank, g_world, tag);
    else
        n0 = snprintf(stackbuf, sizeof stackbuf, "pippy-batch: %s", tag);
    if (n0 < 0 || (size_t)n0 >= sizeof stackbuf) n0 = 0;
    va_list aq;
    va_copy(aq, ap);
    int n1 = vsnprintf(stackbuf + n0, sizeof stackbuf - (size_t)n0, fmt, aq);
    va_end(aq);
    if (n1 < 0) n1 = 0;
    size_t len = (size_t)n0 + (size_t)n1;
    if (len + 1 >= sizeof stackbuf) {
        char *big = malloc(len + 2);
        if (big) {
            memcpy(big, stackbuf, (size_t)n0);
            vsnprintf(big + n0, (size_t)n1 + 1, fmt, ap);
            buf = big;
        } else {
            len = sizeof stackbuf - 2; /* out of memory: the line is cut, not lost */
        }
    }
    buf[len++] = '\n';
    pthread_mutex_lock(&g_lock);
    fflush(stderr);
    for (size_t off = 0; off < len;) {
        ssize_t w = write(STDERR_FILENO, buf + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) break;
        off += (size_t)w;
    }
    pthread_mutex_unlock(&g_lock);
    if (buf != stackbuf) free(buf);
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
