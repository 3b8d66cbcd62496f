#include "config.h"
#include "common/status.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char pb_errbuf[2048];
static _Thread_local bool pb_err_shown;

const char *pb_strerror(pb_status st)
{
    switch (st) {
    case PB_OK: return "success";
    case PB_ERR_USAGE: return "usage error";
    case PB_ERR_CONFIG: return "configuration error";
    case PB_ERR_INPUT: return "invalid input";
    case PB_ERR_IO: return "I/O error";
    case PB_ERR_NOMEM: return "out of memory";
    case PB_ERR_FORMAT: return "malformed file";
    case PB_ERR_UNSUPPORTED: return "unsupported";
    case PB_ERR_NET: return "network or peer failure";
    case PB_ERR_INTERRUPTED: return "interrupted";
    case PB_ERR_INTERNAL: return "internal error";
    case PB_ERR_NOT_AVAILABLE: return "not available";
    case PB_ERR_DEVICE: return "device error";
    }
    return "unknown status";
}

int pb_status_exit_code(pb_status st)
{
    switch (st) {
    case PB_OK: return 0;
    case PB_ERR_USAGE: case PB_ERR_CONFIG: case PB_ERR_FORMAT:
    case PB_ERR_UNSUPPORTED: case PB_ERR_NOT_AVAILABLE:
        return 2;
    case PB_ERR_INTERRUPTED: return 75;
    default: return 1;
    }
}

pb_status pb_error(pb_status st, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pb_errbuf, sizeof pb_errbuf, fmt, ap);
    va_end(ap);
    pb_err_shown = false;
    return st;
}

pb_status pb_error_ctx(pb_status st, const char *fmt, ...)
{
    char old[sizeof pb_errbuf], ctx[512];
    va_list ap;
    memcpy(old, pb_errbuf, sizeof old);
    va_start(ap, fmt);
    vsnprintf(ctx, sizeof ctx, fmt, ap);
    va_end(ap);
    if (old[0])
        snprintf(pb_errbuf, sizeof pb_errbuf, "%s: %s", ctx, old);
    else
        snprintf(pb_errbuf, sizeof pb_errbuf, "%s", ctx);
    pb_err_shown = false;
    return st;
}

const char *pb_last_error(void) { return pb_errbuf; }
void pb_clear_error(void)
{
    pb_errbuf[0] = '\0';
    pb_err_shown = false;
}
void pb_error_mark_shown(void) { pb_err_shown = true; }
bool pb_error_shown(void) { return pb_err_shown; }
