/* libFuzzer target: the restricted unpickler (data.pkl of a torch zip checkpoint). */
#include "config.h"

#include <stddef.h>
#include <stdint.h>

#include "ckpt/ckpt_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pb_bin_tensor *t = NULL;
    int n = 0;
    if (pb_pickle_load_state_dict("fuzz/data.pkl", data, size, &t, &n) == PB_OK)
        pb_bin_tensors_free(t, n);
    return 0;
}
