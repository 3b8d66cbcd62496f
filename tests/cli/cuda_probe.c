/* GPU presence: exits 77 (skip) where no CUDA device is usable, as on CI. */
#include "config.h"

#include <stdio.h>

#include "cuda/cuda.h"

int main(void)
{
    const char *why = NULL;
    int n = pb_cuda_device_count(&why);
    if (n <= 0) {
        printf("SKIP: no CUDA device (%s)\n", why ? why : "unknown");
        return 77;
    }
    printf("%d CUDA device(s)\n", n);
    return 0;
}
