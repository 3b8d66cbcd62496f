/* Subcommands of pippy-batch. Each returns a status; main() maps it to the
 * exit code (for the run command, 3 = finished with error records, see cmd_run.c). */
#ifndef PB_CLI_COMMANDS_H
#define PB_CLI_COMMANDS_H

#include "cli/opts.h"

/* Batch generation. *exit_code receives 0, 3 (some error records) or 75. */
pb_status pb_cmd_run(const pb_opts *opts, int *exit_code);
pb_status pb_cmd_plan(const pb_opts *opts);
pb_status pb_cmd_tokenize(const pb_opts *opts);
pb_status pb_cmd_detokenize(const pb_opts *opts);
pb_status pb_cmd_render(const pb_opts *opts);

#endif
