/* Family adapters: where each family keeps the tensors of the generic decoder
 * block, in which layout, and how they map to the compute weights (nn.Linear
 * [out, in] rows, q|k|v rows fused into one projection, gate|up fused). The
 * adapter keeps names and layouts only: the backend stores the matrices
 * (put_linear) from the checkpoint's own bytes. The forward pass itself
 * (stage.c) is the same for every family. */
#ifndef PB_ADAPTER_H
#define PB_ADAPTER_H

#include "backend/backend.h"
#include "common/status.h"
#include "model/config.h"

typedef struct pb_weights pb_weights;

/* Every weight a stage holding layers [layer_begin, layer_end) (+ embeddings,
 * + final norm and head) builds, in load order: pb_family_items of the family
 * table (model/family.h), which also gives the checkpoint its expected names. */
pb_status pb_adapter_items(const pb_model_config *cfg, int layer_begin, int layer_end, bool has_embed, bool has_head,
                           int pos_rows, pb_witem **items, int *n_items);

/* Row order of a fused qkv tensor as q | k | v: perm[r] = source row of output row r. */
void pb_adapter_qkv_perm(pb_qkv_layout lay, int n_heads, int head_dim, int *perm);

/* Loading: vectors go to backend memory as f32, linear layers through put_linear. */
typedef struct pb_wstore {
    pb_backend *be;
    pb_wdtype policy;
    void **bufs;        /* vectors */
    int n_bufs, cap_bufs;
    pb_weight **mats;   /* linear layers */
    int n_mats, cap_mats;
    uint64_t bytes;     /* backend memory of both */
    float *tmp;         /* host conversion buffer */
    size_t tmp_cap;
} pb_wstore;

void pb_wstore_free(pb_wstore *ws);

/* Starts reading item it's tensors from the files when the loader is
 * windowed (pb_weights_prefetch); the stage calls it one item ahead. */
void pb_adapter_prefetch(const pb_weights *w, const pb_witem *it);

/* Builds item it from w's tensors: *vec (backend f32 [n_out]) for a vector,
 * *mat for a linear layer. Shapes are checked against the config (an error
 * names the tensor and the field); each tensor's mapped pages are released
 * once the backend holds its copy. */
pb_status pb_adapter_load(pb_wstore *ws, const pb_model_config *cfg, const pb_weights *w, const pb_witem *it,
                          const float **vec, pb_weight **mat);

#endif
