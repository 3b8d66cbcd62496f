/* Stop requests (see stop.h). */
#include "config.h"
#include "gen/stop.h"

#include <errno.h>
#include <signal.h>
#include <string.h>

static volatile sig_atomic_t stop_sig;

static void on_signal(int sig)
{
    if (!stop_sig)
        stop_sig = sig;
}

pb_status pb_stop_install(void)
{
    static const int sigs[] = {SIGTERM, SIGUSR1, SIGINT};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigemptyset(&sa.sa_mask);
        /* blocking calls restart; the driver looks at the flag between micro-batches */
        sa.sa_flags = SA_RESTART | (sigs[i] == SIGINT ? SA_RESETHAND : 0);
        if (sigaction(sigs[i], &sa, NULL) != 0)
            return pb_error(PB_ERR_INTERNAL, "sigaction: %s", strerror(errno));
    }
    return PB_OK;
}

bool pb_stop_requested(void) { return stop_sig != 0; }
int pb_stop_signal(void) { return (int)stop_sig; }

const char *pb_stop_signal_name(void)
{
    switch (stop_sig) {
    case SIGTERM: return "SIGTERM";
    case SIGUSR1: return "SIGUSR1";
    case SIGINT: return "SIGINT";
    default: return "no signal";
    }
}
