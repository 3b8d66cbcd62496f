/* Backend kinds and the weights-dtype policy: the one place that maps a
 * device name to a backend implementation. */
#include "config.h"
#include "backend/backend.h"

#include <string.h>

#include "cpu/cpu.h"
#include "cuda/cuda.h"

int pb_wdtype_parse(const char *s, pb_wdtype *out)
{
    if (strcmp(s, "stored") == 0)
        *out = PB_WDTYPE_STORED;
    else if (strcmp(s, "f32") == 0)
        *out = PB_WDTYPE_F32;
    else if (strcmp(s, "bf16") == 0)
        *out = PB_WDTYPE_BF16;
    else
        return -1;
    return 0;
}

const char *pb_wdtype_name(pb_wdtype w)
{
    switch (w) {
    case PB_WDTYPE_F32: return "f32";
    case PB_WDTYPE_BF16: return "bf16";
    default: return "stored";
    }
}

pb_dtype pb_wdtype_resolve(pb_wdtype w, pb_dtype stored)
{
    switch (w) {
    case PB_WDTYPE_F32: return PB_DT_F32;
    case PB_WDTYPE_BF16: return PB_DT_BF16;
    default: return stored == PB_DT_F16 || stored == PB_DT_BF16 ? stored : PB_DT_F32;
    }
}

const pb_backend_ops *pb_backend_ops_of(const char *kind)
{
    if (strcmp(kind, "cpu") == 0 || strcmp(kind, "auto") == 0)
        return pb_cpu_backend_ops();
    if (strcmp(kind, "cuda") == 0)
        return pb_cuda_backend_ops(); /* NULL in a build without CUDA */
    return NULL;
}

pb_status pb_backend_create(const char *kind, const pb_backend_opts *o, pb_backend **out)
{
    *out = NULL;
    int threads = o && o->threads > 0 ? o->threads : 1;
    if (strcmp(kind, "cpu") == 0 || strcmp(kind, "auto") == 0)
        return pb_cpu_backend_create(threads, out);
    if (strcmp(kind, "cuda") == 0)
        return pb_cuda_backend_create(o ? o->device : 0, out);
    return pb_error(PB_ERR_USAGE, "backend '%s': unknown (cpu, cuda or auto)", kind);
}

void pb_backend_free(pb_backend *be)
{
    if (be)
        be->ops->free(be);
}
