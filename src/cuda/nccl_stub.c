/* Without NCCL in the build there is no NCCL transport. */
#include "config.h"
#include "net/transport.h"

#ifndef PB_HAVE_NCCL
pb_status pb_transport_nccl_create(pb_bootstrap *b, int device, const pb_nccl_opts *opts,
                                   pb_transport **out)
{
    (void)b;
    (void)device;
    (void)opts;
    *out = NULL;
    return pb_error(PB_ERR_NOT_AVAILABLE,
                    "the NCCL transport: this build has no NCCL (configure --with-cuda, with "
                    "nccl.h and libnccl under the CUDA directory)");
}

pb_status pb_transport_nccl_create_over(pb_bootstrap *b, int device, pb_transport *ctl,
                                        const pb_nccl_opts *opts, pb_transport **out)
{
    pb_transport_free(ctl);
    return pb_transport_nccl_create(b, device, opts, out);
}
#else
typedef int pb_nccl_stub_unused; /* ISO C forbids an empty translation unit */
#endif
