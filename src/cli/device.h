/* --device for one rank: the CPU, or the GPU of index local rank % the
 * visible GPUs (CUDA_VISIBLE_DEVICES is applied by the CUDA runtime, so the
 * index counts the visible ones), with its name and memory; and the check
 * that the rank's stage fits in that GPU's free memory before loading. */
#ifndef PB_CLI_DEVICE_H
#define PB_CLI_DEVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ckpt/plan.h"
#include "cli/opts.h"
#include "common/status.h"

typedef struct pb_device_pick {
    const char *kind;                 /* "cpu" or "cuda", as pb_backend_create takes it */
    int gpu;                          /* cuda: index among the visible GPUs; -1 on the CPU */
    int n_gpus;                       /* GPUs visible (0 when none or not asked) */
    char name[128];                   /* cuda: the GPU's name */
    uint64_t free_bytes, total_bytes; /* cuda: its memory when picked */
    char why[192];                    /* auto on the CPU: why not cuda */
} pb_device_pick;

/* Resolve --device for the rank at local_rank. auto is cuda when this build
 * has the CUDA backend and a GPU is visible, else cpu. cuda with no GPU or
 * no CUDA backend: PB_ERR_NOT_AVAILABLE naming the rank and the reason. */
pb_status pb_device_pick_for(pb_backend_kind want, int rank, int local_rank, pb_device_pick *out);

/* -v: which device the rank uses (GPU index, name, free and total memory). */
void pb_device_log(const pb_device_pick *p, int rank, int local_rank);

/* cuda: refuse the stage when its planned bytes (weights, KV cache,
 * activations and scratch) exceed the GPU's free memory. */
pb_status pb_device_check_memory(const pb_device_pick *p, const pb_stage_plan *sp, int rank, int batch,
                                 int context);

/* Every visible GPU's name and memory, for plan (at most max; returns how
 * many; 0 with *why set when none). */
typedef struct pb_gpu_info {
    char name[128];
    uint64_t free_bytes, total_bytes;
} pb_gpu_info;
int pb_device_list_gpus(pb_gpu_info *out, int max, const char **why);

/* What the rules above ask of CUDA; tests put a fake in (NULL: the real one). */
typedef struct pb_device_probe {
    bool (*has_backend)(void);                 /* the CUDA backend is in this build */
    int (*count)(const char **why);            /* pb_cuda_device_count */
    pb_status (*info)(int device, char *name, size_t cap, uint64_t *free_bytes, uint64_t *total_bytes);
} pb_device_probe;
void pb_device_set_probe(const pb_device_probe *p);

#endif
