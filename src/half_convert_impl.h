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
 *                8 values per instruction), SX_HALF_HW_NEON (AArch64 FCVTL /
 *                FCVTN, 4 values), or SX_HALF_HW_NONE
 * Otherwise (and always for bfloat16) the conversions are branch-free integer
 * and float operations, so the loops vectorise for every target.  Hardware and
 * software conversions agree on every value but signalling NaNs, which the
 * hardware quiets.
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

/* dst[r*ldd + i] = widen(src[r*lds + i]) for a (rows, n) tile. */
static SX_TARGET void SX_NAME(load)(const void *srcv, ptrdiff_t lds, float *dst, ptrdiff_t ldd,
                                    ptrdiff_t rows, ptrdiff_t n)
{
    const uint16_t *src = (const uint16_t *)srcv;
    for (ptrdiff_t r = 0; r < rows; ++r) {
        ptrdiff_t i = 0;
#if SX_HALF_HW == SX_HALF_HW_F16C && !SX_BF16
        for (; i + 8 <= n; i += 8) {
            const __m128i h = _mm_loadu_si128((const __m128i *)(src + r * lds + i));
            _mm256_storeu_ps(dst + r * ldd + i, _mm256_cvtph_ps(h));
        }
#elif SX_HALF_HW == SX_HALF_HW_NEON && !SX_BF16
        for (; i + 4 <= n; i += 4) {
            const float16x4_t h = vreinterpret_f16_u16(vld1_u16(src + r * lds + i));
            vst1q_f32(dst + r * ldd + i, vcvt_f32_f16(h));
        }
#endif
#pragma omp simd
        for (ptrdiff_t j = i; j < n; ++j) { dst[r * ldd + j] = SX_NAME(sx_widen)(src[r * lds + j]); }
    }
}

/* dst[r*ldd + i] = narrow(src[r*lds + i]) for a (rows, n) tile. */
static SX_TARGET void SX_NAME(store)(const float *src, ptrdiff_t lds, void *dstv, ptrdiff_t ldd,
                                     ptrdiff_t rows, ptrdiff_t n)
{
    uint16_t *dst = (uint16_t *)dstv;
    for (ptrdiff_t r = 0; r < rows; ++r) {
        ptrdiff_t i = 0;
#if SX_HALF_HW == SX_HALF_HW_F16C && !SX_BF16
        for (; i + 8 <= n; i += 8) {
            const __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(src + r * lds + i),
                                              _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            _mm_storeu_si128((__m128i *)(dst + r * ldd + i), h);
        }
#elif SX_HALF_HW == SX_HALF_HW_NEON && !SX_BF16
        for (; i + 4 <= n; i += 4) {
            /* FCVTN rounds as FPCR says: to nearest even unless a caller changed it */
            const float16x4_t h = vcvt_f16_f32(vld1q_f32(src + r * lds + i));
            vst1_u16(dst + r * ldd + i, vreinterpret_u16_f16(h));
        }
#endif
#pragma omp simd
        for (ptrdiff_t j = i; j < n; ++j) { dst[r * ldd + j] = SX_NAME(sx_narrow)(src[r * lds + j]); }
    }
}

static const sx_half_table SX_NAME(sx_half_table) = {SX_NAME(load), SX_NAME(store)};
