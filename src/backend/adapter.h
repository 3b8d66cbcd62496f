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

/* Where the stage keeps a weight. */
typedef enum pb_wslot {
    PB_SLOT_TOK_EMB = 0, PB_SLOT_POS_EMB, PB_SLOT_EMB_NORM_W, PB_SLOT_EMB_NORM_B, PB_SLOT_PROJ_IN,
    PB_SLOT_FINAL_W, PB_SLOT_FINAL_B, PB_SLOT_PROJ_OUT, PB_SLOT_LM_HEAD,
    PB_SLOT_LN1_W, PB_SLOT_LN1_B, PB_SLOT_LN2_W, PB_SLOT_LN2_B, PB_SLOT_QKV, PB_SLOT_O, PB_SLOT_UP, PB_SLOT_DOWN,
    PB_SLOT_ROUTER, PB_SLOT_EXP_GU, PB_SLOT_EXP_DOWN /* mixture of experts: [n_experts, H], gate|up, down */
} pb_wslot;

#define PB_NAME_CAP 192

/* One weight of a stage: a vector (norm weight/bias, kept f32) or a linear
 * layer built from 1..3 checkpoint tensors stacked along output rows. */
typedef struct pb_witem {
    pb_wslot slot;
    int layer;                    /* global decoder layer, or -1 */
    int expert;                   /* PB_SLOT_EXP_*: the expert's index */
    bool linear;
    const char *field[3];         /* config field each part's shape comes from, for messages */
    int n_out, n_in;              /* linear: [n_out, n_in]; vector: n_out */
    int n_parts;
    char name[3][PB_NAME_CAP];    /* canonical names of the weights (or the vector) */
    char bias[3][PB_NAME_CAP];    /* canonical names of the biases; "" = none */
    int rows[3];
    bool conv1d;                  /* stored [n_in, rows] */
    pb_qkv_layout qkv_layout;     /* one fused qkv tensor: its row order */
    int n_heads, head_dim;        /* of that fused qkv */
} pb_witem;

/* Every weight a stage holding layers [layer_begin, layer_end) (+ embeddings,
 * + final norm and head) builds, in load order. pos_rows: rows of the learned
 * position table (its tensor's first dim). A tied head has no item of its own
 * (the token embedding serves both). *items is malloc'd. */
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

/* Builds item it from w's tensors: *vec (backend f32 [n_out]) for a vector,
 * *mat for a linear layer. Shapes are checked against the config (an error
 * names the tensor and the field); each tensor's mapped pages are released
 * once the backend holds its copy. */
pb_status pb_adapter_load(pb_wstore *ws, const pb_model_config *cfg, const pb_weights *w, const pb_witem *it,
                          const float **vec, pb_weight **mat);

#endif
