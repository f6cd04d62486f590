/* primitives.c -- cycles per element of each row primitive, in cache.
 *
 * Built and run by bench/bench_primitives.py (with setup.py's flags).  For
 * every instruction set the build has and the CPU runs, and both dtypes, it
 * times each row primitive over ROWS rows of N elements that stay in L1/L2
 * (the median of REPEATS sweeps) and prints one JSON object per line:
 *   {"isa": ..., "dtype": ..., "primitive": ..., "ns_per_element": ...,
 *    "cycles_per_element": ...}
 * and first {"clock_ghz": ...}: the core clock, measured as the rate of a
 * chain of dependent integer additions (one per cycle on every x86-64 and
 * AArch64 core), so that cycles are this machine's, turbo included.
 */
#include "row_kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define N 1024
#define ROWS 8
#define REPEATS 301

static double seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static int by_value(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *values, int count)
{
    qsort(values, (size_t)count, sizeof *values, by_value);
    return values[count / 2];
}

/* GHz: 2^28 dependent additions, best of five (the volatile asm keeps the
   chain a chain, one addition per cycle). */
static double clock_ghz(void)
{
    double best = 1e30;
    for (int trial = 0; trial < 5; ++trial) {
        unsigned long long value = 0;
        const double start = seconds();
        for (long i = 0; i < (1L << 28); ++i) {
            __asm__ volatile("" : "+r"(value));
            value += 1;
        }
        const double elapsed = seconds() - start;
        best = elapsed < best ? elapsed : best;
    }
    return (double)(1L << 28) / best / 1e9;
}

enum { MAX, EXP_SUM, EXP_SUM_STORE, TAME_EXP_SUM, TAME_EXP_SUM_STORE, SCALE, LOG_NORMALIZE, DOT,
       SOFTMAX_BWD, LOG_SOFTMAX_BWD, PRIMITIVES };
static const char *const names[PRIMITIVES] = {
    "row_max", "row_exp_sum", "row_exp_sum (stores the exps)", "row_exp_sum (tame)",
    "row_exp_sum (tame, stores the exps)", "row_scale", "row_log_normalize",
    "row_dot (two operands)", "row_softmax_bwd", "row_log_softmax_bwd"};
/* The logits' range, [LOW, SHIFT): the exp sweeps shift by SHIFT, their max;
   given LOW they take the tame exp (row_kernels_impl.h), else the full one. */
#define SHIFT 8.0
#define LOW (-8.0)

/* One sweep of `primitive` over the rows; returns a value to keep it alive. */
static double sweep(const sx_table *t, int primitive, char *x, char *g, char *out, size_t size)
{
    double keep = 0.0, low;
    for (int r = 0; r < ROWS; ++r) {
        void *xr = x + (size_t)r * N * size, *gr = g + (size_t)r * N * size;
        void *outr = out + (size_t)r * N * size;
        switch (primitive) {
        case MAX: keep += t->row_max(xr, N, &low); break;
        case EXP_SUM: keep += t->row_exp_sum(xr, NULL, N, SHIFT, -INFINITY, NULL); break;
        case EXP_SUM_STORE: keep += t->row_exp_sum(xr, outr, N, SHIFT, -INFINITY, NULL); break;
        case TAME_EXP_SUM: keep += t->row_exp_sum(xr, NULL, N, SHIFT, LOW, NULL); break;
        case TAME_EXP_SUM_STORE: keep += t->row_exp_sum(xr, outr, N, SHIFT, LOW, NULL); break;
        case SCALE: t->row_scale(outr, N, 0.999); break;
        case LOG_NORMALIZE: t->row_log_normalize(xr, outr, N, 1.0, 2.0); break;
        case DOT: keep += t->row_dot(xr, gr, NULL, N, 0.0); break;
        case SOFTMAX_BWD: t->row_softmax_bwd(xr, gr, outr, N, 0.5); break;
        case LOG_SOFTMAX_BWD: t->row_log_softmax_bwd(xr, gr, outr, N, 0.5); break;
        }
    }
    return keep;
}

static void run(const char *isa, const char *dtype, const sx_table *t, size_t size, double ghz)
{
    char *x = malloc(ROWS * N * size), *g = malloc(ROWS * N * size), *out = malloc(ROWS * N * size);
    if (x == NULL || g == NULL || out == NULL) {
        fprintf(stderr, "out of memory\n");
        exit(1);
    }
    for (int i = 0; i < ROWS * N; ++i) { /* logits in [LOW, SHIFT), a gradient in [-1, 1) */
        const double logit = (double)((i * 2654435761u) % 4096u) / 256.0 + LOW;
        const double grad = (double)((i * 40503u) % 2048u) / 1024.0 - 1.0;
        if (size == sizeof(float)) {
            ((float *)x)[i] = (float)logit;
            ((float *)g)[i] = (float)grad;
        } else {
            ((double *)x)[i] = logit;
            ((double *)g)[i] = grad;
        }
    }
    double times[REPEATS], keep = 0.0;
    for (int primitive = 0; primitive < PRIMITIVES; ++primitive) {
        keep += sweep(t, primitive, x, g, out, size); /* warm the caches */
        for (int rep = 0; rep < REPEATS; ++rep) {
            const double start = seconds();
            keep += sweep(t, primitive, x, g, out, size);
            times[rep] = seconds() - start;
        }
        const double ns = median(times, REPEATS) / (ROWS * N) * 1e9;
        printf("{\"isa\": \"%s\", \"dtype\": \"%s\", \"primitive\": \"%s\", "
               "\"ns_per_element\": %.4f, \"cycles_per_element\": %.4f}\n",
               isa, dtype, names[primitive], ns, ns * ghz);
    }
    if (keep == 12345.678) { puts(""); } /* never: the results stay used */
    free(x);
    free(g);
    free(out);
}

int main(void)
{
    const double ghz = clock_ghz();
    printf("{\"clock_ghz\": %.3f, \"elements\": %d, \"rows\": %d}\n", ghz, N, ROWS);
    for (int level = 0; level < SX_ISA_LEVELS; ++level) {
        if (sx_select_isa(level) != level) { continue; } /* not runnable here */
        run(sx_isa_names[level], "float32", sx_table_f32, sizeof(float), ghz);
        run(sx_isa_names[level], "float64", sx_table_f64, sizeof(double), ghz);
    }
    return 0;
}
