/* --weights-dtype int8 as src/cpu/kern_impl.h specifies it, written again for
 * the C tests' references: row w[0 .. n) in place as its q8 values, per
 * group of 64: d = amax / 127, q = rint(w / d) within [-127, 127] (0 where d
 * is 0), w = q * d (an int8 has no -0: q = -0 counts as +0). */
#ifndef PB_TESTS_Q8REF_H
#define PB_TESTS_Q8REF_H

#include <math.h>

static inline void q8ref_row(float *w, int n)
{
    for (int k0 = 0; k0 < n; k0 += 64) {
        const int e = n - k0 < 64 ? n : k0 + 64;
        float amax = 0.0f;
        for (int k = k0; k < e; k++)
            amax = fabsf(w[k]) > amax ? fabsf(w[k]) : amax;
        const float d = amax / 127.0f;
        for (int k = k0; k < e; k++) {
            float q = d > 0.0f ? rintf(w[k] / d) : 0.0f;
            q = q > 127.0f ? 127.0f : q < -127.0f ? -127.0f : q + 0.0f;
            w[k] = q * d;
        }
    }
}

/* FP8 checkpoints (F8_E4M3 with block scales), written from the format's
 * definition for the C tests: the value of an e4m3 byte (sign, 4 exponent
 * bits of bias 7, 3 mantissa bits; exponent 0 subnormal; 0x7f, 0xff NaN) */
static inline float f8ref_value(unsigned char b)
{
    const int e = b >> 3 & 15, m = b & 7;
    const double v = e ? ldexp(1.0 + m / 8.0, e - 7) : ldexp(m / 8.0, -6);
    return (float)(b & 0x80 ? -v : v);
}

/* the e4m3 byte nearest v (|v| <= 448), ties to the even code, by search */
static inline unsigned char f8ref_nearest(float v)
{
    int best = 0;
    double bd = INFINITY;
    for (int c = 0; c < 127; c++) { /* magnitudes: 0x00 .. 0x7e */
        const double d = fabs((double)f8ref_value((unsigned char)c) - fabs((double)v));
        if (d < bd || (d == bd && !(c & 1))) {
            best = c;
            bd = d;
        }
    }
    return (unsigned char)(v < 0 && best ? 0x80 | best : best);
}

/* rows x k of w in blocks br x bc as an FP8 checkpoint has them: per block
 * scale = amax / 448 (1 for a block of zeros), q = nearest(w / scale); s
 * [ceil(rows / br)][ceil(k / bc)]; w in place as the values, q's value x
 * scale rounded to f32 */
static inline void f8ref_encode(float *w, int rows, int k, int br, int bc, unsigned char *q, float *s)
{
    const int nbc = (k + bc - 1) / bc;
    for (int i0 = 0; i0 < rows; i0 += br)
        for (int j0 = 0; j0 < k; j0 += bc) {
            float amax = 0.0f;
            for (int i = i0; i < rows && i < i0 + br; i++)
                for (int j = j0; j < k && j < j0 + bc; j++)
                    amax = fabsf(w[(size_t)i * k + j]) > amax ? fabsf(w[(size_t)i * k + j]) : amax;
            const float d = amax > 0.0f ? amax / 448.0f : 1.0f;
            s[(size_t)(i0 / br) * nbc + j0 / bc] = d;
            for (int i = i0; i < rows && i < i0 + br; i++)
                for (int j = j0; j < k && j < j0 + bc; j++) {
                    const size_t e = (size_t)i * k + j;
                    q[e] = f8ref_nearest(w[e] / d);
                    w[e] = f8ref_value(q[e]) * d;
                }
        }
}

#endif
