/* Loading one stage's tensors: opens only the files its plan lists (logged at
 * -v as "opened <path>"), validates their headers, and maps/reads only the
 * stage's tensors. Tensors are handed out as stored (dtype, shape, layout:
 * GPT-2 Conv1D weights stay [in, out], fused qkv stays fused); data is aligned
 * to the element size and lives until pb_weights_free. */
#ifndef PB_WEIGHTS_H
#define PB_WEIGHTS_H

#include <stdbool.h>

#include "ckpt/ckpt.h"
#include "ckpt/plan.h"
#include "common/status.h"
#include "common/tensor.h"

typedef struct pb_weights pb_weights;

pb_status pb_weights_load(const pb_ckpt *ck, const pb_stage_plan *stage, pb_weights **out);
/* As pb_weights_load; read_ahead false: nothing is read ahead or prefetched
 * (the backend holds the stage's matrices already, from --weights-cache), so
 * only the tensors the stage reads come in from the files. */
pb_status pb_weights_load_ex(const pb_ckpt *ck, const pb_stage_plan *stage, bool read_ahead, pb_weights **out);
void pb_weights_free(pb_weights *w);

/* By canonical name ("h.3.attn.c_attn.weight", "wte.weight", "lm_head.weight"); NULL if absent.
 * With tied embeddings the last stage has the token embedding and no lm_head.weight. */
const pb_tensor *pb_weights_get(const pb_weights *w, const char *canonical_name);
/* Layer tensor by suffix: pb_weights_layer(w, 3, "attn.c_attn.weight"). */
const pb_tensor *pb_weights_layer(const pb_weights *w, int layer, const char *suffix);

/* Iteration, in load order. */
int pb_weights_count(const pb_weights *w);
const pb_tensor *pb_weights_at(const pb_weights *w, int i);
const char *pb_weights_canonical_at(const pb_weights *w, int i);
/* The caller has copied (converted) t and will not need its pages soon:
 * return the mapped pages to the kernel, so a stage's peak memory is its
 * converted weights, not converted + mapped. Reading t again stays valid
 * (the pages come back from the file). No-op for owned buffers. */
void pb_weights_release(const pb_weights *w, const pb_tensor *t);

/* Read-ahead at load: while the stage's mapped file ranges total at most
 * PB_READAHEAD bytes (default: half of the memory available at load), a
 * reader thread reads them whole from the files, in order, in large
 * sequential reads; pb_weights_wait(w, t) returns once t's bytes are in
 * (at once when there is no reader). Past the budget the loader is windowed,
 * and pb_weights_prefetch(w, t) starts reading t's pages just before t is
 * needed (a no-op when not windowed), so a stage larger than free memory
 * does not read its files twice. */
bool pb_weights_windowed(const pb_weights *w);
void pb_weights_prefetch(const pb_weights *w, const pb_tensor *t);
void pb_weights_wait(const pb_weights *w, const pb_tensor *t);

/* Bytes of tensor data read from files for this stage. */
uint64_t pb_weights_bytes_read(const pb_weights *w);

#endif
