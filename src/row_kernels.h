/* row_kernels.h -- runtime dispatch of the row and column-strip primitives.
 *
 * row_kernels_impl.h is compiled once per instruction set and dtype; each
 * instantiation fills one sx_table (and half_convert_impl.h one sx_half_table
 * per 16-bit format).  At import the extension asks the CPU what it supports
 * and points sx_table_f32, _f64, _f16 and _bf16 at the best tables.  No -march
 * flag is ever given: a wheel runs on any CPU of its architecture.
 *
 * Instruction sets, lowest first (a level is an index into sx_isa_names):
 *   x86-64   portable (SSE2), avx2 (AVX2+FMA+F16C), avx512 (F, VL, DQ, BW).
 *            The CPU is asked with CPUID and XGETBV (the OS must save the wide
 *            registers), through <cpuid.h> on gcc/clang and <intrin.h> on MSVC.
 *            The avx2/avx512 instantiations need per-function target
 *            attributes, so MSVC builds compile the portable one only.
 *   AArch64  portable, neon (ASIMD, float32x4 / float64x2, FCVT float16
 *            conversions), chosen when the OS reports ASIMD (Linux HWCAP;
 *            always on Apple and Windows, where ASIMD is mandatory).
 *   other    portable.
 * Every instantiation runs the same exp polynomial and sums in the same fixed
 * order (row_kernels_impl.h), so results agree across instruction sets within
 * the documented exp error.
 */
#ifndef SOFTMAX_EXT_ROW_KERNELS_H
#define SOFTMAX_EXT_ROW_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#if defined(__unix__) || defined(__APPLE__)
#include <unistd.h> /* sysconf */
#endif

/* Width of the reduction shape; see row_kernels_impl.h.  SX_CHUNK is also the
   unit in which a long row is split between threads. */
#define SX_BLOCK 512
#define SX_CHUNK 16384
/* Columns per strip of the vertical (strided-axis) kernels, at most (see
 * TILE_WIDTH in _kernels.pyx). */
#define SX_STRIP 1024

#define SX_MIN(a, b) ((a) < (b) ? (a) : (b))

/* The primitives of one dtype and instruction set.  row_max also finds the
 * row's smallest value, `low`: row_exp_sum and row_exp_excess take it (or
 * -inf where their shift is not the row's max) to choose a faster exp of
 * the same bits.  They also fetch `ahead` (n values, or NULL), the row to be
 * read next, into cache while they compute. */
typedef struct sx_table {
    double (*row_max)(const void *x, ptrdiff_t n, double *low);
    double (*row_exp_sum)(const void *x, void *out, ptrdiff_t n, double shift, double low,
                          const void *ahead);
    double (*row_exp_excess)(const void *x, ptrdiff_t n, double shift, double low, double *ties,
                             const void *ahead);
    void (*row_scale)(void *out, ptrdiff_t n, double factor);
    void (*row_log_normalize)(const void *x, void *out, ptrdiff_t n, double shift, double log_sum);
    double (*row_dot)(const void *a, const void *b, const void *c, ptrdiff_t n, double shift);
    void (*row_softmax_bwd)(const void *p, const void *g, void *out, ptrdiff_t n, double dot);
    /* the *_stream entries: the results of the primitive they name, written
       by streaming stores where the instruction set has them (then
       sx_store_fence once the thread is done), else that primitive itself */
    void (*row_softmax_bwd_stream)(const void *p, const void *g, void *out, ptrdiff_t n,
                                   double dot);
    void (*row_log_normalize_stream)(const void *x, void *out, ptrdiff_t n, double shift,
                                     double log_sum);
    /* row_scale's products of exps kept in another row: out = e * factor */
    void (*row_scale_stream)(const void *e, void *out, ptrdiff_t n, double factor);
    void (*row_log_softmax_bwd)(const void *logp, const void *g, void *out, ptrdiff_t n,
                                double grad_sum);
    void (*row_log_softmax_bwd_stream)(const void *logp, const void *g, void *out, ptrdiff_t n,
                                       double grad_sum);
    void (*row_xent_grad)(const void *e, const void *u, const void *v, void *out, ptrdiff_t n,
                          double alpha, double beta, double gamma);
    /* col_max returns whether col_exp_sum may take tame exps (its `tame`) */
    int (*col_max)(const void *x, ptrdiff_t ldx, ptrdiff_t K, ptrdiff_t w, void *m, void *copy,
                   ptrdiff_t ldc);
    void (*col_exp_sum)(const void *x, ptrdiff_t ldx, void *out, ptrdiff_t ldo, ptrdiff_t K,
                        ptrdiff_t w, const void *shift, int tame, double *sum);
    void (*col_exp_excess)(const void *x, ptrdiff_t ldx, ptrdiff_t K, ptrdiff_t w,
                           const void *shift, double *sum, double *ties);
    void (*col_scale)(const void *src, ptrdiff_t lds, void *out, ptrdiff_t ldo, ptrdiff_t K,
                      ptrdiff_t w, const void *factor);
    void (*col_log_normalize)(const void *x, ptrdiff_t ldx, void *out, ptrdiff_t ldo, ptrdiff_t K,
                              ptrdiff_t w, const void *shift, const void *log_sum);
    void (*col_dot)(const void *a, ptrdiff_t lda, const void *b, ptrdiff_t ldb, ptrdiff_t K,
                    ptrdiff_t w, double *sum, void *a_copy, void *b_copy, ptrdiff_t ldc);
    void (*col_softmax_bwd)(const void *p, ptrdiff_t ldp, const void *g, ptrdiff_t ldg, void *out,
                            ptrdiff_t ldo, ptrdiff_t K, ptrdiff_t w, const void *dot);
    void (*col_log_softmax_bwd)(const void *logp, ptrdiff_t ldl, const void *g, ptrdiff_t ldg,
                                void *out, ptrdiff_t ldo, ptrdiff_t K, ptrdiff_t w,
                                const void *grad_sum);
    /* dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols */
    void (*tile_transpose)(const void *src, ptrdiff_t lds, void *dst, ptrdiff_t ldd,
                           ptrdiff_t rows, ptrdiff_t cols);
} sx_table;

/* 16-bit storage (float16, bfloat16): load and store convert (rows, n) tiles
 * to and from float32; the row_* primitives are the float32 ones on a 16-bit
 * row (x, and out; but row_scale_store and row_log_normalize_store read a
 * float32 row: the exps e, or x widened), with the same bits.
 * As in sx_table, row_exp_sum and row_exp_excess also fetch `ahead` (n
 * values, or NULL), the next row to be read, into cache while they compute,
 * and the *_stream entries write by streaming stores where the instruction
 * set has them (then sx_store_fence once the thread is done). */
typedef struct sx_half_table {
    void (*load)(const void *src, ptrdiff_t lds, float *dst, ptrdiff_t ldd, ptrdiff_t rows,
                 ptrdiff_t n);
    void (*store)(const float *src, ptrdiff_t lds, void *dst, ptrdiff_t ldd, ptrdiff_t rows,
                  ptrdiff_t n);
    double (*row_max)(const void *x, ptrdiff_t n, double *low);
    double (*row_exp_sum)(const void *x, float *out, ptrdiff_t n, double shift, double low,
                          const void *ahead);
    double (*row_exp_excess)(const void *x, ptrdiff_t n, double shift, double low, double *ties,
                             const void *ahead);
    void (*row_scale_store)(const float *e, void *out, ptrdiff_t n, double factor);
    void (*row_scale_store_stream)(const float *e, void *out, ptrdiff_t n, double factor);
    void (*row_log_normalize)(const void *x, void *out, ptrdiff_t n, double shift, double log_sum);
    void (*row_log_normalize_stream)(const void *x, void *out, ptrdiff_t n, double shift,
                                     double log_sum);
    void (*row_log_normalize_store)(const float *x, void *out, ptrdiff_t n, double shift,
                                    double log_sum);
} sx_half_table;

/* ---- compiler portability (gcc, clang, MSVC) ----------------------------- */
#if defined(_MSC_VER) && !defined(__clang__)
#define SX_ALWAYS_INLINE static __forceinline
#define SX_PRAGMA(x) __pragma(x)
#define SX_UNROLL(n)
#else
#define SX_ALWAYS_INLINE static inline __attribute__((always_inline))
#define SX_PRAGMA(x) _Pragma(#x)
#define SX_UNROLL(n) SX_PRAGMA(GCC unroll n) /* clang reads it too */
#endif
/* Ask for the cache line at p ahead of its use (a hint; nothing on MSVC). */
#if defined(__GNUC__) || defined(__clang__)
#define SX_PREFETCH(p) __builtin_prefetch(p)
#else
#define SX_PREFETCH(p) ((void)(p))
#endif

#define SX_CAT3_(a, b, c) a##_##b##_##c
#define SX_CAT3(a, b, c) SX_CAT3_(a, b, c)
#define SX_NAME(f) SX_CAT3(f, SX_DTYPE, SX_ISA)

/* exp of a whole group in one vector, per instantiation (row_kernels_impl.h) */
#define SX_VECTOR_EXP_NONE 0
#define SX_VECTOR_EXP_AVX512 1
#define SX_VECTOR_EXP_AVX2 2

/* float16 conversions in hardware, per instantiation (half_convert_impl.h) */
#define SX_HALF_HW_NONE 0
#define SX_HALF_HW_F16C 1
#define SX_HALF_HW_NEON 2
#define SX_HALF_HW_AVX512 3 /* F16C instructions on 512-bit vectors, 16 values */

#if defined(__x86_64__) || defined(__i386__) || defined(_M_X64) || defined(_M_IX86)
#define SX_ARCH_X86 1
#elif defined(__aarch64__) || defined(_M_ARM64)
#define SX_ARCH_ARM64 1
#endif

/* Every instruction set gets every dtype: see sx_instantiate.h. */
#define SX_ISA portable
#define SX_TARGET
#define SX_HALF_HW SX_HALF_HW_NONE
#define SX_VECTOR_EXP SX_VECTOR_EXP_NONE
#include "sx_instantiate.h"
#undef SX_VECTOR_EXP
#undef SX_HALF_HW
#undef SX_TARGET
#undef SX_ISA

#if defined(SX_ARCH_X86)
enum { SX_ISA_PORTABLE = 0, SX_ISA_AVX2 = 1, SX_ISA_AVX512 = 2 };
static const char *const sx_isa_names[] = {"portable", "avx2", "avx512"};
#if defined(__GNUC__) || defined(__clang__)
#include <cpuid.h>
#include <immintrin.h> /* F16C conversions in the AVX2 / AVX-512 instantiations */
#define SX_ISA_COMPILED SX_ISA_AVX512
#define SX_X86_TARGETS 1 /* the avx2 and avx512 instantiations exist */

#define SX_ISA avx2
#define SX_TARGET __attribute__((target("avx2,fma,f16c")))
#define SX_HALF_HW SX_HALF_HW_F16C /* every AVX2 CPU has F16C */
#define SX_VECTOR_EXP SX_VECTOR_EXP_AVX2
#define SX_STREAM_STORES 1 /* 256-bit streaming stores (row_softmax_bwd_stream, ...) */
#define SX_TRANSPOSE_256 1 /* tile_transpose in 256-bit registers */
#include "sx_instantiate.h"
#undef SX_TRANSPOSE_256
#undef SX_STREAM_STORES
#undef SX_VECTOR_EXP
#undef SX_HALF_HW
#undef SX_TARGET
#undef SX_ISA

#define SX_ISA avx512
#ifdef __clang__
#define SX_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c")))
#else
#define SX_TARGET                                                                          \
    __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c,prefer-vector-width=512")))
/* the same instructions on 256-bit vectors, for row_softmax_bwd_256 (see
   row_softmax_bwd), in the tables sx_table_vjp256_* */
#define SX_TARGET_256                                                                      \
    __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c,prefer-vector-width=256")))
#define SX_VJP256_TABLES 1
#endif
#define SX_STREAM_STORES 1 /* 512-bit streaming stores (row_softmax_bwd_stream, ...) */
#define SX_HALF_HW SX_HALF_HW_AVX512
#define SX_VECTOR_EXP SX_VECTOR_EXP_AVX512 /* VSCALEF */
#define SX_TRANSPOSE_256 1 /* AVX2's blocks (16 x 16 float blocks not tried) */
#include "sx_instantiate.h"
#undef SX_TRANSPOSE_256
#undef SX_VECTOR_EXP
#undef SX_HALF_HW
#undef SX_TARGET
#undef SX_TARGET_256
#undef SX_STREAM_STORES
#undef SX_ISA

static void sx_cpuid(unsigned leaf, unsigned subleaf, unsigned regs[4])
{
    __cpuid_count(leaf, subleaf, regs[0], regs[1], regs[2], regs[3]);
}
static unsigned long long sx_xgetbv0(void)
{
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((unsigned long long)hi << 32) | lo;
}
#else /* MSVC */
#include <intrin.h>
#define SX_ISA_COMPILED SX_ISA_PORTABLE

static void sx_cpuid(unsigned leaf, unsigned subleaf, unsigned regs[4])
{
    int r[4];
    __cpuidex(r, (int)leaf, (int)subleaf);
    for (int i = 0; i < 4; ++i) { regs[i] = (unsigned)r[i]; }
}
static unsigned long long sx_xgetbv0(void) { return _xgetbv(0); }
#endif

#if defined(SX_VJP256_TABLES)
/* Whether the CPU is AMD's ("AuthenticAMD"), whose AVX-512 (Zen 4) takes
   the softmax VJP faster on 256-bit vectors (row_softmax_bwd). */
static int sx_cpu_is_amd(void)
{
    unsigned leaf0[4];
    sx_cpuid(0, 0, leaf0);
    return leaf0[1] == 0x68747541u /* Auth */ && leaf0[3] == 0x69746e65u /* enti */ &&
           leaf0[2] == 0x444d4163u /* cAMD */;
}
#endif

/* Highest level this CPU and OS can run (whatever this build compiled). */
static int sx_cpu_isa_level(void)
{
    unsigned leaf0[4], leaf1[4], leaf7[4];
    sx_cpuid(0, 0, leaf0);
    if (leaf0[0] < 7) { return SX_ISA_PORTABLE; }
    sx_cpuid(1, 0, leaf1);
    const unsigned ecx1 = leaf1[2];
    const int fma = (ecx1 >> 12) & 1, osxsave = (ecx1 >> 27) & 1, avx = (ecx1 >> 28) & 1,
              f16c = (ecx1 >> 29) & 1;
    if (!(osxsave && avx && fma && f16c)) { return SX_ISA_PORTABLE; }
    const unsigned long long xcr0 = sx_xgetbv0();
    if ((xcr0 & 0x6) != 0x6) { return SX_ISA_PORTABLE; } /* OS saves XMM and YMM state */
    sx_cpuid(7, 0, leaf7);
    const unsigned ebx7 = leaf7[1];
    if (!((ebx7 >> 5) & 1)) { return SX_ISA_PORTABLE; } /* AVX2 */
    const int avx512 = ((ebx7 >> 16) & 1) /* F */ && ((ebx7 >> 17) & 1) /* DQ */ &&
                       ((ebx7 >> 30) & 1) /* BW */ && ((ebx7 >> 31) & 1) /* VL */;
    /* and the OS saves opmask and ZMM state */
    return avx512 && (xcr0 & 0xe0) == 0xe0 ? SX_ISA_AVX512 : SX_ISA_AVX2;
}

#elif defined(SX_ARCH_ARM64)
enum { SX_ISA_PORTABLE = 0, SX_ISA_NEON = 1 };
static const char *const sx_isa_names[] = {"portable", "neon"};
#define SX_ISA_COMPILED SX_ISA_NEON
#include <arm_neon.h>

/* ASIMD is part of the AArch64 base architecture: the compilers' default
   target already has it, so the instantiation needs no target attribute. */
#define SX_ISA neon
#define SX_TARGET
#define SX_HALF_HW SX_HALF_HW_NEON
#define SX_VECTOR_EXP SX_VECTOR_EXP_NONE
#include "sx_instantiate.h"
#undef SX_VECTOR_EXP
#undef SX_HALF_HW
#undef SX_TARGET
#undef SX_ISA

#if defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
static int sx_cpu_isa_level(void)
{
    return (getauxval(AT_HWCAP) & HWCAP_ASIMD) ? SX_ISA_NEON : SX_ISA_PORTABLE;
}
#else
static int sx_cpu_isa_level(void) { return SX_ISA_NEON; }
#endif

#else /* any other architecture */
enum { SX_ISA_PORTABLE = 0 };
static const char *const sx_isa_names[] = {"portable"};
#define SX_ISA_COMPILED SX_ISA_PORTABLE
static int sx_cpu_isa_level(void) { return SX_ISA_PORTABLE; }
#endif

/* Orders this thread's streaming stores (row_*_stream) before
 * whatever it does next: call it once, after its last streaming call.  Only
 * the x86 instantiations with target attributes stream. */
static inline void sx_store_fence(void)
{
#if defined(SX_X86_TARGETS)
    _mm_sfence();
#endif
}

/* The size of the L3 cache as the OS reports it, in bytes, or 0 where it
 * reports none or offers no way to ask (sysconf's _SC_LEVEL3_CACHE_SIZE is
 * glibc's; a VM reports its host's whole L3, shared with other tenants). */
static long sx_l3_cache_bytes(void)
{
#if defined(_SC_LEVEL3_CACHE_SIZE)
    const long bytes = sysconf(_SC_LEVEL3_CACHE_SIZE);
    return bytes > 0 ? bytes : 0;
#else
    return 0;
#endif
}

/* Number of instruction-set levels of this architecture (names above). */
#define SX_ISA_LEVELS ((int)(sizeof sx_isa_names / sizeof sx_isa_names[0]))

static const sx_table *sx_table_f32 = &sx_table_f32_portable;
static const sx_table *sx_table_f64 = &sx_table_f64_portable;
static const sx_half_table *sx_table_f16 = &sx_half_table_f16_portable;
static const sx_half_table *sx_table_bf16 = &sx_half_table_bf16_portable;

/* Highest level that this build compiled and this CPU runs. */
static int sx_runnable_isa_level(void) { return SX_MIN(SX_ISA_COMPILED, sx_cpu_isa_level()); }

/* Use the best tables at or below `requested`; returns the level chosen. */
static int sx_select_isa(int requested)
{
    int level = SX_MIN(requested, sx_runnable_isa_level());
#define SX_USE_TABLES(isa)                                \
    do {                                                  \
        sx_table_f32 = &sx_table_f32_##isa;               \
        sx_table_f64 = &sx_table_f64_##isa;               \
        sx_table_f16 = &sx_half_table_f16_##isa;          \
        sx_table_bf16 = &sx_half_table_bf16_##isa;        \
    } while (0)
    SX_USE_TABLES(portable);
#if defined(SX_X86_TARGETS)
    if (level >= SX_ISA_AVX512) {
        SX_USE_TABLES(avx512);
#if defined(SX_VJP256_TABLES)
        if (sx_cpu_is_amd()) {
            sx_table_f32 = &sx_table_vjp256_f32_avx512;
            sx_table_f64 = &sx_table_vjp256_f64_avx512;
        }
#endif
    } else if (level == SX_ISA_AVX2) {
        SX_USE_TABLES(avx2);
    }
#elif defined(SX_ARCH_ARM64)
    if (level >= SX_ISA_NEON) { SX_USE_TABLES(neon); }
#endif
#undef SX_USE_TABLES
    return level < 0 ? SX_ISA_PORTABLE : level;
}

#endif
