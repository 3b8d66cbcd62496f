/* One model description for every supported family, parsed from the HF
 * config.json (+ generation_config.json). The forward pass is driven only by
 * these fields, so families differ in their adapters, not in copies of the
 * forward pass. */
#ifndef PB_MODEL_CONFIG_H
#define PB_MODEL_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/status.h"
#include "model/family.h"

#define PB_MAX_EOS 8
#define PB_MAX_ROPE_FREQS 256 /* longrope factors: rotary_dim up to 512 */
#define PB_MAX_MOE_LAYERS 1024 /* layers a mixture-of-experts config may have */

/* Defaults from generation_config.json; has_* says whether the field was present. */
typedef struct pb_gen_defaults {
    bool has_max_new_tokens, has_temperature, has_top_k, has_top_p, has_min_p,
         has_repetition_penalty, has_do_sample, has_num_beams, has_length_penalty, has_early_stopping;
    int max_new_tokens;
    float temperature, top_p, min_p, repetition_penalty;
    int top_k;
    bool do_sample;
    int num_beams;            /* > 1 without do_sample: beam search (HF's generate() default for the model) */
    float length_penalty;
    int early_stopping;       /* 0 false, 1 true, 2 "never" (gen/beam.h's pb_beam_early) */
    /* sentence-transformers' modules.json, for --task embed: its Pooling module's mode (-1 none; 0 lasttoken,
     * 1 mean, 2 cls: gen/record.h's PB_POOL_*; 3 another, named in st_pooling_name) and whether a Normalize
     * module follows */
    bool has_st_modules, st_normalize;
    int st_pooling;
    char st_pooling_name[48];
} pb_gen_defaults;

typedef struct pb_model_config {
    const pb_family *family;  /* its record in the family table (family.h) */
    char model_type[32];      /* as in config.json */

    /* sizes */
    int vocab_size;
    int hidden_size;          /* d_model */
    int n_layers;
    int n_heads;              /* query heads */
    int n_kv_heads;           /* == n_heads unless GQA/MQA */
    int head_dim;             /* usually hidden_size / n_heads */
    int intermediate_size;    /* MLP inner size (4*hidden when the config has none) */
    int max_position;         /* context length: n_positions / max_position_embeddings / seq_length */
    int word_embed_proj_dim;  /* OPT: embedding dim when it differs from hidden (project_in/out); else 0 */

    /* normalisation */
    pb_norm norm;
    float norm_eps;
    bool pre_norm;            /* false only for OPT with do_layer_norm_before=false (post-norm) */
    bool final_norm;          /* final norm before the LM head exists */
    bool embed_norm;          /* Bloom: word_embeddings_layernorm after the embedding */
    float norm_w_offset;      /* RMSNorm multiplies by (offset + w): 1 for Gemma's x * (1 + w), else 0 */

    /* positions */
    pb_pos pos;
    int pos_offset;           /* OPT learned positions start at 2 */
    int rotary_dim;           /* dims of each head that rotate (partial rotary: < head_dim) */
    pb_rope_style rope_style;
    float rope_theta;
    pb_rope_scaling rope_scaling;
    float rope_factor;        /* linear, llama3 and longrope */
    float rope_low_freq_factor, rope_high_freq_factor; /* llama3 */
    int rope_original_max_position;                    /* llama3, longrope */
    /* longrope: inv_freq[i] /= short[i] while a forward's last position + 1 <= original_max_position, else
     * long[i]; cos and sin are multiplied by rope_attn_factor */
    int rope_n_factors;                                /* = rotary_dim / 2 */
    float rope_short[PB_MAX_ROPE_FREQS], rope_long[PB_MAX_ROPE_FREQS];
    float rope_attn_factor;
    float rope_local_theta;   /* > 0: local (sliding) layers rotate with this base and no scaling
                               * (Gemma 3 rope_local_base_freq); 0: every layer as above */

    /* attention */
    bool attn_scale;          /* scale scores by 1/sqrt(head_dim); GPT-Neo does not */
    bool scale_attn_by_inverse_layer_idx; /* GPT-2 option: also divide by (layer+1) */
    bool qkv_bias;            /* biases on q, k, v projections */
    bool out_bias;            /* bias on the attention output projection */
    int sliding_window;       /* window size in tokens for local layers; 0 = none */
    bool *layer_local;        /* [n_layers]: layer uses the local window (GPT-Neo "local", Mistral, Qwen2 SWA) */
    float query_pre_attn_scalar; /* > 0: scores scaled by its -1/2 power instead of head_dim's (Gemma) */
    float attn_softcap;       /* > 0: scores = cap * tanh(scores / cap) before the mask (attn_logit_softcapping) */

    /* MLP */
    pb_act act;
    bool gated_mlp;           /* SwiGLU-style gate/up/down */
    bool mlp_bias;

    /* mixture of experts (src/backend/moe.c); n_experts == 0: dense MLP everywhere */
    int n_experts;            /* num_local_experts / num_experts */
    int n_experts_per_tok;    /* top-k */
    int moe_intermediate_size;/* expert MLP inner size */
    bool norm_topk_prob;      /* renormalise the top-k probabilities to sum 1 */
    int moe_sparse_step;      /* decoder_sparse_step: layer l is sparse when (l + 1) % step == 0 */
    uint64_t mlp_only[PB_MAX_MOE_LAYERS / 64]; /* bitset of mlp_only_layers (dense) */

    pb_residual residual;
    bool tie_word_embeddings; /* LM head shares the token embedding */
    bool lm_head_bias;        /* e.g. GPT-J/CodeGen lm_head has a bias */
    float final_softcap;      /* > 0: logits = cap * tanh(logits / cap) (final_logit_softcapping) */
    bool embed_scale;         /* Gemma: embeddings times sqrt(hidden_size), rounded to the embedding's dtype */

    /* tokens */
    int bos_token_id;         /* -1 if none */
    int pad_token_id;         /* -1 if none */
    int eos_ids[PB_MAX_EOS];  /* every EOS id from config and generation_config */
    int n_eos;

    char torch_dtype[16];     /* config.json "dtype" (5.x) or "torch_dtype" ("float32", "float16", "bfloat16", "") */
    /* an FP8 checkpoint: quantization_config quant_method "fp8" (fine-grained FP8, scales `<name>_scale_inv`)
     * or "compressed-tensors" of format "float-quantized" (scales `<name>_scale`): its F8_E4M3 matrices come
     * with a scale per block of fp8_block[0] rows x fp8_block[1] columns, 0 for the whole dimension ({1, 0}:
     * one a row; {0, 0}: one a matrix) */
    bool fp8;
    int fp8_block[2];
    char fp8_scale[16];       /* the scales' suffix: "_scale_inv" or "_scale" */
    pb_gen_defaults gen;
} pb_model_config;

/* Parse <dir>/config.json and, when present, <dir>/generation_config.json.
 * Every field is type-checked; errors name the file and field. An unknown
 * model_type is PB_ERR_UNSUPPORTED naming the supported ones. */
pb_status pb_model_config_load(const char *model_dir, pb_model_config *cfg);
/* The same from config.json text in memory (len bytes, read up to a NUL);
 * `name` is used in messages. Does not read generation_config.json. */
pb_status pb_model_config_parse(const char *json, size_t len, const char *name, pb_model_config *cfg);
void pb_model_config_free(pb_model_config *cfg);  /* frees layer_local; NULL-safe */

/* NULL for a family without experts (its record's moe names). */
const pb_moe_names *pb_moe_names_of(const pb_family *f);
/* Whether decoder layer `layer` has a mixture-of-experts MLP (else dense). */
bool pb_model_layer_moe(const pb_model_config *cfg, int layer);
/* Whether every decoder layer has experts (no dense MLP anywhere). */
bool pb_model_all_moe(const pb_model_config *cfg);
/* Number of parameter bytes of one decoder layer, embeddings, head: from the checkpoint, see plan.h. */

#endif
