/* Unit tests of src/common: status/exit codes, size parsing, dtype tables and
 * f16/bf16 conversions (against values computed independently by numpy/torch). */
#include "config.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

#include "common/status.h"
#include "common/tensor.h"
#include "common/util.h"

static int failures;
#define EXPECT(cond) \
    do { if (!(cond)) { fprintf(stderr, "%s:%d: FAIL %s\n", __FILE__, __LINE__, #cond); failures++; } } while (0)

/* f32 -> f16, nearest even, written plainly from the definition (the
 * library's is branch-light): every one of the 2^32 inputs must agree */
static uint16_t ref_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000u;
    uint32_t exp = (x >> 23) & 0xffu, man = x & 0x7fffffu;
    if (exp == 0xff)
        return (uint16_t)(sign | 0x7c00u | (man ? 0x200u : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31)
        return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10)
            return (uint16_t)sign;
        man |= 0x800000u;
        uint32_t shift = (uint32_t)(14 - e);
        uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1)))
            half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)e << 10) | (man >> 13);
    uint32_t rem = man & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1)))
        h++;
    return (uint16_t)h;
}

int main(void)
{
    EXPECT(pb_status_exit_code(PB_OK) == 0);
    EXPECT(pb_status_exit_code(PB_ERR_USAGE) == 2);
    EXPECT(pb_status_exit_code(PB_ERR_CONFIG) == 2);
    EXPECT(pb_status_exit_code(PB_ERR_FORMAT) == 2);
    EXPECT(pb_status_exit_code(PB_ERR_NOT_AVAILABLE) == 2);
    EXPECT(pb_status_exit_code(PB_ERR_IO) == 1);
    EXPECT(pb_status_exit_code(PB_ERR_NET) == 1);
    EXPECT(pb_status_exit_code(PB_ERR_INTERRUPTED) == 75);

    EXPECT(pb_error(PB_ERR_FORMAT, "file %s", "x.safetensors") == PB_ERR_FORMAT);
    EXPECT(strcmp(pb_last_error(), "file x.safetensors") == 0);
    pb_error_ctx(PB_ERR_FORMAT, "loading %d", 3);
    EXPECT(strcmp(pb_last_error(), "loading 3: file x.safetensors") == 0);

    uint64_t v;
    EXPECT(pb_parse_size("490M", &v) == PB_OK && v == 490ull << 20);
    EXPECT(pb_parse_size("1.5G", &v) == PB_OK && v == 3ull << 29);
    EXPECT(pb_parse_size("4096", &v) == PB_OK && v == 4096);
    EXPECT(pb_parse_size("2GiB", &v) == PB_OK && v == 2ull << 30);
    EXPECT(pb_parse_size("12X", &v) == PB_ERR_USAGE);
    EXPECT(pb_parse_size("", &v) == PB_ERR_USAGE);
    EXPECT(pb_parse_size("-1", &v) == PB_ERR_USAGE);

    size_t out;
    EXPECT(!pb_mul_ok(SIZE_MAX / 2 + 1, 2, &out));
    EXPECT(pb_mul_ok(1000, 1000, &out) && out == 1000000);

    pb_dtype dt;
    EXPECT(pb_dtype_from_name("BF16", &dt) == 0 && dt == PB_DT_BF16 && pb_dtype_size(dt) == 2);
    EXPECT(pb_dtype_from_name("F32", &dt) == 0 && dt == PB_DT_F32 && pb_dtype_size(dt) == 4);
    /* an FP8 checkpoint's e4m3 bytes: a checkpoint dtype; e5m2 and the backend's Q8 are not */
    EXPECT(pb_dtype_from_name("F8_E4M3", &dt) == 0 && dt == PB_DT_F8_E4M3 && pb_dtype_size(dt) == 1);
    EXPECT(pb_dtype_from_name("F8_E5M2", &dt) == -1);
    EXPECT(pb_dtype_from_name("Q8", &dt) == -1);
    /* e4m3 values (torch.float8_e4m3fn): 1.0, the largest 448, the smallest subnormal 2^-9, -0, -1.75, NaN */
    EXPECT(pb_f8e4m3_to_f32(0x38) == 1.0f);
    EXPECT(pb_f8e4m3_to_f32(0x7e) == 448.0f);
    EXPECT(pb_f8e4m3_to_f32(0x01) == ldexpf(1.0f, -9));
    EXPECT(pb_f8e4m3_to_f32(0x80) == 0.0f && signbit(pb_f8e4m3_to_f32(0x80)));
    EXPECT(pb_f8e4m3_to_f32(0xbe) == -1.75f);
    EXPECT(isnan(pb_f8e4m3_to_f32(0x7f)) && isnan(pb_f8e4m3_to_f32(0xff)));

    /* f16: numpy.float16 bit patterns */
    EXPECT(pb_f16_to_f32(0x3c00) == 1.0f);
    EXPECT(pb_f16_to_f32(0xc000) == -2.0f);
    EXPECT(pb_f16_to_f32(0x7bff) == 65504.0f);
    EXPECT(pb_f16_to_f32(0x0001) == ldexpf(1.0f, -24)); /* smallest subnormal */
    EXPECT(pb_f16_to_f32(0x03ff) == ldexpf(1023.0f, -24));
    EXPECT(isinf(pb_f16_to_f32(0x7c00)));
    EXPECT(isnan(pb_f16_to_f32(0x7e00)));
    EXPECT(pb_f32_to_f16(1.0f) == 0x3c00);
    EXPECT(pb_f32_to_f16(0.1f) == 0x2e66);        /* np.float16(0.1).view(np.uint16) */
    EXPECT(pb_f32_to_f16(65520.0f) == 0x7c00);    /* rounds to inf */
    EXPECT(pb_f32_to_f16(ldexpf(1.0f, -25)) == 0); /* ties to even: 0 */
    EXPECT(pb_f32_to_f16(ldexpf(3.0f, -25)) == 0x0002);
    /* every f16 value round-trips */
    for (uint32_t h = 0; h < 0x10000; h++) {
        float f = pb_f16_to_f32((uint16_t)h);
        if (isnan(f))
            continue;
        if (pb_f32_to_f16(f) != h) {
            fprintf(stderr, "f16 round trip failed for 0x%04x\n", h);
            failures++;
            break;
        }
    }
    for (uint64_t u = 0; u <= 0xffffffffu; u++) {
        uint32_t b = (uint32_t)u;
        float f;
        memcpy(&f, &b, 4);
        if (pb_f32_to_f16(f) != ref_f32_to_f16(f)) {
            fprintf(stderr, "f32 0x%08x -> f16 0x%04x, the definition gives 0x%04x\n", b, pb_f32_to_f16(f),
                    ref_f32_to_f16(f));
            failures++;
            break;
        }
    }
    /* bf16: torch.tensor(x).bfloat16().view(torch.int16) */
    EXPECT(pb_f32_to_bf16(1.0f) == 0x3f80);
    EXPECT(pb_f32_to_bf16(0.1f) == 0x3dcd);
    EXPECT(pb_f32_to_bf16(3.14159265f) == 0x4049);
    EXPECT(pb_bf16_to_f32(0x3f80) == 1.0f);
    float buf[2];
    uint16_t src[2] = {0x3c00, 0xbc00};
    EXPECT(pb_convert_to_f32(buf, src, PB_DT_F16, 2) == 0 && buf[0] == 1.0f && buf[1] == -1.0f);
    EXPECT(pb_convert_to_f32(buf, src, PB_DT_I32, 1) == -1);

    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    else
        printf("unit_common: all passed\n");
    return failures ? 1 : 0;
}
