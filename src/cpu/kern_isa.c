/* Runtime choice of the kernels' ISA path: the widest one the CPU and the OS
 * (saved register state) support, or the one PB_CPU_ISA names. */
#include "config.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "cpu/kern_impl.h"

#ifdef PB_KERN_X86
#include <cpuid.h>

static uint64_t xgetbv0(void)
{
    uint32_t lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}

static pb_cpu_isa detect(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d))
        return PB_ISA_PORTABLE;
    const int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!osxsave || !avx || !fma || !f16c)
        return PB_ISA_PORTABLE;
    const uint64_t xcr0 = xgetbv0();
    if ((xcr0 & 0x6) != 0x6) /* SSE and AVX state */
        return PB_ISA_PORTABLE;
    if (__get_cpuid_max(0, NULL) < 7)
        return PB_ISA_PORTABLE;
    __cpuid_count(7, 0, a, b, c, d);
    const int avx2 = (b >> 5) & 1, avx512f = (b >> 16) & 1, avx512bw = (b >> 30) & 1, avx512vl = (b >> 31) & 1;
    if (!avx2)
        return PB_ISA_PORTABLE;
    if (avx512f && avx512bw && avx512vl && (xcr0 & 0xe6) == 0xe6) { /* opmask, ZMM_Hi256, Hi16_ZMM */
        __cpuid_count(7, 1, a, b, c, d);
        return (a >> 5) & 1 ? PB_ISA_AVX512BF16 : PB_ISA_AVX512; /* AVX512_BF16 */
    }
    return PB_ISA_AVX2;
}
#else
static pb_cpu_isa detect(void)
{
    return PB_ISA_PORTABLE;
}
#endif

static const char *const isa_names[PB_ISA_COUNT] = {"portable", "avx2", "avx512", "avx512bf16"};

/* -1: not decided yet. Set once from the environment, later only by tests. */
static atomic_int active_isa = -1;
static const pb_kops *_Atomic override_ops;

const char *pb_cpu_isa_name(pb_cpu_isa isa)
{
    return (unsigned)isa < PB_ISA_COUNT ? isa_names[isa] : "?";
}

/* the CPU's widest path, the opt-in avx512bf16 included */
static pb_cpu_isa cpu_widest(void)
{
    static atomic_int widest = -1;
    int b = atomic_load(&widest);
    if (b < 0) {
        b = (int)detect();
        while (b > 0 && !pb_kops_get((pb_cpu_isa)b))
            b--; /* a path this build lacks */
        atomic_store(&widest, b);
    }
    return (pb_cpu_isa)b;
}

pb_cpu_isa pb_cpu_isa_best(void)
{
    pb_cpu_isa w = cpu_widest();
    return w == PB_ISA_AVX512BF16 ? PB_ISA_AVX512 : w; /* never the inexact one by itself */
}

const pb_kops *pb_kops_get(pb_cpu_isa isa)
{
    switch (isa) {
    case PB_ISA_PORTABLE:
        return &pb_kops_portable;
#ifdef PB_KERN_X86
    case PB_ISA_AVX2:
        return &pb_kops_avx2;
    case PB_ISA_AVX512:
        return pb_kops_avx512.mm ? &pb_kops_avx512 : NULL;
    case PB_ISA_AVX512BF16:
        return pb_kops_avx512bf16.mm ? &pb_kops_avx512bf16 : NULL;
#endif
    default:
        return NULL;
    }
}

bool pb_cpu_isa_available(pb_cpu_isa isa)
{
    return (unsigned)isa < PB_ISA_COUNT && isa <= cpu_widest() && pb_kops_get(isa);
}

pb_status pb_cpu_isa_set(pb_cpu_isa isa)
{
    if ((unsigned)isa >= PB_ISA_COUNT)
        return pb_error(PB_ERR_USAGE, "unknown CPU kernel path %d", (int)isa);
    if (!pb_cpu_isa_available(isa))
        return pb_error(PB_ERR_UNSUPPORTED, "CPU kernel path %s: this CPU (or build) supports at most %s",
                        pb_cpu_isa_name(isa), pb_cpu_isa_name(cpu_widest()));
    atomic_store(&active_isa, (int)isa);
    return PB_OK;
}

pb_cpu_isa pb_cpu_isa_active(void)
{
    int a = atomic_load(&active_isa);
    if (a >= 0)
        return (pb_cpu_isa)a;
    pb_cpu_isa isa = pb_cpu_isa_best();
    const char *env = getenv("PB_CPU_ISA");
    if (env && *env) {
        int want = -1;
        for (int i = 0; i < PB_ISA_COUNT; i++)
            if (!strcmp(env, isa_names[i]))
                want = i;
        if (want < 0)
            pb_log_warn("PB_CPU_ISA=%s is not one of portable, avx2, avx512, avx512bf16; using %s", env,
                        pb_cpu_isa_name(isa));
        else if (want > (int)cpu_widest())
            pb_log_warn("PB_CPU_ISA=%s: this CPU supports at most %s; using %s", env,
                        pb_cpu_isa_name(cpu_widest()), pb_cpu_isa_name(isa));
        else
            isa = (pb_cpu_isa)want;
    }
    int expect = -1;
    atomic_compare_exchange_strong(&active_isa, &expect, (int)isa);
    return (pb_cpu_isa)atomic_load(&active_isa);
}

/* 0: exact products, 1: bf16 products, 2: their AMX form */
static atomic_int bf16_products;

void pb_cpu_set_bf16_products(bool on)
{
    atomic_store(&bf16_products, on ? 1 : 0);
}

bool pb_cpu_bf16_products(void)
{
    return atomic_load(&bf16_products) || pb_cpu_isa_active() == PB_ISA_AVX512BF16;
}

bool pb_cpu_amx_available(void)
{
#ifdef PB_KERN_AMX
    static atomic_int avail = -1;
    int a = atomic_load(&avail);
    if (a < 0) {
        a = pb_cpu_isa_available(PB_ISA_AVX512) && pb_kamx_detect();
        atomic_store(&avail, a);
    }
    return a;
#else
    return false;
#endif
}

pb_status pb_cpu_set_amx(bool on)
{
    if (!on) {
        atomic_store(&bf16_products, 0);
        return PB_OK;
    }
    if (!pb_cpu_amx_available())
        return pb_error(PB_ERR_UNSUPPORTED, "--matmul-precision bf16-amx: this CPU (or its OS, or this build) has "
                        "no AMX-BF16 tile unit (Intel Xeon from Sapphire Rapids on); --matmul-precision bf16 "
                        "runs everywhere");
    if (pb_cpu_isa_active() < PB_ISA_AVX512)
        return pb_error(PB_ERR_UNSUPPORTED, "--matmul-precision bf16-amx takes the AVX-512 kernels, and "
                        "PB_CPU_ISA holds them to %s", pb_cpu_isa_name(pb_cpu_isa_active()));
    atomic_store(&bf16_products, 2);
    return PB_OK;
}

bool pb_cpu_amx(void)
{
    return atomic_load(&bf16_products) == 2;
}

#ifdef PB_KERN_X86
/* vdpbf16ps beats its emulation: on AMD (Zen 4, Zen 5: 32 products an
 * instruction where an fma does 16, 1.6-1.8x faster end to end), not on
 * Intel, which issues it on one port where fmas take two (a Xeon with AMX:
 * 218-226 GFLOP/s on two threads against the emulation's 265-335, session
 * 15). The same bits either way. */
static bool dpbf16_fast(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(0, &a, &b, &c, &d))
        return false;
    char v[13];
    memcpy(v, &b, 4);
    memcpy(v + 4, &d, 4);
    memcpy(v + 8, &c, 4);
    v[12] = 0;
    return !strcmp(v, "AuthenticAMD") || !strcmp(v, "HygonGenuine");
}
#endif

bool pb_kdpbf16_preferred(void)
{
#ifdef PB_KERN_X86
    static atomic_int pref = -1;
    int p = atomic_load(&pref);
    if (p < 0) {
        p = pb_cpu_isa_available(PB_ISA_AVX512BF16) && dpbf16_fast();
        atomic_store(&pref, p);
    }
    return p;
#else
    return false;
#endif
}

/* the bf16-product table beside isa's exact one: vdpbf16ps where the CPU
 * has it and it is the faster, else the same bits emulated */
static const pb_kops *bf16_products_of(pb_cpu_isa isa)
{
    switch (isa) {
#ifdef PB_KERN_X86
    case PB_ISA_AVX2:
        return &pb_kops_avx2_dots;
    case PB_ISA_AVX512:
        return pb_kdpbf16_preferred() ? &pb_kops_avx512bf16 : &pb_kops_avx512_dots;
    case PB_ISA_AVX512BF16:
        return &pb_kops_avx512bf16;
#endif
    default:
        return &pb_kops_portable_dots;
    }
}

const pb_kops *pb_kops_active(void)
{
    const pb_kops *o = atomic_load(&override_ops);
    if (o)
        return o;
    const pb_cpu_isa isa = pb_cpu_isa_active();
    const int prod = atomic_load(&bf16_products);
#ifdef PB_KERN_AMX
    if (prod == 2 && isa >= PB_ISA_AVX512) /* (a test may have forced a narrower path since) */
        return &pb_kops_amx;
#endif
    return prod ? bf16_products_of(isa) : pb_kops_get(isa);
}

void pb_kops_override(const pb_kops *ops)
{
    atomic_store(&override_ops, ops);
}
