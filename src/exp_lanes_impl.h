/* exp_lanes_impl.h -- the exp and the lane reductions of one instantiation.
 *
 * Included by row_kernels_impl.h, once per (instruction set, dtype), with its
 * macros defined (SX_T, SX_F64, SX_NAME, SX_TARGET, SX_VECTOR_EXP).  Defines
 * sx_exp (one value), sx_exp_vectors and sx_exp_vectors_tame (the same bits
 * for arguments in [-SX_TAME_SPAN, 0], cheaper), over a few vectors at
 * once, and their one-vector forms sx_exp_vector and sx_exp_vector_tame,
 * where the instruction set has a vector exp (AVX-512, AVX2), sx_lane_sum,
 * and the largest lane of a group: sx_group_max of vectors with a vector
 * exp, else sx_lane_max; and leaves defined for the row primitives SX_LANES
 * (values per group), SX_EXP_WIDTH (values per vector of the vector exp),
 * SX_TAME_SPAN and, where there is a vector exp, SX_VEC / SX_VEC_T (its
 * intrinsics for SX_T), SX_GROUP_VECTORS and SX_EXP_VECTORS_MAX;
 * row_kernels_impl.h undefines them.
 *
 * exp is an inline polynomial: x = n ln2 + r with a Cody-Waite split of ln2,
 * |r| <= ln2/2, e^r by a polynomial (float: minimax of degree 6; double:
 * Taylor to degree 13), times 2^n: built from exponent bits in two halves,
 * so that results in the subnormal range come out right, or on AVX-512 by
 * VSCALEF, the same bits in one instruction, half the instructions of the
 * integer construction (a whole group per vector; AVX2 builds the two
 * halves in vector lanes, half a group per vector: sx_exp_vectors).
 * No libm call, so the loops vectorise without -ffast-math; inputs are
 * clamped so that -inf -> 0, large -> +inf, and NaN passes through.  float,
 * measured over every float in [-104, 88.72]: at most 1.34 ulp (SSE2) and
 * 1.06 ulp (AVX2+FMA and AVX-512, bitwise equal).
 */

/* SX_TAME_SPAN: exps of arguments in [-SX_TAME_SPAN, 0] are normal numbers
 * p 2^n with n >= -1020 (double) / -124 (float), so that sx_exp_vector_tame
 * may build 2^n in one step. */
#if SX_F64
#define SX_TAME_SPAN 707.0
#else
#define SX_TAME_SPAN 86.0
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

/* SX_EXP_CLAMP clamps x to [SX_EXP_LOW, SX_EXP_HIGH] (NaN passes); then
 * SX_EXP_REDUCE gives n = round(x / ln2) by the shifter trick (one fused
 * multiply-add and one subtraction) and the reduced argument r = x - n ln2
 * in two steps.  Written once for scalars and vectors: MAX(c, x) and
 * MIN(c, x) return x when it is NaN, FMA(a, b, c) is a b + c, FNMA(a, b, c)
 * is c - a b, SET(c) a constant; EACH(statement) runs each step, once
 * (SX_ONCE) or for every vector of an array before the next step
 * (SX_EACH_VECTOR in sx_exp_vectors), so that the vectors' dependency chains
 * are interleaved in program order. */
#define SX_EXP_CLAMP(x, MAX, MIN, SET, EACH) \
    EACH(x = MAX(SET(SX_EXP_LOW), x))        \
    EACH(x = MIN(SET(SX_EXP_HIGH), x))
#define SX_EXP_REDUCE(x, n, r, FMA, FNMA, SUB, SET, EACH)                  \
    EACH(n = SUB(FMA(x, SET(SX_LOG2E), SET(SX_SHIFTER)), SET(SX_SHIFTER))) \
    EACH(r = FNMA(n, SET(SX_LN2_HI), x))                                   \
    EACH(r = FNMA(n, SET(SX_LN2_LO), r))
#define SX_ONCE(statement) statement;

/* e^r on |r| <= ln2/2 by Horner's rule: double by its Taylor series to degree 13. */
#if SX_F64
#define SX_EXP_POLY(p, r, FMA, SET, EACH)                             \
    EACH(p = FMA(SET(1.0 / 6227020800.0), r, SET(1.0 / 479001600.0))) \
    EACH(p = FMA(p, r, SET(1.0 / 39916800.0)))                        \
    EACH(p = FMA(p, r, SET(1.0 / 3628800.0)))                         \
    EACH(p = FMA(p, r, SET(1.0 / 362880.0)))                          \
    EACH(p = FMA(p, r, SET(1.0 / 40320.0)))                           \
    EACH(p = FMA(p, r, SET(1.0 / 5040.0)))                            \
    EACH(p = FMA(p, r, SET(1.0 / 720.0)))                             \
    EACH(p = FMA(p, r, SET(1.0 / 120.0)))                             \
    EACH(p = FMA(p, r, SET(1.0 / 24.0)))                              \
    EACH(p = FMA(p, r, SET(1.0 / 6.0)))                               \
    EACH(p = FMA(p, r, SET(0.5)))                                     \
    EACH(p = FMA(p, r, SET(1.0)))                                     \
    EACH(p = FMA(p, r, SET(1.0)))
#else
/* float: the minimax polynomial of degree 6 for the relative error on
   [-ln2/2, ln2/2] with p(0) = 1 (Lawson's algorithm; 2.0e-9 before rounding
   the coefficients to float), one multiply-add fewer than Taylor's degree 7
   at the same accuracy. */
#define SX_EXP_POLY(p, r, FMA, SET, EACH)                                    \
    EACH(p = FMA(SET(0.0013843653723597527f), r, SET(0.00837415549904108f))) \
    EACH(p = FMA(p, r, SET(0.04166800156235695f)))                           \
    EACH(p = FMA(p, r, SET(0.16666431725025177f)))                           \
    EACH(p = FMA(p, r, SET(0.4999999403953552f)))                            \
    EACH(p = FMA(p, r, SET(1.0f)))                                           \
    EACH(p = FMA(p, r, SET(1.0f)))
#endif

/* Comparisons are false for NaN, so NaN survives the clamp. */
#define SX_SCALAR_MAX(c, x) ((x) < (c) ? (c) : (x))
#define SX_SCALAR_MIN(c, x) ((x) > (c) ? (c) : (x))
#define SX_SCALAR_FMA(a, b, c) ((a) * (b) + (c)) /* contracted where the target has FMA */
#define SX_SCALAR_FNMA(a, b, c) ((c) - (a) * (b))
#define SX_SCALAR_SUB(a, b) ((a) - (b))
#define SX_SCALAR_SET(c) ((SX_T)(c))

SX_ALWAYS_INLINE SX_TARGET SX_T SX_NAME(sx_exp)(SX_T x)
{
    SX_T n, r, p;
    SX_EXP_CLAMP(x, SX_SCALAR_MAX, SX_SCALAR_MIN, SX_SCALAR_SET, SX_ONCE)
    SX_EXP_REDUCE(x, n, r, SX_SCALAR_FMA, SX_SCALAR_FNMA, SX_SCALAR_SUB, SX_SCALAR_SET, SX_ONCE)
    SX_EXP_POLY(p, r, SX_SCALAR_FMA, SX_SCALAR_SET, SX_ONCE)
#if SX_F64
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

/* SX_LANES values per group: one 64-byte AVX-512 vector, two AVX2 vectors. */
#define SX_LANES ((ptrdiff_t)(64 / sizeof(SX_T)))
/* Values per call of sx_exp_vector: one vector of the instruction set's exp. */
#if SX_VECTOR_EXP == SX_VECTOR_EXP_AVX2
#define SX_EXP_WIDTH (SX_LANES / 2)
#else
#define SX_EXP_WIDTH SX_LANES
#endif

/* SX_VEC(f) names the intrinsic f for SX_T on the instruction set's exp
 * vector, SX_VEC_T its type: 512 bits on AVX-512, 256 on AVX2. */
#if SX_VECTOR_EXP == SX_VECTOR_EXP_AVX512 && SX_F64
#define SX_VEC(f) _mm512_##f##_pd
#define SX_VEC_T __m512d
#elif SX_VECTOR_EXP == SX_VECTOR_EXP_AVX512
#define SX_VEC(f) _mm512_##f##_ps
#define SX_VEC_T __m512
#elif SX_VECTOR_EXP == SX_VECTOR_EXP_AVX2 && SX_F64
#define SX_VEC(f) _mm256_##f##_pd
#define SX_VEC_T __m256d
#elif SX_VECTOR_EXP == SX_VECTOR_EXP_AVX2
#define SX_VEC(f) _mm256_##f##_ps
#define SX_VEC_T __m256
#endif

#if SX_VECTOR_EXP != SX_VECTOR_EXP_NONE
/* SX_EACH_VECTOR(statements): the statements for each of the `count`
 * vectors of sx_exp_vectors (at most SX_EXP_VECTORS_MAX), v the vector's
 * index. */
#define SX_EXP_VECTORS_MAX 4
#define SX_EACH_VECTOR(...) \
    SX_UNROLL(4)            \
    for (ptrdiff_t v = 0; v < count; ++v) { __VA_ARGS__; }

/* sx_exp of each lane of `count` vectors x[0..count), in place, bit for
 * bit: the same clamp (MAX and MIN return their second operand, x, when
 * either is NaN), reduction and polynomial; then 2^n by VSCALEF (AVX-512),
 * or on AVX2 as the product of 2^half and 2^(n - half), each built from
 * integer lanes as sx_exp builds it.  Each step runs over all the vectors
 * before the next, so that their dependency chains (about 45 cycles per
 * vector on Zen 3) are interleaved in program order, as the core has to
 * overlap them.  gcc's vectorisation of sx_exp itself clamped with compares
 * and blends (on AVX2 about 40 instructions per 8 floats against 25 here).
 * Measured on Zen 3 (new / old time, one process): softmax float32
 * (16384, 128) and (4096, 1000) 0.88-0.98, float64 0.90-0.98 against gcc's
 * vectorisation; the harness checks the bits. */
SX_ALWAYS_INLINE SX_TARGET void SX_NAME(sx_exp_vectors)(SX_VEC_T *x, ptrdiff_t count)
{
    SX_VEC_T n[SX_EXP_VECTORS_MAX], r[SX_EXP_VECTORS_MAX], p[SX_EXP_VECTORS_MAX];
    SX_EXP_CLAMP(x[v], SX_VEC(max), SX_VEC(min), SX_VEC(set1), SX_EACH_VECTOR)
    SX_EXP_REDUCE(x[v], n[v], r[v], SX_VEC(fmadd), SX_VEC(fnmadd), SX_VEC(sub), SX_VEC(set1),
                  SX_EACH_VECTOR)
    SX_EXP_POLY(p[v], r[v], SX_VEC(fmadd), SX_VEC(set1), SX_EACH_VECTOR)
#if SX_VECTOR_EXP == SX_VECTOR_EXP_AVX512
    SX_EACH_VECTOR(x[v] = SX_VEC(scalef)(p[v], n[v]))
#elif SX_F64
    /* the halves' integers read off the bits of (value + SX_SHIFTER) */
    const __m256d shifter = _mm256_set1_pd(SX_SHIFTER);
    const __m256i bias = _mm256_set1_epi64x((long long)(1023u - 0x4338000000000000ull));
    SX_EACH_VECTOR(
        const __m256d half = _mm256_sub_pd(_mm256_fmadd_pd(n[v], _mm256_set1_pd(0.5), shifter),
                                           shifter);
        const __m256i half_biased = _mm256_castpd_si256(_mm256_add_pd(half, shifter));
        const __m256i rest_biased =
            _mm256_castpd_si256(_mm256_add_pd(_mm256_sub_pd(n[v], half), shifter));
        const __m256d scale1 =
            _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(half_biased, bias), 52));
        const __m256d scale2 =
            _mm256_castsi256_pd(_mm256_slli_epi64(_mm256_add_epi64(rest_biased, bias), 52));
        x[v] = _mm256_mul_pd(_mm256_mul_pd(p[v], scale1), scale2))
#else
    const __m256i bias = _mm256_set1_epi32(127);
    SX_EACH_VECTOR(
        const __m256i n_int = _mm256_cvtps_epi32(n[v]); /* exact: n is a whole number */
        const __m256i half = _mm256_srai_epi32(n_int, 1);
        const __m256i rest = _mm256_sub_epi32(n_int, half);
        const __m256 scale1 =
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(half, bias), 23));
        const __m256 scale2 =
            _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(rest, bias), 23));
        x[v] = _mm256_mul_ps(_mm256_mul_ps(p[v], scale1), scale2))
#endif
}

/* sx_exp_vectors, bit for bit, of lanes that are NaN or in
 * [-SX_TAME_SPAN, 0] ("tame": the exp of x - max over a row whose values
 * span at most SX_TAME_SPAN), where no clamp can act and p 2^n is a normal
 * number: so the clamps go and, on AVX2, 2^n is added to p's exponent
 * field in one integer step instead of two halves and two products (12
 * instructions per 8 floats instead of 21; double: 21 instead of 30).  n is
 * converted to an integer by CVT, which turns NaN into INT_MIN, whose
 * shifted bits are 0: a NaN lane keeps p, the NaN sx_exp_vectors returns.
 * Zen 3, one process, same bits, with row_max also finding the rows'
 * minima: softmax float32 (16384, 128) 0.82-0.95 of the time, (4096, 1000)
 * 0.67-0.91, (512, 32000) 0.75-0.78, float64 (16384, 128) 0.83-0.89; in
 * cache, the float32 exp sweep 1.37 cycles per element instead of 1.88. */
SX_ALWAYS_INLINE SX_TARGET void SX_NAME(sx_exp_vectors_tame)(SX_VEC_T *x, ptrdiff_t count)
{
    SX_VEC_T n[SX_EXP_VECTORS_MAX], r[SX_EXP_VECTORS_MAX], p[SX_EXP_VECTORS_MAX];
    SX_EXP_REDUCE(x[v], n[v], r[v], SX_VEC(fmadd), SX_VEC(fnmadd), SX_VEC(sub), SX_VEC(set1),
                  SX_EACH_VECTOR)
    SX_EXP_POLY(p[v], r[v], SX_VEC(fmadd), SX_VEC(set1), SX_EACH_VECTOR)
#if SX_VECTOR_EXP == SX_VECTOR_EXP_AVX512
    SX_EACH_VECTOR(x[v] = SX_VEC(scalef)(p[v], n[v]))
#elif SX_F64
    SX_EACH_VECTOR(
        const __m256i n_bits =
            _mm256_slli_epi64(_mm256_cvtepi32_epi64(_mm256_cvtpd_epi32(n[v])), 52);
        x[v] = _mm256_castsi256_pd(_mm256_add_epi64(_mm256_castpd_si256(p[v]), n_bits)))
#else
    SX_EACH_VECTOR(
        const __m256i n_bits = _mm256_slli_epi32(_mm256_cvtps_epi32(n[v]), 23);
        x[v] = _mm256_castsi256_ps(_mm256_add_epi32(_mm256_castps_si256(p[v]), n_bits)))
#endif
}
#undef SX_EACH_VECTOR

/* One vector's sx_exp_vectors and sx_exp_vectors_tame. */
SX_ALWAYS_INLINE SX_TARGET SX_VEC_T SX_NAME(sx_exp_vector)(SX_VEC_T x)
{
    SX_NAME(sx_exp_vectors)(&x, 1);
    return x;
}
SX_ALWAYS_INLINE SX_TARGET SX_VEC_T SX_NAME(sx_exp_vector_tame)(SX_VEC_T x)
{
    SX_NAME(sx_exp_vectors_tame)(&x, 1);
    return x;
}
#endif

#if SX_VECTOR_EXP != SX_VECTOR_EXP_NONE
/* The sum and the largest of the lanes of one 256-bit vector, each as a
 * tree: the upper half onto the lower half, down to one lane. */
#if SX_F64
SX_ALWAYS_INLINE SX_TARGET double SX_NAME(sx_vector_sum)(__m256d four)
{
    const __m128d two = _mm_add_pd(_mm256_castpd256_pd128(four), _mm256_extractf128_pd(four, 1));
    return _mm_cvtsd_f64(_mm_add_sd(two, _mm_unpackhi_pd(two, two)));
}
SX_ALWAYS_INLINE SX_TARGET double SX_NAME(sx_vector_max)(__m256d four)
{
    const __m128d two = _mm_max_pd(_mm256_extractf128_pd(four, 1), _mm256_castpd256_pd128(four));
    return _mm_cvtsd_f64(_mm_max_sd(_mm_unpackhi_pd(two, two), two));
}
#else
SX_ALWAYS_INLINE SX_TARGET float SX_NAME(sx_vector_sum)(__m256 eight)
{
    const __m128 four = _mm_add_ps(_mm256_castps256_ps128(eight), _mm256_extractf128_ps(eight, 1));
    const __m128 two = _mm_add_ps(four, _mm_movehl_ps(four, four));
    return _mm_cvtss_f32(_mm_add_ss(two, _mm_shuffle_ps(two, two, 1)));
}
SX_ALWAYS_INLINE SX_TARGET float SX_NAME(sx_vector_max)(__m256 eight)
{
    const __m128 four = _mm_max_ps(_mm256_extractf128_ps(eight, 1), _mm256_castps256_ps128(eight));
    const __m128 two = _mm_max_ps(_mm_movehl_ps(four, four), four);
    return _mm_cvtss_f32(_mm_max_ss(_mm_shuffle_ps(two, two, 1), two));
}
#endif
#endif

#if SX_VECTOR_EXP != SX_VECTOR_EXP_NONE
/* Vectors of the exp's width per group of SX_LANES values: two on AVX2,
 * one on AVX-512. */
#define SX_GROUP_VECTORS (SX_LANES / SX_EXP_WIDTH)

/* The sum of the SX_LANES lanes of one group held in vectors as a tree: the
 * upper half of the lanes added onto the lower half, then the upper half of
 * those, down to one (((a0 + a8) + (a4 + a12)) + ((a2 + a10) + ...)) for 16
 * lanes); group[0] holds lanes 0 to SX_EXP_WIDTH - 1, group[1] (AVX2) the
 * rest.  AVX-512 and AVX2 add the same pairs. */
SX_ALWAYS_INLINE SX_TARGET SX_T SX_NAME(sx_group_sum)(const SX_VEC_T *group)
{
#if SX_VECTOR_EXP == SX_VECTOR_EXP_AVX512 && SX_F64
    return SX_NAME(sx_vector_sum)(
        _mm256_add_pd(_mm512_castpd512_pd256(group[0]), _mm512_extractf64x4_pd(group[0], 1)));
#elif SX_VECTOR_EXP == SX_VECTOR_EXP_AVX512
    return SX_NAME(sx_vector_sum)(
        _mm256_add_ps(_mm512_castps512_ps256(group[0]), _mm512_extractf32x8_ps(group[0], 1)));
#else
    return SX_NAME(sx_vector_sum)(SX_VEC(add)(group[0], group[1]));
#endif
}

/* The largest of the SX_LANES lanes of one group held in vectors, which
 * hold no NaN, paired as sx_group_sum adds them. */
SX_ALWAYS_INLINE SX_TARGET SX_T SX_NAME(sx_group_max)(const SX_VEC_T *group)
{
#if SX_VECTOR_EXP == SX_VECTOR_EXP_AVX512 && SX_F64
    return SX_NAME(sx_vector_max)(
        _mm256_max_pd(_mm512_extractf64x4_pd(group[0], 1), _mm512_castpd512_pd256(group[0])));
#elif SX_VECTOR_EXP == SX_VECTOR_EXP_AVX512
    return SX_NAME(sx_vector_max)(
        _mm256_max_ps(_mm512_extractf32x8_ps(group[0], 1), _mm512_castps512_ps256(group[0])));
#else
    return SX_NAME(sx_vector_max)(SX_VEC(max)(group[1], group[0]));
#endif
}
#endif

/* acc[0] + ... + acc[SX_LANES - 1] as a tree, as sx_group_sum adds them. */
SX_ALWAYS_INLINE SX_TARGET SX_T SX_NAME(sx_lane_sum)(SX_T *acc)
{
#if SX_VECTOR_EXP != SX_VECTOR_EXP_NONE
    SX_VEC_T group[SX_GROUP_VECTORS];
    for (ptrdiff_t h = 0; h < SX_GROUP_VECTORS; ++h) {
        group[h] = SX_VEC(loadu)(acc + h * SX_EXP_WIDTH);
    }
    return SX_NAME(sx_group_sum)(group);
#else
    SX_UNROLL(8)
    for (ptrdiff_t width = SX_LANES / 2; width > 0; width /= 2) {
        SX_UNROLL(16)
        for (ptrdiff_t j = 0; j < width; ++j) { acc[j] += acc[j + width]; }
    }
    return acc[0];
#endif
}

#if SX_VECTOR_EXP == SX_VECTOR_EXP_NONE
/* The largest of acc[0..SX_LANES), which hold no NaN, as a tree like
 * sx_lane_sum (upper half onto lower half); with a vector exp, row_max
 * keeps its lanes in vectors and takes sx_group_max. */
SX_ALWAYS_INLINE SX_TARGET SX_T SX_NAME(sx_lane_max)(SX_T *acc)
{
    SX_UNROLL(8)
    for (ptrdiff_t width = SX_LANES / 2; width > 0; width /= 2) {
        SX_UNROLL(16)
        for (ptrdiff_t j = 0; j < width; ++j) {
            acc[j] = acc[j + width] > acc[j] ? acc[j + width] : acc[j];
        }
    }
    return acc[0];
}
#endif

#undef SX_EXP_LOW
#undef SX_EXP_HIGH
#undef SX_SHIFTER
#undef SX_LOG2E
#undef SX_LN2_HI
#undef SX_LN2_LO
#undef SX_EXP_CLAMP
#undef SX_EXP_REDUCE
#undef SX_EXP_POLY
#undef SX_ONCE
#undef SX_SCALAR_MAX
#undef SX_SCALAR_MIN
#undef SX_SCALAR_FMA
#undef SX_SCALAR_FNMA
#undef SX_SCALAR_SUB
#undef SX_SCALAR_SET
