// Device discovery for the CUDA backend.
#include <cuda_runtime.h>

extern "C" {
#include "cuda/cuda.h"
}

extern "C" int pb_cuda_device_count(const char **why)
{
    int n = 0;
    cudaError_t e = cudaGetDeviceCount(&n);
    if (e != cudaSuccess) {
        if (why)
            *why = cudaGetErrorString(e);
        (void)cudaGetLastError(); // clear the sticky error
        return 0;
    }
    if (n == 0 && why)
        *why = "no CUDA device";
    return n;
}
