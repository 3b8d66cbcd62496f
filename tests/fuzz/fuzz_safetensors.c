/* libFuzzer target: the safetensors header parser. Input: 8 bytes giving the
 * data buffer size (mod 1 MiB), then the header JSON. */
#include "config.h"

#include <stddef.h>
#include <stdint.h>

#include "ckpt/ckpt_impl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8)
        return 0;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = (n << 8) | data[i];
    pb_st_header h;
    if (pb_st_parse_header("fuzz.safetensors", (const char *)data + 8, size - 8, n % (1u << 20), &h) == PB_OK) {
        for (int i = 0; i < h.n; i++)
            (void)pb_st_find(&h, h.e[i].name);
        pb_st_header_free(&h);
    }
    return 0;
}
