// The CPU side of the CUDA stand-in (cuda_runtime.h): memory, copies, and
// kernel launches as fibers, one per thread of a block.
// Switches after a fiber's first start are _setjmp/_longjmp (no signal mask
// saved, so no system call: swapcontext's made this program 10x slower);
// _FORTIFY_SOURCE's longjmp check would refuse a jump to another stack.
#undef _FORTIFY_SOURCE
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <ucontext.h>

#include <vector>

#include "cuda_runtime.h"

emu_thread_id *emu_cur;

namespace {
struct fiber {
    ucontext_t ctx;
    emu_thread_id id;
    bool done;
    bool started;  // entered through ctx once; later resumed through jb
    jmp_buf jb;    // where the fiber yielded
    const unsigned *wait_gen; // blocked until *wait_gen != wait_val (a barrier's generation), or NULL
    unsigned wait_val;
    std::vector<char> stack;
};
jmp_buf sched_jb; // the scheduler, where a fiber yields to
std::vector<fiber> *fibers;
fiber *running;
const std::function<void()> *body;
// __syncthreads: threads arrived at the current barrier, and its generation
int bar_arrived, bar_alive;
unsigned bar_gen;
// warp shuffles: values by lane, arrivals by warp
std::vector<double> shfl_val;
std::vector<int> shfl_arrived;
std::vector<unsigned> shfl_gen;

void yield_to_sched()
{
    if (!_setjmp(running->jb))
        _longjmp(sched_jb, 1);
}

void fiber_main()
{
    (*body)();
    running->done = true;
    bar_alive--;
    if (bar_arrived && bar_arrived == bar_alive) { // the rest were waiting for this one
        bar_arrived = 0;
        bar_gen++;
    }
    _longjmp(sched_jb, 1);
}

void wait_warp(int w)
{
    unsigned g = shfl_gen[w];
    if (++shfl_arrived[w] == 32) {
        shfl_arrived[w] = 0;
        shfl_gen[w]++;
        return;
    }
    while (shfl_gen[w] == g) {
        running->wait_gen = &shfl_gen[w]; // the scheduler skips this fiber until then
        running->wait_val = g;
        yield_to_sched();
    }
    running->wait_gen = NULL;
}

template <typename T> T shfl_xor(T v, int off)
{
    const int tid = (int)emu_cur->tid.x, w = tid / 32;
    shfl_val[tid] = (double)v;
    wait_warp(w); // all lanes wrote
    T r = (T)shfl_val[(size_t)(tid ^ off)];
    wait_warp(w); // all lanes read
    return r;
}
} // namespace

void emu_syncthreads(void)
{
    unsigned g = bar_gen;
    if (++bar_arrived == bar_alive) {
        bar_arrived = 0;
        bar_gen++;
        return;
    }
    while (bar_gen == g) {
        running->wait_gen = &bar_gen;
        running->wait_val = g;
        yield_to_sched();
    }
    running->wait_gen = NULL;
}

float emu_shfl_xor_f(float v, int off) { return shfl_xor<float>(v, off); }

// every lane of the warp gives n values (n <= 8) and gets all 32 lanes' (all[lane * n + i])
void emu_warp_exchange(const unsigned *mine, int n, unsigned *all)
{
    const int tid = (int)emu_cur->tid.x, w = tid / 32;
    static std::vector<unsigned> xv;
    if (xv.size() < shfl_val.size() * 8)
        xv.resize(shfl_val.size() * 8);
    for (int i = 0; i < n; i++)
        xv[(size_t)tid * 8 + (size_t)i] = mine[i];
    wait_warp(w); // all lanes wrote
    for (int l = 0; l < 32; l++)
        for (int i = 0; i < n; i++)
            all[l * n + i] = xv[(size_t)(w * 32 + l) * 8 + (size_t)i];
    wait_warp(w); // all lanes read
}
double emu_shfl_xor_d(double v, int off) { return shfl_xor<double>(v, off); }

void emu_launch(dim3 grid, dim3 block, std::function<void()> f)
{
    const unsigned nt = block.x * block.y * block.z;
    if (block.y != 1 || block.z != 1 || nt % 32) {
        fprintf(stderr, "emu: block (%u, %u, %u) not supported\n", block.x, block.y, block.z);
        abort();
    }
    static std::vector<fiber> pool; // stacks kept from launch to launch
    if (pool.size() < nt) {
        pool.resize(nt);
        for (auto &x : pool)
            if (x.stack.empty())
                x.stack.resize(128 << 10);
    }
    std::vector<fiber> &fs = pool;
    fibers = &fs;
    body = &f;
    shfl_val.assign(nt, 0.0);
    shfl_arrived.assign(nt / 32, 0);
    shfl_gen.assign(nt / 32, 0);
    for (unsigned bz = 0; bz < grid.z; bz++)
        for (unsigned by = 0; by < grid.y; by++)
            for (unsigned bx = 0; bx < grid.x; bx++) {
                bar_arrived = 0;
                bar_alive = (int)nt;
                for (unsigned t = 0; t < nt; t++) {
                    fiber &x = fs[t];
                    x.done = false;
                    x.started = false;
                    x.wait_gen = NULL;
                    x.id.tid = dim3(t, 0, 0);
                    x.id.bid = dim3(bx, by, bz);
                    x.id.bdim = block;
                    x.id.gdim = grid;
                    getcontext(&x.ctx);
                    x.ctx.uc_stack.ss_sp = x.stack.data();
                    x.ctx.uc_stack.ss_size = x.stack.size();
                    x.ctx.uc_link = NULL;
                    makecontext(&x.ctx, fiber_main, 0);
                }
                for (bool left = true; left;) {
                    left = false;
                    for (unsigned t = 0; t < nt; t++) {
                        fiber &x = fs[t];
                        if (x.done)
                            continue;
                        if (x.wait_gen && *x.wait_gen == x.wait_val) { // still blocked: no switch
                            left = true;
                            continue;
                        }
                        running = &x;
                        emu_cur = &x.id;
                        if (!_setjmp(sched_jb)) {
                            if (!x.started) {
                                x.started = true;
                                setcontext(&x.ctx); // back through sched_jb
                            }
                            _longjmp(x.jb, 1);
                        }
                        left = left || !x.done;
                    }
                }
            }
}

// ---- runtime API ----
struct emu_stream {
    int unused;
};
struct emu_event {
    int unused;
};

cudaError_t cudaGetDeviceCount(int *n)
{
    *n = 1;
    return cudaSuccess;
}
cudaError_t cudaGetDevice(int *d)
{
    *d = 0;
    return cudaSuccess;
}
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d)
{
    if (a != cudaDevAttrMultiProcessorCount || d != 0)
        return cudaErrorInvalidValue;
    *v = EMU_SMS;
    return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidValue; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { return e ? "emulated error" : "no error"; }
const char *cudaGetErrorName(cudaError_t e) { return e ? "cudaErrorEmulated" : "cudaSuccess"; }
// the device's memory: PB_EMU_GPU_MIB MiB (16 GiB by default; 0 where the value is not a number from 1 to
// 2^24), which cudaMalloc's allocations count against, so that a test can run a GPU that is too small
static size_t emu_used, emu_peak;
// PB_EMU_PEAK_FILE: where the process writes, as it exits, the most device memory it held at once (bytes)
static void emu_write_peak(void)
{
    FILE *f = fopen(getenv("PB_EMU_PEAK_FILE"), "w");
    if (!f || fprintf(f, "%zu\n", emu_peak) < 0 || fclose(f) != 0)
        fprintf(stderr, "cuda stand-in: cannot write PB_EMU_PEAK_FILE\n");
}
static size_t emu_total(void)
{
    static size_t total = (size_t)-1;
    if (total == (size_t)-1) {
        const char *e = getenv("PB_EMU_GPU_MIB");
        char *end = NULL;
        const unsigned long v = e ? strtoul(e, &end, 10) : 0;
        total = !e ? (size_t)1 << 34 : *e && !*end && v >= 1 && v <= (1ul << 24) ? (size_t)v << 20 : 0;
        if (getenv("PB_EMU_PEAK_FILE"))
            atexit(emu_write_peak);
    }
    return total;
}
cudaError_t cudaMemGetInfo(size_t *f, size_t *t)
{
    if (!emu_total())
        return cudaErrorInvalidValue;
    *t = emu_total();
    *f = *t - emu_used;
    return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int)
{
    snprintf(p->name, sizeof p->name, "CPU emulation");
    p->major = 9; // the tensor-core kernels run (their mma on the stand-in)
    p->minor = 0;
    return cudaSuccess;
}
// memory filled with garbage so that a missing zeroing shows; the device's (counted) keeps its size in the
// 256 bytes before the pointer
static cudaError_t emu_alloc(void **p, size_t n, bool device)
{
    const size_t r = (n + 255) & ~(size_t)255;
    if (device && (!emu_total() || r > emu_total() - emu_used)) {
        *p = NULL;
        return cudaErrorMemoryAllocation;
    }
    char *b = (char *)aligned_alloc(256, r + 256);
    if (!b) {
        *p = NULL;
        return cudaErrorMemoryAllocation;
    }
    memcpy(b, &r, sizeof r);
    if (device && (emu_used += r) > emu_peak)
        emu_peak = emu_used;
    *p = b + 256;
    memset(*p, 0xa5, n);
    return cudaSuccess;
}
static cudaError_t emu_free(void *p, bool device)
{
    if (!p)
        return cudaSuccess;
    char *b = (char *)p - 256;
    size_t r;
    memcpy(&r, b, sizeof r);
    if (device)
        emu_used -= r;
    free(b);
    return cudaSuccess;
}
cudaError_t cudaMalloc(void **p, size_t n) { return emu_alloc(p, n, true); }
cudaError_t cudaFree(void *p) { return emu_free(p, true); }
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned) { return emu_alloc(p, n, false); }
cudaError_t cudaFreeHost(void *p) { return emu_free(p, false); }
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t)
{
    memset(p, v, n);
    return cudaSuccess;
}
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind, cudaStream_t)
{
    memmove(d, s, n);
    return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned)
{
    *s = new emu_stream();
    return cudaSuccess;
}
cudaError_t cudaStreamDestroy(cudaStream_t s)
{
    delete s;
    return cudaSuccess;
}
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned)
{
    *e = new emu_event();
    return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
    delete e;
    return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t, cudaStream_t) { return cudaSuccess; }
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *)
{
    a->type = cudaMemoryTypeUnregistered;
    return cudaSuccess;
}
