/* CUDA backend entry points visible to C code. No CUDA types here: the
 * backend's internals stay in src/cuda/ (.cu files). */
#ifndef PB_CUDA_H
#define PB_CUDA_H

/* Number of usable CUDA devices; 0 when none (or the build has no CUDA).
 * The detail of a failure (driver missing, no device) goes to *why when non-NULL. */
int pb_cuda_device_count(const char **why);

#endif
