/* half_convert_impl.h -- one instantiation of the 16-bit storage conversions.
 *
 * Design
 * ------
 * float16 and bfloat16 arrays are computed in float32: the kernels load a
 * tile of 16-bit values into a float32 scratch, run the float32 primitives
 * on it in cache, and store the results back as 16-bit values.  This body is
 * included by row_kernels.h once per (instruction set, 16-bit format) with
 *   SX_BF16      1 for bfloat16, 0 for IEEE float16
 *   SX_NAME(f)   name of f in this instantiation (load_f16_avx2, ...)
 *   SX_TARGET    function attribute choosing the instruction set
 *   SX_HALF_HW   float16 conversions in hardware: SX_HALF_HW_F16C (x86 F16C,
 *                8 values per instruction), SX_HALF_HW_AVX512 (the same on
 *                512-bit vectors, 16 values), SX_HALF_HW_NEON (AArch64 FCVTL /
 *                FCVTN, 4 values), or SX_HALF_HW_NONE
 * Otherwise (and always for bfloat16) the conversions are branch-free integer
 * and float operations, so the loops vectorise for every target; on AVX-512
 * the bfloat16 narrowing is that integer rounding in vector intrinsics
 * (narrow_vector, narrow_pair), so that both formats narrow 16 values a
 * vector with masked tails.  Hardware and software conversions agree on every value but
 * signalling NaNs, which the hardware quiets.
 * float32 -> 16-bit rounds to nearest, ties to even (as numpy and ml_dtypes
 * do); overflow gives +-inf, NaN stays NaN with its sign.  16-bit -> float32
 * is exact.
 */

SX_ALWAYS_INLINE SX_TARGET float SX_NAME(sx_widen)(uint16_t h)
{
    uint32_t bits;
#if SX_BF16
    bits = (uint32_t)h << 16;
#else
    const uint32_t magnitude = h & 0x7fffu;
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    /* normal: move the exponent and mantissa up and rebias 15 -> 127 */
    const uint32_t normal = (magnitude << 13) + 0x38000000u;
    const uint32_t inf_nan = (magnitude << 13) | 0x7f800000u;
    /* subnormal: magnitude * 2^-24, exact in float */
    const float tiny = (float)(int32_t)magnitude * 5.9604644775390625e-08f;
    uint32_t tiny_bits;
    memcpy(&tiny_bits, &tiny, sizeof tiny_bits);
    bits = magnitude >= 0x7c00u ? inf_nan : magnitude < 0x0400u ? tiny_bits : normal;
    bits |= sign;
#endif
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

SX_ALWAYS_INLINE SX_TARGET uint16_t SX_NAME(sx_narrow)(float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
#if SX_BF16
    const uint32_t rounded = (bits + 0x7fffu + ((bits >> 16) & 1u)) >> 16;
    const uint32_t quiet_nan = (bits >> 16) | 0x0040u;
    return (uint16_t)((bits & 0x7fffffffu) > 0x7f800000u ? quiet_nan : rounded);
#else
    const uint32_t sign = (bits >> 16) & 0x8000u;
    const uint32_t magnitude = bits & 0x7fffffffu;
    /* NaN keeps the top of its payload, as numpy does (never becoming inf) */
    uint32_t nan = 0x7c00u | ((magnitude & 0x7fffffu) >> 13);
    nan += nan == 0x7c00u;
    /* normal: rebias, then round the 13 dropped bits to nearest even */
    const uint32_t normal = (magnitude - 0x38000000u + 0x0fffu + ((magnitude >> 13) & 1u)) >> 13;
    /* below 2^-14: adding 0.5 (whose ulp is 2^-24, the float16 subnormal
       step) lets the FPU round; the low bits are then the subnormal code */
    float magnitude_f;
    memcpy(&magnitude_f, &magnitude, sizeof magnitude_f);
    const float shifted = magnitude_f + 0.5f;
    uint32_t shifted_bits;
    memcpy(&shifted_bits, &shifted, sizeof shifted_bits);
    const uint32_t tiny = shifted_bits - 0x3f000000u;
    uint32_t code = magnitude < 0x38800000u ? tiny : normal;
    code = magnitude >= 0x477ff000u ? 0x7c00u : code; /* rounds to >= 65520: inf */
    code = magnitude > 0x7f800000u ? nan : code;
    return (uint16_t)(sign | code);
#endif
}

/* The x86 float16 conversions, F16C on 256-bit or (AVX-512) 512-bit
 * vectors: SX_F16C_WIDTH values per vector, SX_F16C(f) the float32-vector
 * intrinsic f, and the 16-bit halves loaded and stored whole. */
#if SX_HALF_HW == SX_HALF_HW_AVX512 && !SX_BF16
#define SX_F16C_WIDTH 16
#define SX_F16C_PS __m512
#define SX_F16C_PH __m256i
#define SX_F16C(f) _mm512_##f
#define SX_F16C_LOAD_PH(p) _mm256_loadu_si256((const __m256i *)(p))
#define SX_F16C_STORE_PH(p, h) _mm256_storeu_si256((__m256i *)(p), h)
#elif SX_HALF_HW == SX_HALF_HW_F16C && !SX_BF16
#define SX_F16C_WIDTH 8
#define SX_F16C_PS __m256
#define SX_F16C_PH __m128i
#define SX_F16C(f) _mm256_##f
#define SX_F16C_LOAD_PH(p) _mm_loadu_si128((const __m128i *)(p))
#define SX_F16C_STORE_PH(p, h) _mm_storeu_si128((__m128i *)(p), h)
#endif

/* dst[i] = widen(src[i]) for one row of n values. */
SX_ALWAYS_INLINE SX_TARGET void SX_NAME(widen_row)(const uint16_t *src, float *dst, ptrdiff_t n)
{
    ptrdiff_t i = 0;
#if defined(SX_F16C_WIDTH)
    for (; i + SX_F16C_WIDTH <= n; i += SX_F16C_WIDTH) {
        SX_F16C(storeu_ps)(dst + i, SX_F16C(cvtph_ps)(SX_F16C_LOAD_PH(src + i)));
    }
#elif SX_HALF_HW == SX_HALF_HW_NEON && !SX_BF16
    for (; i + 4 <= n; i += 4) {
        const float16x4_t h = vreinterpret_f16_u16(vld1_u16(src + i));
        vst1q_f32(dst + i, vcvt_f32_f16(h));
    }
#endif
#pragma omp simd
    for (ptrdiff_t j = i; j < n; ++j) { dst[j] = SX_NAME(sx_widen)(src[j]); }
}

/* dst[i] = narrow(VALUE(src[i])) for i in [i, n) (the loop's index `i`
 * starts where the caller left it).  VALUE(v, MUL, SUB, SET) is written once
 * for vectors and scalars (MUL and SUB the operations, SET a constant), so
 * every route forms the same float32 values.  A row's last, partial vector
 * goes through the vector code too (masked loads and stores, or a padded
 * copy): rows of a few hundred values otherwise spent as long in a scalar
 * remainder loop as in the vector body (float16 softmax of (8192, 300) took
 * 1.3-1.4x the time when tiles were narrowed row by row). */
#define SX_SCALAR_MUL(a, b) ((a) * (b))
#define SX_SCALAR_SUB(a, b) ((a) - (b))
#define SX_SCALAR_SET(c) ((float)(c))
#define SX_SCALAR_VALUE(VALUE, x) VALUE(x, SX_SCALAR_MUL, SX_SCALAR_SUB, SX_SCALAR_SET)
#if SX_HALF_HW == SX_HALF_HW_AVX512
/* AVX-512, both formats: 32 values from two vectors, joined into one 64-byte
 * vector (narrow_pair), and a row's last values by masked loads and stores,
 * 16 at a time (narrow_vector).  float16 by VCVTPS2PH; bfloat16 by
 * sx_narrow's integer rounding (bfloat16_in_high_half), whose results two
 * vectors hand over in one permutation of 16-bit words (the compilers made
 * that of the generic loop; a VPMOVDW per vector instead made bfloat16
 * log_softmax of (512, 32000) 1.2x slower at 2 threads). */
#if SX_BF16
/* Each lane's bfloat16 code in its upper 16 bits (the lower ones are junk). */
SX_ALWAYS_INLINE SX_TARGET __m512i SX_NAME(bfloat16_in_high_half)(__m512 v)
{
    const __m512i bits = _mm512_castps_si512(v);
    const __m512i bias = _mm512_add_epi32(
        _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1)),
        _mm512_set1_epi32(0x7fff));
    const __mmask16 nan = _mm512_cmpgt_epu32_mask(
        _mm512_and_si512(bits, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    return _mm512_mask_blend_epi32(nan, _mm512_add_epi32(bits, bias),
                                   _mm512_or_si512(bits, _mm512_set1_epi32(0x00400000)));
}
#endif
SX_ALWAYS_INLINE SX_TARGET __m256i SX_NAME(narrow_vector)(__m512 v)
{
#if SX_BF16
    return _mm512_cvtepi32_epi16(_mm512_srli_epi32(SX_NAME(bfloat16_in_high_half)(v), 16));
#else
    return _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
#endif
}
SX_ALWAYS_INLINE SX_TARGET __m512i SX_NAME(narrow_pair)(__m512 low, __m512 high)
{
#if SX_BF16
    /* the odd 16-bit words of low, then those of high */
    const __m512i odd = _mm512_set_epi16(63, 61, 59, 57, 55, 53, 51, 49, 47, 45, 43, 41, 39, 37,
                                         35, 33, 31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7,
                                         5, 3, 1);
    return _mm512_permutex2var_epi16(SX_NAME(bfloat16_in_high_half)(low), odd,
                                     SX_NAME(bfloat16_in_high_half)(high));
#else
    return _mm512_inserti64x4(_mm512_castsi256_si512(SX_NAME(narrow_vector)(low)),
                              SX_NAME(narrow_vector)(high), 1);
#endif
}
/* The source is read by LOAD(p) and LOAD_MASKED(mask, p), 16 float32 values
 * a vector: from float32 (SX_LOAD_F32), or widened from 16 bits as they are
 * loaded (SX_LOAD_WIDE, log_normalize_to). */
#define SX_LOAD_F32(p) _mm512_loadu_ps(p)
#define SX_LOAD_F32_MASKED(mask, p) _mm512_maskz_loadu_ps(mask, p)
#define SX_NARROW_VALUE_512(VALUE, x) VALUE(x, _mm512_mul_ps, _mm512_sub_ps, _mm512_set1_ps)
#define SX_NARROW_PAIR(src, VALUE, LOAD)                                                      \
    SX_NAME(narrow_pair)(SX_NARROW_VALUE_512(VALUE, LOAD(src)),                               \
                         SX_NARROW_VALUE_512(VALUE, LOAD((src) + 16)))
#define SX_NARROW_LOOP_FROM(src, dst, n, VALUE, LOAD, LOAD_MASKED)                            \
    for (; i + 32 <= (n); i += 32) {                                                          \
        _mm512_storeu_si512((void *)((dst) + i), SX_NARROW_PAIR((src) + i, VALUE, LOAD));     \
    }                                                                                         \
    for (; i < (n); i += 16) {                                                                \
        const __mmask16 sx_mask =                                                             \
            (n) - i >= 16 ? (__mmask16)0xffffu : (__mmask16)((1u << ((n) - i)) - 1u);         \
        _mm256_mask_storeu_epi16(                                                             \
            (dst) + i, sx_mask,                                                               \
            SX_NAME(narrow_vector)(SX_NARROW_VALUE_512(VALUE, LOAD_MASKED(sx_mask, (src) + i)))); \
    }
#define SX_NARROW_LOOP(src, dst, n, VALUE)                                                    \
    SX_NARROW_LOOP_FROM(src, dst, n, VALUE, SX_LOAD_F32, SX_LOAD_F32_MASKED)
#else
/* A group of SX_NARROW_WIDTH values: one hardware conversion, or the generic
 * loop (branch-free, so it vectorises); the partial group on a padded copy. */
#if defined(SX_F16C_WIDTH)
#define SX_NARROW_WIDTH SX_F16C_WIDTH
#define SX_NARROW_GROUP(src, dst, VALUE)                                                      \
    SX_F16C_STORE_PH(dst, SX_F16C(cvtps_ph)(VALUE(SX_F16C(loadu_ps)(src), SX_F16C(mul_ps),    \
                                                  SX_F16C(sub_ps), SX_F16C(set1_ps)),         \
                                            _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
#elif SX_HALF_HW == SX_HALF_HW_NEON && !SX_BF16
/* FCVTN rounds as FPCR says: to nearest even unless a caller changed it */
#define SX_NARROW_WIDTH 4
#define SX_NARROW_GROUP(src, dst, VALUE)                                                      \
    vst1_u16(dst, vreinterpret_u16_f16(                                                       \
                      vcvt_f16_f32(VALUE(vld1q_f32(src), vmulq_f32, vsubq_f32, vdupq_n_f32))));
#else
#define SX_NARROW_WIDTH 16
#define SX_NARROW_GROUP(src, dst, VALUE)                                                      \
    SX_PRAGMA(omp simd)                                                                       \
    for (ptrdiff_t j = 0; j < SX_NARROW_WIDTH; ++j) {                                         \
        (dst)[j] = SX_NAME(sx_narrow)(SX_SCALAR_VALUE(VALUE, (src)[j]));                      \
    }
/* whole groups as one loop: the compilers vectorise it as they did before
   the groups (clang then computes the same NaN as the float32 primitives) */
#define SX_NARROW_WHOLE_GROUPS(src, dst, n, VALUE)                                            \
    {                                                                                         \
        const ptrdiff_t sx_end = i + ((n) - i) / SX_NARROW_WIDTH * SX_NARROW_WIDTH;           \
        SX_PRAGMA(omp simd)                                                                   \
        for (ptrdiff_t j = i; j < sx_end; ++j) {                                              \
            (dst)[j] = SX_NAME(sx_narrow)(SX_SCALAR_VALUE(VALUE, (src)[j]));                  \
        }                                                                                     \
        i = sx_end;                                                                           \
    }
#endif
#ifndef SX_NARROW_WHOLE_GROUPS
#define SX_NARROW_WHOLE_GROUPS(src, dst, n, VALUE)                                            \
    for (; i + SX_NARROW_WIDTH <= (n); i += SX_NARROW_WIDTH) {                                \
        SX_NARROW_GROUP((src) + i, (dst) + i, VALUE)                                          \
    }
#endif
#define SX_NARROW_LOOP(src, dst, n, VALUE)                                                    \
    SX_NARROW_WHOLE_GROUPS(src, dst, n, VALUE)                                                \
    if (i < (n)) {                                                                            \
        float sx_padded[SX_NARROW_WIDTH] = {0};                                               \
        uint16_t sx_narrowed[SX_NARROW_WIDTH];                                                \
        for (ptrdiff_t j = 0; j < (n) - i; ++j) { sx_padded[j] = (src)[i + j]; }              \
        SX_NARROW_GROUP(sx_padded, sx_narrowed, VALUE)                                        \
        for (ptrdiff_t j = 0; j < (n) - i; ++j) { (dst)[i + j] = sx_narrowed[j]; }            \
    }
#endif

/* The values VALUE(v, MUL, SUB, SET) that the narrowing loops round: v as
 * it is, v * factor, (v - shift) - log_sum (row_log_normalize's order), with
 * factor, shift and log_sum floats in the caller's scope. */
#define SX_AS_IS(v, MUL, SUB, SET) (v)
#define SX_SCALED(v, MUL, SUB, SET) MUL(v, SET(factor))
#define SX_LOG_NORMALIZED(v, MUL, SUB, SET) SUB(SUB(v, SET(shift)), SET(log_sum))

/* dst[i] = narrow(VALUE(src[i])) for i in [0, n), by streaming stores for
 * `stream` where the instantiation has them (AVX-512: SX_STREAM_STORES and
 * its narrowing):
 * each whole 64-byte line of dst is narrowed in a vector register
 * (narrow_pair; not through the stack: two 32-byte stores read back as one
 * 64-byte load stall store forwarding, 1.1-1.2x the time of ordinary
 * stores), and streamed; the partial lines at either end (shared
 * with the neighbouring rows) are stored as usual.  dst is aligned to 2
 * bytes (check_view), so a 64-byte boundary falls on an element.  The same
 * bits either way. */
#if defined(SX_STREAM_STORES) && SX_HALF_HW == SX_HALF_HW_AVX512
/* The streamed loop over [0, n), the source read as in SX_NARROW_LOOP_FROM. */
#define SX_STREAM_NARROWED(src, dst, n, VALUE, LOAD, LOAD_MASKED)                              \
    do {                                                                                       \
        ptrdiff_t i = 0;                                                                       \
        const ptrdiff_t sx_head =                                                              \
            SX_MIN((n), (ptrdiff_t)(((0u - (uintptr_t)(dst)) & 63u) / sizeof(uint16_t)));      \
        SX_NARROW_LOOP_FROM(src, dst, sx_head, VALUE, LOAD, LOAD_MASKED)                       \
        for (i = sx_head; i + 32 <= (n); i += 32) {                                            \
            _mm512_stream_si512((__m512i *)((dst) + i), SX_NARROW_PAIR((src) + i, VALUE, LOAD)); \
        }                                                                                      \
        SX_NARROW_LOOP_FROM(src, dst, n, VALUE, LOAD, LOAD_MASKED)                             \
    } while (0)
#define SX_NARROW_ROW_TO(src, dst, n, VALUE, stream)                                           \
    do {                                                                                       \
        if (stream) {                                                                          \
            SX_STREAM_NARROWED(src, dst, n, VALUE, SX_LOAD_F32, SX_LOAD_F32_MASKED);           \
        } else {                                                                               \
            ptrdiff_t i = 0;                                                                   \
            SX_NARROW_LOOP(src, dst, n, VALUE)                                                 \
        }                                                                                      \
    } while (0)
#else
#define SX_NARROW_ROW_TO(src, dst, n, VALUE, stream) \
    do {                                             \
        ptrdiff_t i = 0;                             \
        (void)(stream);                              \
        SX_NARROW_LOOP(src, dst, n, VALUE)           \
    } while (0)
#endif

/* dst[i] = narrow(src[i] * factor) for one row of n values, the product
 * formed in float32 (exact, so skipped, when factor is 1), by streaming
 * stores for `stream` (see SX_NARROW_ROW_TO). */
SX_ALWAYS_INLINE SX_TARGET void SX_NAME(narrow_row_to)(const float *src, uint16_t *dst,
                                                        ptrdiff_t n, float factor, int stream)
{
    if (factor == 1.0f) {
        SX_NARROW_ROW_TO(src, dst, n, SX_AS_IS, stream);
    } else {
        SX_NARROW_ROW_TO(src, dst, n, SX_SCALED, stream);
    }
}

/* out = narrow((x - shift) - log_sum) for the float32 row x: row_log_normalize
 * and the narrowing in one sweep, the float32 values as row_log_normalize
 * forms them. */
static SX_TARGET void SX_NAME(row_log_normalize_store)(const float *x, void *outv, ptrdiff_t n,
                                                        double shift_d, double log_sum_d)
{
    const float shift = (float)shift_d, log_sum = (float)log_sum_d;
    SX_NARROW_ROW_TO(x, (uint16_t *)outv, n, SX_LOG_NORMALIZED, 0);
}

/* dst[r*ldd + i] = widen(src[r*lds + i]) for a (rows, n) tile (one row of
 * rows * n values when both are contiguous: short rows keep the vector loop). */
static SX_TARGET void SX_NAME(load)(const void *src, ptrdiff_t lds, float *dst, ptrdiff_t ldd,
                                    ptrdiff_t rows, ptrdiff_t n)
{
    if (rows > 1 && lds == n && ldd == n) {
        SX_NAME(widen_row)((const uint16_t *)src, dst, rows * n);
        return;
    }
    for (ptrdiff_t r = 0; r < rows; ++r) {
        SX_NAME(widen_row)((const uint16_t *)src + r * lds, dst + r * ldd, n);
    }
}

/* dst[r*ldd + i] = narrow(src[r*lds + i]) for a (rows, n) tile (as load does). */
static SX_TARGET void SX_NAME(store)(const float *src, ptrdiff_t lds, void *dst, ptrdiff_t ldd,
                                     ptrdiff_t rows, ptrdiff_t n)
{
    if (rows > 1 && lds == n && ldd == n) {
        SX_NAME(narrow_row_to)(src, (uint16_t *)dst, rows * n, 1.0f, 0);
        return;
    }
    for (ptrdiff_t r = 0; r < rows; ++r) {
        SX_NAME(narrow_row_to)(src + r * lds, (uint16_t *)dst + r * ldd, n, 1.0f, 0);
    }
}

/* ---- row primitives on 16-bit storage ------------------------------------
 * The float32 row primitives of this instruction set, run on one SX_BLOCK
 * of widened values at a time in a 64-byte aligned buffer on the stack (in
 * L1), with the block and chunk sums added in the order in which the float32
 * primitive adds them over a whole row (row_kernels_impl.h).  The results
 * are therefore the bits of the float32 primitive on the widened row, with
 * no pass that writes a float32 copy of it. */
#define SX_F32(f) SX_CAT3(f, f32, SX_ISA)
#define SX_BLOCK_BUFFER(name)                                                             \
    float name##_storage[SX_BLOCK + 16];                                                  \
    float *name = name##_storage + ((0u - (unsigned)((uintptr_t)name##_storage / sizeof(float))) & 15u)

/* Sets `total` to the sum of the row's block sums: ADD_BLOCK(block, len, sum)
 * adds to `sum` the float32 primitive's result over the widened block in
 * `wide`. */
#define SX_BLOCKWISE_SUM(x, n, wide, ADD_BLOCK)                                     \
    double total = 0.0;                                                             \
    for (ptrdiff_t chunk = 0; chunk < (n); chunk += SX_CHUNK) {                     \
        const ptrdiff_t chunk_end = SX_MIN((n), chunk + SX_CHUNK);                  \
        double chunk_sum = 0.0;                                                     \
        for (ptrdiff_t block = chunk; block < chunk_end; block += SX_BLOCK) {       \
            const ptrdiff_t len = SX_MIN(SX_BLOCK, chunk_end - block);              \
            SX_NAME(widen_row)((x) + block, wide, len);                             \
            ADD_BLOCK(block, len, chunk_sum)                                        \
        }                                                                           \
        total += chunk_sum;                                                         \
    }

/* The bits of a 16-bit value as an int16 key ordered as the values are
 * (sign-magnitude to two's complement: negative values have their magnitude
 * bits flipped); the map is its own inverse.  NaNs sit outside [-inf, inf]. */
SX_ALWAYS_INLINE SX_TARGET int16_t SX_NAME(sx_order_key)(uint16_t h)
{
    return (int16_t)(h ^ ((uint16_t)((int16_t)h >> 15) & 0x7fffu));
}

/* row_max of the widened row, and its smallest value in *low, found on
 * order keys without widening: 32 lanes of int16 (one AVX-512 vector), NaN
 * and the padding of the last group counted as -inf for the max, +inf for
 * the min.  Equal values give equal keys except -0 and +0: here +0 wins,
 * in float32 whichever comes first, and either gives the same results as
 * the shift. */
static SX_TARGET double SX_NAME(row_max)(const void *xv, ptrdiff_t n, double *low)
{
#define SX_KEYS 32
    const uint16_t *x = (const uint16_t *)xv;
    const uint16_t inf_bits = SX_BF16 ? 0x7f80u : 0x7c00u;
    const int16_t minus_inf = SX_NAME(sx_order_key)((uint16_t)(inf_bits | 0x8000u));
    const int16_t plus_inf = SX_NAME(sx_order_key)(inf_bits);
    int16_t highest[SX_KEYS], lowest[SX_KEYS];
    for (ptrdiff_t j = 0; j < SX_KEYS; ++j) {
        highest[j] = minus_inf;
        lowest[j] = plus_inf;
    }
#define SX_KEEP_EXTREMES(h, j)                                                              \
    do {                                                                                    \
        const int16_t key = SX_NAME(sx_order_key)(h);                                       \
        const int16_t high_key = ((h) & 0x7fffu) > inf_bits ? minus_inf : key;              \
        const int16_t low_key = ((h) & 0x7fffu) > inf_bits ? plus_inf : key;                \
        highest[j] = high_key > highest[j] ? high_key : highest[j];                         \
        lowest[j] = low_key < lowest[j] ? low_key : lowest[j];                              \
    } while (0)
    ptrdiff_t i = 0;
    for (; i + SX_KEYS <= n; i += SX_KEYS) {
        SX_PRAGMA(omp simd)
        for (ptrdiff_t j = 0; j < SX_KEYS; ++j) { SX_KEEP_EXTREMES(x[i + j], j); }
    }
    SX_PRAGMA(omp simd)
    for (ptrdiff_t j = 0; j < SX_KEYS; ++j) {
        if (i + j < n) { SX_KEEP_EXTREMES(x[i + j], j); }
    }
#undef SX_KEEP_EXTREMES
    int16_t best = minus_inf, least = plus_inf;
    for (ptrdiff_t j = 0; j < SX_KEYS; ++j) {
        best = highest[j] > best ? highest[j] : best;
        least = lowest[j] < least ? lowest[j] : least;
    }
    *low = SX_NAME(sx_widen)((uint16_t)SX_NAME(sx_order_key)((uint16_t)least));
    return SX_NAME(sx_widen)((uint16_t)SX_NAME(sx_order_key)((uint16_t)best));
#undef SX_KEYS
}

/* Fetches the lines of `ahead` (the next row, or NULL) matching one block. */
#define SX_FETCH_BLOCK_AHEAD(block, len)                                                 \
    if (ahead != NULL) {                                                                 \
        for (ptrdiff_t line = 0; line < (len); line += 64 / (ptrdiff_t)sizeof *ahead) {  \
            SX_PREFETCH(ahead + (block) + line);                                         \
        }                                                                                \
    }

/* row_exp_sum of the widened row (tame exps as row_exp_sum takes them); the
 * float32 terms go to out unless it is NULL.  Each block also fetches the
 * same block of `ahead` unless it is NULL: the next row's first sweep then
 * reads the cache instead of waiting on memory, its loads overlapping this
 * sweep's arithmetic. */
static SX_TARGET double SX_NAME(row_exp_sum)(const void *xv, float *out, ptrdiff_t n, double shift,
                                             double low, const void *aheadv)
{
    const uint16_t *x = (const uint16_t *)xv, *ahead = (const uint16_t *)aheadv;
    SX_BLOCK_BUFFER(wide);
#define SX_EXP_BLOCK(block, len, sum)                                                     \
    SX_FETCH_BLOCK_AHEAD(block, len)                                                      \
    sum += SX_F32(row_exp_sum)(wide, out != NULL ? out + (block) : NULL, len, shift, low, \
                               NULL);
    SX_BLOCKWISE_SUM(x, n, wide, SX_EXP_BLOCK)
#undef SX_EXP_BLOCK
    return total;
}

/* row_exp_excess of the widened row, fetching `ahead` as row_exp_sum. */
static SX_TARGET double SX_NAME(row_exp_excess)(const void *xv, ptrdiff_t n, double shift,
                                                double low, double *ties, const void *aheadv)
{
    const uint16_t *x = (const uint16_t *)xv, *ahead = (const uint16_t *)aheadv;
    SX_BLOCK_BUFFER(wide);
    double block_ties, tie_count = 0.0;
#define SX_EXCESS_BLOCK(block, len, sum)                                           \
    SX_FETCH_BLOCK_AHEAD(block, len)                                               \
    sum += SX_F32(row_exp_excess)(wide, len, shift, low, &block_ties, NULL);       \
    tie_count += block_ties;
    SX_BLOCKWISE_SUM(x, n, wide, SX_EXCESS_BLOCK)
#undef SX_EXCESS_BLOCK
#undef SX_FETCH_BLOCK_AHEAD
    *ties = tie_count;
    return total;
}

/* out = narrow(e * factor), the product in float32 as row_scale forms it. */
static SX_TARGET void SX_NAME(row_scale_store)(const float *e, void *outv, ptrdiff_t n,
                                                double factor_d)
{
    SX_NAME(narrow_row_to)(e, (uint16_t *)outv, n, (float)factor_d, 0);
}

/* row_scale_store by streaming stores (see SX_NARROW_ROW_TO). */
static SX_TARGET void SX_NAME(row_scale_store_stream)(const float *e, void *outv, ptrdiff_t n,
                                                       double factor_d)
{
    SX_NAME(narrow_row_to)(e, (uint16_t *)outv, n, (float)factor_d, 1);
}

#if defined(SX_STREAM_STORES) && SX_HALF_HW == SX_HALF_HW_AVX512
/* 16 values widened, exact (float16 by VCVTPH2PS, bfloat16 moved up 16 bits). */
SX_ALWAYS_INLINE SX_TARGET __m512 SX_NAME(widen_vector)(__m256i h)
{
#if SX_BF16
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
#else
    return _mm512_cvtph_ps(h);
#endif
}

/* 16 values loaded from 16 bits and widened (SX_NARROW_LOOP_FROM's LOAD) */
#define SX_LOAD_WIDE(p) SX_NAME(widen_vector)(_mm256_loadu_si256((const __m256i *)(p)))
#define SX_LOAD_WIDE_MASKED(mask, p) SX_NAME(widen_vector)(_mm256_maskz_loadu_epi16(mask, p))
#endif

/* out = narrow(row_log_normalize of the widened row); out may be x.  With
 * `stream` (AVX-512) it stays in vector registers from the 16-bit loads to
 * the streamed lines: through a float32 block on the stack, each block's
 * loads came right after the previous block's streaming stores and stalled
 * on them (float16 / bfloat16 log_softmax of (512, 32000) 1.3-1.9x the
 * time, varying with where the buffer fell). */
SX_ALWAYS_INLINE SX_TARGET void SX_NAME(log_normalize_to)(const uint16_t *x, uint16_t *out,
                                                           ptrdiff_t n, double shift_d,
                                                           double log_sum_d, int stream)
{
    const float shift = (float)shift_d, log_sum = (float)log_sum_d;
#if defined(SX_STREAM_STORES) && SX_HALF_HW == SX_HALF_HW_AVX512
    if (stream) {
        SX_STREAM_NARROWED(x, out, n, SX_LOG_NORMALIZED, SX_LOAD_WIDE, SX_LOAD_WIDE_MASKED);
        return;
    }
#endif
    SX_BLOCK_BUFFER(wide);
    for (ptrdiff_t block = 0; block < n; block += SX_BLOCK) {
        const ptrdiff_t len = SX_MIN(SX_BLOCK, n - block);
        SX_NAME(widen_row)(x + block, wide, len);
        SX_NARROW_ROW_TO(wide, out + block, len, SX_LOG_NORMALIZED, 0);
    }
}

static SX_TARGET void SX_NAME(row_log_normalize)(const void *x, void *out, ptrdiff_t n,
                                                  double shift, double log_sum)
{
    SX_NAME(log_normalize_to)((const uint16_t *)x, (uint16_t *)out, n, shift, log_sum, 0);
}

/* row_log_normalize by streaming stores (see log_normalize_to). */
static SX_TARGET void SX_NAME(row_log_normalize_stream)(const void *x, void *out, ptrdiff_t n,
                                                         double shift, double log_sum)
{
    SX_NAME(log_normalize_to)((const uint16_t *)x, (uint16_t *)out, n, shift, log_sum, 1);
}

#undef SX_BLOCKWISE_SUM
#undef SX_BLOCK_BUFFER
#undef SX_F32

static const sx_half_table SX_NAME(sx_half_table) = {
    SX_NAME(load),           SX_NAME(store),           SX_NAME(row_max), SX_NAME(row_exp_sum),
    SX_NAME(row_exp_excess), SX_NAME(row_scale_store), SX_NAME(row_scale_store_stream),
    SX_NAME(row_log_normalize), SX_NAME(row_log_normalize_stream),
    SX_NAME(row_log_normalize_store),
};

#undef SX_NARROW_LOOP
#undef SX_NARROW_LOOP_FROM
#undef SX_STREAM_NARROWED
#undef SX_LOAD_F32
#undef SX_LOAD_F32_MASKED
#undef SX_LOAD_WIDE
#undef SX_LOAD_WIDE_MASKED
#undef SX_NARROW_VALUE_512
#undef SX_NARROW_PAIR
#undef SX_NARROW_GROUP
#undef SX_NARROW_WHOLE_GROUPS
#undef SX_NARROW_WIDTH
#undef SX_SCALAR_VALUE
#undef SX_SCALAR_MUL
#undef SX_SCALAR_SUB
#undef SX_SCALAR_SET
#undef SX_F16C_WIDTH
#undef SX_F16C_PS
#undef SX_F16C_PH
#undef SX_F16C
#undef SX_F16C_LOAD_PH
#undef SX_F16C_STORE_PH
#undef SX_NARROW_ROW_TO
#undef SX_AS_IS
#undef SX_SCALED
#undef SX_LOG_NORMALIZED
