#include "config.h"
#include "cli/commands.h"

pb_status pb_cmd_run(const pb_opts *opts, int *exit_code)
{
    (void)opts;
    *exit_code = 2;
    return pb_error(PB_ERR_NOT_AVAILABLE,
                    "batch generation is not yet available in this build "
                    "(the forward pass and scheduler are still being written)");
}
