/* Streaming line reader for JSONL input: reads fixed-size blocks, hands out
 * one line at a time, never holds more than the longest line. "-" = stdin. */
#ifndef PB_GEN_READER_H
#define PB_GEN_READER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"

typedef struct pb_reader pb_reader;

/* max_line: longest line kept whole; a longer line is returned with
 * *too_long = true and its content cut (the rest is skipped). */
pb_status pb_reader_open(const char *path, size_t max_line, pb_reader **out);
/* Next line without its '\n' (and a '\r' before it), NUL-terminated; valid
 * until the next call. *line = NULL at the end. *line_no is 1-based. A last
 * line without '\n' counts. */
pb_status pb_reader_next(pb_reader *r, const char **line, size_t *len, uint64_t *line_no,
                         bool *too_long);
uint64_t pb_reader_offset(const pb_reader *r); /* bytes consumed so far (lines handed out) */
int64_t pb_reader_size(const pb_reader *r);    /* file size, -1 when not a regular file */
const char *pb_reader_name(const pb_reader *r);
void pb_reader_close(pb_reader *r);

#endif
