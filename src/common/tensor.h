/* Element types and a read-only view of one checkpoint tensor. */
#ifndef PB_TENSOR_H
#define PB_TENSOR_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef enum pb_dtype {
    PB_DT_F32 = 0,
    PB_DT_F16,
    PB_DT_BF16,
    PB_DT_F64,
    PB_DT_I64,
    PB_DT_I32,
    PB_DT_I16,
    PB_DT_I8,
    PB_DT_U8,
    PB_DT_BOOL,
    /* not a checkpoint dtype: a backend's int8 storage of a matrix with a scale per group of weights
     * (--weights-dtype int8; the CPU kernels' layout in src/cpu/kern_impl.h). pb_dtype_size says 1. */
    PB_DT_Q8,
    /* a checkpoint dtype after all: e4m3 bytes of a fine-grained FP8 checkpoint (quantization_config quant_method
     * "fp8"), each matrix with its block scales (`<name>_scale_inv`); kept so by the CPU backend in the q8 layout
     * (src/cpu/kern_impl.h). Has no value without its scale: pb_convert_to_f32 refuses it. */
    PB_DT_F8_E4M3,
    PB_DT_COUNT
} pb_dtype;

size_t pb_dtype_size(pb_dtype dt);
const char *pb_dtype_name(pb_dtype dt);          /* "F32", "F16", "BF16", ... as safetensors spells them; "Q8" */
int pb_dtype_from_name(const char *name, pb_dtype *out); /* a checkpoint dtype (not Q8): 0 ok, -1 unknown */
/* The value of an e4m3 (F8_E4M3) byte: exact in f32; 0x7f and 0xff (NaN) give NaN. */
float pb_f8e4m3_to_f32(unsigned char b);

#define PB_MAX_DIMS 8

/* A tensor as stored in the checkpoint (data points into an mmap or an owned
 * buffer that lives as long as the pb_weights that handed it out). Row-major,
 * contiguous, little-endian. */
typedef struct pb_tensor {
    const char *name;     /* full name as in the checkpoint */
    pb_dtype dtype;
    int ndim;
    int64_t shape[PB_MAX_DIMS];
    const void *data;
    size_t nbytes;
} pb_tensor;

int64_t pb_tensor_numel(const pb_tensor *t);

/* Conversions used by loaders and backends. */
float pb_f16_to_f32(uint16_t h);
uint16_t pb_f32_to_f16(float f);
/* (inline: the KV cache stores every key and value through it) */
static inline float pb_bf16_to_f32(uint16_t b)
{
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

/* round to nearest even, as torch does; NaNs quieted. Written as a select
 * (no branch: the compiler keeps it a cmov in the KV cache's store loop) */
static inline uint16_t pb_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t r = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16, q = (x >> 16) | 0x40u;
    return (uint16_t)((x & 0x7fffffffu) > 0x7f800000u ? q : r);
}
/* Convert n elements of src (dtype dt) to f32. Returns -1 for non-float dtypes. */
int pb_convert_to_f32(float *dst, const void *src, pb_dtype dt, size_t n);

/* The first index of the largest of l[0 .. n), NaN never; 0 when none is
 * above -inf: greedy sampling's pick (the host sampler, the CPU backend's
 * portable argmax op). */
int32_t pb_argmax_first(const float *l, int n);

#endif
