/* harness.c -- checks of the C row primitives without Python.
 *
 * For targets this machine cannot run Python on: tests/native/run.sh builds
 * it for AArch64 (cross gcc, and cross clang where present) and runs it under
 * qemu-aarch64; it also builds it for the host.  For every instruction set the
 * build has and the CPU runs (portable, neon / avx2 / avx512), it checks:
 *   exp       float32: every float in [-104, 88.7] (the kernels' clamp range
 *             below, overflow above) against exp in double, <= 2 ulp of the
 *             float32 result (subnormal results: ulp 2^-149); float64: random
 *             values in [-745, 709.7] against expl, <= 2 ulp;
 *   rows      row max / exp sum / softmax / log_softmax of rows of many
 *             lengths against a long double reference (rtol as the Python
 *             suite's), -inf and NaN rows;
 *   threads   a long row split in SX_CHUNK pieces over 1-4 OpenMP threads and
 *             summed in piece order gives the whole-row sum bit for bit (the
 *             kernels' thread-count invariance);
 *   half      the 16-bit row primitives (max, exp sums, scale-and-narrow,
 *             log-normalise) give the float32 primitives' bits on the
 *             widened row, NaN, +-inf and +-0 rows included;
 *   isa       every instruction set agrees with the portable one within the
 *             exp error, and float16 conversions agree bit for bit on every
 *             float16 and on float32 values around every float16 (NaNs: both NaN);
 *   transpose tile_transpose (float32, float64) moves every element of
 *             tiles of 1-260 rows and columns with padded leading dimensions
 *             to its transposed place and writes nothing else (guards);
 *   avx2 exp  (x86-64, gcc/clang) the AVX2 vector exp gives the bits of the
 *             scalar formula it vectorises (sx_exp), NaNs included: every
 *             float32 pattern (or every stride-th), float64 values over the
 *             clamp range and past it;
 *   dot       (x86-64, gcc/clang) the AVX2 and AVX-512 row_dot of one and
 *             two operands, which keeps its lanes in registers, gives the
 *             bits of its reduction shape written out value by value.
 * The last line is "N passed, M failed"; the exit status is 1 on any failure.
 * Usage: harness [--best-exp-stride S] [--exp-stride S]
 *   the float32 exp sweep checks every S-th float: S = 1 (every float) for the
 *   instruction set the dispatch picks, 64 for the lower ones by default.
 */
#include "row_kernels.h"

#include <float.h>
#include <stdio.h>
#include <stdlib.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int passed, failed;

static void report(int ok, const char *isa, const char *what, double measured, double bound)
{
    printf("%-8s %-7s %-58s %10.3g (bound %.3g)\n", ok ? "ok" : "FAILED", isa, what, measured,
           bound);
    ok ? ++passed : ++failed;
}

static float float_of(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static uint32_t bits_of(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

/* ulp of a float32 result as a double: 2^(e - 150) for biased exponent e >= 1 */
static double float_ulp(double value)
{
    const uint32_t e = (bits_of((float)fabs(value)) >> 23) & 0xffu;
    return ldexp(1.0, (e < 1 ? 1 : (int)e) - 150);
}

/* Random numbers that are the same on every platform (xorshift64*). */
static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double uniform(void)
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (double)((rng_state * 0x2545f4914f6cdd1dull) >> 11) * 0x1.0p-53;
}
static double normal(void)
{
    double u = uniform(), v = uniform();
    return sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v);
}

/* ---- exp ------------------------------------------------------------------ */

#define EXP_BATCH 4096

/* Largest ulp error of exp over the float32 bit patterns [first, last]
   (one sign), every `stride`-th one. */
static double exp_f32_range(uint32_t first, uint32_t last, uint32_t stride)
{
    const int64_t count = ((int64_t)last - first) / stride + 1;
    const int64_t batches = (count + EXP_BATCH - 1) / EXP_BATCH;
    double worst = 0.0;
#pragma omp parallel for schedule(dynamic, 64) reduction(max : worst)
    for (int64_t b = 0; b < batches; ++b) {
        float x[EXP_BATCH], y[EXP_BATCH];
        const int64_t begin = b * EXP_BATCH;
        const int64_t n = SX_MIN(EXP_BATCH, count - begin);
        for (int64_t i = 0; i < n; ++i) { x[i] = float_of(first + (uint32_t)((begin + i) * stride)); }
        sx_table_f32->row_exp_sum(x, y, n, 0.0, -INFINITY, NULL);
        for (int64_t i = 0; i < n; ++i) {
            const double want = exp((double)x[i]);
            const double error = fabs((double)y[i] - want) / float_ulp(want);
            worst = error > worst ? error : worst;
        }
    }
    return worst;
}

static void check_exp(const char *isa, uint32_t stride)
{
    /* [0, 88.7] and [-104, -0], every float32 of each (or every stride-th) */
    const double worst = fmax(exp_f32_range(0u, bits_of(88.7f), stride),
                              exp_f32_range(0x80000000u, bits_of(-104.0f), stride));
    char what[80];
    if (stride == 1) {
        snprintf(what, sizeof what, "exp float32, every float in [-104, 88.7] (ulp)");
    } else {
        snprintf(what, sizeof what, "exp float32, every %u-th float in [-104, 88.7] (ulp)",
                 (unsigned)stride);
    }
    report(worst <= 2.0, isa, what, worst, 2.0);

    enum { N64 = 1 << 18 };
    double *x = malloc(N64 * sizeof *x), *y = malloc(N64 * sizeof *y);
    for (int i = 0; i < N64; ++i) { x[i] = -745.0 + uniform() * (709.7 + 745.0); }
    x[0] = 0.0; x[1] = 1.0; x[2] = -708.3; x[3] = 709.7; x[4] = 1e-300; x[5] = -1e-300;
    sx_table_f64->row_exp_sum(x, y, N64, 0.0, -INFINITY, NULL);
    double worst64 = 0.0;
    for (int i = 0; i < N64; ++i) {
        const long double want = expl((long double)x[i]);
        int e;
        frexp((double)want, &e);
        /* ulp of a double result: 2^(e - 53), at least the subnormal step 2^-1074 */
        const double ulp = ldexp(1.0, (e - 53) < -1074 ? -1074 : e - 53);
        const double error = (double)(fabsl((long double)y[i] - want) / ulp);
        worst64 = error > worst64 ? error : worst64;
    }
    report(worst64 <= 2.0, isa, "exp float64, 2^18 values in [-745, 709.7] (ulp)", worst64, 2.0);
    const float specials[4] = {-INFINITY, NAN, 100.0f, -200.0f};
    float out[4];
    sx_table_f32->row_exp_sum(specials, out, 4, 0.0, -INFINITY, NULL);
    const int ok = out[0] == 0.0f && isnan(out[1]) && isinf(out[2]) && out[3] == 0.0f;
    report(ok, isa, "exp float32 of -inf, NaN, 100, -200 is 0, NaN, inf, 0", !ok, 0);
    free(x);
    free(y);
}

/* ---- rows against long double ----------------------------------------------- */

#define ROW_CHECK(T, table, rtol, atol)                                                    \
    static double rows_##T(const char *isa, ptrdiff_t n, double scale)                     \
    {                                                                                      \
        T *x = malloc(n * sizeof *x), *p = malloc(n * sizeof *p), *lp = malloc(n * sizeof *lp); \
        T *full = malloc(n * sizeof *full);                                                \
        for (ptrdiff_t i = 0; i < n; ++i) { x[i] = (T)(normal() * scale); }                \
        double low;                                                                        \
        const double m = table->row_max(x, n, &low);                                       \
        long double want_m = -INFINITY, want_low = INFINITY, want_sum = 0.0L;              \
        for (ptrdiff_t i = 0; i < n; ++i) {                                                \
            want_m = x[i] > want_m ? x[i] : want_m;                                        \
            want_low = x[i] < want_low ? x[i] : want_low;                                  \
        }                                                                                  \
        for (ptrdiff_t i = 0; i < n; ++i) { want_sum += expl((long double)x[i] - want_m); } \
        const double sum = table->row_exp_sum(x, p, n, m, low, lp); /* lp: a row to fetch */ \
        /* without `low` every exp is the full one: the same bits */                       \
        const double sum_full = table->row_exp_sum(x, full, n, m, -INFINITY, NULL);        \
        const int same = sum_full == sum && memcmp(full, p, n * sizeof *p) == 0;           \
        table->row_scale(p, n, 1.0 / sum);                                                 \
        table->row_log_normalize(x, lp, n, m, log(sum));                                   \
        double worst = 0.0; /* error / (rtol |want| + atol), <= 1 passes */                \
        for (ptrdiff_t i = 0; i < n; ++i) {                                                \
            const long double want_p = expl((long double)x[i] - want_m) / want_sum;        \
            const long double want_lp = ((long double)x[i] - want_m) - logl(want_sum);     \
            const double e1 = (double)(fabsl(p[i] - want_p) / (rtol * want_p + atol));     \
            const double e2 = (double)(fabsl(lp[i] - want_lp) / (rtol * fabsl(want_lp) + atol)); \
            worst = fmax(worst, fmax(e1, e2));                                             \
        }                                                                                  \
        worst = fmax(worst, (double)(fabsl(sum - want_sum) / (rtol * want_sum)));          \
        if (m != (double)want_m || low != (double)want_low || !same) { worst = INFINITY; } \
        (void)isa;                                                                         \
        free(x);                                                                           \
        free(full);                                                                        \
        free(p);                                                                           \
        free(lp);                                                                          \
        return worst;                                                                      \
    }
ROW_CHECK(float, sx_table_f32, 4e-6, 2e-7)
ROW_CHECK(double, sx_table_f64, 1e-13, 1e-15)

static void check_rows(const char *isa)
{
    static const ptrdiff_t lengths[] = {1, 2, 3, 7, 15, 16, 17, 31, 33, 100, 513, 1000, 4099,
                                        SX_CHUNK + 5, 70001};
    double worst32 = 0.0, worst64 = 0.0;
    for (size_t k = 0; k < sizeof lengths / sizeof lengths[0]; ++k) {
        for (double scale = 0.5; scale <= 50.0; scale *= 10.0) {
            worst32 = fmax(worst32, rows_float(isa, lengths[k], scale));
            worst64 = fmax(worst64, rows_double(isa, lengths[k], scale));
        }
    }
    report(worst32 <= 1.0, isa,
           "float32 rows vs long double; tame exps = full ones",
           worst32, 1.0);
    report(worst64 <= 1.0, isa,
           "float64 rows vs long double; tame exps = full ones",
           worst64, 1.0);

    const float with_inf[5] = {-INFINITY, 1.0f, -INFINITY, 2.0f, 0.5f};
    const float with_nan[5] = {1.0f, NAN, 2.0f, 0.0f, -1.0f};
    float out[5], out_nan[5];
    double low, low_nan;
    const double m = sx_table_f32->row_max(with_inf, 5, &low);
    const double s = sx_table_f32->row_exp_sum(with_inf, out, 5, m, low, NULL);
    const double m_nan = sx_table_f32->row_max(with_nan, 5, &low_nan);
    const double s_nan = sx_table_f32->row_exp_sum(with_nan, out_nan, 5, m_nan, low_nan, NULL);
    const int ok = m == 2.0 && low == -INFINITY && out[0] == 0.0f &&
                   fabs(s - (1.0 + exp(-1.0) + exp(-1.5))) < 1e-6 && m_nan == 2.0 &&
                   low_nan == -1.0 && isnan(s_nan) && isnan(out_nan[1]);
    report(ok, isa, "-inf elements give 0, a NaN element gives a NaN sum", !ok, 0);
}

/* ---- thread-count invariance -------------------------------------------------- */

static void check_threads(const char *isa)
{
    const ptrdiff_t n = 5 * SX_CHUNK + 123, pieces = (n + SX_CHUNK - 1) / SX_CHUNK;
    float *x = malloc(n * sizeof *x), *whole = malloc(n * sizeof *whole),
          *split = malloc(n * sizeof *split);
    double piece_sum[8], piece_dot[8];
    for (ptrdiff_t i = 0; i < n; ++i) { x[i] = (float)(normal() * 3.0); }
    double low;
    const double m = sx_table_f32->row_max(x, n, &low);
    const double want = sx_table_f32->row_exp_sum(x, whole, n, m, low, NULL);
    const double want_dot = sx_table_f32->row_dot(x, whole, whole, n, 0.0);
    int mismatches = 0;
    for (int threads = 1; threads <= 4; ++threads) {
#pragma omp parallel for schedule(static) num_threads(threads)
        for (ptrdiff_t piece = 0; piece < pieces; ++piece) {
            const ptrdiff_t begin = piece * SX_CHUNK, len = SX_MIN(SX_CHUNK, n - begin);
            piece_sum[piece] = sx_table_f32->row_exp_sum(x + begin, split + begin, len, m, low, NULL);
            piece_dot[piece] = sx_table_f32->row_dot(x + begin, whole + begin, whole + begin, len, 0.0);
        }
        double sum = 0.0, dot = 0.0;
        for (ptrdiff_t piece = 0; piece < pieces; ++piece) {
            sum += piece_sum[piece];
            dot += piece_dot[piece];
        }
        mismatches += sum != want || dot != want_dot || memcmp(split, whole, n * sizeof *x) != 0;
    }
#ifdef _OPENMP
    const char *what = "long row over 1-4 OpenMP threads: sum, dot, exps bitwise";
#else
    const char *what = "long row in pieces (no OpenMP here): sum, dot, exps bitwise";
#endif
    report(mismatches == 0, isa, what, mismatches, 0);
    free(x);
    free(whole);
    free(split);
}

/* ---- 16-bit row primitives against float32 ones on the widened row -------------- */

/* Rows of 16-bit values, specials mixed in, through each sx_half_table row
 * primitive and through the float32 one on the widened row (then narrowed):
 * sums, tie counts and stored values must agree bit for bit, maxima as values
 * (-0 and +0 may differ). */
static void check_half_rows(const char *isa)
{
    static const ptrdiff_t lengths[] = {1, 31, 32, 33, 100, 1000, 17000, 40000};
    enum { MAX_N = 40000 };
    uint16_t *x = malloc(MAX_N * sizeof *x), *next = malloc(MAX_N * sizeof *next),
             *out = malloc(MAX_N * sizeof *out), *ref = malloc(MAX_N * sizeof *ref);
    float *wide = malloc(MAX_N * sizeof *wide), *e = malloc(MAX_N * sizeof *e),
          *e_ref = malloc(MAX_N * sizeof *e_ref);
    int mismatches = 0;
    for (int format = 0; format < 2; ++format) {
        const sx_half_table *h = format ? sx_table_bf16 : sx_table_f16;
        const uint16_t inf = format ? 0x7f80u : 0x7c00u;
        for (size_t l = 0; l < sizeof lengths / sizeof lengths[0]; ++l) {
            const ptrdiff_t n = lengths[l];
            for (int kind = 0; kind < 6; ++kind) {
                for (ptrdiff_t i = 0; i < n; ++i) { wide[i] = (float)(normal() * 6.0) - (kind == 1 ? 30.0f : 0.0f); }
                h->store(wide, 0, x, 0, 1, n);
                h->store(wide, 0, next, 0, 1, n);
                if (kind == 2) { x[n / 2] = (uint16_t)(inf | 1u); x[n - 1] = (uint16_t)(inf | 0x8000u); }
                if (kind == 3) { for (ptrdiff_t i = 0; i < n; ++i) { x[i] = (uint16_t)(inf | 0x8001u); } }
                if (kind == 4) { x[n - 1] = inf; }
                if (kind == 5) { for (ptrdiff_t i = 0; i < n; ++i) { x[i] = (uint16_t)(i % 3 ? 0x8000u : 1u); } }
                h->load(x, 0, wide, 0, 1, n);
                double low, low_ref;
                const double m = h->row_max(x, n, &low), m_ref = sx_table_f32->row_max(wide, n, &low_ref);
                mismatches += !(m == m_ref || (isnan(m) && isnan(m_ref))) || low != low_ref;
                const double shift = isfinite(m_ref) ? m_ref : 0.0;
                /* the 16-bit sweeps take tame exps where they can, the float32 ones full exps */
                const double ref_low = shift == m_ref ? low_ref : -INFINITY;
                const double sum = h->row_exp_sum(x, e, n, shift, ref_low, next);
                const double sum_ref = sx_table_f32->row_exp_sum(wide, e_ref, n, shift, -INFINITY, NULL);
                mismatches += memcmp(&sum, &sum_ref, sizeof sum) != 0 || memcmp(e, e_ref, n * sizeof *e) != 0;
                double ties, ties_ref;
                const double excess = h->row_exp_excess(x, n, shift, ref_low, &ties, next);
                const double excess_ref = sx_table_f32->row_exp_excess(wide, n, shift, -INFINITY, &ties_ref, NULL);
                mismatches += memcmp(&excess, &excess_ref, sizeof excess) != 0 || ties != ties_ref;
                h->row_scale_store(e, out, n, 1.0 / sum);
                sx_table_f32->row_scale(e_ref, n, 1.0 / sum_ref);
                h->store(e_ref, 0, ref, 0, 1, n);
                mismatches += memcmp(out, ref, n * sizeof *out) != 0;
                h->row_log_normalize(x, out, n, shift, log(sum));
                sx_table_f32->row_log_normalize(wide, e_ref, n, shift, log(sum_ref));
                h->store(e_ref, 0, ref, 0, 1, n);
                mismatches += memcmp(out, ref, n * sizeof *out) != 0;
                h->row_log_normalize_store(wide, out, n, shift, log(sum));
                mismatches += memcmp(out, ref, n * sizeof *out) != 0;
            }
        }
    }
    report(mismatches == 0, isa, "16-bit row primitives = float32 ones on the widened row",
           mismatches, 0);
    free(x); free(next); free(out); free(ref); free(wide); free(e); free(e_ref);
}

/* ---- AVX2 code against the scalar formulas it vectorises ----------------------- */

#if defined(SX_X86_TARGETS)
#define SX_TARGET_AVX2 __attribute__((target("avx2,fma,f16c"))) /* as row_kernels.h's */
/* Lanes where sx_exp_vector and sx_exp give other bits: float32 patterns
   first, first + stride, ... (all 2^32 with stride 1), then 2^20 float64
   values in [-800, 800] and the specials. */
static SX_TARGET_AVX2 uint64_t avx2_vector_exp_mismatches(uint32_t stride)
{
    uint64_t mismatches = 0;
    for (uint64_t first = 0; first < (1ull << 32); first += 8ull * stride) {
        float x[8], want[8], got[8];
        for (int j = 0; j < 8; ++j) {
            x[j] = float_of((uint32_t)(first + (uint64_t)j * stride));
            want[j] = sx_exp_f32_avx2(x[j]);
        }
        _mm256_storeu_ps(got, sx_exp_vector_f32_avx2(_mm256_loadu_ps(x)));
        for (int j = 0; j < 8; ++j) { mismatches += bits_of(got[j]) != bits_of(want[j]); }
    }
    enum { N64 = 1 << 20 };
    static const double specials[] = {-INFINITY, INFINITY, NAN, -NAN, 0.0, -0.0,
                                      -746.0, -745.2, 709.8, 710.0, -708.4, 1e-300};
    enum { SPECIALS = sizeof specials / sizeof specials[0] };
    for (int i = 0; i < N64; i += 4) {
        double x[4], want[4], got[4];
        for (int j = 0; j < 4; ++j) {
            x[j] = i + j < SPECIALS ? specials[i + j] : -800.0 + uniform() * 1600.0;
            want[j] = sx_exp_f64_avx2(x[j]);
        }
        _mm256_storeu_pd(got, sx_exp_vector_f64_avx2(_mm256_loadu_pd(x)));
        for (int j = 0; j < 4; ++j) { mismatches += memcmp(&got[j], &want[j], sizeof got[j]) != 0; }
    }
    return mismatches;
}

/* Lanes where sx_exp_vector_tame and sx_exp_vector give other bits on the
   tame arguments: NaNs of either sign with payloads that reach the exponent
   field if shifted by 23 (52), every stride-th float32 in [-86, -0] (their
   patterns run from 0x80000000 up), 2^20 float64 values in [-707, 0]. */
static SX_TARGET_AVX2 int avx2_tame_f32_mismatches(const float *x)
{
    float want[8], got[8];
    _mm256_storeu_ps(want, sx_exp_vector_f32_avx2(_mm256_loadu_ps(x)));
    _mm256_storeu_ps(got, sx_exp_vector_tame_f32_avx2(_mm256_loadu_ps(x)));
    int mismatches = 0;
    for (int j = 0; j < 8; ++j) { mismatches += bits_of(got[j]) != bits_of(want[j]); }
    return mismatches;
}

static SX_TARGET_AVX2 uint64_t avx2_tame_exp_mismatches(uint32_t stride)
{
    /* volatile: clang folds arithmetic on constant NaNs by rules of its own
       (the sign of a NaN came out flipped), which no runtime input meets */
    static const volatile uint32_t nans[8] = {0x7fc00000u, 0xffc00000u, 0x7fc001ffu, 0xffc00155u,
                                              0x7f800001u, 0xff8000ffu, 0x7fffffffu,
                                              0x7fc00100u};
    float x[8];
    for (int j = 0; j < 8; ++j) { x[j] = float_of(nans[j]); }
    uint64_t mismatches = (uint64_t)avx2_tame_f32_mismatches(x);
    const uint32_t last = bits_of(-86.0f);
    for (uint64_t first = 0x80000000u; first <= last; first += 8ull * stride) {
        for (int j = 0; j < 8; ++j) {
            x[j] = float_of((uint32_t)SX_MIN(first + (uint64_t)j * stride, (uint64_t)last));
        }
        mismatches += (uint64_t)avx2_tame_f32_mismatches(x);
    }
    static const volatile uint64_t nans64[4] = {0x7ff8000000000000ull, 0xfff8000000000fffull,
                                                0x7ff0000000000001ull, 0x7fffffffffffffffull};
    for (int i = 0; i < (1 << 20); i += 4) {
        double y[4], want[4], got[4];
        for (int j = 0; j < 4; ++j) { y[j] = -707.0 * uniform(); }
        for (int j = 0; i == 0 && j < 4; ++j) {
            const uint64_t bits = nans64[j];
            memcpy(&y[j], &bits, sizeof bits);
        }
        if (i == 4) { y[0] = -707.0; y[1] = -0.0; y[2] = 0.0; y[3] = -706.99999; }
        _mm256_storeu_pd(want, sx_exp_vector_f64_avx2(_mm256_loadu_pd(y)));
        _mm256_storeu_pd(got, sx_exp_vector_tame_f64_avx2(_mm256_loadu_pd(y)));
        for (int j = 0; j < 4; ++j) { mismatches += memcmp(&got[j], &want[j], sizeof got[j]) != 0; }
    }
    return mismatches;
}

/* row_dot's reduction shape (row_kernels_impl.h) written out value by value:
   per block of SX_BLOCK, one accumulator per lane (64 bytes of lanes), each
   adding its whole groups' terms (a_i - shift) * b_i by multiply-adds (or
   a_i - shift for a NULL b), then the last, partial group's terms as rounded
   products (the empty asm keeps the compiler from fusing them into the
   sum) and 0 in its missing lanes; the lanes summed as a tree, the upper
   half onto the lower; block sums added in double into a chunk sum, chunk
   sums (SX_CHUNK) in double. */
#define DOT_REFERENCE(T, NAME, FMA)                                                          \
    static double NAME(const T *a, const T *b, ptrdiff_t n, T shift)                         \
    {                                                                                        \
        enum { LANES = 64 / sizeof(T) };                                                     \
        double total = 0.0;                                                                  \
        for (ptrdiff_t chunk = 0; chunk < n; chunk += SX_CHUNK) {                            \
            const ptrdiff_t chunk_end = SX_MIN(n, chunk + SX_CHUNK);                         \
            double chunk_sum = 0.0;                                                          \
            for (ptrdiff_t block = chunk; block < chunk_end; block += SX_BLOCK) {            \
                const ptrdiff_t block_end = SX_MIN(chunk_end, block + SX_BLOCK);             \
                const ptrdiff_t whole = block + (block_end - block) / LANES * LANES;         \
                T acc[LANES] = {0};                                                          \
                for (ptrdiff_t i = block; i < block_end; ++i) {                              \
                    const T shifted = a[i] - shift;                                          \
                    T *lane = &acc[(i - block) % LANES];                                     \
                    if (i < whole) {                                                         \
                        *lane = b != NULL ? FMA(shifted, b[i], *lane) : *lane + shifted;     \
                        continue;                                                            \
                    }                                                                        \
                    T term = b != NULL ? shifted * b[i] : shifted;                           \
                    __asm__("" : "+x"(term));                                                \
                    *lane += term;                                                           \
                }                                                                            \
                if (whole < block_end) {                                                     \
                    for (ptrdiff_t j = block_end - whole; j < LANES; ++j) { acc[j] += 0; }   \
                }                                                                            \
                for (ptrdiff_t width = LANES / 2; width > 0; width /= 2) {                   \
                    for (ptrdiff_t j = 0; j < width; ++j) { acc[j] += acc[j + width]; }      \
                }                                                                            \
                chunk_sum += acc[0];                                                         \
            }                                                                                \
            total += chunk_sum;                                                              \
        }                                                                                    \
        return total;                                                                        \
    }
DOT_REFERENCE(float, dot_reference_f32, fmaf)
DOT_REFERENCE(double, dot_reference_f64, fma)

/* The vector row_dot of one and two operands (accumulators in registers)
   against dot_reference, bit for bit (NaN as NaN): rows of 0 to
   2 SX_BLOCK + 40 values and one of 2 SX_CHUNK + 77, at every element
   offset within 64 bytes (every fifth past 64 values), shifts 0 and 0.75:
   normal values, rows with infinities and NaNs, and rows of products that
   underflow to -0 (TINY squared) with some a = -0. */
#define CHECK_DOT(T, TABLE, REFERENCE, TINY)                                                 \
    {                                                                                        \
        enum { MAX_N = 2 * SX_BLOCK + 40, LONG_N = 2 * SX_CHUNK + 77, PAD = 64 / sizeof(T) }; \
        T *a = malloc((LONG_N + PAD) * sizeof(T)), *b = malloc((LONG_N + PAD) * sizeof(T));  \
        for (int kind = 0; kind < 3; ++kind) {                                               \
            for (int i = 0; i < LONG_N + PAD; ++i) {                                         \
                b[i] = (T)uniform();                                                         \
                a[i] = kind == 2 ? (T)(-(TINY) * uniform()) * (i % 7 != 0) : (T)normal();   \
                if (kind == 2) { b[i] *= (T)(TINY); }                                        \
                if (kind == 1 && i % 97 == 5) { a[i] = i % 2 ? (T)INFINITY : (T)NAN; }       \
            }                                                                                \
            for (ptrdiff_t n = 0; n <= MAX_N + 1; ++n) {                                     \
                const ptrdiff_t length = n <= MAX_N ? n : LONG_N;                            \
                for (ptrdiff_t offset = 0; offset < PAD; offset += n <= 64 ? 1 : 5) {        \
                    for (int operands = 1; operands <= 2; ++operands) {                      \
                        for (int s = 0; s <= 1; ++s) {                                       \
                            const T *bo = operands == 2 ? b + offset : NULL;                 \
                            const double got =                                               \
                                (TABLE)->row_dot(a + offset, bo, NULL, length, 0.75 * s);    \
                            const double want =                                              \
                                REFERENCE(a + offset, bo, length, (T)(0.75 * s));            \
                            mismatches += !(isnan(got) && isnan(want)) &&                    \
                                          memcmp(&got, &want, sizeof got) != 0;              \
                        }                                                                    \
                    }                                                                        \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        free(a);                                                                             \
        free(b);                                                                             \
    }

static void check_dot(const char *isa)
{
    uint64_t mismatches = 0;
    CHECK_DOT(float, sx_table_f32, dot_reference_f32, 1e-30)
    CHECK_DOT(double, sx_table_f64, dot_reference_f64, 1e-200)
    report(mismatches == 0, isa, "row_dot = its reduction shape, value by value, bit for bit",
           (double)mismatches, 0);
}

static void check_avx2_vector_exp(uint32_t stride)
{
    char what[80];
    snprintf(what, sizeof what, "vector exp = scalar sx_exp bit for bit (every %u-th float)",
             (unsigned)stride);
    const uint64_t mismatches = avx2_vector_exp_mismatches(stride);
    report(mismatches == 0, "avx2", what, (double)mismatches, 0);
    snprintf(what, sizeof what, "tame vector exp = full one on [-86, 0], NaN (every %u-th float)",
             (unsigned)stride);
    const uint64_t tame_mismatches = avx2_tame_exp_mismatches(stride);
    report(tame_mismatches == 0, "avx2", what, (double)tame_mismatches, 0);
}
#endif

/* ---- agreement with the portable instruction set ------------------------------- */

/* row_max of `mine` and `ref` (tables of one dtype, elements of `size`
   bytes) over rows of every length to 70 and a few longer, at 8 offsets, in
   three fills: NaN, +-inf and +-0 among normal values; only NaN, -inf, -1
   and zeros of both signs; only NaN and zeros of both signs (ties of -0 and
   +0 at both ends).  Returns how many rows' largest or smallest differ in
   their bits. */
static int row_max_differences(const sx_table *mine, const sx_table *ref, size_t size)
{
    enum { N = 1100 };
    static const double specials[] = {NAN, INFINITY, -INFINITY, 0.0, -0.0};
    static const double few[] = {NAN, -INFINITY, -1.0, 0.0, -0.0, -0.0};
    static const double zeros[] = {NAN, 0.0, -0.0};
    static const ptrdiff_t longer[] = {127, 128, 129, 1000, 1031};
    enum { SHORT_N = 70, LONGER = sizeof longer / sizeof longer[0] };
    char *x = malloc(N * size);
    int differ = 0;
    for (int fill = 0; fill < 3; ++fill) {
        for (int i = 0; i < N; ++i) {
            const uint32_t r = (uint32_t)i * 2654435761u >> 24;
            const double v = fill == 2 ? zeros[r % 3]
                             : fill == 1 ? few[r % 6]
                             : r < 40 ? specials[r % 5] : normal() * 10.0;
            if (size == sizeof(float)) { ((float *)x)[i] = (float)v; }
            else { ((double *)x)[i] = v; }
        }
        for (ptrdiff_t k = 0; k <= SHORT_N + LONGER; ++k) {
            const ptrdiff_t n = k <= SHORT_N ? k : longer[k - SHORT_N - 1];
            for (ptrdiff_t offset = 0; offset < 8; ++offset) {
                const char *row = x + offset * size;
                double low_mine, low_ref;
                const double m_mine = mine->row_max(row, n, &low_mine);
                const double m_ref = ref->row_max(row, n, &low_ref);
                differ += memcmp(&m_mine, &m_ref, sizeof m_ref) != 0 ||
                          memcmp(&low_mine, &low_ref, sizeof low_ref) != 0;
            }
        }
    }
    free(x);
    return differ;
}

static void check_against_portable(int level)
{
    const char *isa = sx_isa_names[level];
    enum { N = 50000 };
    float *x = malloc(N * sizeof *x), *mine = malloc(N * sizeof *mine), *ref = malloc(N * sizeof *ref);
    for (int i = 0; i < N; ++i) { x[i] = (float)(normal() * 10.0); }
    sx_select_isa(SX_ISA_PORTABLE);
    const double ref_sum = sx_table_f32->row_exp_sum(x, ref, N, 0.0, -INFINITY, NULL);
    const sx_half_table portable_f16 = *sx_table_f16, portable_bf16 = *sx_table_bf16;
    const sx_table portable_f32 = *sx_table_f32, portable_f64 = *sx_table_f64;
    sx_select_isa(level);
    const int max_differ = row_max_differences(sx_table_f32, &portable_f32, sizeof(float)) +
                           row_max_differences(sx_table_f64, &portable_f64, sizeof(double));
    report(max_differ == 0, isa, "row_max agrees with portable bit for bit (NaN, inf, -0)",
           max_differ, 0);
    const double sum = sx_table_f32->row_exp_sum(x, mine, N, 0.0, -INFINITY, NULL);
    double worst = fabs(sum - ref_sum) / (4e-6 * ref_sum);
    for (int i = 0; i < N; ++i) { worst = fmax(worst, fabs((double)mine[i] - ref[i]) / (2.0 * float_ulp(ref[i]))); }
    report(worst <= 2.0, isa, "exp and sum agree with portable (units of 2 ulp)", worst, 2.0);

    /* every float16 widened; every float16 +- a little narrowed */
    uint16_t *h = malloc(65536 * sizeof *h), *h_mine = malloc(65536 * 3 * sizeof *h),
             *h_ref = malloc(65536 * 3 * sizeof *h);
    float *wide_mine = malloc(65536 * sizeof(float)), *wide_ref = malloc(65536 * sizeof(float)),
          *near = malloc(65536 * 3 * sizeof(float));
    for (int i = 0; i < 65536; ++i) { h[i] = (uint16_t)i; }
    sx_table_f16->load(h, 0, wide_mine, 0, 1, 65536);
    portable_f16.load(h, 0, wide_ref, 0, 1, 65536);
    int differ = 0;
    for (int i = 0; i < 65536; ++i) {
        const int both_nan = isnan(wide_mine[i]) && isnan(wide_ref[i]);
        differ += !both_nan && bits_of(wide_mine[i]) != bits_of(wide_ref[i]);
        /* the value, and values just above and below it (ties, rounding) */
        near[3 * i] = wide_ref[i];
        near[3 * i + 1] = float_of(bits_of(wide_ref[i]) + 0x1000u);
        near[3 * i + 2] = float_of(bits_of(wide_ref[i]) - 0x1000u);
    }
    sx_table_f16->store(near, 0, h_mine, 0, 1, 65536 * 3);
    portable_f16.store(near, 0, h_ref, 0, 1, 65536 * 3);
    for (int i = 0; i < 65536 * 3; ++i) {
        const int nan_mine = (h_mine[i] & 0x7fffu) > 0x7c00u, nan_ref = (h_ref[i] & 0x7fffu) > 0x7c00u;
        differ += !(nan_mine && nan_ref) && h_mine[i] != h_ref[i];
    }
    report(differ == 0, isa, "float16 load/store agree with portable bit for bit", differ, 0);

    /* bfloat16 store: every 16-bit prefix with low halves at and around the
       ties (NaNs, infinities and subnormals included) */
    static const uint32_t low_halves[] = {0x0000u, 0x0001u, 0x7fffu, 0x8000u, 0x8001u, 0xffffu};
    enum { LOWS = sizeof low_halves / sizeof low_halves[0] };
    float *patterns = malloc(65536 * LOWS * sizeof(float));
    uint16_t *b_mine = malloc(65536 * LOWS * sizeof(uint16_t)),
             *b_ref = malloc(65536 * LOWS * sizeof(uint16_t));
    for (uint32_t i = 0; i < 65536; ++i) {
        for (int j = 0; j < LOWS; ++j) { patterns[i * LOWS + j] = float_of(i << 16 | low_halves[j]); }
    }
    sx_table_bf16->store(patterns, 0, b_mine, 0, 1, 65536 * LOWS);
    portable_bf16.store(patterns, 0, b_ref, 0, 1, 65536 * LOWS);
    differ = 0;
    for (int i = 0; i < 65536 * LOWS; ++i) { differ += b_mine[i] != b_ref[i]; }
    report(differ == 0, isa, "bfloat16 store agrees with portable bit for bit", differ, 0);
    free(patterns); free(b_mine); free(b_ref);
    free(x); free(mine); free(ref); free(h); free(h_mine); free(h_ref);
    free(wide_mine); free(wide_ref); free(near);
}

/* ---- tile transpose ------------------------------------------------------------ */

/* tile_transpose of one dtype (ELEM, the table TABLE) for each (rows, cols)
   and padding: dst[c * ldd + r] = src[r * lds + c], every other element of
   dst (padding, guards after the tile) untouched. */
#define CHECK_TRANSPOSE(ELEM, TABLE, name)                                                   \
    do {                                                                                     \
        static const int sizes[] = {1, 2, 3, 4, 5, 7, 8, 9, 10, 15, 16, 17, 31, 64, 260};  \
        enum { SIZES = sizeof sizes / sizeof sizes[0], GUARD = 64 };                         \
        long wrong = 0;                                                                      \
        for (int a = 0; a < SIZES; ++a) {                                                    \
            for (int b = 0; b < SIZES; ++b) {                                                \
                for (int pad = 0; pad < 3; ++pad) {                                          \
                    const ptrdiff_t rows = sizes[a], cols = sizes[b];                        \
                    const ptrdiff_t lds = cols + pad, ldd = rows + 2 * pad;                  \
                    const ptrdiff_t src_n = rows * lds, dst_n = cols * ldd + GUARD;          \
                    ELEM *src = malloc(src_n * sizeof *src), *dst = malloc(dst_n * sizeof *dst); \
                    for (ptrdiff_t i = 0; i < src_n; ++i) { src[i] = (ELEM)(i + 1); }        \
                    for (ptrdiff_t i = 0; i < dst_n; ++i) { dst[i] = (ELEM)-1; }             \
                    TABLE->tile_transpose(src, lds, dst, ldd, rows, cols);                   \
                    for (ptrdiff_t i = 0; i < dst_n; ++i) {                                  \
                        const ptrdiff_t c = i / ldd, r = i % ldd;                            \
                        const int inside = c < cols && r < rows;                             \
                        wrong += dst[i] != (inside ? src[r * lds + c] : (ELEM)-1);           \
                    }                                                                        \
                    free(src);                                                               \
                    free(dst);                                                               \
                }                                                                            \
            }                                                                                \
        }                                                                                    \
        report(wrong == 0, isa, name, (double)wrong, 0);                                     \
    } while (0)

static void check_transpose(const char *isa)
{
    CHECK_TRANSPOSE(float, sx_table_f32, "float32 tile transpose: every element, nothing else");
    CHECK_TRANSPOSE(double, sx_table_f64, "float64 tile transpose: every element, nothing else");
}

/* ---- streaming stores ---------------------------------------------------------- */

/* row_softmax_bwd_stream, row_log_normalize_stream,
   row_log_softmax_bwd_stream and row_scale_stream write the very bits of the
   primitives they name, for rows of 1-70 elements and five of about a block
   and more (SX_BLOCK - 1 to 2 SX_BLOCK + 7: row_log_softmax_bwd_stream goes
   a block at a time) at every element offset within 64 bytes, and nothing
   outside the row (guard values on both sides). */
static void check_streaming(const char *isa)
{
    enum { SHORT_N = 70, MAX_N = 2 * SX_BLOCK + 7, PAD = 16, GUARD = 1234 };
    static float p32[MAX_N], g32[MAX_N], want32[MAX_N], got32[MAX_N + 2 * PAD];
    static double p64[MAX_N], g64[MAX_N], want64[MAX_N], got64[MAX_N + 2 * PAD];
    int mismatches = 0;
    for (int i = 0; i < MAX_N; ++i) {
        p32[i] = (float)uniform();
        g32[i] = (float)normal();
        p64[i] = uniform();
        g64[i] = normal();
    }
    const ptrdiff_t long_rows[] = {SX_BLOCK - 1, SX_BLOCK, SX_BLOCK + 1, 2 * SX_BLOCK - 24, MAX_N};
    const ptrdiff_t lengths = SHORT_N + (ptrdiff_t)(sizeof long_rows / sizeof long_rows[0]);
    for (ptrdiff_t length = 1; length <= lengths; ++length) {
        const ptrdiff_t n = length <= SHORT_N ? length : long_rows[length - SHORT_N - 1];
        for (ptrdiff_t offset = 0; offset < PAD; ++offset) {
            for (int primitive = 0; primitive < 4; ++primitive) {
                for (int k = 0; k < MAX_N + 2 * PAD; ++k) {
                    got32[k] = GUARD;
                    got64[k] = GUARD;
                }
                if (primitive == 0) {
                    sx_table_f32->row_softmax_bwd(p32, g32, want32, n, 0.3);
                    sx_table_f32->row_softmax_bwd_stream(p32, g32, got32 + offset, n, 0.3);
                    sx_table_f64->row_softmax_bwd(p64, g64, want64, n, 0.3);
                    sx_table_f64->row_softmax_bwd_stream(p64, g64, got64 + offset, n, 0.3);
                } else if (primitive == 1) {
                    sx_table_f32->row_log_normalize(g32, want32, n, 0.3, 1.7);
                    sx_table_f32->row_log_normalize_stream(g32, got32 + offset, n, 0.3, 1.7);
                    sx_table_f64->row_log_normalize(g64, want64, n, 0.3, 1.7);
                    sx_table_f64->row_log_normalize_stream(g64, got64 + offset, n, 0.3, 1.7);
                } else if (primitive == 2) { /* the normal values g stand for log-probabilities */
                    sx_table_f32->row_log_softmax_bwd(g32, p32, want32, n, 0.7);
                    sx_table_f32->row_log_softmax_bwd_stream(g32, p32, got32 + offset, n, 0.7);
                    sx_table_f64->row_log_softmax_bwd(g64, p64, want64, n, 0.7);
                    sx_table_f64->row_log_softmax_bwd_stream(g64, p64, got64 + offset, n, 0.7);
                } else {
                    memcpy(want32, p32, n * sizeof *want32);
                    memcpy(want64, p64, n * sizeof *want64);
                    sx_table_f32->row_scale(want32, n, 1.0 / 3.0);
                    sx_table_f32->row_scale_stream(p32, got32 + offset, n, 1.0 / 3.0);
                    sx_table_f64->row_scale(want64, n, 1.0 / 3.0);
                    sx_table_f64->row_scale_stream(p64, got64 + offset, n, 1.0 / 3.0);
                }
                sx_store_fence();
                mismatches += memcmp(got32 + offset, want32, n * sizeof *want32) != 0;
                mismatches += memcmp(got64 + offset, want64, n * sizeof *want64) != 0;
                for (int k = 0; k < MAX_N + 2 * PAD; ++k) {
                    if (k >= offset && k < offset + n) { continue; }
                    mismatches += got32[k] != GUARD || got64[k] != GUARD;
                }
            }
        }
    }
    report(mismatches == 0, isa, "streaming stores = ordinary ones, inside the row only",
           mismatches, 0);
}

#if defined(SX_VJP256_TABLES)
/* The AVX-512 tables for AMD CPUs (sx_table_vjp256_*) differ only in the
   softmax VJP, built for 256-bit vectors: the very bits of the 512-bit one,
   for rows of 1-200 values at every element offset within 64 bytes. */
static void check_vjp256(void)
{
    enum { MAX_N = 200, PAD = 16 };
    static float p32[MAX_N + PAD], g32[MAX_N + PAD], want32[MAX_N], got32[MAX_N];
    static double p64[MAX_N + PAD], g64[MAX_N + PAD], want64[MAX_N], got64[MAX_N];
    int mismatches = 0;
    for (int i = 0; i < MAX_N + PAD; ++i) {
        p32[i] = (float)uniform();
        g32[i] = (float)normal();
        p64[i] = uniform();
        g64[i] = normal();
    }
    for (ptrdiff_t n = 1; n <= MAX_N; ++n) {
        for (ptrdiff_t offset = 0; offset < PAD; ++offset) {
            sx_table_f32_avx512.row_softmax_bwd(p32 + offset, g32 + offset, want32, n, 0.3);
            sx_table_vjp256_f32_avx512.row_softmax_bwd(p32 + offset, g32 + offset, got32, n, 0.3);
            sx_table_f64_avx512.row_softmax_bwd(p64 + offset, g64 + offset, want64, n, 0.3);
            sx_table_vjp256_f64_avx512.row_softmax_bwd(p64 + offset, g64 + offset, got64, n, 0.3);
            mismatches += memcmp(got32, want32, n * sizeof *want32) != 0;
            mismatches += memcmp(got64, want64, n * sizeof *want64) != 0;
        }
    }
    report(sx_table_vjp256_f32_avx512.row_softmax_bwd != sx_table_f32_avx512.row_softmax_bwd &&
               mismatches == 0,
           "avx512", "256-bit softmax VJP (AMD's tables) = 512-bit, bit for bit", mismatches, 0);
}
#endif

/* The 16-bit row_scale_store_stream and row_log_normalize_stream write the
   very bits of row_scale_store and row_log_normalize, for both formats,
   rows of 1-200 values at every offset within 64 bytes (the partial lines
   at either end, whole lines between), and nothing outside the row. */
static void check_half_streaming(const char *isa)
{
    enum { MAX_N = 200, PAD = 32, GUARD = 0x5a5a };
    float e[MAX_N];
    uint16_t x[MAX_N], want[MAX_N], got[MAX_N + 2 * PAD];
    int mismatches = 0;
    for (int i = 0; i < MAX_N; ++i) { e[i] = (float)uniform(); }
    for (int format = 0; format <= 1; ++format) {
        const sx_half_table *h = format ? sx_table_bf16 : sx_table_f16;
        h->store(e, 0, x, 0, 1, MAX_N); /* 16-bit logits in [0, 1) */
        for (ptrdiff_t n = 1; n <= MAX_N; ++n) {
            for (ptrdiff_t offset = 0; offset < PAD; ++offset) {
                for (int log_normalize = 0; log_normalize <= 1; ++log_normalize) {
                    for (int k = 0; k < MAX_N + 2 * PAD; ++k) { got[k] = GUARD; }
                    if (log_normalize) {
                        h->row_log_normalize(x, want, n, 0.3, 1.7);
                        h->row_log_normalize_stream(x, got + offset, n, 0.3, 1.7);
                    } else {
                        h->row_scale_store(e, want, n, 0.37);
                        h->row_scale_store_stream(e, got + offset, n, 0.37);
                    }
                    sx_store_fence();
                    mismatches += memcmp(got + offset, want, n * sizeof *want) != 0;
                    for (int k = 0; k < MAX_N + 2 * PAD; ++k) {
                        if (k < offset || k >= offset + n) { mismatches += got[k] != GUARD; }
                    }
                }
            }
        }
    }
    report(mismatches == 0, isa, "16-bit streaming stores = ordinary ones, in the row only",
           mismatches, 0);
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0); /* progress shows in CI logs as it comes */
    int best_stride = 1, lower_stride = 64;
    for (int a = 1; a + 1 < argc; a += 2) {
        if (strcmp(argv[a], "--best-exp-stride") == 0) { best_stride = atoi(argv[a + 1]); }
        else if (strcmp(argv[a], "--exp-stride") == 0) { lower_stride = atoi(argv[a + 1]); }
        else { fprintf(stderr, "unknown option %s\n", argv[a]); return 2; }
    }
    if (argc % 2 == 0 || best_stride < 1 || lower_stride < 1) {
        fprintf(stderr, "usage: %s [--best-exp-stride S] [--exp-stride S]\n", argv[0]);
        return 2;
    }
    const int best = sx_select_isa(SX_ISA_LEVELS - 1);
#ifdef _OPENMP
    const int threads = omp_get_max_threads();
#else
    const int threads = 1;
#endif
    printf("instruction sets: this build and CPU run up to %s (the CPU: %s); %d threads\n",
           sx_isa_names[best], sx_isa_names[sx_cpu_isa_level()], threads);
    for (int level = 0; level <= best; ++level) {
        const char *isa = sx_isa_names[sx_select_isa(level)];
        check_exp(isa, (uint32_t)(level == best ? best_stride : lower_stride));
        check_rows(isa);
        check_threads(isa);
        check_half_rows(isa);
        check_streaming(isa);
        check_half_streaming(isa);
        check_transpose(isa);
        if (level > 0) { check_against_portable(level); }
#if defined(SX_X86_TARGETS)
        if (level == SX_ISA_AVX2) {
            check_avx2_vector_exp((uint32_t)(level == best ? best_stride : lower_stride));
        }
        if (level >= SX_ISA_AVX2) { check_dot(isa); }
#if defined(SX_VJP256_TABLES)
        if (level == SX_ISA_AVX512) { check_vjp256(); }
#endif
#endif
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
