/* --device: which backend and which GPU a rank uses (see device.h). */
#include "config.h"
#include "cli/device.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "common/log.h"
#include "common/util.h"
#include "cuda/cuda.h"


static bool real_has_backend(void)
{
#ifdef PB_HAVE_CUDA
    return pb_backend_ops_of("cuda") != NULL;
#else
    return false;
#endif
}

static const pb_device_probe real_probe = {real_has_backend, pb_cuda_device_count, pb_cuda_device_info};
static const pb_device_probe *probe = &real_probe;

void pb_device_set_probe(const pb_device_probe *p) { probe = p ? p : &real_probe; }

static pb_status pick_gpu(int rank, int local_rank, int n, pb_device_pick *out)
{
    out->kind = "cuda";
    out->n_gpus = n;
    out->gpu = local_rank % n;
    pb_status st = probe->info(out->gpu, out->name, sizeof out->name, &out->free_bytes, &out->total_bytes);
    if (st != PB_OK)
        return pb_error_ctx(st, "rank %d: --device cuda: GPU %d of %d", rank, out->gpu, n);
    return PB_OK;
}

pb_status pb_device_pick_for(pb_backend_kind want, int rank, int local_rank, pb_device_pick *out)
{
    memset(out, 0, sizeof *out);
    out->kind = "cpu";
    out->gpu = -1;
    if (local_rank < 0)
        local_rank = 0;
    if (want == PB_BACKEND_CPU)
        return PB_OK;
    const bool has_backend = probe->has_backend();
    const char *why = NULL;
    const int n = has_backend ? probe->count(&why) : 0;
    if (want == PB_BACKEND_CUDA) {
#ifndef PB_HAVE_CUDA
        if (probe == &real_probe)
            return pb_error(PB_ERR_NOT_AVAILABLE, "rank %d: --device cuda: this build has no CUDA support "
                            "(configure --with-cuda)", rank);
#endif
        if (!has_backend)
            return pb_error(PB_ERR_NOT_AVAILABLE, "rank %d: --device cuda: the CUDA backend is not yet "
                            "available in this build; use --device cpu", rank);
        if (n <= 0)
            return pb_error(PB_ERR_NOT_AVAILABLE, "rank %d: --device cuda: no usable GPU (%s; "
                            "CUDA_VISIBLE_DEVICES=%s); use --device cpu", rank, why ? why : "no CUDA device",
                            getenv("CUDA_VISIBLE_DEVICES") ? getenv("CUDA_VISIBLE_DEVICES") : "(unset)");
        return pick_gpu(rank, local_rank, n, out);
    }
    /* auto */
#ifndef PB_HAVE_CUDA
    if (probe == &real_probe) {
        snprintf(out->why, sizeof out->why, "this build has no CUDA support");
        return PB_OK;
    }
#endif
    if (!has_backend) {
        snprintf(out->why, sizeof out->why, "the CUDA backend is not yet available in this build");
        return PB_OK;
    }
    if (n <= 0) {
        snprintf(out->why, sizeof out->why, "no usable GPU: %s", why ? why : "no CUDA device");
        return PB_OK;
    }
    return pick_gpu(rank, local_rank, n, out);
}

void pb_device_log(const pb_device_pick *p, int rank, int local_rank)
{
    if (p->gpu < 0) {
        pb_log_verbose("rank %d: device cpu%s%s%s", rank, p->why[0] ? " (auto: " : "", p->why,
                       p->why[0] ? ")" : "");
        return;
    }
    const char *vis = getenv("CUDA_VISIBLE_DEVICES");
    char fr[32], tot[32];
    pb_log_verbose("rank %d: device cuda: GPU %d of %d visible (local rank %d; CUDA_VISIBLE_DEVICES=%s): %s, "
                   "%s free of %s", rank, p->gpu, p->n_gpus, local_rank, vis ? vis : "(unset)", p->name,
                   pb_human_bytes(p->free_bytes, fr, sizeof fr), pb_human_bytes(p->total_bytes, tot, sizeof tot));
}

pb_status pb_device_check_memory(const pb_device_pick *p, const pb_stage_plan *sp, int rank, int batch,
                                 int context)
{
    if (p->gpu < 0 || sp->mem_total <= p->free_bytes)
        return PB_OK;
    char need[32], w[32], kv[32], act[32], fr[32], tot[32];
    return pb_error(PB_ERR_CONFIG, "rank %d: stage %d needs about %s on GPU %d (weights %s, KV cache %s for "
                    "--batch-size %d x context %d, activations and scratch %s) but GPU %d (%s) has only %s free "
                    "of %s; lower --batch-size or --max-seq-len, use --weights-dtype bf16, or use more ranks and "
                    "GPUs", rank, sp->stage, pb_human_bytes(sp->mem_total, need, sizeof need), p->gpu,
                    pb_human_bytes(sp->mem_weights, w, sizeof w), pb_human_bytes(sp->mem_kv, kv, sizeof kv), batch,
                    context, pb_human_bytes(sp->mem_act, act, sizeof act), p->gpu, p->name,
                    pb_human_bytes(p->free_bytes, fr, sizeof fr), pb_human_bytes(p->total_bytes, tot, sizeof tot));
}

int pb_device_list_gpus(pb_gpu_info *out, int max, const char **why)
{
    *why = NULL;
    int n = probe->has_backend() ? probe->count(why) : 0;
    if (n == 0 && !*why)
        *why = "the CUDA backend is not in this build";
    if (n > max)
        n = max;
    for (int i = 0; i < n; i++) {
        if (probe->info(i, out[i].name, sizeof out[i].name, &out[i].free_bytes, &out[i].total_bytes) !=
            PB_OK) {
            *why = pb_last_error();
            return i;
        }
    }
    return n;
}
