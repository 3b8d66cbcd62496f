// A CPU stand-in for the parts of the CUDA runtime the CUDA backend uses, so
// that src/cuda/backend_cuda.cu and kern_cuda.cu compile as plain C++ and
// run tests/backend/ops' cases without a GPU (tests/backend/cuda-emu.sh).
// "Device" memory is host memory; copies are memcpy; a kernel launch runs
// every block in turn, each thread of a block as a fiber (ucontext), so
// __syncthreads and warp shuffles really synchronize. It checks the
// kernels' logic (indexing, reductions, argument passing), not timing,
// the memory model or anything device-specific.
#ifndef PB_CUDA_EMU_RUNTIME_H
#define PB_CUDA_EMU_RUNTIME_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <functional>

// ---- qualifiers ----
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __restrict__
#define __shared__ static // blocks run one after another: one copy is the block's
#define __align__(n) __attribute__((aligned(n)))

// ---- vector types ----
struct dim3 {
    unsigned x, y, z;
    dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};
struct float4 {
    float x, y, z, w;
};
struct uint4 {
    unsigned x, y, z, w;
};
template <class T> static inline T __ldg(const T *p) { return *p; }
static inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

// ---- thread identity (of the fiber running) ----
struct emu_thread_id {
    dim3 tid, bid, bdim, gdim;
};
extern emu_thread_id *emu_cur;
#define threadIdx (emu_cur->tid)
#define blockIdx (emu_cur->bid)
#define blockDim (emu_cur->bdim)
#define gridDim (emu_cur->gdim)

void emu_syncthreads(void);
float emu_shfl_xor_f(float v, int off);
double emu_shfl_xor_d(double v, int off);
void emu_warp_exchange(const unsigned *mine, int n, unsigned *all); // the mma stand-in (kern_cuda.cu)
#define __syncthreads() emu_syncthreads()
static inline float __shfl_xor_sync(unsigned, float v, int off) { return emu_shfl_xor_f(v, off); }
static inline double __shfl_xor_sync(unsigned, double v, int off) { return emu_shfl_xor_d(v, off); }

// runs f for every thread of every block of the grid
void emu_launch(dim3 grid, dim3 block, std::function<void()> f);
#define KLAUNCH(kern, grid, block, stream, ...) ((void)(stream), emu_launch(dim3(grid), dim3(block), [=]() { kern(__VA_ARGS__); }))
// dynamic shared memory: the kernels declare a static array of the size in the stand-in
#define KLAUNCH_SMEM(kern, grid, block, smem, stream, ...)                                                             \
    ((void)(smem), KLAUNCH(kern, grid, block, stream, __VA_ARGS__))
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
template <class F> static inline int cudaFuncSetAttribute(F, cudaFuncAttribute, int) { return 0; }
// kernels run one after another here: a programmatic dependent launch is a plain one
#define KLAUNCH_PDL(kern, grid, block, stream, ...) KLAUNCH(kern, grid, block, stream, __VA_ARGS__)

// ---- arithmetic intrinsics (built with -ffp-contract=off: each op rounds) ----
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline unsigned __float_as_uint(float f)
{
    unsigned u;
    memcpy(&u, &f, 4);
    return u;
}
static inline float __uint_as_float(unsigned u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}
static inline int atomicAdd(int *p, int v) // fibers switch only at barriers: a plain add is atomic
{
    int o = *p;
    *p += v;
    return o;
}
static inline int atomicOr(int *p, int v)
{
    int o = *p;
    *p |= v;
    return o;
}

// ---- runtime API ----
typedef int cudaError_t;
enum {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorNotSupported = 801,
};
typedef struct emu_stream *cudaStream_t;
typedef struct emu_event *cudaEvent_t;
enum cudaMemcpyKind { cudaMemcpyHostToDevice, cudaMemcpyDeviceToHost, cudaMemcpyDeviceToDevice };
enum cudaMemoryType { cudaMemoryTypeUnregistered = 0, cudaMemoryTypeHost, cudaMemoryTypeDevice };
struct cudaPointerAttributes {
    cudaMemoryType type;
};
struct cudaDeviceProp {
    char name[256];
    int major, minor;
};
// the stand-in's "multiprocessors" and blocks on each: few, so that a grid sized to them (the skinny
// kernel's PB_CUDA_TC_PREFETCH=2) has its blocks take several column groups each
enum cudaDeviceAttr { cudaDevAttrMultiProcessorCount = 16 };
#define EMU_SMS 3
#define cudaStreamNonBlocking 1
#define cudaEventDisableTiming 2
#define cudaHostAllocDefault 0

cudaError_t cudaGetDeviceCount(int *n);
cudaError_t cudaGetDevice(int *d);
cudaError_t cudaSetDevice(int d);
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t e);
const char *cudaGetErrorName(cudaError_t e);
cudaError_t cudaMemGetInfo(size_t *f, size_t *t);
cudaError_t cudaGetDeviceProperties(cudaDeviceProp *p, int d);
cudaError_t cudaMalloc(void **p, size_t n);
cudaError_t cudaFree(void *p);
cudaError_t cudaHostAlloc(void **p, size_t n, unsigned flags);
cudaError_t cudaFreeHost(void *p);
cudaError_t cudaMemsetAsync(void *p, int v, size_t n, cudaStream_t s);
cudaError_t cudaMemcpyAsync(void *d, const void *s, size_t n, cudaMemcpyKind k, cudaStream_t st);
cudaError_t cudaStreamCreateWithFlags(cudaStream_t *s, unsigned flags);
cudaError_t cudaStreamDestroy(cudaStream_t s);
cudaError_t cudaStreamSynchronize(cudaStream_t s);
cudaError_t cudaEventCreateWithFlags(cudaEvent_t *e, unsigned flags);
cudaError_t cudaEventDestroy(cudaEvent_t e);
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t s);
cudaError_t cudaEventSynchronize(cudaEvent_t e);
cudaError_t cudaPointerGetAttributes(cudaPointerAttributes *a, const void *p);
cudaError_t cudaDeviceGetAttribute(int *v, cudaDeviceAttr a, int d);
template <typename F> cudaError_t cudaOccupancyMaxActiveBlocksPerMultiprocessor(int *n, F, int, size_t)
{
    *n = 1;
    return cudaSuccess;
}

#endif
