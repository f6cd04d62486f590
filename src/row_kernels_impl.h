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
 *          contiguous one): this file;
 *   col_*  work on a strip of w contiguous columns, reducing vertically over
 *          K rows that are `ld` elements apart (the reduced axis is strided):
 *          col_kernels_impl.h, included at the end beside the dispatch table.
 *
 * Reductions that need accuracy (sums, dot products) accumulate in double in
 * a fixed shape: within a block of SX_BLOCK elements, SX_LANES accumulators in
 * SX_T added as a tree; block sums added in double into a chunk sum; chunk
 * sums (SX_CHUNK elements) added in double.  A caller that splits a long row
 * into SX_CHUNK-aligned pieces and adds the piece sums in order gets the
 * very same bits as one call over the whole row: that is what makes results
 * independent of the thread count.
 *
 * exp is an inline polynomial of at most 2 ulp, with its lane reductions in
 * exp_lanes_impl.h (included below).  Softmax's arguments x_i - max are at
 * most 0; when row_max finds that a row spans at most SX_TAME_SPAN they are
 * "tame" too, and its exp sweeps take a vector exp without clamps that
 * builds 2^n in one step: the same bits, fewer instructions.  The
 * transposes of short rows' tiles are in tile_transpose_impl.h.
 */

/* Counters as wide as SX_T, so that counting loops vectorise beside SX_T ones. */
#if SX_F64
#define SX_COUNT_T int64_t
#else
#define SX_COUNT_T int32_t
#endif

#include "exp_lanes_impl.h"
#include "tile_transpose_impl.h"

/* What SX_LANE_LOOP's lanes (and col_exp_vectors) get as e: nothing (0),
 * exp, or exp of tame arguments (sx_exp_vectors_tame: NaN or in
 * [-SX_TAME_SPAN, 0]; the same bits as exp, fewer instructions).
 * SX_TAME_ROW(shift, low) says whether the arguments x_i - shift of a row
 * (or column) are tame, given its smallest x_i (low) and shift its largest;
 * without a vector exp it is 0, never worth a branch. */
#define SX_WITHOUT_EXP 0
#define SX_WITH_EXP 1
#define SX_WITH_TAME_EXP 2
#if SX_VECTOR_EXP == SX_VECTOR_EXP_NONE
#define SX_TAME_ROW(shift, low) 0
#else
#define SX_TAME_ROW(shift, low) ((low) <= (shift) && (shift) - (low) <= SX_TAME_SPAN)
/* The exps of the vectors x[0..count), in place, as KIND says. */
#define SX_EXPS_OF_KIND(x, count, KIND)         \
    if ((KIND) == SX_WITH_TAME_EXP) {           \
        SX_NAME(sx_exp_vectors_tame)(x, count); \
    } else {                                    \
        SX_NAME(sx_exp_vectors)(x, count);      \
    }
#endif

/* The exponentials of `count` vectors of lanes (SX_EXP_WIDTH each),
 * e[v][j] = exp(ARG(A[h + j], B[h + j], C[h + j])) for the lane j of
 * vector v, in `e` (declared by SX_EXP_BUFFER).  With a vector exp,
 * SX_EXP_ARGS(e[v], ARG, A, B, C, h) gathers each vector's arguments and
 * SX_EXPS(e, count, KIND) then takes the exps of all of them together
 * (sx_exp_vectors: their chains interleaved): on AVX2 in the vectors e[v],
 * which gcc keeps in registers, where an array of values made it copy the
 * exps through general registers; on AVX-512 in an array of values, loaded
 * into vectors and stored back.  AVX2 applies ARG to whole vectors (GNU C
 * vector arithmetic, a scalar operand standing for every lane): lane by
 * lane, gcc built one of a step's four vectors from eight scalar loads
 * (in cache, float32 exp sweeps then took 1.06-1.16 times as long).
 * Otherwise each exp is computed where SX_EXP_LANE reads it, inside the
 * value loop, which the compilers vectorise best as one loop. */
#if SX_VECTOR_EXP == SX_VECTOR_EXP_AVX2
#define SX_EXP_BUFFER(e, count) SX_VEC_T e[count]
#define SX_EXP_ARGS(e, ARG, A, B, C, h) \
    e = ARG(SX_VEC(loadu)((A) + (h)), SX_VEC(loadu)((B) + (h)), SX_VEC(loadu)((C) + (h)));
#define SX_EXPS(e, count, KIND) SX_EXPS_OF_KIND(e, count, KIND)
#define SX_EXP_LANE(e, j, ARG_J, KIND) ((KIND) ? e[j] : (SX_T)0)
#elif SX_VECTOR_EXP != SX_VECTOR_EXP_NONE
#define SX_EXP_BUFFER(e, count) SX_T e[count][SX_EXP_WIDTH]
#define SX_EXP_ARGS(e, ARG, A, B, C, h)                          \
    SX_PRAGMA(omp simd)                                          \
    for (ptrdiff_t j = 0; j < SX_EXP_WIDTH; ++j) {               \
        e[j] = ARG((A)[(h) + j], (B)[(h) + j], (C)[(h) + j]);    \
    }
#define SX_EXPS(e, count, KIND)                                                      \
    {                                                                                \
        SX_VEC_T sx_vectors[count];                                                  \
        for (ptrdiff_t v = 0; v < (count); ++v) { sx_vectors[v] = SX_VEC(loadu)(e[v]); } \
        SX_EXPS_OF_KIND(sx_vectors, count, KIND)                                     \
        for (ptrdiff_t v = 0; v < (count); ++v) { SX_VEC(storeu)(e[v], sx_vectors[v]); } \
    }
#define SX_EXP_LANE(e, j, ARG_J, KIND) ((KIND) ? e[j] : (SX_T)0)
#else
#define SX_EXP_BUFFER(e, count) SX_T e[count][SX_EXP_WIDTH]
#define SX_EXP_ARGS(e, ARG, A, B, C, h)
#define SX_EXPS(e, count, KIND)
#define SX_EXP_LANE(e, j, ARG_J, KIND) ((KIND) ? SX_NAME(sx_exp)(ARG_J) : (SX_T)0)
#endif

/* Runs v = EXPR(e, A[i], B[i], C[i]) over i in [0, n) in groups of SX_LANES,
 * with e = exp(ARG(A[i], B[i], C[i])) as KIND says (SX_WITH_EXP,
 * SX_WITH_TAME_EXP; 0 with SX_WITHOUT_EXP), calling
 * STORE(i, lane, v) for each value, lane = i mod SX_LANES (an operand the
 * expressions ignore may repeat A), and AHEAD(i) once per whole group: a
 * group is one cache line of each operand, so AHEAD can fetch the matching
 * line of another row.  Whole groups go SX_GROUPS_PER_STEP at a time
 * (SX_LANE_GROUPS), the exps of a step first.
 * The last, partial group of a row goes through the same vector code on
 * zero-padded copies of its operands, with the extra lanes masked to 0, so
 * short rows never fall into a scalar loop of polynomial exps; the copies
 * and the stores are vector loops too (masked loads and stores where the
 * target has them: the tail of a row of 100 floats cost 75 cycles as scalar
 * loops, and softmax of (4096, 100) took 55 instead of 38 ns per row).  With SUM
 * nonzero it also leaves in `total` the blocked double sum described at the
 * top: one accumulator per lane within a block, lanes added as a tree,
 * blocks and chunks in double.  The lane arithmetic is the same on every
 * instruction set. */
#define SX_LANE_LOOP(n, A, B, C, ARG, KIND, EXPR, STORE, SUM, AHEAD)                \
    double total = 0.0;                                                             \
    for (ptrdiff_t chunk = 0; chunk < (n); chunk += SX_CHUNK) {                     \
        const ptrdiff_t chunk_end = SX_MIN((n), chunk + SX_CHUNK);                  \
        double chunk_sum = 0.0;                                                     \
        for (ptrdiff_t block = chunk; block < chunk_end; block += SX_BLOCK) {       \
            const ptrdiff_t block_end = SX_MIN(chunk_end, block + SX_BLOCK);        \
            SX_T acc[SX_LANES];                                                     \
            for (ptrdiff_t j = 0; j < SX_LANES; ++j) { acc[j] = 0; }                \
            ptrdiff_t i = block;                                                    \
            SX_LANE_GROUPS(SX_GROUPS_PER_STEP, A, B, C, ARG, KIND, EXPR, STORE, SUM, AHEAD) \
            SX_LANE_GROUPS(1, A, B, C, ARG, KIND, EXPR, STORE, SUM, AHEAD)          \
            if (i < block_end) {                                                    \
                const ptrdiff_t rem = block_end - i;                                \
                SX_T pad_a[SX_LANES], pad_b[SX_LANES], pad_c[SX_LANES], tail[SX_LANES]; \
                SX_EXP_BUFFER(e, 1);                                                \
                (void)e; /* unused without a vector exp */                          \
                SX_PRAGMA(omp simd)                                                 \
                for (ptrdiff_t j = 0; j < SX_LANES; ++j) {                          \
                    pad_a[j] = j < rem ? (A)[i + j] : 0;                            \
                    pad_b[j] = j < rem ? (B)[i + j] : 0;                            \
                    pad_c[j] = j < rem ? (C)[i + j] : 0;                            \
                }                                                                   \
                (void)pad_b; /* unused when the expressions read fewer operands */  \
                (void)pad_c;                                                        \
                SX_UNROLL(2)                                                        \
                for (ptrdiff_t h = 0; h < SX_LANES; h += SX_EXP_WIDTH) {            \
                    if (KIND) {                                                     \
                        SX_EXP_ARGS(e[0], ARG, pad_a, pad_b, pad_c, h)              \
                        SX_EXPS(e, 1, KIND)                                         \
                    }                                                               \
                    SX_PRAGMA(omp simd)                                             \
                    for (ptrdiff_t j = 0; j < SX_EXP_WIDTH; ++j) {                  \
                        const SX_T sx_exp_j = SX_EXP_LANE(                          \
                            e[0], j, ARG(pad_a[h + j], pad_b[h + j], pad_c[h + j]), KIND); \
                        const SX_T sx_value =                                       \
                            EXPR(sx_exp_j, pad_a[h + j], pad_b[h + j], pad_c[h + j]); \
                        (void)sx_exp_j;                                             \
                        tail[h + j] = h + j < rem ? sx_value : 0;                   \
                        if (SUM) { acc[h + j] += tail[h + j]; }                     \
                    }                                                               \
                }                                                                   \
                SX_PRAGMA(omp simd)                                                 \
                for (ptrdiff_t j = 0; j < SX_LANES; ++j) {                          \
                    if (j < rem) { STORE(i + j, j, tail[j]); }                      \
                }                                                                   \
            }                                                                       \
            if (SUM) { chunk_sum += SX_NAME(sx_lane_sum)(acc); }                    \
        }                                                                           \
        total += chunk_sum;                                                         \
    }

/* Whole groups of SX_LANE_LOOP from i on, GROUPS at a time while GROUPS fit
 * before block_end: first the exps of all of them, together (their chains
 * interleaved by sx_exp_vectors), then their values in lane order, so that
 * each lane's accumulator adds the same values in the same order as with
 * one group a step: the same bits.  On Zen 3 (AVX2, two groups: four
 * vectors of exps a step; in cache, best of 7 runs of bench/primitives.c,
 * new / old time) the exp sweeps of rows of 1024 took 0.69-0.78, float32
 * tame 0.43 -> 0.33 ns per element, rows of 128 0.72-0.83, and
 * row_log_softmax_bwd 0.67-0.76.  One group a step with its two exps
 * interleaved took 1.17-1.32 of the two-group time (no better than before:
 * two vectors' chains are too few to fill the pipes); four groups, eight
 * vectors, 0.87-1.12 (registers spill), so two it is. */
#define SX_LANE_GROUPS(GROUPS, A, B, C, ARG, KIND, EXPR, STORE, SUM, AHEAD)         \
    for (; i + (GROUPS) * SX_LANES <= block_end; i += (GROUPS) * SX_LANES) {        \
        SX_EXP_BUFFER(e, (GROUPS) * SX_LANES / SX_EXP_WIDTH);                       \
        (void)e; /* unused without a vector exp */                                  \
        for (ptrdiff_t g = 0; g < (GROUPS); ++g) { AHEAD(i + g * SX_LANES); }       \
        if (KIND) {                                                                 \
            SX_UNROLL(4)                                                            \
            for (ptrdiff_t v = 0; v < (GROUPS) * SX_LANES / SX_EXP_WIDTH; ++v) {    \
                const ptrdiff_t h = i + v * SX_EXP_WIDTH;                           \
                (void)h; /* unused without a vector exp */                          \
                SX_EXP_ARGS(e[v], ARG, A, B, C, h)                                  \
            }                                                                       \
            SX_EXPS(e, (GROUPS) * SX_LANES / SX_EXP_WIDTH, KIND)                    \
        }                                                                           \
        SX_UNROLL(4)                                                                \
        for (ptrdiff_t v = 0; v < (GROUPS) * SX_LANES / SX_EXP_WIDTH; ++v) {        \
            const ptrdiff_t h = i + v * SX_EXP_WIDTH;                               \
            const ptrdiff_t lane0 = (v * SX_EXP_WIDTH) % SX_LANES;                  \
            (void)h; /* unused when the values read only the exps */                \
            SX_PRAGMA(omp simd)                                                     \
            for (ptrdiff_t j = 0; j < SX_EXP_WIDTH; ++j) {                          \
                const SX_T sx_exp_j =                                               \
                    SX_EXP_LANE(e[v], j, ARG((A)[h + j], (B)[h + j], (C)[h + j]), KIND); \
                const SX_T sx_value = EXPR(sx_exp_j, (A)[h + j], (B)[h + j], (C)[h + j]); \
                (void)sx_exp_j;                                                     \
                STORE(h + j, lane0 + j, sx_value);                                  \
                if (SUM) { acc[lane0 + j] += sx_value; }                            \
            }                                                                       \
        }                                                                           \
    }

/* Whole groups per step of SX_LANE_LOOP: on AVX2 two, whose four vectors
 * of exps are taken together (see SX_LANE_GROUPS).  AVX-512 takes one group,
 * one vector, a step, as measured on Zen 4 before the steps existed; on a
 * Xeon, four a step made the exp sweeps 15-25 % faster in cache
 * (bench/primitives.c) but end to end 0.94-1.08 of the time. */
#if SX_VECTOR_EXP == SX_VECTOR_EXP_AVX2
#define SX_GROUPS_PER_STEP 2
#else
#define SX_GROUPS_PER_STEP 1
#endif
#if SX_VECTOR_EXP != SX_VECTOR_EXP_NONE
/* sx_exp_vectors' scratch holds at most SX_EXP_VECTORS_MAX vectors */
_Static_assert(SX_GROUPS_PER_STEP * SX_LANES / SX_EXP_WIDTH <= SX_EXP_VECTORS_MAX,
               "a step's exps must fit sx_exp_vectors");
#endif

/* the ARG of loops without exps (SX_WITHOUT_EXP), which never evaluate it */
#define SX_NO_ARG(a, b, c) (a)
#define SX_NO_STORE(i, lane, v) ((void)0)
#define SX_NO_AHEAD(i) ((void)0)
/* Fetches the line of `ahead` (the next row, or NULL) matching group i. */
#define SX_FETCH_AHEAD(i)                  \
    if (ahead != NULL) {                   \
        SX_PREFETCH(ahead + (i));          \
    }

/* ---- rows: the reduced axis is contiguous ---------------------------------- */

/* Largest element, NaN ignored (a NaN reaches the result through the sum),
 * and in *low the smallest (NaN ignored; +inf when there is none), for
 * row_exp_sum's tame exps.
 * Running maxima (and minima) per lane, updated element-wise (gcc and clang
 * both vectorise that select; clang leaves a scalar max reduction
 * unvectorised unless fast-math promises no NaN), in SX_MAX_SETS sets that
 * take the groups in turn, so that the dependent max instructions form that
 * many chains; the whole groups after the last whole turn go to the sets
 * in turn, and the last partial one, padded with -inf (+inf), to the last
 * set (fixed sets, which stay in registers); then the sets are combined
 * as a tree (the upper half onto the lower half) and the lanes likewise
 * (the minima negated).  Max and min are exact, so the order changes no
 * result (only which zero a tie of -0 and +0 returns, the same in every
 * instantiation).  One set is a chain of one max a group (4 cycles on the
 * Xeon, 2 on Zen 4, more than the loads need): a row of 128 floats took 31
 * cycles with one set and the generic tree, 17 with two sets and the
 * vector tree (Zen 4, in L1, before the minima).  Four sets against two
 * (Xeon, AVX-512, one process, same bits): softmax float32 (16384, 128)
 * 1.04-1.06 of the time, (4096, 1000) 0.96-1.0, (8, 1M) 0.98-1.0. */
#define SX_MAX_SETS 2
#define SX_LAST_SET (SX_MAX_SETS - 1)
#if SX_VECTOR_EXP != SX_VECTOR_EXP_NONE
/* row_max's running maxima and minima of one vector of lanes v:
 * MAX(v, m) is v > m ? v : m and MIN(v, m) is v < m ? v : m, the lane
 * loop's selects, NaN ignored alike. */
SX_ALWAYS_INLINE SX_TARGET void SX_NAME(keep_extremes)(SX_VEC_T v, SX_VEC_T *maxima,
                                                      SX_VEC_T *minima)
{
    *maxima = SX_VEC(max)(v, *maxima);
    *minima = SX_VEC(min)(v, *minima);
}

#if SX_VECTOR_EXP == SX_VECTOR_EXP_AVX512
/* The mask of the lanes below count (all when count >= SX_EXP_WIDTH, none
 * when count <= 0). */
SX_ALWAYS_INLINE SX_TARGET unsigned SX_NAME(lanes_below)(ptrdiff_t count)
{
    const unsigned lanes = count <= 0 ? 0u : (unsigned)SX_MIN(count, SX_EXP_WIDTH);
    return (1u << lanes) - 1u;
}
#endif

/* The `count` values from p (a whole vector when count >= SX_EXP_WIDTH,
 * none when count <= 0), `fill` in the other lanes, whose memory is not
 * read. */
SX_ALWAYS_INLINE SX_TARGET SX_VEC_T SX_NAME(padded_load)(const SX_T *p, ptrdiff_t count,
                                                        SX_VEC_T fill)
{
#if SX_VECTOR_EXP == SX_VECTOR_EXP_AVX512
    return SX_VEC(mask_loadu)(fill, SX_NAME(lanes_below)(count), p);
#else
    const __m256i mask = SX_MASK_256(count); /* tile_transpose_impl.h */
    return SX_VEC(blendv)(fill, SX_VEC(maskload)(p, mask), SX_VEC(castsi256)(mask));
#endif
}
#endif

static SX_TARGET double SX_NAME(row_max)(const void *xv, ptrdiff_t n, double *low)
{
    const SX_T *x = (const SX_T *)xv;
    ptrdiff_t i = 0;
#if SX_VECTOR_EXP != SX_VECTOR_EXP_NONE
    /* Each set's lanes in vectors in registers (SX_GROUP_VECTORS of them:
     * [0] lanes 0 to SX_EXP_WIDTH - 1, on AVX2 [1] the rest), where gcc took
     * the lane loop's arrays through the stack, and on AVX-512 split the
     * two sets into two loops of one chain each; a set indexed at run time
     * would put them in memory again (fixed sets took 0.94 of the time at
     * K = 128).  Against the lane loop, one process, same bits: on the Xeon
     * (AVX-512) softmax float32 (16384, 128) 0.92-0.95 of the time,
     * log_softmax 0.91-0.93, float64 0.96-0.98, (4096, 1000) 0.95-0.97,
     * (8, 1M) at two threads 0.82-0.83; on Zen 3 (AVX2) a row of 128
     * floats in cache 30 cycles instead of 44, softmax float32 (16384, 128)
     * 0.94-0.96, (8, 1M) 0.88-0.92.  The harness holds it to the lane loop
     * bit for bit. */
    const SX_VEC_T lowest = SX_VEC(set1)(-(SX_T)INFINITY), highest = SX_VEC(set1)((SX_T)INFINITY);
    const SX_VEC_T sign = SX_VEC(set1)(-(SX_T)0);
    SX_VEC_T maxima[SX_MAX_SETS][SX_GROUP_VECTORS], minima[SX_MAX_SETS][SX_GROUP_VECTORS];
    for (int s = 0; s < SX_MAX_SETS; ++s) {
        for (int h = 0; h < SX_GROUP_VECTORS; ++h) {
            maxima[s][h] = lowest;
            minima[s][h] = highest;
        }
    }
#define SX_KEEP_GROUP(s, start)                                                             \
    for (int h = 0; h < SX_GROUP_VECTORS; ++h) {                                            \
        SX_NAME(keep_extremes)(SX_VEC(loadu)(x + (start) + h * SX_EXP_WIDTH), &maxima[s][h], \
                               &minima[s][h]);                                              \
    }
    for (; i + SX_MAX_SETS * SX_LANES <= n; i += SX_MAX_SETS * SX_LANES) {
        for (int s = 0; s < SX_MAX_SETS; ++s) { SX_KEEP_GROUP(s, i + s * SX_LANES) }
    }
    for (int s = 0; s < SX_MAX_SETS - 1; ++s) {
        if (i + SX_LANES <= n) {
            SX_KEEP_GROUP(s, i)
            i += SX_LANES;
        }
    }
#undef SX_KEEP_GROUP
    if (i < n) { /* the partial group, padded with -inf (+inf) */
        for (int h = 0; h < SX_GROUP_VECTORS; ++h) {
            const ptrdiff_t count = n - i - h * SX_EXP_WIDTH;
            const SX_T *start = x + i + h * SX_EXP_WIDTH;
            maxima[SX_LAST_SET][h] =
                SX_VEC(max)(SX_NAME(padded_load)(start, count, lowest), maxima[SX_LAST_SET][h]);
            minima[SX_LAST_SET][h] =
                SX_VEC(min)(SX_NAME(padded_load)(start, count, highest), minima[SX_LAST_SET][h]);
        }
    }
    for (int width = SX_MAX_SETS / 2; width > 0; width /= 2) {
        for (int s = 0; s < width; ++s) {
            for (int h = 0; h < SX_GROUP_VECTORS; ++h) {
                maxima[s][h] = SX_VEC(max)(maxima[s + width][h], maxima[s][h]);
                minima[s][h] = SX_VEC(min)(minima[s + width][h], minima[s][h]);
            }
        }
    }
    for (int h = 0; h < SX_GROUP_VECTORS; ++h) {
        minima[0][h] = SX_VEC(xor)(minima[0][h], sign);
    }
    *low = -SX_NAME(sx_group_max)(minima[0]);
    return SX_NAME(sx_group_max)(maxima[0]);
#else
    SX_T maxima[SX_MAX_SETS][SX_LANES], minima[SX_MAX_SETS][SX_LANES];
    for (int s = 0; s < SX_MAX_SETS; ++s) {
        for (ptrdiff_t j = 0; j < SX_LANES; ++j) {
            maxima[s][j] = -(SX_T)INFINITY;
            minima[s][j] = (SX_T)INFINITY;
        }
    }
#define SX_KEEP_EXTREMES(s, v)                                  \
    maxima[s][j] = (v) > maxima[s][j] ? (v) : maxima[s][j];     \
    minima[s][j] = (v) < minima[s][j] ? (v) : minima[s][j];
    for (; i + SX_MAX_SETS * SX_LANES <= n; i += SX_MAX_SETS * SX_LANES) {
        for (int s = 0; s < SX_MAX_SETS; ++s) {
            SX_PRAGMA(omp simd)
            for (ptrdiff_t j = 0; j < SX_LANES; ++j) {
                SX_KEEP_EXTREMES(s, x[i + s * SX_LANES + j])
            }
        }
    }
    for (int s = 0; s < SX_MAX_SETS - 1; ++s) {
        if (i + SX_LANES <= n) {
            SX_PRAGMA(omp simd)
            for (ptrdiff_t j = 0; j < SX_LANES; ++j) { SX_KEEP_EXTREMES(s, x[i + j]) }
            i += SX_LANES;
        }
    }
    if (i < n) {
        SX_T high[SX_LANES], lower[SX_LANES];
        SX_PRAGMA(omp simd)
        for (ptrdiff_t j = 0; j < SX_LANES; ++j) {
            high[j] = i + j < n ? x[i + j] : -(SX_T)INFINITY;
            lower[j] = i + j < n ? x[i + j] : (SX_T)INFINITY;
        }
        SX_T *last_max = maxima[SX_LAST_SET], *last_min = minima[SX_LAST_SET];
        SX_PRAGMA(omp simd)
        for (ptrdiff_t j = 0; j < SX_LANES; ++j) {
            last_max[j] = high[j] > last_max[j] ? high[j] : last_max[j];
            last_min[j] = lower[j] < last_min[j] ? lower[j] : last_min[j];
        }
    }
#undef SX_KEEP_EXTREMES
    for (int width = SX_MAX_SETS / 2; width > 0; width /= 2) {
        for (int s = 0; s < width; ++s) {
            SX_PRAGMA(omp simd)
            for (ptrdiff_t j = 0; j < SX_LANES; ++j) {
                const SX_T top = maxima[s + width][j], bottom = minima[s + width][j];
                maxima[s][j] = top > maxima[s][j] ? top : maxima[s][j];
                minima[s][j] = bottom < minima[s][j] ? bottom : minima[s][j];
            }
        }
    }
    for (ptrdiff_t j = 0; j < SX_LANES; ++j) { minima[0][j] = -minima[0][j]; }
    *low = -SX_NAME(sx_lane_max)(minima[0]);
    return SX_NAME(sx_lane_max)(maxima[0]);
#endif
}
#undef SX_MAX_SETS
#undef SX_LAST_SET

/* The exp argument of row_exp_sum and row_exp_excess. */
#define SX_SHIFTED(a, b, c) ((a) - shift)

/* sum_i exp(x_i - shift); also stores the terms in out unless it is NULL.
 * With shift >= every x_i, `low` <= every x_i but NaN (the row's largest
 * and smallest, as row_max finds them; else low = -inf): rows that
 * SX_TAME_ROW finds tame take the tame exp, with the same bits.  `ahead`
 * (n values, or NULL) is the row to be read next: fetched into cache during
 * this sweep, so that its first sweep reads the cache instead of waiting on
 * memory, its loads overlapping this sweep's arithmetic. */
static SX_TARGET double SX_NAME(row_exp_sum)(const void *xv, void *outv, ptrdiff_t n,
                                             double shift_d, double low, const void *aheadv)
{
    const SX_T *x = (const SX_T *)xv, *ahead = (const SX_T *)aheadv, shift = (SX_T)shift_d;
    SX_T *out = (SX_T *)outv;
#define SX_EXP_VALUE(e, a, b, c) (e)
#define SX_STORE_OUT(i, lane, v) (out[i] = (v))
#define SX_EXP_SUM(KIND, STORE)                                                     \
    {                                                                               \
        SX_LANE_LOOP(n, x, x, x, SX_SHIFTED, KIND, SX_EXP_VALUE, STORE, 1, SX_FETCH_AHEAD); \
        return total;                                                               \
    }
    if (SX_TAME_ROW(shift_d, low)) {
        if (out == NULL) SX_EXP_SUM(SX_WITH_TAME_EXP, SX_NO_STORE)
        SX_EXP_SUM(SX_WITH_TAME_EXP, SX_STORE_OUT)
    }
    if (out == NULL) SX_EXP_SUM(SX_WITH_EXP, SX_NO_STORE)
    SX_EXP_SUM(SX_WITH_EXP, SX_STORE_OUT)
#undef SX_EXP_SUM
#undef SX_EXP_VALUE
}

/* sum_i (exp(x_i - shift) - [x_i == shift]) in row_exp_sum's blocked order,
 * and the number of x_i == shift in *ties, taking tame exps and fetching
 * `ahead` as row_exp_sum.  With shift the row max,
 * logsumexp = shift + log1p(excess + ties - 1): the terms equal to 1 never
 * meet the small ones in an accumulator, so a dominant term keeps the others'
 * digits (logsumexp([0, -40]) = 4.2e-18, as scipy computes it, gh-18295). */
static SX_TARGET double SX_NAME(row_exp_excess)(const void *xv, ptrdiff_t n, double shift_d,
                                                double low, double *ties, const void *aheadv)
{
    const SX_T *x = (const SX_T *)xv, *ahead = (const SX_T *)aheadv, shift = (SX_T)shift_d;
    SX_COUNT_T tie_lanes[SX_LANES] = {0};
    double total_excess;
#define SX_EXCESS(e, a, b, c) ((e) - ((a) == shift ? (SX_T)1 : (SX_T)0))
#define SX_COUNT_TIE(i, lane, v) (tie_lanes[lane] += x[i] == shift)
#define SX_EXCESS_SUM(KIND)                                                            \
    {                                                                                  \
        SX_LANE_LOOP(n, x, x, x, SX_SHIFTED, KIND, SX_EXCESS, SX_COUNT_TIE, 1, SX_FETCH_AHEAD); \
        total_excess = total;                                                          \
    }
    if (SX_TAME_ROW(shift_d, low)) SX_EXCESS_SUM(SX_WITH_TAME_EXP)
    else SX_EXCESS_SUM(SX_WITH_EXP)
#undef SX_EXCESS_SUM
#undef SX_SHIFTED
#undef SX_EXCESS
#undef SX_COUNT_TIE
    int64_t count = 0; /* lanes of SX_T's width vectorise; each holds < 2^31 */
    for (ptrdiff_t j = 0; j < SX_LANES; ++j) { count += tie_lanes[j]; }
    *ties = (double)count;
    return total_excess;
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

#if SX_VECTOR_EXP != SX_VECTOR_EXP_NONE
/* row_dot without c keeps its accumulators in registers; see row_dot.
 * acc plus the SX_EXP_WIDTH terms from i: (a_i - shift) * b_i by
 * multiply-adds, or a_i - shift for a NULL b. */
SX_ALWAYS_INLINE SX_TARGET SX_VEC_T SX_NAME(dot_step)(SX_VEC_T acc, const SX_T *a, const SX_T *b,
                                                     ptrdiff_t i, SX_VEC_T shift)
{
    const SX_VEC_T shifted = SX_VEC(sub)(SX_VEC(loadu)(a + i), shift);
    if (b == NULL) { return SX_VEC(add)(acc, shifted); }
    return SX_VEC(fmadd)(shifted, SX_VEC(loadu)(b + i), acc);
}

/* acc plus the terms of the `count` values left from i (a whole vector's
 * when count >= SX_EXP_WIDTH, none when count <= 0): rounded products, then
 * added, in the lanes below count, and 0 in the others, as the lane loop's
 * zero-padded, masked last group gives them. */
SX_ALWAYS_INLINE SX_TARGET SX_VEC_T SX_NAME(dot_last_step)(SX_VEC_T acc, const SX_T *a,
                                                          const SX_T *b, ptrdiff_t i,
                                                          ptrdiff_t count, SX_VEC_T shift)
{
    const SX_VEC_T zero = SX_VEC(setzero)();
    SX_VEC_T terms = SX_VEC(sub)(SX_NAME(padded_load)(a + i, count, zero), shift);
    if (b != NULL) { terms = SX_VEC(mul)(terms, SX_NAME(padded_load)(b + i, count, zero)); }
#if SX_VECTOR_EXP == SX_VECTOR_EXP_AVX512
    terms = SX_VEC(maskz_mov)(SX_NAME(lanes_below)(count), terms);
#else
    terms = SX_VEC(and)(terms, SX_VEC(castsi256)(SX_MASK_256(count))); /* tile_transpose_impl.h */
#endif
    return SX_VEC(add)(acc, terms);
}

/* The lane sum of one block [start, end) of row_dot without c: its
 * SX_LANES lanes in SX_GROUP_VECTORS vectors, as the lane loop holds them. */
SX_ALWAYS_INLINE SX_TARGET SX_T SX_NAME(block_dot)(const SX_T *a, const SX_T *b, ptrdiff_t start,
                                                  ptrdiff_t end, SX_VEC_T shift)
{
    SX_VEC_T lanes[SX_GROUP_VECTORS];
    for (ptrdiff_t h = 0; h < SX_GROUP_VECTORS; ++h) { lanes[h] = SX_VEC(setzero)(); }
    ptrdiff_t i = start;
    for (; i + SX_LANES <= end; i += SX_LANES) {
        for (ptrdiff_t h = 0; h < SX_GROUP_VECTORS; ++h) {
            lanes[h] = SX_NAME(dot_step)(lanes[h], a, b, i + h * SX_EXP_WIDTH, shift);
        }
    }
    if (i < end) {
        for (ptrdiff_t h = 0; h < SX_GROUP_VECTORS; ++h) {
            lanes[h] = SX_NAME(dot_last_step)(lanes[h], a, b, i + h * SX_EXP_WIDTH,
                                              end - i - h * SX_EXP_WIDTH, shift);
        }
    }
    return SX_NAME(sx_group_sum)(lanes);
}
#endif

/* sum_i (a_i - shift) * b_i * c_i, a NULL b or c counting as ones.  The shift
 * comes off before the products, so that huge logits keep their digits.
 * With a vector exp, without c (softmax's <g, p>, log_softmax's sum g: every
 * backward row), the lane loop's accumulators are SX_GROUP_VECTORS vectors
 * in registers (block_dot) where the loop keeps an array, which gcc passes
 * through the stack at the end of each block: the same shape and order of
 * additions, the whole groups' products by multiply-adds (as gcc contracts
 * the loop; clang did not) and the last group's rounded, and the harness
 * holds it to a reference written value by value.  AVX2 in cache (Zen 3,
 * bench/primitives.c, best of 5): rows of 100 / 128 took 0.83-0.91 of the
 * time, rows of 1024 0.97-0.99; softmax_backward (4096, 100) float32 0.88
 * end to end, rows of 128 0.95-1.0.  AVX-512 on the Xeon (one process,
 * same bits, three runs): softmax_backward float32 (512, 128) 0.91-0.98,
 * (16384, 128) 0.98-1.0 and (4096, 1000) 0.99 at 1 thread, (4096, 1000)
 * 0.96-1.0 at 2; float64 and other shapes 0.97-1.03. */
static SX_TARGET double SX_NAME(row_dot)(const void *av, const void *bv, const void *cv, ptrdiff_t n,
                                         double shift_d)
{
    const SX_T *a = (const SX_T *)av, *b = (const SX_T *)bv, *c = (const SX_T *)cv;
    const SX_T shift = (SX_T)shift_d;
#if SX_VECTOR_EXP != SX_VECTOR_EXP_NONE
    if (b == NULL || c == NULL) {
        const SX_T *other = b == NULL ? c : b;
        const SX_VEC_T shift_vector = SX_VEC(set1)(shift);
        double total = 0.0;
        for (ptrdiff_t chunk = 0; chunk < n; chunk += SX_CHUNK) {
            const ptrdiff_t chunk_end = SX_MIN(n, chunk + SX_CHUNK);
            double chunk_sum = 0.0;
            for (ptrdiff_t block = chunk; block < chunk_end; block += SX_BLOCK) {
                chunk_sum += SX_NAME(block_dot)(a, other, block, SX_MIN(chunk_end, block + SX_BLOCK),
                                                shift_vector);
            }
            total += chunk_sum;
        }
        return total;
    }
#endif
#define SX_A(e, a, b, c) ((a) - shift)
#define SX_AB(e, a, b, c) (((a) - shift) * (b))
#define SX_ABC(e, a, b, c) (((a) - shift) * (b) * (c))
    if (b == NULL && c == NULL) {
        SX_LANE_LOOP(n, a, a, a, SX_NO_ARG, SX_WITHOUT_EXP, SX_A, SX_NO_STORE, 1, SX_NO_AHEAD);
        return total;
    }
    if (b == NULL || c == NULL) {
        const SX_T *other = b == NULL ? c : b;
        SX_LANE_LOOP(n, a, other, a, SX_NO_ARG, SX_WITHOUT_EXP, SX_AB, SX_NO_STORE, 1, SX_NO_AHEAD);
        return total;
    }
    SX_LANE_LOOP(n, a, b, c, SX_NO_ARG, SX_WITHOUT_EXP, SX_ABC, SX_NO_STORE, 1, SX_NO_AHEAD);
    return total;
#undef SX_A
#undef SX_AB
#undef SX_ABC
}

/* softmax VJP: out = p * (g - <g, p>).  It re-reads the two rows that
 * row_dot has just streamed in.  Where the instantiation offers
 * SX_TARGET_256 (AVX-512 with gcc) it is also built for 256-bit vectors,
 * row_softmax_bwd_256, which the tables sx_select_isa takes on AMD CPUs
 * hold instead: on Zen 4, one thread, rows of numpy's 16-byte-aligned
 * arrays (every 64-byte access then splits a cache line), 512-bit loads in
 * both sweeps cost up to a third: softmax_backward of (16384, 128) float64
 * 1.38 -> 0.88 ms, float32 0.49 -> 0.43 ms, (4096, 1000) float32 1.34 ->
 * 1.01 ms; 64-byte-aligned rows 0.83-1.04 (other sweeps gained nothing at
 * 256 bits there: row_scale and row_log_normalize 2-7 % slower, row_xent_grad
 * even).  On the Xeon 512 bits did as well or better, against 256 (one
 * process, same bits, three runs): float64 (16384, 128) 0.92-1.0 of the
 * time at 1 thread, float32 (4096, 1000) 0.94-1.0 at 1 thread and
 * 0.96-1.04 at 2, (16384, 128) 0.98-1.02, in cache (512, 128) 0.97-1.0
 * (bench/primitives.c's rows of 1024 in L1/L2 went the other way,
 * 1.06-1.11). */
#define SX_SOFTMAX_BWD(name, TARGET)                                                       \
    static TARGET void SX_NAME(name)(const void *pv, const void *gv, void *outv, ptrdiff_t n, \
                                     double dot_d)                                         \
    {                                                                                      \
        const SX_T *p = (const SX_T *)pv, *g = (const SX_T *)gv, dot = (SX_T)dot_d;        \
        SX_T *out = (SX_T *)outv;                                                          \
        SX_PRAGMA(omp simd)                                                                \
        for (ptrdiff_t i = 0; i < n; ++i) { out[i] = p[i] * (g[i] - dot); }                \
    }
SX_SOFTMAX_BWD(row_softmax_bwd, SX_TARGET)
#ifdef SX_TARGET_256
SX_SOFTMAX_BWD(row_softmax_bwd_256, SX_TARGET_256)
#endif
#undef SX_SOFTMAX_BWD

#if defined(SX_STREAM_STORES)
/* out[i] for i in [0, n) by streaming (non-temporal) stores, which skip the
 * read that an ordinary store makes of each output line: for outputs too
 * large for the caches, which would not keep them anyway.  VECTOR(i, LOAD)
 * gives the SX_EXP_WIDTH values from i (one vector: a 64-byte line on
 * AVX-512, half of one on AVX2), its operands read by LOAD(address): whole
 * vectors by SX_VEC(loadu), or for a partial line by SX_LOAD_PART, which
 * reads only the lanes of sx_mask and gives 0 in the others.  The elements
 * before the first 64-byte boundary and after the last come from such
 * partial vectors and go by scalar streaming stores, so that consecutive
 * rows still fill whole lines; the vector code is the same everywhere, so
 * is every bit.  `out` is aligned to its element size (check_view), hence a
 * 64-byte boundary falls on an element. */
#if SX_VECTOR_EXP == SX_VECTOR_EXP_AVX512
#define SX_LOAD_PART(address) SX_VEC(maskz_loadu)(sx_mask, address)
#if SX_F64
#define SX_PART_MASK_T __mmask8
#else
#define SX_PART_MASK_T __mmask16
#endif
#define SX_PART_MASK(count) ((SX_PART_MASK_T)((1u << (count)) - 1u))
#else /* AVX2 */
#define SX_LOAD_PART(address) SX_VEC(maskload)(address, sx_mask)
#define SX_PART_MASK_T __m256i
#define SX_PART_MASK(count) SX_MASK_256(count) /* tile_transpose_impl.h */
#endif
#if SX_F64
#define SX_STREAM_BITS long long
#define SX_STREAM_ONE(address, bits) _mm_stream_si64((long long *)(address), (bits))
#else
#define SX_STREAM_BITS int
#define SX_STREAM_ONE(address, bits) _mm_stream_si32((int *)(address), (bits))
#endif
#define SX_STREAM_PART(out, start, count, VECTOR)                                          \
    do {                                                                                   \
        SX_T sx_part[SX_LANES];                                                            \
        for (ptrdiff_t sx_h = 0; sx_h < (count); sx_h += SX_EXP_WIDTH) {                   \
            const SX_PART_MASK_T sx_mask =                                                 \
                SX_PART_MASK(SX_MIN((count) - sx_h, SX_EXP_WIDTH));                        \
            SX_VEC(storeu)(sx_part + sx_h, VECTOR((start) + sx_h, SX_LOAD_PART));          \
        }                                                                                  \
        for (ptrdiff_t j = 0; j < (count); ++j) {                                          \
            SX_STREAM_BITS sx_bits;                                                        \
            memcpy(&sx_bits, sx_part + j, sizeof sx_bits);                                 \
            SX_STREAM_ONE((out) + (start) + j, sx_bits);                                   \
        }                                                                                  \
    } while (0)
#define SX_STREAM_ROW(out, n, VECTOR)                                                      \
    do {                                                                                   \
        const ptrdiff_t sx_head =                                                          \
            SX_MIN((n), (ptrdiff_t)(((0u - (uintptr_t)(out)) & 63u) / sizeof(SX_T)));     \
        ptrdiff_t i = sx_head;                                                             \
        if (sx_head > 0) { SX_STREAM_PART(out, 0, sx_head, VECTOR); }                      \
        for (; i + SX_LANES <= (n); i += SX_LANES) {                                       \
            SX_UNROLL(2)                                                                   \
            for (ptrdiff_t sx_h = i; sx_h < i + SX_LANES; sx_h += SX_EXP_WIDTH) {          \
                SX_VEC(stream)((out) + sx_h, VECTOR(sx_h, SX_VEC(loadu)));                 \
            }                                                                              \
        }                                                                                  \
        if (i < (n)) { SX_STREAM_PART(out, i, (n) - i, VECTOR); }                          \
    } while (0)
#endif

/* row_softmax_bwd by streaming stores where the instantiation has them
 * (SX_STREAM_STORES), else row_softmax_bwd itself. */
static SX_TARGET void SX_NAME(row_softmax_bwd_stream)(const void *pv, const void *gv, void *outv,
                                                      ptrdiff_t n, double dot_d)
{
#if defined(SX_STREAM_STORES)
    const SX_T *p = (const SX_T *)pv, *g = (const SX_T *)gv, dot = (SX_T)dot_d;
    SX_T *out = (SX_T *)outv;
#define SX_VJP_GROUP(i, LOAD) \
    SX_VEC(mul)(LOAD(p + (i)), SX_VEC(sub)(LOAD(g + (i)), SX_VEC(set1)(dot)))
    SX_STREAM_ROW(out, n, SX_VJP_GROUP);
#undef SX_VJP_GROUP
#else
    SX_NAME(row_softmax_bwd)(pv, gv, outv, n, dot_d);
#endif
}

/* row_log_normalize by streaming stores where the instantiation has them
 * (SX_STREAM_STORES), else row_log_normalize itself. */
static SX_TARGET void SX_NAME(row_log_normalize_stream)(const void *xv, void *outv, ptrdiff_t n,
                                                        double shift_d, double log_sum_d)
{
#if defined(SX_STREAM_STORES)
    const SX_T *x = (const SX_T *)xv, shift = (SX_T)shift_d, log_sum = (SX_T)log_sum_d;
    SX_T *out = (SX_T *)outv;
#define SX_LOGP_GROUP(i, LOAD)                                                             \
    SX_VEC(sub)(SX_VEC(sub)(LOAD(x + (i)), SX_VEC(set1)(shift)), SX_VEC(set1)(log_sum))
    SX_STREAM_ROW(out, n, SX_LOGP_GROUP);
#undef SX_LOGP_GROUP
#else
    SX_NAME(row_log_normalize)(xv, outv, n, shift_d, log_sum_d);
#endif
}

/* out = e * factor, the products of row_scale with the exps e kept in
 * another row (softmax's exps in a per-thread scratch), by streaming stores
 * where the instantiation has them (SX_STREAM_STORES), else ordinary ones. */
static SX_TARGET void SX_NAME(row_scale_stream)(const void *ev, void *outv, ptrdiff_t n,
                                                double factor_d)
{
    const SX_T *e = (const SX_T *)ev, factor = (SX_T)factor_d;
    SX_T *out = (SX_T *)outv;
#if defined(SX_STREAM_STORES)
#define SX_SCALED_GROUP(i, LOAD) SX_VEC(mul)(LOAD(e + (i)), SX_VEC(set1)(factor))
    SX_STREAM_ROW(out, n, SX_SCALED_GROUP);
#undef SX_SCALED_GROUP
#else
#pragma omp simd
    for (ptrdiff_t i = 0; i < n; ++i) { out[i] = e[i] * factor; }
#endif
}

/* log_softmax VJP: out = g - exp(logp) * sum(g) */
static SX_TARGET void SX_NAME(row_log_softmax_bwd)(const void *logpv, const void *gv, void *outv,
                                                   ptrdiff_t n, double grad_sum_d)
{
    const SX_T *logp = (const SX_T *)logpv, *g = (const SX_T *)gv, grad_sum = (SX_T)grad_sum_d;
    SX_T *out = (SX_T *)outv;
#define SX_LOG_P(logp_i, g_i, unused) (logp_i)
#define SX_LOG_BWD(p_i, logp_i, g_i, unused) ((g_i) - (p_i) * grad_sum)
    SX_LANE_LOOP(n, logp, g, g, SX_LOG_P, SX_WITH_EXP, SX_LOG_BWD, SX_STORE_OUT, 0, SX_NO_AHEAD);
    (void)total;
#undef SX_LOG_P
#undef SX_LOG_BWD
}

/* row_log_softmax_bwd by streaming stores where the instantiation has them
 * (SX_STREAM_STORES), else row_log_softmax_bwd itself.  Where the lane loop
 * takes the exps of several vectors a step (SX_GROUPS_PER_STEP > 1, AVX2),
 * row_log_softmax_bwd writes each block of SX_BLOCK values into a buffer in
 * L1, which then streams out: one vector's exp at a time, its chain alone,
 * took up to 1.8x the time.  Zen 3, new / old time, same bits:
 * log_softmax_backward float64 (16384, 128) 0.56-0.60 at 1 thread,
 * 0.76-0.78 at 2, (512, 32000) 0.76-0.77; float32 (65536, 128) 0.69-0.70,
 * (512, 32000) 0.93-1.0.  Otherwise the vector expression is the fused
 * multiply-add that the compilers make of the ordinary loop's g - p * sum
 * (the harness checks the bits). */
static SX_TARGET void SX_NAME(row_log_softmax_bwd_stream)(const void *logpv, const void *gv,
                                                          void *outv, ptrdiff_t n,
                                                          double grad_sum_d)
{
#if defined(SX_STREAM_STORES) && SX_GROUPS_PER_STEP > 1
    const SX_T *logp = (const SX_T *)logpv, *g = (const SX_T *)gv;
    SX_T *out = (SX_T *)outv;
    SX_T block[SX_BLOCK];
    for (ptrdiff_t start = 0; start < n; start += SX_BLOCK) {
        const ptrdiff_t count = SX_MIN(SX_BLOCK, n - start);
        SX_T *part = out + start;
        SX_NAME(row_log_softmax_bwd)(logp + start, g + start, block, count, grad_sum_d);
#define SX_BLOCK_GROUP(i, LOAD) LOAD(block + (i))
        SX_STREAM_ROW(part, count, SX_BLOCK_GROUP);
#undef SX_BLOCK_GROUP
    }
#elif defined(SX_STREAM_STORES)
    const SX_T *logp = (const SX_T *)logpv, *g = (const SX_T *)gv, grad_sum = (SX_T)grad_sum_d;
    SX_T *out = (SX_T *)outv;
#define SX_LOG_BWD_GROUP(i, LOAD)                                                          \
    SX_VEC(fnmadd)(SX_NAME(sx_exp_vector)(LOAD(logp + (i))), SX_VEC(set1)(grad_sum),      \
                   LOAD(g + (i)))
    SX_STREAM_ROW(out, n, SX_LOG_BWD_GROUP);
#undef SX_LOG_BWD_GROUP
#else
    SX_NAME(row_log_softmax_bwd)(logpv, gv, outv, n, grad_sum_d);
#endif
}

#if defined(SX_STREAM_STORES)
#undef SX_STREAM_ROW
#undef SX_STREAM_PART
#undef SX_STREAM_ONE
#undef SX_STREAM_BITS
#undef SX_PART_MASK
#undef SX_PART_MASK_T
#undef SX_LOAD_PART
#endif

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
#undef SX_EXP_ARGS
#undef SX_EXPS
#undef SX_EXP_LANE
#undef SX_NO_ARG
#undef SX_NO_AHEAD
#undef SX_FETCH_AHEAD
#undef SX_LANE_LOOP
#undef SX_LANE_GROUPS
#undef SX_EXP_BUFFER

#include "col_kernels_impl.h"
#undef SX_COUNT_T

#define SX_TABLE(softmax_bwd)                                                        \
    {                                                                                \
        SX_NAME(row_max),         SX_NAME(row_exp_sum),       SX_NAME(row_exp_excess), \
        SX_NAME(row_scale),                                                          \
        SX_NAME(row_log_normalize), SX_NAME(row_dot),                                \
        SX_NAME(softmax_bwd), SX_NAME(row_softmax_bwd_stream),                       \
        SX_NAME(row_log_normalize_stream), SX_NAME(row_scale_stream),                \
        SX_NAME(row_log_softmax_bwd), SX_NAME(row_log_softmax_bwd_stream), SX_NAME(row_xent_grad), \
        SX_NAME(col_max),         SX_NAME(col_exp_sum),       SX_NAME(col_exp_excess), \
        SX_NAME(col_scale),                                                          \
        SX_NAME(col_log_normalize), SX_NAME(col_dot),                                \
        SX_NAME(col_softmax_bwd), SX_NAME(col_log_softmax_bwd),                      \
        SX_NAME(tile_transpose),                                                     \
    }
static const sx_table SX_NAME(sx_table) = SX_TABLE(row_softmax_bwd);
#ifdef SX_TARGET_256
/* the same with the softmax VJP on 256-bit vectors (see row_softmax_bwd) */
static const sx_table SX_NAME(sx_table_vjp256) = SX_TABLE(row_softmax_bwd_256);
#endif
#undef SX_TABLE
#undef SX_MASK_256
#undef SX_EXP_WIDTH
#undef SX_LANES
#undef SX_VEC
#undef SX_VEC_T
#undef SX_TAME_SPAN
#undef SX_WITHOUT_EXP
#undef SX_WITH_EXP
#undef SX_WITH_TAME_EXP
#undef SX_TAME_ROW
#undef SX_EXPS_OF_KIND
#undef SX_EXP_VECTORS_MAX
#undef SX_GROUP_VECTORS
#undef SX_GROUPS_PER_STEP
