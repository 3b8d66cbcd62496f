/* Test helper for the writer: writer_tool OUT FRAME_RECORDS REORDER [STOP_AFTER]
 * reads "SEQ<TAB>LINE" from stdin and puts each line as output SEQ. With
 * STOP_AFTER, exits after that many input lines without closing (as a crash
 * would: the .partial stays). Prints the frame ends it saw on stderr. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/status.h"
#include "gen/writer.h"

static pb_status on_frame(void *ctx, uint64_t records, uint64_t bytes)
{
    (void)ctx;
    (void)bytes;
    fprintf(stderr, "frame %llu\n", (unsigned long long)records);
    return PB_OK;
}

int main(int argc, char **argv)
{
    if (argc < 4)
        return 2;
    pb_writer_opts o = {.frame_records = atoi(argv[2]), .frame_seconds = 3600,
                        .reorder_cap = atoi(argv[3]), .zstd_level = 0, .zstd_workers = -1};
    long stop_after = argc > 4 ? atol(argv[4]) : -1;
    pb_writer *w;
    pb_status st = pb_writer_open(argv[1], &o, &w);
    if (st != PB_OK) {
        fprintf(stderr, "writer_tool: %s\n", pb_last_error());
        return pb_status_exit_code(st);
    }
    pb_writer_set_frame_hook(w, on_frame, NULL);
    static char line[1 << 16];
    long n = 0;
    while (fgets(line, sizeof line, stdin)) {
        char *tab = strchr(line, '\t');
        if (!tab)
            return 2;
        size_t len = strlen(tab + 1);
        if (len && tab[len] == '\n')
            len--;
        st = pb_writer_put(w, strtoull(line, NULL, 10), tab + 1, len);
        if (st != PB_OK) {
            fprintf(stderr, "writer_tool: %s\n", pb_last_error());
            (void)pb_writer_close(w, false);
            return 1;
        }
        if (++n == stop_after)
            _Exit(9); /* leave the .partial as a crash would */
    }
    st = pb_writer_close(w, true);
    if (st != PB_OK) {
        fprintf(stderr, "writer_tool: %s\n", pb_last_error());
        return 1;
    }
    return 0;
}
