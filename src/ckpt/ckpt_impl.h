/* Internals shared by the files of src/ckpt (not for other layers). */
#ifndef PB_CKPT_IMPL_H
#define PB_CKPT_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckpt/ckpt.h"
#include "common/tensor.h"

/* Largest header / index / pickle we accept: real ones are a few MB. */
#define PB_CKPT_MAX_META (256u << 20)

/* ---- family naming (names.c) ---- */
typedef enum pb_tensor_role {
    PB_ROLE_EMBED = 0, /* first stage: token/position embeddings, OPT project_in, Bloom embedding norm */
    PB_ROLE_LAYER,     /* decoder layer `layer` */
    PB_ROLE_HEAD       /* last stage: final norm, LM head, OPT project_out */
} pb_tensor_role;

typedef struct pb_expected {
    char name[128];            /* canonical */
    pb_tensor_role role;
    int layer;                 /* -1 unless PB_ROLE_LAYER */
    bool tied_embed;           /* the token embedding, also loaded by the last stage when tied */
    int ndim;
    int64_t shape[2];
} pb_expected;

/* Every tensor a model of this config needs, embeddings first, then layers in
 * order, then the head. */
pb_status pb_names_expected(const pb_model_config *cfg, pb_expected **out, int *n_out);
/* Suffixes of non-parameter buffers some checkpoints carry (causal masks, inv_freq): skipped. */
bool pb_names_is_buffer(const char *canonical);

/* ---- safetensors (safetensors.c) ---- */
typedef struct pb_st_entry {
    char *name;
    pb_dtype dtype;
    int ndim;
    int64_t shape[PB_MAX_DIMS];
    uint64_t begin, end;       /* within the data buffer */
} pb_st_entry;

typedef struct pb_st_header {
    int n;
    pb_st_entry *e;            /* sorted by name */
    uint64_t data_start;       /* 8 + header length */
    uint64_t file_size;
} pb_st_header;

/* Parse and validate a header JSON of len bytes for a data buffer of data_size
 * bytes: dtypes, shapes, offsets in bounds, shape x dtype size == span, no
 * overlap, no hole, spans cover the buffer. __metadata__ is tolerated. */
pb_status pb_st_parse_header(const char *path, const char *json, size_t len, uint64_t data_size, pb_st_header *out);
/* Read the 8-byte length and header of an open file, then parse. */
pb_status pb_st_read_header(const char *path, int fd, pb_st_header *out);
const pb_st_entry *pb_st_find(const pb_st_header *h, const char *name);
void pb_st_header_free(pb_st_header *h);

/* ---- PyTorch zip checkpoints (torchbin.c, pickle.c) ---- */
typedef struct pb_bin_tensor {
    char *name;                /* state dict key */
    char *storage_key;         /* "data/<key>" in the archive */
    pb_dtype dtype;
    uint64_t storage_numel;    /* elements in the storage, as recorded */
    uint64_t offset;           /* storage offset, in elements */
    int ndim;
    int64_t shape[PB_MAX_DIMS];
    int64_t stride[PB_MAX_DIMS];
} pb_bin_tensor;

/* Parse data.pkl with a restricted unpickler (allow-list of globals, as
 * torch's weights_only loader) into the state dict's tensors. */
pb_status pb_pickle_load_state_dict(const char *path, const unsigned char *data, size_t len, pb_bin_tensor **out,
                                    int *n_out);
void pb_bin_tensors_free(pb_bin_tensor *t, int n);

typedef struct pb_zip_entry {
    char *name;
    uint64_t local_offset;     /* of the local file header */
    uint64_t size;             /* uncompressed == compressed (stored) */
    uint16_t method;
} pb_zip_entry;

typedef struct pb_bin_archive {
    char *prefix;              /* "archive/" or "<name>/" */
    int n_entries;
    pb_zip_entry *entries;     /* sorted by name */
    int n;
    pb_bin_tensor *t;          /* sorted by name */
    uint64_t file_size;
} pb_bin_archive;

/* Read the zip central directory, byteorder and data.pkl of an open file. */
pb_status pb_bin_open(const char *path, int fd, pb_bin_archive *out);
const pb_bin_tensor *pb_bin_find(const pb_bin_archive *a, const char *name);
/* Absolute file offset and size of a storage's bytes (reads its local header). */
pb_status pb_bin_storage_span(const char *path, int fd, const pb_bin_archive *a, const char *storage_key,
                              uint64_t *offset, uint64_t *size);
void pb_bin_archive_free(pb_bin_archive *a);

/* ---- the checkpoint (ckpt.c) ---- */
typedef struct pb_ckpt_tensor {
    char *name;                /* as stored in the checkpoint */
    char *canon;               /* canonical name */
    int file;                  /* index into files */
    pb_tensor_role role;
    int layer;
    bool tied_embed;
    int ndim;                  /* expected shape */
    int64_t shape[2];
    uint64_t numel;
    uint64_t nbytes;           /* stored bytes: exact from a header, else numel * element size */
    unsigned char fp8;         /* an FP8 checkpoint's: 1 a matrix with scales (may be F8_E4M3), 2 its scales */
} pb_ckpt_tensor;

struct pb_ckpt {
    pb_ckpt_format fmt;
    const pb_family *family;
    int n_layers;
    bool tied;
    char *source;              /* index json or single file */
    int n_files;
    char **files;              /* full paths */
    int n_tensors;
    pb_ckpt_tensor *t;         /* expected tensors, in pb_names_expected order */
    bool sizes_exact;
    uint64_t total_bytes;
};

/* Whether tensor t belongs to stage sp (layers, embed on first, head + tied embed on last). */
struct pb_stage_plan;
bool pb_ckpt_tensor_in_stage(const pb_ckpt_tensor *t, int layer_begin, int layer_end, bool has_embed, bool has_head);

#endif
