/* col_kernels_impl.h -- the column-strip primitives of one instantiation.
 *
 * Design
 * ------
 * Included by row_kernels_impl.h, which defines what this needs (SX_T,
 * SX_NAME, SX_TARGET, the vector exp and SX_GROUPS_PER_STEP) and builds the
 * dispatch table from these functions and its own.  The col_* primitives
 * work on a strip of w <= SX_STRIP contiguous columns, reducing vertically
 * over K rows that are `ld` elements apart (the reduced axis is strided):
 * element (k, j) of an operand lives at base[k * ld + j], and per-column
 * parameters and results are arrays of length w.  Column sums run down k,
 * one column per lane, in a fixed order: in SX_T over blocks of
 * SX_COL_BLOCK rows, in double across blocks.
 */

/* Hardware prefetchers do not follow a large stride: ask for row k + SX_AHEAD
 * of a strided operand while row k is processed. */
#define SX_AHEAD 8
#define SX_PREFETCH_ROW(row, w)                                                     \
    for (ptrdiff_t line = 0; line < (w); line += 64 / (ptrdiff_t)sizeof(SX_T)) {    \
        SX_PREFETCH((row) + line);                                                  \
    }

/* sum[j] = sum_k TERM(k, j) for a strip, calling STORE(k, j, v) on each term:
 * SX_T partial sums over blocks of SX_COL_BLOCK rows, added into double.  The
 * hot loop stays in one precision, so it vectorises at full width.
 * VECTORS(k, partial) may do the first columns of row k itself, the same
 * terms added to the same partial sums (see col_exp_vectors), and gives the
 * first column left to the loop: SX_NO_VECTORS does none. */
#define SX_COL_BLOCK 64
#define SX_COLUMN_SUM(K, w, TERM, STORE, PREFETCH, VECTORS)                                   \
    for (ptrdiff_t j = 0; j < (w); ++j) { sum[j] = 0.0; }                           \
    for (ptrdiff_t k0 = 0; k0 < (K); k0 += SX_COL_BLOCK) {                          \
        const ptrdiff_t k1 = SX_MIN((K), k0 + SX_COL_BLOCK);                        \
        SX_T partial[SX_STRIP];                                                     \
        for (ptrdiff_t j = 0; j < (w); ++j) { partial[j] = 0; }                     \
        for (ptrdiff_t k = k0; k < k1; ++k) {                                       \
            if (k + SX_AHEAD < (K)) { PREFETCH(k + SX_AHEAD); }                     \
            const ptrdiff_t sx_first = VECTORS(k, partial);                         \
            SX_PRAGMA(omp simd)                                                     \
            for (ptrdiff_t j = sx_first; j < (w); ++j) {                            \
                const SX_T v = TERM(k, j);                                          \
                STORE(k, j, v);                                                     \
                partial[j] += v;                                                    \
            }                                                                       \
        }                                                                           \
        for (ptrdiff_t j = 0; j < (w); ++j) { sum[j] += partial[j]; }               \
    }
#define SX_COL_NO_STORE(k, j, v) ((void)0)
#define SX_NO_PREFETCH(k)
#define SX_NO_VECTORS(k, partial) ((ptrdiff_t)0)

#if SX_VECTOR_EXP != SX_VECTOR_EXP_NONE
/* The whole vectors of row k of col_exp_sum, by the instruction set's vector
 * exp of KIND (SX_WITH_EXP or SX_WITH_TAME_EXP): e_j = exp(x_j - shift_j)
 * for j below the last multiple of SX_EXP_WIDTH, stored to out unless it is
 * NULL and added to partial_j; returns that multiple.  The same operations
 * per column as the loop's (sx_exp_vectors is sx_exp bit for bit), so the
 * same bits; gcc's vectorisation of sx_exp in the loop clamps by compares
 * and blends.  Zen 3, new / old time over (1000, 4096) axis 0 at 1 thread,
 * one vector at a time against that loop: softmax and
 * log_softmax float32 0.89-0.92, float64 0.94-0.99; log_softmax_backward
 * (col_log_softmax_bwd, likewise) float32 0.88-0.90, float64 0.92-0.93.
 * The vectors go SX_COL_EXPS_PER_STEP at a time through sx_exp_vectors, as
 * SX_LANE_GROUPS takes them: softmax (1000, 4096) axis 0 then took 0.86-0.90
 * (float64) and 0.88-0.96 (float32) of the time, (65536, 10) 0.89-1.03. */
#define SX_COL_EXPS_PER_STEP (SX_GROUPS_PER_STEP * SX_LANES / SX_EXP_WIDTH)
SX_ALWAYS_INLINE SX_TARGET ptrdiff_t SX_NAME(col_exp_vectors)(const SX_T *x, const SX_T *shift,
                                                              SX_T *out, SX_T *partial,
                                                              ptrdiff_t w, int KIND)
{
#define SX_COL_EXP_STEP(COUNT)                                                           \
    for (; j + (COUNT) * SX_EXP_WIDTH <= w; j += (COUNT) * SX_EXP_WIDTH) {               \
        SX_VEC_T e[COUNT];                                                               \
        for (ptrdiff_t v = 0; v < (COUNT); ++v) {                                        \
            const ptrdiff_t at = j + v * SX_EXP_WIDTH;                                   \
            e[v] = SX_VEC(sub)(SX_VEC(loadu)(x + at), SX_VEC(loadu)(shift + at));        \
        }                                                                                \
        SX_EXPS_OF_KIND(e, COUNT, KIND)                                                  \
        for (ptrdiff_t v = 0; v < (COUNT); ++v) {                                        \
            const ptrdiff_t at = j + v * SX_EXP_WIDTH;                                   \
            if (out != NULL) { SX_VEC(storeu)(out + at, e[v]); }                         \
            SX_VEC(storeu)(partial + at, SX_VEC(add)(SX_VEC(loadu)(partial + at), e[v])); \
        }                                                                                \
    }
    ptrdiff_t j = 0;
    SX_COL_EXP_STEP(SX_COL_EXPS_PER_STEP)
    SX_COL_EXP_STEP(1)
#undef SX_COL_EXP_STEP
    return j;
}
#endif

/* m[j] = max_k x[k, j] (NaN ignored); also copies the strip to `copy`
 * (leading dimension ldc) unless it is NULL, so that later sweeps can run on
 * a contiguous, cache-resident copy.  Returns whether every column is tame
 * (SX_TAME_ROW of its max and its smallest value), col_exp_sum's `tame`. */
static SX_TARGET int SX_NAME(col_max)(const void *xv, ptrdiff_t ldx, ptrdiff_t K, ptrdiff_t w,
                                      void *mv, void *copyv, ptrdiff_t ldc)
{
    const SX_T *x = (const SX_T *)xv;
    SX_T *m = (SX_T *)mv, *copy = (SX_T *)copyv;
    SX_T low[SX_STRIP];
    for (ptrdiff_t j = 0; j < w; ++j) {
        m[j] = -(SX_T)INFINITY;
        low[j] = (SX_T)INFINITY;
    }
#define SX_KEEP_EXTREMES(v)              \
    m[j] = (v) > m[j] ? (v) : m[j];      \
    low[j] = (v) < low[j] ? (v) : low[j];
    for (ptrdiff_t k = 0; k < K; ++k) {
        const SX_T *xk = x + k * ldx;
        if (k + SX_AHEAD < K) { SX_PREFETCH_ROW(xk + SX_AHEAD * ldx, w); }
        if (copy != NULL) {
            SX_T *ck = copy + k * ldc;
#pragma omp simd
            for (ptrdiff_t j = 0; j < w; ++j) {
                ck[j] = xk[j];
                SX_KEEP_EXTREMES(xk[j])
            }
        } else {
#pragma omp simd
            for (ptrdiff_t j = 0; j < w; ++j) { SX_KEEP_EXTREMES(xk[j]) }
        }
    }
#undef SX_KEEP_EXTREMES
    int tame = 1;
    for (ptrdiff_t j = 0; j < w; ++j) { tame &= SX_TAME_ROW((double)m[j], (double)low[j]); }
    return tame;
}

/* sum[j] = sum_k exp(x[k, j] - shift[j]), the terms stored to out unless it
 * is NULL; with `tame` (col_max's verdict, shift being its m; else 0) the
 * vector exps are the tame ones, with the same bits. */
static SX_TARGET void SX_NAME(col_exp_sum)(const void *xv, ptrdiff_t ldx, void *outv, ptrdiff_t ldo,
                                           ptrdiff_t K, ptrdiff_t w, const void *shiftv, int tame,
                                           double *sum)
{
    const SX_T *x = (const SX_T *)xv, *shift = (const SX_T *)shiftv;
    SX_T *out = (SX_T *)outv;
#define SX_EXP_TERM(k, j) SX_NAME(sx_exp)(x[(k) * ldx + (j)] - shift[j])
#define SX_STORE_TERM(k, j, v) (out[(k) * ldo + (j)] = (v))
#if SX_VECTOR_EXP != SX_VECTOR_EXP_NONE
#define SX_EXP_VECTORS(k, partial)                                                        \
    SX_NAME(col_exp_vectors)(x + (k) * ldx, shift, out != NULL ? out + (k) * ldo : NULL, \
                             partial, w, SX_WITH_EXP)
#define SX_TAME_EXP_VECTORS(k, partial)                                                   \
    SX_NAME(col_exp_vectors)(x + (k) * ldx, shift, out != NULL ? out + (k) * ldo : NULL, \
                             partial, w, SX_WITH_TAME_EXP)
#else
#define SX_EXP_VECTORS SX_NO_VECTORS
#define SX_TAME_EXP_VECTORS SX_NO_VECTORS
#endif
    if (tame) { /* never without a vector exp: col_max's SX_TAME_ROW is 0 there */
        if (out == NULL) {
            SX_COLUMN_SUM(K, w, SX_EXP_TERM, SX_COL_NO_STORE, SX_NO_PREFETCH, SX_TAME_EXP_VECTORS);
        } else {
            SX_COLUMN_SUM(K, w, SX_EXP_TERM, SX_STORE_TERM, SX_NO_PREFETCH, SX_TAME_EXP_VECTORS);
        }
        return;
    }
    if (out == NULL) {
        SX_COLUMN_SUM(K, w, SX_EXP_TERM, SX_COL_NO_STORE, SX_NO_PREFETCH, SX_EXP_VECTORS);
    } else {
        SX_COLUMN_SUM(K, w, SX_EXP_TERM, SX_STORE_TERM, SX_NO_PREFETCH, SX_EXP_VECTORS);
    }
#undef SX_EXP_TERM
#undef SX_STORE_TERM
#undef SX_EXP_VECTORS
#undef SX_TAME_EXP_VECTORS
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
    SX_COLUMN_SUM(K, w, SX_EXCESS_TERM, SX_COUNT_TIE, SX_NO_PREFETCH, SX_NO_VECTORS);
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
        SX_COLUMN_SUM(K, w, SX_A_TERM, SX_COL_NO_STORE, SX_A_AHEAD, SX_NO_VECTORS);
    } else if (b == NULL) {
        SX_COLUMN_SUM(K, w, SX_A_COPY_TERM, SX_COL_NO_STORE, SX_A_AHEAD, SX_NO_VECTORS);
    } else if (ac == NULL) {
        SX_COLUMN_SUM(K, w, SX_AB_TERM, SX_COL_NO_STORE, SX_AB_AHEAD, SX_NO_VECTORS);
    } else {
        SX_COLUMN_SUM(K, w, SX_AB_COPY_TERM, SX_COL_NO_STORE, SX_AB_AHEAD, SX_NO_VECTORS);
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
        ptrdiff_t j = 0;
#if SX_VECTOR_EXP != SX_VECTOR_EXP_NONE
        /* the whole vectors by the vector exp, as col_exp_vectors */
        for (; j + SX_EXP_WIDTH <= w; j += SX_EXP_WIDTH) {
            SX_VEC(storeu)(ok + j, SX_VEC(fnmadd)(SX_NAME(sx_exp_vector)(SX_VEC(loadu)(lk + j)),
                                                  SX_VEC(loadu)(grad_sum + j),
                                                  SX_VEC(loadu)(gk + j)));
        }
#endif
#pragma omp simd
        for (ptrdiff_t i = j; i < w; ++i) { ok[i] = gk[i] - SX_NAME(sx_exp)(lk[i]) * grad_sum[i]; }
    }
}

#undef SX_COLUMN_SUM
#undef SX_NO_VECTORS
#undef SX_NO_PREFETCH
#undef SX_PREFETCH_ROW
#undef SX_AHEAD
#undef SX_COL_NO_STORE
#undef SX_COL_BLOCK
#undef SX_COL_EXPS_PER_STEP
