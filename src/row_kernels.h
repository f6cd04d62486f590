/* row_kernels.h -- runtime dispatch of the row and column-strip primitives.
 *
 * row_kernels_impl.h is compiled once per instruction set and dtype; each
 * instantiation fills one sx_table.  At import the extension asks the CPU what
 * it supports (gcc/clang __builtin_cpu_supports, which also checks that the OS
 * saves the wide registers) and points sx_table_f32/sx_table_f64 at the best
 * tables.  No -march flag is ever given: the wheel runs on any x86-64 CPU, and
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

#define SX_CAT3_(a, b, c) a##_##b##_##c
#define SX_CAT3(a, b, c) SX_CAT3_(a, b, c)
#define SX_NAME(f) SX_CAT3(f, SX_DTYPE, SX_ISA)

#if (defined(__GNUC__) || defined(__clang__)) && (defined(__x86_64__) || defined(__i386__))
#define SX_X86_DISPATCH 1
#else
#define SX_X86_DISPATCH 0
#endif

/* Instantiations: SX_ISA x {f32, f64}. */
#define SX_ISA portable
#define SX_TARGET
#define SX_DTYPE f32
#define SX_T float
#define SX_F64 0
#include "row_kernels_impl.h"
#undef SX_DTYPE
#undef SX_T
#undef SX_F64
#define SX_DTYPE f64
#define SX_T double
#define SX_F64 1
#include "row_kernels_impl.h"
#undef SX_DTYPE
#undef SX_T
#undef SX_F64
#undef SX_TARGET
#undef SX_ISA

#if SX_X86_DISPATCH
#define SX_ISA avx2
#define SX_TARGET __attribute__((target("avx2,fma")))
#define SX_DTYPE f32
#define SX_T float
#define SX_F64 0
#include "row_kernels_impl.h"
#undef SX_DTYPE
#undef SX_T
#undef SX_F64
#define SX_DTYPE f64
#define SX_T double
#define SX_F64 1
#include "row_kernels_impl.h"
#undef SX_DTYPE
#undef SX_T
#undef SX_F64
#undef SX_TARGET
#undef SX_ISA

#define SX_ISA avx512
#ifdef __clang__
#define SX_TARGET __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma")))
#else
#define SX_TARGET                                                                          \
    __attribute__((target("avx512f,avx512vl,avx512dq,avx512bw,avx2,fma,prefer-vector-width=512")))
#endif
#define SX_DTYPE f32
#define SX_T float
#define SX_F64 0
#include "row_kernels_impl.h"
#undef SX_DTYPE
#undef SX_T
#undef SX_F64
#define SX_DTYPE f64
#define SX_T double
#define SX_F64 1
#include "row_kernels_impl.h"
#undef SX_DTYPE
#undef SX_T
#undef SX_F64
#undef SX_TARGET
#undef SX_ISA
#endif /* SX_X86_DISPATCH */

/* Instruction-set levels, lowest first. */
enum { SX_ISA_PORTABLE = 0, SX_ISA_AVX2 = 1, SX_ISA_AVX512 = 2 };

static const sx_table *sx_table_f32 = &sx_table_f32_portable;
static const sx_table *sx_table_f64 = &sx_table_f64_portable;

/* Highest level this CPU (and OS) can run. */
static int sx_cpu_isa_level(void)
{
#if SX_X86_DISPATCH
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("fma")) {
        return SX_ISA_AVX512;
    }
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) { return SX_ISA_AVX2; }
#endif
    return SX_ISA_PORTABLE;
}

/* Use the best tables at or below `requested`; returns the level chosen. */
static int sx_select_isa(int requested)
{
    int level = SX_MIN(requested, sx_cpu_isa_level());
    sx_table_f32 = &sx_table_f32_portable;
    sx_table_f64 = &sx_table_f64_portable;
#if SX_X86_DISPATCH
    if (level >= SX_ISA_AVX512) {
        sx_table_f32 = &sx_table_f32_avx512;
        sx_table_f64 = &sx_table_f64_avx512;
    } else if (level == SX_ISA_AVX2) {
        sx_table_f32 = &sx_table_f32_avx2;
        sx_table_f64 = &sx_table_f64_avx2;
    }
#endif
    return level < 0 ? SX_ISA_PORTABLE : level;
}

#endif
