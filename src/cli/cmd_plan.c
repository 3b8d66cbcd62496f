#include "config.h"
#include "cli/commands.h"

pb_status pb_cmd_plan(const pb_opts *opts)
{
    (void)opts;
    return pb_error(PB_ERR_NOT_AVAILABLE, "'plan' is not yet available in this build");
}
