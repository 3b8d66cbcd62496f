/* Stop requests: SIGTERM and SIGUSR1 (Slurm's preemption and --signal) and
 * SIGINT set a flag that the driver polls between micro-batches; it then
 * stops admitting prompts, ends the current frame and exits 75 (resumable).
 * A second SIGINT ends the process at once (the default action). Worker
 * ranks install the same handlers so that they keep serving until rank 0
 * ends the pipeline rather than dying first. */
#ifndef PB_GEN_STOP_H
#define PB_GEN_STOP_H

#include <stdbool.h>

#include "common/status.h"

pb_status pb_stop_install(void);
bool pb_stop_requested(void);
int pb_stop_signal(void);          /* the first signal received, 0 if none */
const char *pb_stop_signal_name(void);

#endif
