// Device discovery for the CUDA backend.
#include <cstdio>

#include <cuda_runtime.h>

extern "C" {
#include "cuda/cuda.h"
}
#include "cuda/check.h"

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

extern "C" pb_status pb_cuda_mem_info(int device, uint64_t *free_bytes, uint64_t *total_bytes)
{
    *free_bytes = *total_bytes = 0;
    int prev = -1;
    PB_CUDA_CHECK(cudaGetDevice(&prev));
    PB_CUDA_CHECK(cudaSetDevice(device));
    size_t f = 0, t = 0;
    cudaError_t e = cudaMemGetInfo(&f, &t);
    (void)cudaSetDevice(prev);
    PB_CUDA_CHECK(e);
    *free_bytes = f;
    *total_bytes = t;
    return PB_OK;
}

extern "C" pb_status pb_cuda_device_info(int device, char *name, size_t cap, uint64_t *free_bytes,
                                         uint64_t *total_bytes)
{
    if (cap)
        name[0] = '\0';
    *free_bytes = *total_bytes = 0;
    PB_CUDA_CHECK(cudaSetDevice(device));
    cudaDeviceProp p;
    PB_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
    if (cap)
        snprintf(name, cap, "%s", p.name);
    size_t f = 0, t = 0;
    PB_CUDA_CHECK(cudaMemGetInfo(&f, &t));
    *free_bytes = f;
    *total_bytes = t;
    return PB_OK;
}
