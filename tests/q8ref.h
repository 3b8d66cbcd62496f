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

#endif
