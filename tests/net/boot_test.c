/* Bootstrap check, run alone and under launchers by boot.sh: every rank
 * publishes a value, fences, and reads every other rank's value back. */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/bootstrap.h"

int main(void)
{
    pb_bootstrap *b = NULL;
    pb_status st = pb_bootstrap_init(&b);
    if (st != PB_OK) {
        fprintf(stderr, "boot_test: %s\n", pb_last_error());
        return pb_status_exit_code(st);
    }
    int rank = pb_bootstrap_rank(b), size = pb_bootstrap_size(b);
    int rc = 1;
    if (rank < 0 || rank >= size || pb_bootstrap_local_rank(b) < 0 ||
        pb_bootstrap_local_rank(b) >= pb_bootstrap_local_size(b) || !pb_bootstrap_node(b)[0]) {
        fprintf(stderr, "boot_test: inconsistent identity\n");
        goto out;
    }
    char mine[64];
    snprintf(mine, sizeof mine, "value-of-%d-of-%d", rank, size);
    if ((st = pb_bootstrap_put(b, "pb.test.v", mine, strlen(mine))) != PB_OK ||
        (st = pb_bootstrap_commit(b)) != PB_OK || (st = pb_bootstrap_fence(b, 60)) != PB_OK) {
        fprintf(stderr, "boot_test: %s\n", pb_last_error());
        goto out;
    }
    if (size > 1) {
        for (int r = 0; r < size; r++) {
            void *data = NULL;
            size_t len = 0;
            char want[64];
            snprintf(want, sizeof want, "value-of-%d-of-%d", r, size);
            if ((st = pb_bootstrap_get(b, r, "pb.test.v", 30, &data, &len)) != PB_OK) {
                fprintf(stderr, "boot_test: %s\n", pb_last_error());
                goto out;
            }
            int same = len == strlen(want) && memcmp(data, want, len) == 0;
            free(data);
            if (!same) {
                fprintf(stderr, "boot_test: rank %d read a wrong value for rank %d\n", rank, r);
                goto out;
            }
        }
        /* A key nobody put must fail (in time), not hang. */
        void *data = NULL;
        size_t len = 0;
        if (pb_bootstrap_get(b, (rank + 1) % size, "pb.test.absent", 5, &data, &len) == PB_OK) {
            free(data);
            fprintf(stderr, "boot_test: get of an absent key succeeded\n");
            goto out;
        }
    } else if (!pb_bootstrap_is_singleton(b)) {
        /* a PMIx job of one is fine too */
    }
    if ((st = pb_bootstrap_fence(b, 60)) != PB_OK) {
        fprintf(stderr, "boot_test: %s\n", pb_last_error());
        goto out;
    }
    printf("rank %d of %d local %d/%d node %s singleton %d ok\n", rank, size,
           pb_bootstrap_local_rank(b), pb_bootstrap_local_size(b), pb_bootstrap_node(b),
           (int)pb_bootstrap_is_singleton(b));
    fflush(stdout);
    rc = 0;
out:
    pb_bootstrap_free(b);
    return rc;
}
