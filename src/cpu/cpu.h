/* The CPU backend: BLAS GEMM (through cblas_sgemm in fixed blocks of rows,
 * see cpu.c) and threaded kernels. It is the reference the CUDA backend is
 * checked against.
 *
 * Thread policy: the backend owns `threads` - 1 pool workers plus the calling
 * thread for its own kernels, and sets OpenBLAS to `threads` threads. BLAS is
 * only called from the calling thread while the pool is idle, so at most
 * `threads` threads compute at any time. The OpenBLAS thread count is process
 * wide: the last backend created sets it. */
#ifndef PB_CPU_H
#define PB_CPU_H

#include "backend/backend.h"
#include "common/status.h"

/* threads <= 0 means 1. */
pb_status pb_cpu_backend_create(int threads, pb_backend **out);
void pb_backend_free(pb_backend *be); /* any backend; NULL-safe */

/* Rows per cblas_sgemm call: OpenBLAS 0.3.21 gives a row results that depend
 * on M (and on the row's place when M > 8); with exactly this many rows per
 * call every row's result is the same wherever it sits (tests/forward/gemm-invariance). */
#define PB_CPU_GEMM_ROWS 8

#endif
