/* The --device rules of src/cli/device.c with a fake CUDA probe (no GPU is
 * needed): auto's choice, GPU = local rank % visible GPUs, the refusals that
 * name the rank, and the per-GPU memory check naming the GPU's free memory. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "cli/device.h"

static int failures;
#define EXPECT(cond) \
    do { if (!(cond)) { fprintf(stderr, "%s:%d: FAIL %s\n", __FILE__, __LINE__, #cond); failures++; } } while (0)

static bool fake_backend;
static int fake_n;
static int info_calls, info_last;
static const uint64_t GB = 1000000000ull;

static bool f_has(void) { return fake_backend; }
static int f_count(const char **why)
{
    if (fake_n == 0 && why)
        *why = "no CUDA-capable device is detected";
    return fake_n;
}
static pb_status f_info(int d, char *name, size_t cap, uint64_t *fr, uint64_t *tot)
{
    info_calls++;
    info_last = d;
    snprintf(name, cap, "Fake GPU %d", d);
    *fr = (uint64_t)(10 + d) * GB;
    *tot = 80 * GB;
    return PB_OK;
}
static const pb_device_probe fake = {f_has, f_count, f_info};

static bool has(const char *needle) { return strstr(pb_last_error(), needle) != NULL; }

int main(void)
{
    pb_device_set_probe(&fake);
    pb_device_pick p;

    /* cpu asked: never probes */
    fake_backend = true, fake_n = 2, info_calls = 0;
    EXPECT(pb_device_pick_for(PB_BACKEND_CPU, 3, 1, &p) == PB_OK);
    EXPECT(strcmp(p.kind, "cpu") == 0 && p.gpu == -1 && info_calls == 0);

    /* auto with no backend, or no GPU: cpu, saying why */
    fake_backend = false;
    EXPECT(pb_device_pick_for(PB_BACKEND_AUTO, 0, 0, &p) == PB_OK);
    EXPECT(strcmp(p.kind, "cpu") == 0 && strstr(p.why, "backend"));
    fake_backend = true, fake_n = 0;
    EXPECT(pb_device_pick_for(PB_BACKEND_AUTO, 0, 0, &p) == PB_OK);
    EXPECT(strcmp(p.kind, "cpu") == 0 && strstr(p.why, "no CUDA-capable device"));

    /* cuda with no GPU / no backend: refused, naming the rank and the reason */
    EXPECT(pb_device_pick_for(PB_BACKEND_CUDA, 5, 1, &p) == PB_ERR_NOT_AVAILABLE);
    EXPECT(has("rank 5") && has("no usable GPU") && has("no CUDA-capable device"));
    fake_backend = false, fake_n = 2;
    EXPECT(pb_device_pick_for(PB_BACKEND_CUDA, 4, 0, &p) == PB_ERR_NOT_AVAILABLE);
    EXPECT(has("rank 4") && has("not yet available"));

    /* GPU = local rank % visible GPUs, for auto and cuda */
    fake_backend = true, fake_n = 3;
    for (int lr = 0; lr < 7; lr++) {
        EXPECT(pb_device_pick_for(lr % 2 ? PB_BACKEND_CUDA : PB_BACKEND_AUTO, 10 + lr, lr, &p) == PB_OK);
        EXPECT(strcmp(p.kind, "cuda") == 0 && p.gpu == lr % 3 && p.n_gpus == 3 && info_last == lr % 3);
        EXPECT(p.free_bytes == (uint64_t)(10 + lr % 3) * GB && p.total_bytes == 80 * GB);
    }
    EXPECT(pb_device_pick_for(PB_BACKEND_CUDA, 2, 2, &p) == PB_OK && strcmp(p.name, "Fake GPU 2") == 0);

    /* the memory check: free 12 GB on GPU 2 */
    pb_stage_plan sp;
    memset(&sp, 0, sizeof sp);
    sp.stage = 2;
    sp.mem_weights = 8 * GB, sp.mem_kv = 3 * GB, sp.mem_act = GB / 2;
    sp.mem_total = sp.mem_weights + sp.mem_kv + sp.mem_act;
    EXPECT(pb_device_check_memory(&p, &sp, 2, 64, 4096) == PB_OK);
    sp.mem_kv = 4 * GB;
    sp.mem_total = sp.mem_weights + sp.mem_kv + sp.mem_act;
    EXPECT(pb_device_check_memory(&p, &sp, 2, 64, 4096) == PB_ERR_CONFIG);
    EXPECT(has("rank 2") && has("stage 2") && has("GPU 2 (Fake GPU 2)") && has("11.18 GiB free") &&
           has("--batch-size 64"));
    /* on the CPU the host check applies, not this one */
    pb_device_pick cpu;
    EXPECT(pb_device_pick_for(PB_BACKEND_CPU, 0, 0, &cpu) == PB_OK);
    EXPECT(pb_device_check_memory(&cpu, &sp, 0, 64, 4096) == PB_OK);

    /* plan's list of GPUs */
    pb_gpu_info g[4];
    const char *why;
    EXPECT(pb_device_list_gpus(g, 4, &why) == 3 && strcmp(g[1].name, "Fake GPU 1") == 0 && g[1].free_bytes == 11 * GB);
    EXPECT(pb_device_list_gpus(g, 2, &why) == 2);
    fake_n = 0;
    EXPECT(pb_device_list_gpus(g, 4, &why) == 0 && why && strstr(why, "no CUDA-capable"));

    pb_device_set_probe(NULL);
    if (failures)
        fprintf(stderr, "%d failure(s)\n", failures);
    else
        printf("device rules: all checks passed\n");
    return failures ? 1 : 0;
}
