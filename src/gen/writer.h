/* Output writer: JSONL lines put in any order by sequence number and written
 * in order through a bounded reorder buffer; "-" = stdout; a name ending in
 * ".zst" is written with zstd's streaming API as a series of complete frames
 * (checksums on, worker threads when the library has them), one ended every
 * N records or T seconds, so the file decodes with `zstd -d` at any moment.
 * Files are written to NAME.partial and renamed to NAME when complete.
 *
 * Every frame end is a durable point: the bytes are written and fsynced, then
 * the hook below reports (records, bytes); a later run continues from such a
 * point with pb_writer_resume (--resume). After the first write error the
 * writer refuses every further frame end, so no torn frame is ever reported
 * durable. */
#ifndef PB_GEN_WRITER_H
#define PB_GEN_WRITER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct pb_writer pb_writer;

typedef struct pb_writer_opts {
    int frame_records;     /* end a frame after this many records (>= 1) */
    double frame_seconds;  /* ... or this long after the frame's first record (> 0) */
    int reorder_cap;       /* most records held waiting for an earlier one (>= 1) */
    int zstd_level;        /* 0 = default (3) */
    int zstd_workers;      /* -1 = auto (1 when supported), 0 = none */
} pb_writer_opts;

/* Called at each durable frame end; a failure is returned by the writer call
 * that ended the frame. */
typedef pb_status (*pb_writer_frame_fn)(void *ctx, uint64_t records, uint64_t bytes);
/* Called by pb_writer_resume for each record line of the kept prefix. */
typedef void (*pb_writer_line_fn)(void *ctx, const char *line, size_t len);

/* Refuses (PB_ERR_USAGE) when NAME.partial exists: an interrupted run is
 * continued with --resume, never overwritten silently. */
pb_status pb_writer_open(const char *path, const pb_writer_opts *o, pb_writer **out);
/* Continue NAME.partial after a durable point (records, bytes) reported by an
 * earlier run's hook: checks that the first `bytes` bytes are exactly
 * `records` complete lines (.zst: complete frames, each decoded and its
 * checksum verified), cuts the file there and appends after it. Outputs are
 * then numbered from `records`. PB_ERR_USAGE when the prefix does not check. */
/* Read a complete output file `path` (as written with these options: zstd
 * when its name ends in .zst) and call line_fn for each record line. */
pb_status pb_writer_scan(const char *path, const pb_writer_opts *o, pb_writer_line_fn line_fn,
                         void *line_ctx);
pb_status pb_writer_resume(const char *path, const pb_writer_opts *o, uint64_t records,
                           uint64_t bytes, pb_writer_line_fn line_fn, void *line_ctx,
                           pb_writer **out);
/* fsync the directory holding path (after a rename or unlink in it). */
pb_status pb_writer_sync_dir(const char *path);
void pb_writer_set_frame_hook(pb_writer *w, pb_writer_frame_fn fn, void *ctx);
/* Queue line[0..len) (no newline) as output number seq (0-based, each once). */
pb_status pb_writer_put(pb_writer *w, uint64_t seq, const char *line, size_t len);
/* End the current frame if it is older than frame_seconds. */
pb_status pb_writer_tick(pb_writer *w);
/* Finish: with complete, every record must have been written; ends the last
 * frame, syncs, renames NAME.partial to NAME and syncs the directory. Without
 * complete, ends a frame with what is in order (a durable point) and leaves
 * NAME.partial. Frees w in both cases. */
pb_status pb_writer_close(pb_writer *w, bool complete);
uint64_t pb_writer_records(const pb_writer *w);  /* written in order so far */
uint64_t pb_writer_bytes(const pb_writer *w);    /* bytes written to the file */
bool pb_writer_compressed(const pb_writer *w);
int pb_writer_workers(const pb_writer *w);       /* zstd worker threads in use */

#endif
