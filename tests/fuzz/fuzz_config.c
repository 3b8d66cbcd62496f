/* libFuzzer target: config.json text -> pb_model_config (pb_model_config_parse). */
#include "config.h"

#include <stddef.h>
#include <stdint.h>

#include "model/config.h"

/* libFuzzer entry point */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    pb_model_config cfg;
    if (pb_model_config_parse(size ? (const char *)data : "", size, "fuzz/config.json", &cfg) == PB_OK) {
        /* what the rest of the program relies on */
        if (cfg.n_layers < 1 || !cfg.layer_local || cfg.n_heads < 1 || cfg.n_kv_heads < 1 ||
            cfg.head_dim < 1 || cfg.n_heads % cfg.n_kv_heads)
            __builtin_trap();
        (void)cfg.family->model_type[0];
        pb_model_config_free(&cfg);
    }
    return 0;
}
