/* The AVX-512 kernels compiled against SIMDe's emulation of the intrinsics
 * (pb_kops_avx512_simde), so that kern-test checks that path on machines
 * without AVX-512. Built with -mavx2 -mfma -mf16c: SIMDe then runs each
 * 512-bit operation as two native 256-bit ones. */
#define PB_KERN_SIMDE 1
#include "cpu/kern_avx512.c"
