/* Status codes shared by every layer. Library code returns a pb_status and
 * records a human-readable detail with pb_error(); only main() exits. */
#ifndef PB_STATUS_H
#define PB_STATUS_H

#include <stdbool.h>
#include <stddef.h>

typedef enum pb_status {
    PB_OK = 0,
    PB_ERR_USAGE,        /* bad option or value (exit 2) */
    PB_ERR_CONFIG,       /* bad model folder, config.json, checkpoint (exit 2) */
    PB_ERR_INPUT,        /* bad input record (becomes an error record) */
    PB_ERR_IO,           /* read/write/open failure (exit 1) */
    PB_ERR_NOMEM,        /* allocation failed (exit 1) */
    PB_ERR_FORMAT,       /* malformed file: safetensors, pickle, zip, json (exit 2) */
    PB_ERR_UNSUPPORTED,  /* valid but not handled (exit 2) */
    PB_ERR_NET,          /* transport or peer failure (exit 1) */
    PB_ERR_INTERRUPTED,  /* stopped by a signal, resumable (exit 75) */
    PB_ERR_INTERNAL,     /* bug: invariant broken (exit 1) */
    PB_ERR_NOT_AVAILABLE, /* feature not built or not yet implemented (exit 2) */
    PB_ERR_DEVICE        /* a GPU, its driver or a GPU library call failed (exit 1) */
} pb_status;

const char *pb_strerror(pb_status st);

/* Exit code for a status, as the contract says: 2 usage/config, 75 interrupted, else 1. */
int pb_status_exit_code(pb_status st);

/* Record the detail of the last error on this thread (printf-style) and
 * return st, so callers write `return pb_error(PB_ERR_FORMAT, "%s: ...", path);` */
pb_status pb_error(pb_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Prefix the current detail with more context: "<ctx>: <old detail>". */
pb_status pb_error_ctx(pb_status st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* The detail recorded last on this thread ("" if none). */
const char *pb_last_error(void);
void pb_clear_error(void);
/* The last error was already printed (by a rank that aborts the job before
 * returning): main() must not print it again. A new pb_error() clears it. */
void pb_error_mark_shown(void);
bool pb_error_shown(void);

/* Evaluate a pb_status expression; on failure jump to `label` with `st` set. */
#define PB_CHECK_GOTO(expr, st, label) \
    do { (st) = (expr); if ((st) != PB_OK) goto label; } while (0)
#define PB_CHECK(expr) \
    do { pb_status pb_st_ = (expr); if (pb_st_ != PB_OK) return pb_st_; } while (0)

#endif
