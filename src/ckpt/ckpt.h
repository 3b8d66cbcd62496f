/* A checkpoint as found in a model folder: the list of its tensors and the
 * files that hold them, read from the index json (sharded) or from the single
 * file's header only. No shard data is touched here; see weights.h for loading. */
#ifndef PB_CKPT_H
#define PB_CKPT_H

#include <stdbool.h>
#include <stdint.h>

#include "common/status.h"
#include "common/tensor.h"
#include "model/config.h"

typedef struct pb_ckpt pb_ckpt;

typedef enum pb_ckpt_format {
    PB_CKPT_SAFETENSORS = 0, /* model.safetensors or model-*-of-*.safetensors + index */
    PB_CKPT_TORCH_BIN        /* pytorch_model.bin (zip + pickle) or shards + index */
} pb_ckpt_format;

/* Open the checkpoint of model_dir. index_path (NULL = look in model_dir for
 * model.safetensors.index.json, model.safetensors, pytorch_model.bin.index.json,
 * pytorch_model.bin, in that order) may name either an index json or a single
 * weights file. Every tensor name is matched against the family's expected
 * names for cfg (missing ones are an error naming the tensor); cfg must stay
 * valid while ck is used. */
pb_status pb_ckpt_open(const char *model_dir, const char *index_path, const pb_model_config *cfg, pb_ckpt **out);
void pb_ckpt_close(pb_ckpt *ck);

pb_ckpt_format pb_ckpt_get_format(const pb_ckpt *ck);
const char *pb_ckpt_format_name(pb_ckpt_format f); /* "safetensors", "pytorch .bin" */
/* The index json, or the single weights file. */
const char *pb_ckpt_source(const pb_ckpt *ck);
int pb_ckpt_n_files(const pb_ckpt *ck);
const char *pb_ckpt_file_path(const pb_ckpt *ck, int i);
/* Number of (expected, used) tensors and their total stored bytes. */
int pb_ckpt_n_tensors(const pb_ckpt *ck);
uint64_t pb_ckpt_param_bytes(const pb_ckpt *ck);
/* true when tensor sizes come from file headers (single file); false when
 * they are computed from the config's shapes and the index's total_size. */
bool pb_ckpt_sizes_exact(const pb_ckpt *ck);
/* Expected shape and stored element type of a tensor by canonical name, from
 * the index or header only. The type is one of the stored element size (an
 * index gives sizes: 2-byte elements read as BF16, which F16 matches in
 * size). false when the model has no such tensor. */
bool pb_ckpt_tensor_info(const pb_ckpt *ck, const char *canonical, pb_dtype *dtype, int *ndim, int64_t shape[2]);

/* Canonical name of an HF tensor name for a family: the base prefix
 * ("transformer.", "model.", "model.decoder.", "gpt_neox.") removed. Returns a
 * pointer into name. */
const char *pb_ckpt_canonical_name(const pb_family *f, const char *name);
/* Canonical name of decoder layer `layer`'s tensor `suffix`, e.g.
 * ("h.3.attn.c_attn.weight" for GPT-2). Returns snprintf's count. */
int pb_ckpt_layer_name(const pb_family *f, int layer, const char *suffix, char *buf, size_t cap);

#endif
