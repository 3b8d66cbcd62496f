#include "config.h"
#include "common/tensor.h"

#include <math.h>
#include <string.h>

static const struct { const char *name; size_t size; } dt_info[PB_DT_COUNT] = {
    [PB_DT_F32] = {"F32", 4},  [PB_DT_F16] = {"F16", 2}, [PB_DT_BF16] = {"BF16", 2},
    [PB_DT_F64] = {"F64", 8},  [PB_DT_I64] = {"I64", 8}, [PB_DT_I32] = {"I32", 4},
    [PB_DT_I16] = {"I16", 2},  [PB_DT_I8] = {"I8", 1},   [PB_DT_U8] = {"U8", 1},
    [PB_DT_BOOL] = {"BOOL", 1}, [PB_DT_Q8] = {"Q8", 1}, [PB_DT_F8_E4M3] = {"F8_E4M3", 1},
};

size_t pb_dtype_size(pb_dtype dt) { return (unsigned)dt < PB_DT_COUNT ? dt_info[dt].size : 0; }
const char *pb_dtype_name(pb_dtype dt) { return (unsigned)dt < PB_DT_COUNT ? dt_info[dt].name : "?"; }

int pb_dtype_from_name(const char *name, pb_dtype *out)
{
    for (int i = 0; i < PB_DT_COUNT; i++) /* the checkpoint dtypes */
        if (i != PB_DT_Q8 && strcmp(name, dt_info[i].name) == 0) {
            *out = (pb_dtype)i;
            return 0;
        }
    return -1;
}

float pb_f8e4m3_to_f32(unsigned char b)
{
    const int e = b >> 3 & 15, m = b & 7;
    if (e == 15 && m == 7)
        return NAN;
    const float v = e ? ldexpf((float)(8 + m), e - 10) : ldexpf((float)m, -9); /* 2^(e-7) (1 + m/8); m 2^-9 */
    return b & 0x80 ? -v : v;
}

int64_t pb_tensor_numel(const pb_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++)
        n *= t->shape[i];
    return n;
}

float pb_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400u));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ffu) << 13);
        }
    } else if (exp == 31) { /* a NaN comes out quiet, as F16C's vcvtph2ps gives it */
        bits = sign | 0x7f800000u | (man << 13) | (man ? 0x00400000u : 0);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t pb_f32_to_f16(float f)
{
    /* nearest even, with few branches (the KV cache rounds every key and
     * value through here): |f| >= 65536 is inf or NaN; below 2^-14 the f16 is
     * subnormal and the float addition of 0.5 aligns its 10 bits at the
     * bottom, rounding to nearest even; else the exponent is rebiased and the
     * 13 dropped bits rounded with the odd bit as tie-break (a carry into the
     * exponent is right, up to inf) */
    uint32_t x;
    memcpy(&x, &f, 4);
    const uint32_t sign = x & 0x80000000u;
    x ^= sign;
    uint32_t h;
    if (x >= 0x47800000u) {
        h = x > 0x7f800000u ? 0x7e00u : 0x7c00u;
    } else if (x < 0x38800000u) {
        float a;
        memcpy(&a, &x, 4);
        a += 0.5f;
        memcpy(&h, &a, 4);
        h -= 0x3f000000u;
    } else {
        h = (x + 0xc8000fffu + ((x >> 13) & 1u)) >> 13;
    }
    return (uint16_t)(h | (sign >> 16));
}

int pb_convert_to_f32(float *dst, const void *src, pb_dtype dt, size_t n)
{
    const unsigned char *s = src;
    switch (dt) {
    case PB_DT_F32:
        memcpy(dst, src, n * 4);
        return 0;
    case PB_DT_F16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = pb_f16_to_f32(h);
        }
        return 0;
    case PB_DT_BF16:
        for (size_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, s + 2 * i, 2);
            dst[i] = pb_bf16_to_f32(h);
        }
        return 0;
    case PB_DT_F64:
        for (size_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, s + 8 * i, 8);
            dst[i] = (float)d;
        }
        return 0;
    default:
        return -1;
    }
}

/* 8 running maxima, then the first place of the largest in blocks of 8
 * (unsigned indices: the compiler vectorizes both passes; the CPU
 * backend's portable path, kern_portable.c) */
int32_t pb_argmax_first(const float *l, int n)
{
    const size_t nn = n > 0 ? (size_t)n : 0, n8 = nn & ~(size_t)7;
    float m[8] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY, -INFINITY};
    for (size_t i = 0; i < n8; i += 8)
        for (size_t j = 0; j < 8; j++)
            m[j] = l[i + j] > m[j] ? l[i + j] : m[j];
    for (size_t i = n8; i < nn; i++)
        m[0] = l[i] > m[0] ? l[i] : m[0];
    float best = m[0];
    for (size_t j = 1; j < 8; j++)
        best = m[j] > best ? m[j] : best;
    if (best == -INFINITY)
        return 0;
    for (size_t i = 0; i < n8; i += 8) {
        int hit = 0;
        for (size_t j = 0; j < 8; j++)
            hit |= l[i + j] == best;
        if (hit)
            for (size_t j = 0;; j++)
                if (l[i + j] == best)
                    return (int32_t)(i + j);
    }
    for (size_t i = n8; i < nn; i++)
        if (l[i] == best)
            return (int32_t)i;
    return 0;
}
