/* The CPU backend: its own packed, batch-invariant kernels (kernels.h) on a
 * thread pool. It is the reference the CUDA backend is checked against.
 * Created through pb_backend_create("cpu", ...) (backend/backend.h).
 *
 * Thread policy: the backend owns `threads` - 1 pool workers plus the calling
 * thread; nothing else computes. */
#ifndef PB_CPU_H
#define PB_CPU_H

#include "backend/backend.h"
#include "common/status.h"

/* threads <= 0 means 1. */
pb_status pb_cpu_backend_create(int threads, pb_backend **out);
const pb_backend_ops *pb_cpu_backend_ops(void);

#endif
