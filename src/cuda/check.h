/* Status checks for CUDA runtime, cuBLAS and NCCL calls (CUDA sources only).
 * A failing call returns pb_error(PB_ERR_DEVICE, ...) naming the call, the
 * source line and the current device; the log prefix names the rank. The
 * runtime's sticky last error is cleared (cudaGetLastError), as NCCL's
 * checks.h does, so the next check does not report a stale failure.
 *
 *   PB_CUDA_CHECK(cudaMemcpyAsync(...));     in a function returning pb_status
 *   PB_CUBLAS_CHECK(cublasGemmEx(...));
 *   PB_NCCL_CHECK(ncclSend(...));            (where nccl.h is included first)
 *   PB_CUDA_LAUNCH_CHECK("rmsnorm");         after a <<<...>>> launch */
#ifndef PB_CUDA_CHECK_H
#define PB_CUDA_CHECK_H

#include <cuda_runtime.h>

extern "C" {
#include "common/status.h"
}

static inline int pb_cuda_current_device(void)
{
    int d = -1;
    if (cudaGetDevice(&d) != cudaSuccess) {
        (void)cudaGetLastError();
        d = -1;
    }
    return d;
}

#define PB_CUDA_CHECK(call)                                                                                            \
    do {                                                                                                               \
        cudaError_t e_ = (call);                                                                                       \
        if (e_ != cudaSuccess) {                                                                                       \
            (void)cudaGetLastError();                                                                                  \
            return pb_error(PB_ERR_DEVICE, "CUDA device %d: %s failed at %s:%d: %s (%s)", pb_cuda_current_device(),    \
                            #call, __FILE__, __LINE__, cudaGetErrorString(e_), cudaGetErrorName(e_));                 \
        }                                                                                                              \
    } while (0)

/* after a kernel launch: a bad configuration shows here, a fault at the next sync */
#define PB_CUDA_LAUNCH_CHECK(what)                                                                                     \
    do {                                                                                                               \
        cudaError_t e_ = cudaGetLastError();                                                                           \
        if (e_ != cudaSuccess)                                                                                         \
            return pb_error(PB_ERR_DEVICE, "CUDA device %d: launch of %s failed at %s:%d: %s",                         \
                            pb_cuda_current_device(), (what), __FILE__, __LINE__, cudaGetErrorString(e_));            \
    } while (0)

#ifdef CUBLAS_API_H_
#define PB_CUBLAS_CHECK(call)                                                                                          \
    do {                                                                                                               \
        cublasStatus_t s_ = (call);                                                                                    \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                                                                             \
            (void)cudaGetLastError();                                                                                  \
            return pb_error(PB_ERR_DEVICE, "CUDA device %d: %s failed at %s:%d: %s", pb_cuda_current_device(), #call,  \
                            __FILE__, __LINE__, cublasGetStatusString(s_));                                            \
        }                                                                                                              \
    } while (0)
#endif

#ifdef NCCL_H_
#define PB_NCCL_CHECK(call)                                                                                            \
    do {                                                                                                               \
        ncclResult_t r_ = (call);                                                                                      \
        if (r_ != ncclSuccess) {                                                                                       \
            (void)cudaGetLastError();                                                                                  \
            return pb_error(PB_ERR_DEVICE, "CUDA device %d: %s failed at %s:%d: %s", pb_cuda_current_device(), #call,  \
                            __FILE__, __LINE__, ncclGetErrorString(r_));                                               \
        }                                                                                                              \
    } while (0)
#endif

#endif
