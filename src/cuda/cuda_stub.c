/* Without CUDA in the build, there are no devices and no CUDA backend. */
#include "config.h"
#include "cuda/cuda.h"

#ifndef PB_HAVE_CUDA
int pb_cuda_device_count(const char **why)
{
    if (why)
        *why = "this build has no CUDA support";
    return 0;
}

pb_status pb_cuda_mem_info(int device, uint64_t *free_bytes, uint64_t *total_bytes)
{
    (void)device;
    *free_bytes = *total_bytes = 0;
    return pb_error(PB_ERR_NOT_AVAILABLE, "this build has no CUDA support (configure --with-cuda)");
}

pb_status pb_cuda_device_info(int device, char *name, size_t cap, uint64_t *free_bytes, uint64_t *total_bytes)
{
    (void)device;
    if (cap)
        name[0] = '\0';
    *free_bytes = *total_bytes = 0;
    return pb_error(PB_ERR_NOT_AVAILABLE, "this build has no CUDA support (configure --with-cuda)");
}

pb_status pb_cuda_backend_create(int device, pb_backend **out)
{
    (void)device;
    *out = NULL;
    return pb_error(PB_ERR_NOT_AVAILABLE, "--device cuda: this build has no CUDA support (configure --with-cuda)");
}

const pb_backend_ops *pb_cuda_backend_ops(void) { return NULL; }
void pb_cuda_attn_force(int chunk, int split) { (void)chunk, (void)split; }
void pb_cuda_attn_scores(int lane) { (void)lane; }
void pb_cuda_attn_group(int on) { (void)on; }
#else
typedef int pb_cuda_stub_unused; /* ISO C forbids an empty translation unit */
#endif
