/* Without CUDA in the build, there are no devices. */
#include "config.h"
#include "cuda/cuda.h"

#ifndef PB_HAVE_CUDA
int pb_cuda_device_count(const char **why)
{
    if (why)
        *why = "this build has no CUDA support";
    return 0;
}
#else
typedef int pb_cuda_stub_unused; /* ISO C forbids an empty translation unit */
#endif
