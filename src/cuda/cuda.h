/* CUDA backend entry points visible to C code. No CUDA types here: the
 * backend's internals stay in src/cuda/ (.cu files). */
#ifndef PB_CUDA_H
#define PB_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "common/status.h"

/* Number of usable CUDA devices; 0 when none (or the build has no CUDA).
 * The detail of a failure (driver missing, no device) goes to *why when non-NULL. */
int pb_cuda_device_count(const char **why);

/* Free and total memory of device `device` in bytes (PB_ERR_DEVICE when it
 * cannot be read; PB_ERR_NOT_AVAILABLE in a build without CUDA). */
pb_status pb_cuda_mem_info(int device, uint64_t *free_bytes, uint64_t *total_bytes);

/* Make `device` the calling thread's current device (the rank's GPU: no
 * context is made on any other), then read its name (into name, cap bytes)
 * and its free and total memory in bytes. */
pb_status pb_cuda_device_info(int device, char *name, size_t cap, uint64_t *free_bytes, uint64_t *total_bytes);

/* The CUDA backend (src/cuda/backend_cuda.cu): all of pb_backend_ops on GPU
 * `device`. Without CUDA in the build: PB_ERR_NOT_AVAILABLE, and ops NULL. */
pb_status pb_cuda_backend_create(int device, pb_backend **out);
const pb_backend_ops *pb_cuda_backend_ops(void);

/* For tests: attention's keys a chunk (0: PB_CUDA_ATTN_CHUNK or 256) and its
 * form (-1: a block a chunk where few queries would leave SMs idle; 0: a
 * block a query; 1: a block a chunk), which must all give the same bits. */
void pb_cuda_attn_force(int chunk, int split);
/* attention's scores a key a thread (1) or a warp's keys each (0, the default): the same bits; < 0: the
   environment's choice (PB_CUDA_ATTN_LANE) again. For tests/backend/ops. */
void pb_cuda_attn_scores(int lane);
/* attention's grouped form (a block takes a KV head's query heads for a tile of a sequence's tokens with the
   same first key, reading each key once for them) always (2), where a call has 1024 queries or more (1, the
   default) or never (0: a block a query): the same bits; < 0: the environment's choice (PB_CUDA_ATTN_GROUP)
   again. For tests/backend/ops. */
void pb_cuda_attn_group(int on);

#endif
