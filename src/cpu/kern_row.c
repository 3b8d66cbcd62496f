/* Row kernels (norm, activation, rotary) through the active ISA path's
 * primitives; the scalar parts (1 / sqrt) are shared, so every path gives
 * the same bits. */
#include "config.h"

#include <math.h>

#ifdef __SSE__
#include <xmmintrin.h>
#endif

#include "cpu/kern_impl.h"

void pb_krow_norm(bool rms, float *y, const float *x, int n, const float *w, const float *b, float eps)
{
    const pb_kops *ops = pb_kops_active();
    const float fn = (float)n;
    float c = 0.0f, inv;
    if (rms) {
        inv = 1.0f / sqrtf(ops->sqdev(x, n, 0.0f) / fn + eps);
    } else {
        c = ops->sum(x, n) / fn;
        inv = 1.0f / sqrtf(ops->sqdev(x, n, c) / fn + eps);
    }
    ops->scale(y, x, n, c, inv, w, b);
}

void pb_krow_act(pb_kact act, float *y, const float *x, const float *u, int n)
{
    pb_kops_active()->act(act, y, x, u, n);
}

void pb_krow_rope(float *v, int half, bool interleaved, const float *cs)
{
    pb_kops_active()->rope(v, half, interleaved, cs);
}

int32_t pb_krow_argmax(const float *x, int n)
{
    return pb_kops_active()->argmax(x, n);
}

void pb_krow_add(float *restrict y, const float *restrict x, const float *restrict x2, size_t n)
{
    size_t i = 0;
#ifdef __SSE__ /* part of x86-64: no dispatch needed */
    if (x2)
        for (; i + 4 <= n; i += 4)
            _mm_storeu_ps(y + i, _mm_add_ps(_mm_loadu_ps(y + i), _mm_add_ps(_mm_loadu_ps(x + i), _mm_loadu_ps(x2 + i))));
    else
        for (; i + 4 <= n; i += 4)
            _mm_storeu_ps(y + i, _mm_add_ps(_mm_loadu_ps(y + i), _mm_loadu_ps(x + i)));
#endif
    if (x2)
        for (; i < n; i++)
            y[i] += x[i] + x2[i];
    else
        for (; i < n; i++)
            y[i] += x[i];
}

void pb_krow_mul(float *restrict y, const float *restrict x, float c, size_t n)
{
    size_t i = 0;
#ifdef __SSE__
    const __m128 cv = _mm_set1_ps(c);
    for (; i + 4 <= n; i += 4)
        _mm_storeu_ps(y + i, _mm_mul_ps(_mm_loadu_ps(x + i), cv));
#endif
    for (; i < n; i++)
        y[i] = x[i] * c;
}
