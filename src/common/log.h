/* Logging to stderr, prefixed with the program name and, in multi-rank runs, the rank. */
#ifndef PB_LOG_H
#define PB_LOG_H

enum { PB_LOG_QUIET = 0, PB_LOG_INFO = 1, PB_LOG_VERBOSE = 2, PB_LOG_DEBUG = 3 };

void pb_log_set_level(int level);
int pb_log_level(void);
/* Rank prefix "[rank R/W] " shown when world > 1. */
void pb_log_set_rank(int rank, int world);

void pb_log_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void pb_log_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void pb_log_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void pb_log_verbose(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void pb_log_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
