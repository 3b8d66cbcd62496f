#include "config.h"
#include "cli/commands.h"

pb_status pb_cmd_tokenize(const pb_opts *opts)
{
    (void)opts;
    return pb_error(PB_ERR_NOT_AVAILABLE, "'tokenize' is not yet available in this build");
}

pb_status pb_cmd_detokenize(const pb_opts *opts)
{
    (void)opts;
    return pb_error(PB_ERR_NOT_AVAILABLE, "'detokenize' is not yet available in this build");
}
