/* pippy-batch: the command-line entry point. Parses options, dispatches to a
 * command, and maps its status to the exit code (the only place that exits). */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/commands.h"
#include "cli/opts.h"
#include "common/log.h"
#include "common/util.h"

int main(int argc, char **argv)
{
    pb_opts opts;
    pb_status st = pb_opts_parse(argc, argv, &opts);
    if (st != PB_OK) {
        fprintf(stderr, "pippy-batch: %s\n", pb_last_error());
        return pb_status_exit_code(st);
    }
    pb_log_set_level(opts.verbosity);
    int code = 0;
    switch (opts.cmd) {
    case PB_CMD_HELP:
        pb_opts_print_help(stdout);
        return 0;
    case PB_CMD_VERSION:
        pb_opts_print_version(stdout);
        return 0;
    case PB_CMD_PLAN: st = pb_cmd_plan(&opts); break;
    case PB_CMD_TOKENIZE: st = pb_cmd_tokenize(&opts); break;
    case PB_CMD_DETOKENIZE: st = pb_cmd_detokenize(&opts); break;
    case PB_CMD_RENDER: st = pb_cmd_render(&opts); break;
    case PB_CMD_RUN: st = pb_cmd_run(&opts, &code); break;
    }
    if (st != PB_OK) {
        if (!pb_error_shown())
            pb_log_error("%s", pb_last_error()[0] ? pb_last_error() : pb_strerror(st));
        return pb_status_exit_code(st);
    }
    return code;
}
