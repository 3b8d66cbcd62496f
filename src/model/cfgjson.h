/* Typed config.json access shared by config.c and the family hooks
 * (family.c); internal to src/model. Every getter names file and field on error. */
#ifndef PB_MODEL_CFGJSON_H
#define PB_MODEL_CFGJSON_H

#include <stdbool.h>

#include <cjson/cJSON.h>

#include "common/status.h"
#include "model/config.h"

typedef struct pb_jctx {
    const char *path;
    const cJSON *root;
} pb_jctx;

#define KEYS(...) ((const char *const[]){__VA_ARGS__, NULL})

/* The first of the (NULL-terminated) alias keys present and not null, or NULL. */
const cJSON *pb_jfind(const pb_jctx *c, const char *const *keys);
pb_status pb_jint_item(const pb_jctx *c, const char *key, const cJSON *it, long long lo, long long hi, long long *out);
/* Typed fields with aliases: absent or null gives def; *present (may be NULL) says which. */
pb_status pb_jint(const pb_jctx *c, const char *const *keys, int def, int lo, int hi, int *out, bool *present);
pb_status pb_jfloat(const pb_jctx *c, const char *const *keys, double def, double *out, bool *present);
pb_status pb_jbool(const pb_jctx *c, const char *const *keys, bool def, bool *out, bool *present);
pb_status pb_jstr(const pb_jctx *c, const char *const *keys, const char *def, const char **out);

/* GPT-Neo attention_types -> cfg->layer_local. */
pb_status pb_cfg_attention_types(const pb_jctx *c, pb_model_config *cfg);
/* layer_types ["full_attention"|"sliding_attention", ...] -> layer_local; absent
 * or null: the layers from max_window_layers on are sliding. */
pb_status pb_cfg_layer_types(const pb_jctx *c, pb_model_config *cfg, int max_window_layers);
/* partial_rotary_factor from rope_parameters (5.x) first, then the keys, else def. */
pb_status pb_cfg_rotary_pct(const pb_jctx *c, const char *const *keys, double def, double *pct);
/* A rotary settings object (rope_scaling, else rope_parameters, of c->root):
 * default, linear or llama3 into cfg; other types are refused naming the field. */
pb_status pb_cfg_rope_scaling(const pb_jctx *c, pb_model_config *cfg);
/* Mixture-of-experts keys (MixtralConfig; qwen: Qwen3MoeConfig). */
pb_status pb_cfg_moe(const pb_jctx *c, pb_model_config *cfg, bool qwen);

#endif
