/* row_kernels.h -- runtime dispatch of the row and column-strip primitives.
 *
 * row_kernels_impl.h is compiled once per instruction set and dtype; each
 * instantiation fills one sx_table (and half_convert_impl.h one sx_half_table
 * per 16-bit format).  At import the extension asks the CPU what
 * it supports (gcc/clang __builtin_cpu_supports, which also checks that the OS
 * saves the wide registers) and points sx_table_f32, _f64, _f16 and _bf16 at
 * the best tables.  No -march flag is ever given: the wheel runs on any x86-64 CPU, and
 * on other architectures (or with MSVC) only the portable instantiation exists.
 */
#ifndef SOFTMAX_EXT_ROW_KERNELS_H
#define SOFTMAX_EXT_ROW_KERNELS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Width of the reduction shape; see row_kernels_impl.h.  SX_CHUNK is also the
   unit in which a long row is split between threads. */
#define SX_BLOCK 512
#define SX_CHUNK 16384
/* Columns per strip of the vertical (strided-axis) kernels. */
#define SX_STRIP 256

#define SX_MIN(a, b) ((a) < (b) ? (a) : (b))

typedef struct sx_table {
    double (*row_max)(const void *x, ptrdiff_t n);
    double (*row_exp_sum)(const void *x, void *out, ptrdiff_t n, double shift);
    double (*row_exp_excess)(const void *x, ptrdiff_t n, double shift, double *ties);
    void (*row_scale)(void *out, ptrdiff_t n, double factor);
    void (*row_log_normalize)(const void *x, void *out, ptrdiff_t n, double shift, double log_sum);
    double (*row_dot)(const void *a, const void *b, const void *c, ptrdiff_t n, double shift);
    void (*row_softmax_bwd)(const void *p, const void *g, void *out, ptrdiff_t n, double dot);
    void (*row_log_softmax_bwd)(const void *logp, const void *g, void *out, ptrdiff_t n,
                                double grad_sum);
    void (*row_xent_grad)(const void *e, const void *u, const void *v, void *out, ptrdiff_t n,
                          double alpha, double beta, double gamma);
    void (*col_max)(const void *x, ptrdiff_t ldx, ptrdiff_t K, ptrdiff_t w, void *m, void *copy,
                    ptrdiff_t ldc);
    void (*col_exp_sum)(const void *x, ptrdiff_t ldx, void *out, ptrdiff_t ldo, ptrdiff_t K,
                        ptrdiff_t w, const void *shift, double *sum);
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
} sx_table;

/* 16-bit storage (float16, bfloat16) <-> float32 for (rows, n) tiles. */
typedef struct sx_half_table {
    void (*load)(const void *src, ptrdiff_t lds, float *dst, ptrdiff_t ldd, ptrdiff_t rows,
                 ptrdiff_t n);
    void (*store)(const float *src, ptrdiff_t lds, void *dst, ptrdiff_t ldd, ptrdiff_t rows,
                  ptrdiff_t n);
} sx_half_table;

#define SX_CAT3_(a, b, c) a##_##b##_##c
#define SX_CAT3(a, b, c) SX_CAT3_(a, b, c)
#define SX_NAME(f) SX_CAT3(f, SX_DTYPE, SX_ISA)

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define SX_X86_DISPATCH 1
#include <immintrin.h> /* F16C conversions in the AVX2 / AVX-512 instantiations */
#else
#define SX_X86_DISPATCH 0
#endif

/* Every instruction set gets every dtype: see sx_instantiate.h. */
#define SX_ISA portable
#define SX_TARGET
#define SX_F16C 0
#include "sx_instantiate.h"
#undef SX_F16C
#undef SX_TARGET
#undef SX_ISA

#if SX_X86_DISPATCH
#define SX_ISA avx2
#define SX_TARGET __attribute__((target("avx2,fma,f16c")))
#define SX_F16C 1 /* float16 <-> float32 in hardware (every AVX2 CPU has F16C) */
#include "sx_instantiate.h"
#undef SX_F16C
#undef SX_TARGET
#undef SX_ISA

#define SX_ISA avx512
#ifdef __clang__
#define SX_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c")))
#else
#define SX_TARGET                                                                          \
    __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,f16c,prefer-vector-width=512")))
#endif
#define SX_F16C 1
#include "sx_instantiate.h"
#undef SX_F16C
#undef SX_TARGET
#undef SX_ISA
#endif /* SX_X86_DISPATCH */

/* Instruction-set levels, lowest first. */
enum { SX_ISA_PORTABLE = 0, SX_ISA_AVX2 = 1, SX_ISA_AVX512 = 2 };

static const sx_table *sx_table_f32 = &sx_table_f32_portable;
static const sx_table *sx_table_f64 = &sx_table_f64_portable;
static const sx_half_table *sx_table_f16 = &sx_half_table_f16_portable;
static const sx_half_table *sx_table_bf16 = &sx_half_table_bf16_portable;

/* Highest level this CPU (and OS) can run. */
static int sx_cpu_isa_level(void)
{
#if SX_X86_DISPATCH
    __builtin_cpu_init();
    const int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
                     __builtin_cpu_supports("f16c");
    if (avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw")) {
        return SX_ISA_AVX512;
    }
    if (avx2) { return SX_ISA_AVX2; }
#endif
    return SX_ISA_PORTABLE;
}

/* Use the best tables at or below `requested`; returns the level chosen. */
static int sx_select_isa(int requested)
{
    int level = SX_MIN(requested, sx_cpu_isa_level());
#define SX_USE_TABLES(isa)                                \
    do {                                                  \
        sx_table_f32 = &sx_table_f32_##isa;               \
        sx_table_f64 = &sx_table_f64_##isa;               \
        sx_table_f16 = &sx_half_table_f16_##isa;          \
        sx_table_bf16 = &sx_half_table_bf16_##isa;        \
    } while (0)
    SX_USE_TABLES(portable);
#if SX_X86_DISPATCH
    if (level >= SX_ISA_AVX512) {
        SX_USE_TABLES(avx512);
    } else if (level == SX_ISA_AVX2) {
        SX_USE_TABLES(avx2);
    }
#endif
#undef SX_USE_TABLES
    return level < 0 ? SX_ISA_PORTABLE : level;
}

#endif
