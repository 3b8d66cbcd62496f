/* The family table: one record per model family holding everything that is
 * only a matter of naming and defaults: its model_type(s), the checkpoint
 * prefixes, tensor names and layouts, the config.json keys with their HF
 * class defaults, and a hook for the keys that are truly its own. The config
 * parser, the checkpoint name mapping and shape checks, and the backend
 * adapter all read this table; the list of a stage's weights is built here
 * once (pb_family_items) for all of them. Adding a family = one record in
 * family.c (+ its hook, + what is new in the math). */
#ifndef PB_MODEL_FAMILY_H
#define PB_MODEL_FAMILY_H

#include <stdbool.h>
#include <stddef.h>

#include "common/status.h"

struct pb_model_config;
struct pb_jctx;

/* How a checkpoint stores a fused q/k/v projection. */
typedef enum pb_qkv_layout {
    PB_QKV_SEPARATE = 0, /* q_proj, k_proj, v_proj */
    PB_QKV_BLOCKS,       /* fused rows q | k | v (GPT-2 c_attn, Phi-3 qkv_proj) */
    PB_QKV_PER_HEAD,     /* rows (n_heads, 3, head_dim): Bloom, NeoX */
    PB_QKV_CODEGEN       /* rows (4, 3, n_heads/4, head_dim) ordered q, v, k: CodeGen mp_num = 4 */
} pb_qkv_layout;

/* Traits of a family (fields of pb_model_config). */
typedef enum pb_norm { PB_NORM_LAYERNORM = 0, PB_NORM_RMSNORM } pb_norm;

typedef enum pb_pos {
    PB_POS_LEARNED = 0, /* absolute position embedding table (GPT-2, OPT, GPT-Neo) */
    PB_POS_ROTARY,      /* RoPE (GPT-J, CodeGen, NeoX, Llama family) */
    PB_POS_ALIBI        /* ALiBi biases (Bloom) */
} pb_pos;

/* How rotary dimensions are paired. */
typedef enum pb_rope_style {
    PB_ROPE_INTERLEAVED = 0, /* GPT-J / CodeGen: rotate_every_two, pairs (2i, 2i+1) */
    PB_ROPE_HALF             /* NeoX / Llama: rotate_half, pairs (i, i + rot/2) */
} pb_rope_style;

typedef enum pb_rope_scaling {
    PB_ROPE_SCALE_NONE = 0,
    PB_ROPE_SCALE_LINEAR, /* positions divided by factor */
    PB_ROPE_SCALE_LLAMA3, /* frequency-dependent scaling of Llama 3.1 */
    PB_ROPE_SCALE_LONGROPE /* Phi-3: per-frequency short/long factors, cos/sin scaled by an attention factor */
} pb_rope_scaling;

typedef enum pb_act {
    PB_ACT_GELU_TANH = 0, /* "gelu_new", "gelu_pytorch_tanh", "gelu_fast" (same function up to rounding) */
    PB_ACT_GELU_ERF,      /* "gelu" (exact, erf) */
    PB_ACT_RELU,          /* "relu" */
    PB_ACT_SILU,          /* "silu" / "swish" */
    PB_ACT_BLOOM_GELU     /* Bloom's tanh approximation (bloom_gelu_forward) */
} pb_act;

typedef enum pb_residual {
    PB_RESID_SEQUENTIAL = 0,   /* x += attn(ln1(x)); x += mlp(ln2(x)) */
    PB_RESID_PARALLEL_SHARED,  /* GPT-J, CodeGen: x += attn(ln1(x)) + mlp(ln1(x)) */
    PB_RESID_PARALLEL_TWO_NORM, /* NeoX use_parallel_residual: x += attn(ln1(x)) + mlp(ln2(x)) */
    PB_RESID_SANDWICH          /* Gemma 2/3: x += post_attn(attn(ln1(x))); x += post_mlp(mlp(ln2(x))) */
} pb_residual;

/* Alias list of config.json keys (first present and non-null wins), NULL-terminated. */
#define PB_FKEYS(...) {__VA_ARGS__, NULL}
#define PB_MAX_KEY_ALIASES 4

/* Checkpoint names of a mixture-of-experts MLP, as layer suffixes without
 * ".weight": router "<router>", expert e "<experts>.<e>.<gate|up|down>". */
typedef struct pb_moe_names {
    const char *router, *experts, *gate, *up, *down;
} pb_moe_names;

typedef struct pb_family {
    const char *model_type[3];   /* config.json model_type values of this record */
    const char *prefix[3];       /* base prefixes removed from HF tensor names */
    const char *layer_prefix;    /* "h" or "layers" */

    /* Tensor names, canonical, without ".weight"/".bias"; NULL = none. */
    const char *tok_emb, *pos_emb, *emb_norm, *proj_in; /* first stage */
    const char *final_norm, *proj_out, *lm_head;        /* last stage */
    /* per decoder layer, as suffixes after "<layer_prefix>.<i>." */
    const char *ln1, *ln2;
    const char *ln_post_attn, *ln_post_mlp;             /* Gemma: norms of the attention and MLP outputs */
    const char *q, *k, *v, *qkv, *o;
    const char *q_norm, *k_norm;                        /* per-head RMSNorm of q and k (Qwen3) */
    const char *fc1, *fc2;                              /* plain MLP */
    const char *gate, *up, *down;                       /* gated MLP, separate gate and up */
    const char *gate_up;                                /* gated MLP, fused rows gate | up (Phi-3) */
    pb_moe_names moe;                                   /* experts, when the config has them */
    bool conv1d;                                        /* GPT-2 Conv1D weights are [in, out] */
    pb_qkv_layout qkv_layout;                           /* of `qkv` */

    /* config.json keys and HF defaults of the fields every family has. A key
     * list with no entry: the default is fixed (never read). */
    const char *k_layers[PB_MAX_KEY_ALIASES]; int d_layers;
    const char *k_vocab[PB_MAX_KEY_ALIASES]; int d_vocab;
    const char *k_hidden[PB_MAX_KEY_ALIASES]; int d_hidden;
    const char *k_heads[PB_MAX_KEY_ALIASES]; int d_heads;
    const char *k_kv_heads[PB_MAX_KEY_ALIASES]; int d_kv_heads;     /* default 0: = heads */
    const char *k_head_dim[PB_MAX_KEY_ALIASES]; int d_head_dim;     /* default 0: hidden / heads */
    const char *k_inter[PB_MAX_KEY_ALIASES]; int d_inter;           /* default 0 (or null): 4 * hidden */
    const char *k_max_pos[PB_MAX_KEY_ALIASES]; int d_max_pos;
    const char *k_act[PB_MAX_KEY_ALIASES]; const char *d_act;       /* no key: `act` below is fixed */
    const char *k_eps[PB_MAX_KEY_ALIASES]; double d_eps;
    const char *k_theta[PB_MAX_KEY_ALIASES]; double d_theta;        /* rotary: also rope_parameters/rope_scaling;
                                                                       default 0: 10000 */
    const char *k_tie[PB_MAX_KEY_ALIASES]; bool d_tie;
    int d_bos, d_eos, d_pad;                                        /* token ids; -1 = none */
    int d_orig_max_pos;          /* original_max_position_embeddings when the config has none (0: max_position) */
    bool rope_su_yarn_longrope;  /* rope type "su"/"yarn" means "longrope" (Phi-3's backward compatibility) */

    /* fixed traits (the hook may change them from config keys) */
    pb_norm norm;
    pb_pos pos;
    pb_rope_style rope_style;
    pb_residual residual;
    pb_act act;
    bool gated_mlp, attn_scale, qkv_bias, out_bias, mlp_bias, lm_head_bias, embed_norm;
    bool softcaps;               /* its hook reads attn/final_logit_softcapping (Gemma); else they are refused */

    /* The family's own keys, after the common ones above are read. */
    pb_status (*parse)(const struct pb_jctx *c, struct pb_model_config *cfg);
} pb_family;

/* The record of a model_type, or NULL. */
const pb_family *pb_family_find(const char *model_type);
/* "gpt2, opt, ..." of every model_type, for messages (static buffer). */
const char *pb_family_list(void);
/* record i of the table, NULL past its end */
const pb_family *pb_family_at(int i);

/* ---- the weights of a stage, in the compute layout ---- */

/* Where the stage keeps a weight. */
typedef enum pb_wslot {
    PB_SLOT_TOK_EMB = 0, PB_SLOT_POS_EMB, PB_SLOT_EMB_NORM_W, PB_SLOT_EMB_NORM_B, PB_SLOT_PROJ_IN,
    PB_SLOT_FINAL_W, PB_SLOT_FINAL_B, PB_SLOT_PROJ_OUT, PB_SLOT_LM_HEAD,
    PB_SLOT_LN1_W, PB_SLOT_LN1_B, PB_SLOT_LN2_W, PB_SLOT_LN2_B, PB_SLOT_QKV, PB_SLOT_O, PB_SLOT_UP, PB_SLOT_DOWN,
    PB_SLOT_Q_NORM, PB_SLOT_K_NORM,
    PB_SLOT_POST_ATTN_W, PB_SLOT_POST_MLP_W,          /* Gemma sandwich norms */
    PB_SLOT_ROUTER, PB_SLOT_EXP_GU, PB_SLOT_EXP_DOWN /* mixture of experts: [n_experts, H], gate|up, down */
} pb_wslot;

#define PB_NAME_CAP 192

/* One weight: a vector (norm weight/bias, kept f32) or a linear layer built
 * from 1..3 checkpoint tensors stacked along output rows. */
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
    float add;                    /* vector: added to every element when loaded (Gemma's RMSNorm 1 + w) */
} pb_witem;

/* Every weight a stage holding layers [layer_begin, layer_end) (+ embeddings,
 * + final norm and head) needs, in load order. pos_rows: rows of the learned
 * position table. A tied head has no item of its own (the token embedding
 * serves both). *items is malloc'd. Config contradictions (a fused qkv with
 * GQA, ...) are errors naming the field. */
pb_status pb_family_items(const struct pb_model_config *cfg, int layer_begin, int layer_end, bool has_embed,
                          bool has_head, int pos_rows, pb_witem **items, int *n_items);

/* Canonical name of an HF tensor name: the family's base prefix removed (a
 * pointer into name). */
const char *pb_family_canonical(const pb_family *f, const char *name);
/* "<layer_prefix>.<layer>.<suffix>"; returns snprintf's count. */
int pb_family_layer_name(const pb_family *f, int layer, const char *suffix, char *buf, size_t cap);

#endif
