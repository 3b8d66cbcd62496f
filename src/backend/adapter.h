/* Family adapters: where each family keeps the tensors of the generic decoder
 * block and in which layout, and how they become the compute layout (f32,
 * nn.Linear [out, in], q|k|v rows fused into one projection, gate|up fused).
 * The forward pass itself (stage.c) is the same for every family. */
#ifndef PB_ADAPTER_H
#define PB_ADAPTER_H

#include "backend/backend.h"
#include "common/status.h"
#include "model/config.h"

typedef struct pb_weights pb_weights;

/* How a checkpoint stores a family's fused q/k/v projection. */
typedef enum pb_qkv_layout {
    PB_QKV_SEPARATE = 0, /* q_proj, k_proj, v_proj */
    PB_QKV_BLOCKS,       /* fused rows q | k | v (GPT-2 c_attn) */
    PB_QKV_PER_HEAD,     /* rows (n_heads, 3, head_dim): Bloom, NeoX */
    PB_QKV_CODEGEN       /* rows (4, 3, n_heads/4, head_dim) ordered q, v, k: CodeGen mp_num = 4 */
} pb_qkv_layout;

/* Tensor names of a family (canonical, without ".weight"/".bias"); NULL = none. */
typedef struct pb_family {
    const char *tok_emb, *pos_emb, *emb_norm, *proj_in; /* first stage */
    const char *final_norm, *proj_out, *lm_head;        /* last stage */
    /* per decoder layer, as suffixes after the layer prefix */
    const char *ln1, *ln2;
    const char *q, *k, *v, *qkv, *o;
    const char *fc1, *fc2;                              /* plain MLP */
    const char *gate, *up, *down;                       /* gated MLP */
    bool conv1d;                                        /* GPT-2 Conv1D weights are [in, out] */
    pb_qkv_layout qkv_layout;
} pb_family;

const pb_family *pb_family_of(pb_arch arch);

/* One decoder layer in compute layout (backend memory). */
typedef struct pb_layer_w {
    const float *ln1_w, *ln1_b, *ln2_w, *ln2_b; /* [hidden]; biases NULL for RMSNorm */
    pb_linear qkv;  /* [q_dim + 2 kv_dim, hidden], rows q | k | v */
    pb_linear o;    /* [hidden, q_dim] */
    pb_linear up;   /* [I, hidden], or [2 I, hidden] rows gate | up when gated */
    pb_linear down; /* [hidden, I] */
} pb_layer_w;

/* Loads and converts; every allocation is added to *bytes (backend memory),
 * buffers are recorded in the list for release. */
typedef struct pb_wstore {
    pb_backend *be;
    void **bufs;
    int n_bufs, cap_bufs;
    uint64_t bytes;
    float *tmp;     /* host conversion buffer */
    size_t tmp_cap;
} pb_wstore;

void pb_wstore_free(pb_wstore *ws);

/* A vector [n] (norm weight/bias, bias): name is the full canonical name. */
pb_status pb_adapter_vector(pb_wstore *ws, const pb_weights *w, const char *name, int n, const char *field,
                            const float **out);
/* A matrix stored [rows, cols] (or [cols, rows] when conv1d) into [rows, cols]. */
pb_status pb_adapter_matrix(pb_wstore *ws, const pb_weights *w, const char *name, int rows, int cols,
                            const char *field, bool conv1d, const float **out);
/* Decoder layer `layer` (global index). */
pb_status pb_adapter_layer(pb_wstore *ws, const pb_model_config *cfg, const pb_weights *w, int layer,
                           pb_layer_w *out);

#endif
