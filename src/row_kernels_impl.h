/* row_kernels_impl.h -- one instantiation of the softmax-family primitives.
 *
 * Design
 * ------
 * This body is included by row_kernels.h once per (instruction set, dtype)
 * with these macros defined:
 *   SX_T         element type, float or double
 *   SX_F64       1 when SX_T is double
 *   SX_NAME(f)   name of primitive f in this instantiation (f_f32_avx2, ...)
 *   SX_TARGET    function attribute choosing the instruction set (may be empty)
 * Operands are passed as void pointers and scalars as double so that one
 * table type (sx_table in row_kernels.h) serves both dtypes.
 * The loops are plain C under `#pragma omp simd`; gcc and clang vectorise each
 * instantiation for its own target (SSE2, AVX2+FMA, AVX-512), which is how one
 * wheel runs everywhere and still uses wide vectors where the CPU has them.
 *
 * Two families of primitives:
 *   row_*  work on one contiguous row of n elements (the reduced axis is the
 *          contiguous one);
 *   col_*  work on a strip of w contiguous columns, reducing vertically over
 *          K rows that are `ld` elements apart (the reduced axis is strided).
 *
 * Reductions that need accuracy (sums, dot products) accumulate in double in
 * a fixed shape: within a block of SX_BLOCK elements, SX_LANES accumulators in
 * SX_T added as a tree; block sums added in double into a chunk sum; chunk
 * sums (SX_CHUNK elements) added in double.  A caller that splits a long row into SX_CHUNK-aligned pieces and
 * adds the piece sums in order gets the very same bits as one call over the
 * whole row: that is what makes results independent of the thread count.
 *
 * exp is an inline polynomial: x = n ln2 + r with a Cody-Waite split of ln2,
 * |r| <= ln2/2, e^r by its Taylor series (degree 7 for float, 13 for double),
 * times 2^n built from exponent bits in two halves so that results in the
 * subnormal range come out right.  No libm call, so the loops vectorise
 * without -ffast-math; inputs are clamped so that -inf -> 0, large -> +inf,
 * and NaN passes through.  Measured over every float in [-104, 88.7]: at most
 * 1.22 ulp (SSE2) and 0.94 ulp (AVX2+FMA).
 */

/* Counters as wide as SX_T, so that counting loops vectorise beside SX_T ones. */
#if SX_F64
#define SX_COUNT_T int64_t
#else
#define SX_COUNT_T int32_t
#endif

#if SX_F64
#define SX_EXP_LOW (-746.0)
#define SX_EXP_HIGH 710.0
#define SX_SHIFTER 6755399441055744.0 /* 1.5 * 2^52: adding it rounds to an integer */
#define SX_LOG2E 1.4426950408889634
#define SX_LN2_HI 6.93147180369123816490e-01 /* low bits zero: n * SX_LN2_HI is exact */
#define SX_LN2_LO 1.90821492927058770002e-10
#else
#define SX_EXP_LOW (-104.0f)
#define SX_EXP_HIGH 89.0f
#define SX_SHIFTER 12582912.0f /* 1.5 * 2^23 */
#define SX_LOG2E 1.44269504088896341f
#define SX_LN2_HI 0.693145751953125f /* 16 significant bits */
#define SX_LN2_LO 1.4286068203094172e-06f
#endif

SX_ALWAYS_INLINE SX_TARGET SX_T SX_NAME(sx_exp)(SX_T x)
{
    /* Comparisons are false for NaN, so NaN survives the clamp. */
    x = x < SX_EXP_LOW ? SX_EXP_LOW : x;
    x = x > SX_EXP_HIGH ? SX_EXP_HIGH : x;
    const SX_T n = (x * SX_LOG2E + SX_SHIFTER) - SX_SHIFTER; /* round(x / ln2) */
    SX_T r = x - n * SX_LN2_HI;
    r = r - n * SX_LN2_LO;
#if SX_F64
    double p = 1.0 / 6227020800.0;
    p = p * r + 1.0 / 479001600.0;
    p = p * r + 1.0 / 39916800.0;
    p = p * r + 1.0 / 3628800.0;
    p = p * r + 1.0 / 362880.0;
    p = p * r + 1.0 / 40320.0;
    p = p * r + 1.0 / 5040.0;
    p = p * r + 1.0 / 720.0;
    p = p * r + 1.0 / 120.0;
    p = p * r + 1.0 / 24.0;
    p = p * r + 1.0 / 6.0;
    p = p * r + 0.5;
    p = p * r + 1.0;
    p = p * r + 1.0;
    /* 2^n as 2^half * 2^(n - half); both halves are normal numbers.  The
       integers are read off the bits of (value + SX_SHIFTER), which avoids
       64-bit conversions and shifts that AVX2 lacks. */
    const double half = (n * 0.5 + SX_SHIFTER) - SX_SHIFTER;
    const double rest = n - half;
    uint64_t half_bits, rest_bits;
    const double half_biased = half + SX_SHIFTER, rest_biased = rest + SX_SHIFTER;
    memcpy(&half_bits, &half_biased, sizeof half_bits);
    memcpy(&rest_bits, &rest_biased, sizeof rest_bits);
    const uint64_t scale1_bits = (half_bits - 0x4338000000000000ull + 1023u) << 52;
    const uint64_t scale2_bits = (rest_bits - 0x4338000000000000ull + 1023u) << 52;
    double scale1, scale2;
#else
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    const float n_biased = n + SX_SHIFTER;
    uint32_t n_bits;
    memcpy(&n_bits, &n_biased, sizeof n_bits);
    const uint32_t n_int = n_bits - 0x4B400000u;
    const uint32_t half = (uint32_t)((int32_t)n_int >> 1);
    const uint32_t scale1_bits = (half + 127u) << 23;
    const uint32_t scale2_bits = (n_int - half + 127u) << 23;
    float scale1, scale2;
#endif
    memcpy(&scale1, &scale1_bits, sizeof scale1);
    memcpy(&scale2, &scale2_bits, sizeof scale2);
    return p * scale1 * scale2;
}

#undef SX_EXP_LOW
#undef SX_EXP_HIGH
#undef SX_SHIFTER
#undef SX_LOG2E
#undef SX_LN2_HI
#undef SX_LN2_LO

/* SX_LANES values per group: one 64-byte AVX-512 vector, two AVX2 vectors. */
#define SX_LANES ((ptrdiff_t)(64 / sizeof(SX_T)))

/* Runs v = EXPR(A[i], B[i], C[i]) over i in [0, n) in groups of SX_LANES,
 * calling STORE(i, lane, v) for each value, lane = i mod SX_LANES (an operand
 * EXPR ignores may repeat A).
 * The last, partial group of a row goes through the same vector code on
 * zero-padded copies of its operands, with the extra lanes masked to 0, so
 * short rows never fall into a scalar loop of polynomial exps.  With SUM
 * nonzero it also leaves in `total` the blocked double sum described at the
 * top: one accumulator per lane within a block, lanes added as a tree,
 * blocks and chunks in double.  The lane arithmetic is the same on every
 * instruction set. */
#define SX_LANE_LOOP(n, A, B, C, EXPR, STORE, SUM)                                   \
    double total = 0.0;                                                             \
    for (ptrdiff_t chunk = 0; chunk < (n); chunk += SX_CHUNK) {                     \
        const ptrdiff_t chunk_end = SX_MIN((n), chunk + SX_CHUNK);                  \
        double chunk_sum = 0.0;                                                     \
        for (ptrdiff_t block = chunk; block < chunk_end; block += SX_BLOCK) {       \
            const ptrdiff_t block_end = SX_MIN(chunk_end, block + SX_BLOCK);        \
            SX_T acc[SX_LANES];                                                     \
            for (ptrdiff_t j = 0; j < SX_LANES; ++j) { acc[j] = 0; }                \
            ptrdiff_t i = block;                                                    \
            for (; i + SX_LANES <= block_end; i += SX_LANES) {                      \
                SX_PRAGMA(omp simd)                                                 \
                for (ptrdiff_t j = 0; j < SX_LANES; ++j) {                          \
                    const SX_T sx_value = EXPR((A)[i + j], (B)[i + j], (C)[i + j]); \
                    STORE(i + j, j, sx_value);                                      \
                    if (SUM) { acc[j] += sx_value; }                                \
                }                                                                   \
            }                                                                       \
            if (i < block_end) {                                                    \
                const ptrdiff_t rem = block_end - i;                                \
                SX_T pad_a[SX_LANES], pad_b[SX_LANES], pad_c[SX_LANES], tail[SX_LANES]; \
                for (ptrdiff_t j = 0; j < SX_LANES; ++j) {                          \
                    pad_a[j] = j < rem ? (A)[i + j] : 0;                            \
                    pad_b[j] = j < rem ? (B)[i + j] : 0;                            \
                    pad_c[j] = j < rem ? (C)[i + j] : 0;                            \
                }                                                                   \
                (void)pad_b; /* unused when EXPR reads fewer operands */            \
                (void)pad_c;                                                        \
                SX_PRAGMA(omp simd)                                                 \
                for (ptrdiff_t j = 0; j < SX_LANES; ++j) {                          \
                    const SX_T sx_value = EXPR(pad_a[j], pad_b[j], pad_c[j]);       \
                    tail[j] = j < rem ? sx_value : 0;                               \
                    if (SUM) { acc[j] += tail[j]; }                                 \
                }                                                                   \
                for (ptrdiff_t j = 0; j < rem; ++j) { STORE(i + j, j, tail[j]); }   \
            }                                                                       \
            if (SUM) {                                                              \
                SX_UNROLL(8)                                                        \
                for (ptrdiff_t width = SX_LANES / 2; width > 0; width /= 2) {       \
                    SX_UNROLL(16)                                                   \
                    for (ptrdiff_t j = 0; j < width; ++j) { acc[j] += acc[j + width]; } \
                }                                                                   \
                chunk_sum += acc[0];                                                \
            }                                                                       \
        }                                                                           \
        total += chunk_sum;                                                         \
    }

#define SX_NO_STORE(i, lane, v) ((void)0)

/* ---- rows: the reduced axis is contiguous ---------------------------------- */

/* Largest element, NaN ignored (a NaN reaches the result through the sum).
 * One running maximum per lane, updated element-wise: gcc and clang both
 * vectorise that select (clang leaves a scalar max reduction unvectorised
 * unless fast-math promises no NaN). */
static SX_TARGET double SX_NAME(row_max)(const void *xv, ptrdiff_t n)
{
    const SX_T *x = (const SX_T *)xv;
    SX_T lane_max[SX_LANES];
    for (ptrdiff_t j = 0; j < SX_LANES; ++j) { lane_max[j] = -(SX_T)INFINITY; }
    ptrdiff_t i = 0;
    for (; i + SX_LANES <= n; i += SX_LANES) {
        SX_PRAGMA(omp simd)
        for (ptrdiff_t j = 0; j < SX_LANES; ++j) {
            lane_max[j] = x[i + j] > lane_max[j] ? x[i + j] : lane_max[j];
        }
    }
    SX_T m = -(SX_T)INFINITY;
    for (; i < n; ++i) { m = x[i] > m ? x[i] : m; }
    for (ptrdiff_t j = 0; j < SX_LANES; ++j) { m = lane_max[j] > m ? lane_max[j] : m; }
    return m;
}

/* sum_i exp(x_i - shift); also stores the terms in out unless it is NULL. */
static SX_TARGET double SX_NAME(row_exp_sum)(const void *xv, void *outv, ptrdiff_t n,
                                             double shift_d)
{
    const SX_T *x = (const SX_T *)xv, shift = (SX_T)shift_d;
    SX_T *out = (SX_T *)outv;
#define SX_SHIFTED_EXP(a, b, c) SX_NAME(sx_exp)((a) - shift)
#define SX_STORE_OUT(i, lane, v) (out[i] = (v))
    if (out == NULL) {
        SX_LANE_LOOP(n, x, x, x, SX_SHIFTED_EXP, SX_NO_STORE, 1);
        return total;
    }
    SX_LANE_LOOP(n, x, x, x, SX_SHIFTED_EXP, SX_STORE_OUT, 1);
    return total;
#undef SX_SHIFTED_EXP
}

/* sum_i (exp(x_i - shift) - [x_i == shift]) in row_exp_sum's blocked order,
 * and the number of x_i == shift in *ties.  With shift the row max,
 * logsumexp = shift + log1p(excess + ties - 1): the terms equal to 1 never
 * meet the small ones in an accumulator, so a dominant term keeps the others'
 * digits (logsumexp([0, -40]) = 4.2e-18, as scipy computes it, gh-18295). */
static SX_TARGET double SX_NAME(row_exp_excess)(const void *xv, ptrdiff_t n, double shift_d,
                                                double *ties)
{
    const SX_T *x = (const SX_T *)xv, shift = (SX_T)shift_d;
    SX_COUNT_T tie_lanes[SX_LANES] = {0};
#define SX_EXCESS_EXP(a, b, c) (SX_NAME(sx_exp)((a) - shift) - ((a) == shift ? (SX_T)1 : (SX_T)0))
#define SX_COUNT_TIE(i, lane, v) (tie_lanes[lane] += x[i] == shift)
    SX_LANE_LOOP(n, x, x, x, SX_EXCESS_EXP, SX_COUNT_TIE, 1);
#undef SX_EXCESS_EXP
#undef SX_COUNT_TIE
    int64_t count = 0; /* lanes of SX_T's width vectorise; each holds < 2^31 */
    for (ptrdiff_t j = 0; j < SX_LANES; ++j) { count += tie_lanes[j]; }
    *ties = (double)count;
    return total;
}

static SX_TARGET void SX_NAME(row_scale)(void *outv, ptrdiff_t n, double factor_d)
{
    SX_T *out = (SX_T *)outv;
    const SX_T factor = (SX_T)factor_d;
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) { out[i] *= factor; }
}

/* out = (x - shift) - log_sum, in that order (exact for 1e8-scale logits). */
static SX_TARGET void SX_NAME(row_log_normalize)(const void *xv, void *outv, ptrdiff_t n,
                                                 double shift_d, double log_sum_d)
{
    const SX_T *x = (const SX_T *)xv, shift = (SX_T)shift_d, log_sum = (SX_T)log_sum_d;
    SX_T *out = (SX_T *)outv;
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) { out[i] = (x[i] - shift) - log_sum; }
}

/* sum_i (a_i - shift) * b_i * c_i, a NULL b or c counting as ones.  The shift
 * comes off before the products, so that huge logits keep their digits. */
static SX_TARGET double SX_NAME(row_dot)(const void *av, const void *bv, const void *cv, ptrdiff_t n,
                                         double shift_d)
{
    const SX_T *a = (const SX_T *)av, *b = (const SX_T *)bv, *c = (const SX_T *)cv;
    const SX_T shift = (SX_T)shift_d;
#define SX_A(a, b, c) ((a) - shift)
#define SX_AB(a, b, c) (((a) - shift) * (b))
#define SX_ABC(a, b, c) (((a) - shift) * (b) * (c))
    if (b == NULL && c == NULL) {
        SX_LANE_LOOP(n, a, a, a, SX_A, SX_NO_STORE, 1);
        return total;
    }
    if (b == NULL || c == NULL) {
        const SX_T *other = b == NULL ? c : b;
        SX_LANE_LOOP(n, a, other, a, SX_AB, SX_NO_STORE, 1);
        return total;
    }
    SX_LANE_LOOP(n, a, b, c, SX_ABC, SX_NO_STORE, 1);
    return total;
#undef SX_A
#undef SX_AB
#undef SX_ABC
}

/* softmax VJP: out = p * (g - <g, p>) */
static SX_TARGET void SX_NAME(row_softmax_bwd)(const void *pv, const void *gv, void *outv,
                                               ptrdiff_t n, double dot_d)
{
    const SX_T *p = (const SX_T *)pv, *g = (const SX_T *)gv, dot = (SX_T)dot_d;
    SX_T *out = (SX_T *)outv;
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) { out[i] = p[i] * (g[i] - dot); }
}

/* log_softmax VJP: out = g - exp(logp) * sum(g) */
static SX_TARGET void SX_NAME(row_log_softmax_bwd)(const void *logpv, const void *gv, void *outv,
                                                   ptrdiff_t n, double grad_sum_d)
{
    const SX_T *logp = (const SX_T *)logpv, *g = (const SX_T *)gv, grad_sum = (SX_T)grad_sum_d;
    SX_T *out = (SX_T *)outv;
#define SX_LOG_BWD(logp_i, g_i, unused) ((g_i) - SX_NAME(sx_exp)(logp_i) * grad_sum)
    SX_LANE_LOOP(n, logp, g, g, SX_LOG_BWD, SX_STORE_OUT, 0);
    (void)total;
#undef SX_LOG_BWD
}

/* Cross-entropy gradient of one row from its stored exponentials e_i:
 *   out_i = alpha * e_i - (beta * u_i + gamma) * v_i
 * with a NULL u counting as zeros and a NULL v as ones: (scaled) C p_i minus
 * the target coefficients c_i = (beta u_i + gamma) v_i.  out may be e. */
static SX_TARGET void SX_NAME(row_xent_grad)(const void *ev, const void *uv, const void *vv,
                                             void *outv, ptrdiff_t n, double alpha_d,
                                             double beta_d, double gamma_d)
{
    const SX_T *e = (const SX_T *)ev, *u = (const SX_T *)uv, *v = (const SX_T *)vv;
    const SX_T alpha = (SX_T)alpha_d, beta = (SX_T)beta_d, gamma = (SX_T)gamma_d;
    SX_T *out = (SX_T *)outv;
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) {
        const SX_T coefficient = (u != NULL ? beta * u[i] + gamma : gamma) * (v != NULL ? v[i] : 1);
        out[i] = alpha * e[i] - coefficient;
    }
}

#undef SX_STORE_OUT
#undef SX_NO_STORE
#undef SX_LANE_LOOP
#undef SX_LANES

/* ---- column strips: the reduced axis is strided ----------------------------
 * Element (k, j) of an operand lives at base[k * ld + j], 0 <= j < w <= SX_STRIP.
 * Per-column parameters and results are arrays of length w.  Column sums run
 * down k, one column per lane, in a fixed order. */

/* Hardware prefetchers do not follow a large stride: ask for row k + SX_AHEAD
 * of a strided operand while row k is processed. */
#define SX_AHEAD 8
#if defined(__GNUC__) || defined(__clang__)
#define SX_PREFETCH_ROW(row, w)                                                     \
    for (ptrdiff_t line = 0; line < (w); line += 64 / (ptrdiff_t)sizeof(SX_T)) {    \
        __builtin_prefetch((row) + line);                                           \
    }
#else
#define SX_PREFETCH_ROW(row, w)
#endif

/* sum[j] = sum_k TERM(k, j) for a strip, calling STORE(k, j, v) on each term:
 * SX_T partial sums over blocks of SX_COL_BLOCK rows, added into double.  The
 * hot loop stays in one precision, so it vectorises at full width. */
#define SX_COL_BLOCK 64
#define SX_COLUMN_SUM(K, w, TERM, STORE, PREFETCH)                                            \
    for (ptrdiff_t j = 0; j < (w); ++j) { sum[j] = 0.0; }                           \
    for (ptrdiff_t k0 = 0; k0 < (K); k0 += SX_COL_BLOCK) {                          \
        const ptrdiff_t k1 = SX_MIN((K), k0 + SX_COL_BLOCK);                        \
        SX_T partial[SX_STRIP];                                                     \
        for (ptrdiff_t j = 0; j < (w); ++j) { partial[j] = 0; }                     \
        for (ptrdiff_t k = k0; k < k1; ++k) {                                       \
            if (k + SX_AHEAD < (K)) { PREFETCH(k + SX_AHEAD); }                     \
            SX_PRAGMA(omp simd)                                                     \
            for (ptrdiff_t j = 0; j < (w); ++j) {                                   \
                const SX_T v = TERM(k, j);                                          \
                STORE(k, j, v);                                                     \
                partial[j] += v;                                                    \
            }                                                                       \
        }                                                                           \
        for (ptrdiff_t j = 0; j < (w); ++j) { sum[j] += partial[j]; }               \
    }
#define SX_COL_NO_STORE(k, j, v) ((void)0)
#define SX_NO_PREFETCH(k)

/* m[j] = max_k x[k, j] (NaN ignored); also copies the strip to `copy`
 * (leading dimension ldc) unless it is NULL, so that later sweeps can run on
 * a contiguous, cache-resident copy. */
static SX_TARGET void SX_NAME(col_max)(const void *xv, ptrdiff_t ldx, ptrdiff_t K, ptrdiff_t w,
                                       void *mv, void *copyv, ptrdiff_t ldc)
{
    const SX_T *x = (const SX_T *)xv;
    SX_T *m = (SX_T *)mv, *copy = (SX_T *)copyv;
    for (ptrdiff_t j = 0; j < w; ++j) { m[j] = -(SX_T)INFINITY; }
    for (ptrdiff_t k = 0; k < K; ++k) {
        const SX_T *xk = x + k * ldx;
        if (k + SX_AHEAD < K) { SX_PREFETCH_ROW(xk + SX_AHEAD * ldx, w); }
        if (copy != NULL) {
            SX_T *ck = copy + k * ldc;
#pragma omp simd
            for (ptrdiff_t j = 0; j < w; ++j) {
                ck[j] = xk[j];
                m[j] = xk[j] > m[j] ? xk[j] : m[j];
            }
        } else {
#pragma omp simd
            for (ptrdiff_t j = 0; j < w; ++j) { m[j] = xk[j] > m[j] ? xk[j] : m[j]; }
        }
    }
}

static SX_TARGET void SX_NAME(col_exp_sum)(const void *xv, ptrdiff_t ldx, void *outv, ptrdiff_t ldo,
                                           ptrdiff_t K, ptrdiff_t w, const void *shiftv, double *sum)
{
    const SX_T *x = (const SX_T *)xv, *shift = (const SX_T *)shiftv;
    SX_T *out = (SX_T *)outv;
#define SX_EXP_TERM(k, j) SX_NAME(sx_exp)(x[(k) * ldx + (j)] - shift[j])
#define SX_STORE_TERM(k, j, v) (out[(k) * ldo + (j)] = (v))
    if (out == NULL) {
        SX_COLUMN_SUM(K, w, SX_EXP_TERM, SX_COL_NO_STORE, SX_NO_PREFETCH);
    } else {
        SX_COLUMN_SUM(K, w, SX_EXP_TERM, SX_STORE_TERM, SX_NO_PREFETCH);
    }
#undef SX_EXP_TERM
#undef SX_STORE_TERM
}

/* row_exp_excess for each column of a strip: sum[j] of the excess terms,
 * ties[j] the number of x[k, j] == shift[j]. */
static SX_TARGET void SX_NAME(col_exp_excess)(const void *xv, ptrdiff_t ldx, ptrdiff_t K,
                                              ptrdiff_t w, const void *shiftv, double *sum,
                                              double *ties)
{
    const SX_T *x = (const SX_T *)xv, *shift = (const SX_T *)shiftv;
    SX_COUNT_T tie_count[SX_STRIP] = {0};
#define SX_EXCESS_TERM(k, j) \
    (SX_NAME(sx_exp)(x[(k) * ldx + (j)] - shift[j]) - (x[(k) * ldx + (j)] == shift[j] ? (SX_T)1 : (SX_T)0))
#define SX_COUNT_TIE(k, j, v) (tie_count[j] += x[(k) * ldx + (j)] == shift[j])
    SX_COLUMN_SUM(K, w, SX_EXCESS_TERM, SX_COUNT_TIE, SX_NO_PREFETCH);
#undef SX_EXCESS_TERM
#undef SX_COUNT_TIE
    for (ptrdiff_t j = 0; j < w; ++j) { ties[j] = (double)tie_count[j]; }
}

/* out[k, j] = src[k, j] * factor[j]; src may be out. */
static SX_TARGET void SX_NAME(col_scale)(const void *srcv, ptrdiff_t lds, void *outv, ptrdiff_t ldo,
                                         ptrdiff_t K, ptrdiff_t w, const void *factorv)
{
    const SX_T *src = (const SX_T *)srcv, *factor = (const SX_T *)factorv;
    SX_T *out = (SX_T *)outv;
    for (ptrdiff_t k = 0; k < K; ++k) {
        const SX_T *sk = src + k * lds;
        SX_T *ok = out + k * ldo;
#pragma omp simd
        for (ptrdiff_t j = 0; j < w; ++j) { ok[j] = sk[j] * factor[j]; }
    }
}

static SX_TARGET void SX_NAME(col_log_normalize)(const void *xv, ptrdiff_t ldx, void *outv,
                                                 ptrdiff_t ldo, ptrdiff_t K, ptrdiff_t w,
                                                 const void *shiftv, const void *log_sumv)
{
    const SX_T *x = (const SX_T *)xv, *shift = (const SX_T *)shiftv;
    const SX_T *log_sum = (const SX_T *)log_sumv;
    SX_T *out = (SX_T *)outv;
    for (ptrdiff_t k = 0; k < K; ++k) {
        const SX_T *xk = x + k * ldx;
        SX_T *ok = out + k * ldo;
#pragma omp simd
        for (ptrdiff_t j = 0; j < w; ++j) { ok[j] = (xk[j] - shift[j]) - log_sum[j]; }
    }
}

/* sum[j] = sum_k a[k, j] * b[k, j], or sum_k a[k, j] when b is NULL; also
 * copies a and b (when present) to a_copy and b_copy (leading dimension ldc)
 * unless a_copy is NULL, as col_max does. */
static SX_TARGET void SX_NAME(col_dot)(const void *av, ptrdiff_t lda, const void *bv, ptrdiff_t ldb,
                                       ptrdiff_t K, ptrdiff_t w, double *sum, void *a_copyv,
                                       void *b_copyv, ptrdiff_t ldc)
{
    const SX_T *a = (const SX_T *)av, *b = (const SX_T *)bv;
    SX_T *ac = (SX_T *)a_copyv, *bc = (SX_T *)b_copyv;
#define SX_A_TERM(k, j) a[(k) * lda + (j)]
#define SX_AB_TERM(k, j) (a[(k) * lda + (j)] * b[(k) * ldb + (j)])
#define SX_A_COPY_TERM(k, j) (ac[(k) * ldc + (j)] = a[(k) * lda + (j)])
#define SX_AB_COPY_TERM(k, j) \
    ((ac[(k) * ldc + (j)] = a[(k) * lda + (j)]) * (bc[(k) * ldc + (j)] = b[(k) * ldb + (j)]))
#define SX_A_AHEAD(k) SX_PREFETCH_ROW(a + (k) * lda, w)
#define SX_AB_AHEAD(k) SX_PREFETCH_ROW(a + (k) * lda, w) SX_PREFETCH_ROW(b + (k) * ldb, w)
    if (b == NULL && ac == NULL) {
        SX_COLUMN_SUM(K, w, SX_A_TERM, SX_COL_NO_STORE, SX_A_AHEAD);
    } else if (b == NULL) {
        SX_COLUMN_SUM(K, w, SX_A_COPY_TERM, SX_COL_NO_STORE, SX_A_AHEAD);
    } else if (ac == NULL) {
        SX_COLUMN_SUM(K, w, SX_AB_TERM, SX_COL_NO_STORE, SX_AB_AHEAD);
    } else {
        SX_COLUMN_SUM(K, w, SX_AB_COPY_TERM, SX_COL_NO_STORE, SX_AB_AHEAD);
    }
#undef SX_A_TERM
#undef SX_AB_TERM
#undef SX_A_COPY_TERM
#undef SX_AB_COPY_TERM
#undef SX_A_AHEAD
#undef SX_AB_AHEAD
}

static SX_TARGET void SX_NAME(col_softmax_bwd)(const void *pv, ptrdiff_t ldp, const void *gv,
                                               ptrdiff_t ldg, void *outv, ptrdiff_t ldo, ptrdiff_t K,
                                               ptrdiff_t w, const void *dotv)
{
    const SX_T *p = (const SX_T *)pv, *g = (const SX_T *)gv, *dot = (const SX_T *)dotv;
    SX_T *out = (SX_T *)outv;
    for (ptrdiff_t k = 0; k < K; ++k) {
        const SX_T *pk = p + k * ldp, *gk = g + k * ldg;
        SX_T *ok = out + k * ldo;
        if (k + SX_AHEAD < K) {
            SX_PREFETCH_ROW(pk + SX_AHEAD * ldp, w);
            SX_PREFETCH_ROW(gk + SX_AHEAD * ldg, w);
        }
#pragma omp simd
        for (ptrdiff_t j = 0; j < w; ++j) { ok[j] = pk[j] * (gk[j] - dot[j]); }
    }
}

static SX_TARGET void SX_NAME(col_log_softmax_bwd)(const void *logpv, ptrdiff_t ldl, const void *gv,
                                                   ptrdiff_t ldg, void *outv, ptrdiff_t ldo,
                                                   ptrdiff_t K, ptrdiff_t w, const void *grad_sumv)
{
    const SX_T *logp = (const SX_T *)logpv, *g = (const SX_T *)gv;
    const SX_T *grad_sum = (const SX_T *)grad_sumv;
    SX_T *out = (SX_T *)outv;
    for (ptrdiff_t k = 0; k < K; ++k) {
        const SX_T *lk = logp + k * ldl, *gk = g + k * ldg;
        SX_T *ok = out + k * ldo;
        if (k + SX_AHEAD < K) {
            SX_PREFETCH_ROW(lk + SX_AHEAD * ldl, w);
            SX_PREFETCH_ROW(gk + SX_AHEAD * ldg, w);
        }
#pragma omp simd
        for (ptrdiff_t j = 0; j < w; ++j) { ok[j] = gk[j] - SX_NAME(sx_exp)(lk[j]) * grad_sum[j]; }
    }
}

#undef SX_COLUMN_SUM
#undef SX_NO_PREFETCH
#undef SX_PREFETCH_ROW
#undef SX_AHEAD
#undef SX_COL_NO_STORE
#undef SX_COUNT_T
#undef SX_COL_BLOCK

static const sx_table SX_NAME(sx_table) = {
    SX_NAME(row_max),         SX_NAME(row_exp_sum),       SX_NAME(row_exp_excess),
    SX_NAME(row_scale),
    SX_NAME(row_log_normalize), SX_NAME(row_dot),
    SX_NAME(row_softmax_bwd), SX_NAME(row_log_softmax_bwd), SX_NAME(row_xent_grad),
    SX_NAME(col_max),         SX_NAME(col_exp_sum),       SX_NAME(col_exp_excess),
    SX_NAME(col_scale),
    SX_NAME(col_log_normalize), SX_NAME(col_dot),
    SX_NAME(col_softmax_bwd), SX_NAME(col_log_softmax_bwd),
};
