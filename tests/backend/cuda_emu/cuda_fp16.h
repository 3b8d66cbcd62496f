// CPU stand-in for the half conversions kern_cuda.cu uses (see cuda_runtime.h).
#ifndef PB_CUDA_EMU_FP16_H
#define PB_CUDA_EMU_FP16_H
#include <stdint.h>
extern "C" float pb_f16_to_f32(uint16_t h);
extern "C" uint16_t pb_f32_to_f16(float f);
struct __half {
    uint16_t bits;
};
static inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
static inline float __half2float(__half h) { return pb_f16_to_f32(h.bits); }
static inline __half __float2half_rn(float f) { return __half{pb_f32_to_f16(f)}; }
static inline unsigned short __half_as_ushort(__half h) { return h.bits; }
#endif
