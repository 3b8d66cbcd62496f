/* Mixture-of-experts MLP (Mixtral, Qwen3-MoE), as HF transformers 5.x:
 * router logits = x R^T; p = softmax(logits) in f32; the top-k p (largest
 * first), divided by their sum when norm_topk_prob (Mixtral always); each
 * expert e runs down(act(gate x) * up x) on exactly the tokens routed to it,
 * gathered into one GEMM per expert; out[t] = sum over t's experts in
 * ascending expert id of w * y (from zero), as HF's index_add_ loop.
 *
 * Batch invariance: routing is per token on the host, every GEMM row is
 * computed independently of the other rows (backend contract), and a token's
 * sum runs in expert-id order, so its result does not depend on the batch. */
#ifndef PB_MOE_H
#define PB_MOE_H

#include <stdbool.h>
#include <stddef.h>

#include "backend/backend.h"
#include "common/status.h"
#include "model/config.h"

/* The weights of one mixture-of-experts layer (owned by the stage's store). */
typedef struct pb_moe_layer {
    pb_weight *router;      /* [n_experts, H] */
    pb_weight **gu;         /* [n_experts]: gate | up stacked, [2 I, H] */
    pb_weight **down;       /* [n_experts]: [H, I] */
} pb_moe_layer;

typedef struct pb_moe pb_moe;

/* Floats of backend arena one stage needs for batches of T tokens (0 when the
 * config has no experts). */
size_t pb_moe_arena_floats(const pb_model_config *cfg, int T);

/* Host scratch for batches of up to T tokens; arena: backend memory of
 * pb_moe_arena_floats(cfg, T) floats, zeroed (its first row stays zero). */
pb_status pb_moe_create(const pb_model_config *cfg, int T, float *arena, pb_moe **out);
void pb_moe_free(pb_moe *m);

/* out[T, H] = the MoE MLP of in[T, H] (backend memory). */
pb_status pb_moe_forward(pb_moe *m, pb_backend *be, const pb_moe_layer *w, const float *in, float *out, int T);

/* Routing of one token (host): probs[n_exp] scratch; idx/wt [k] in rank order. */
void pb_moe_route(const float *logits, int n_exp, int k, bool renorm, float *probs, int *idx, float *wt);

#endif
