/* AVX-512 path (placeholder until the AVX-512 kernels land): the AVX2 table. */
#include "config.h"

#include "cpu/kern_impl.h"

#ifdef PB_KERN_X86
const pb_kops pb_kops_avx512 = {0};
#endif
