// CPU stand-in for the half conversions kern_cuda.cu uses (see cuda_runtime.h).
#ifndef PB_CUDA_EMU_FP16_H
#define PB_CUDA_EMU_FP16_H
#include <stdint.h>
extern "C" float pb_f16_to_f32(uint16_t h);
struct __half {
    uint16_t bits;
};
static inline __half __ushort_as_half(unsigned short u) { return __half{u}; }
static inline float __half2float(__half h) { return pb_f16_to_f32(h.bits); }
#endif
