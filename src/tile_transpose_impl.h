/* tile_transpose_impl.h -- the tile transpose of one instantiation.
 *
 * Included by row_kernels_impl.h, once per (instruction set, dtype), with its
 * macros defined (SX_T, SX_F64, SX_NAME, SX_TARGET, and SX_TRANSPOSE_256 on
 * the x86 instruction sets with 256-bit vectors).  Short rows (K < SHORT_ROW
 * in _kernels.pyx) run through the column primitives, one row per vector
 * lane: w rows are transposed into a (K, w) tile and the results transposed
 * back.  tile_transpose does either direction,
 *
 *     dst[c * ldd + r] = src[r * lds + c],   0 <= r < rows, 0 <= c < cols.
 *
 * With SX_TRANSPOSE_256 it moves square blocks of one 256-bit vector per row
 * (8 x 8 floats, 4 x 4 doubles) through registers, by unpacks and lane
 * shuffles.  A block at the right edge reads only its valid columns (masked
 * loads, which touch no memory in the masked lanes) and one at the bottom
 * edge writes only its valid rows (sx_store_first).  The scalar loop
 * (strided on one side, which gcc leaves scalar) had cost 47 % of softmax of
 * (65536, 10) float32 and 60 % of log_softmax_backward there (perf, Zen 3);
 * with the blocks, new / old time 0.78-0.83 and 0.72-0.76, K = 8 / 16 / 31
 * 0.65-0.70.
 * Tiles narrower than one block either way (rows of fewer than 8 floats or
 * 4 doubles) stay with the loop: all-edge blocks made softmax of (65536, 3)
 * float32 1.35x slower.  Moving values is exact: every instruction set gives
 * the same bits.
 */

#if defined(SX_TRANSPOSE_256)
#if SX_F64
#define SX_TILE 4 /* values per 256-bit vector: the block's side */
#define SX_V256(f) _mm256_##f##_pd
#define SX_V256_T __m256d
/* lanes below count set: the mask of VMASKMOV */
#define SX_MASK_256(count) \
    _mm256_cmpgt_epi64(_mm256_set1_epi64x((long long)(count)), _mm256_setr_epi64x(0, 1, 2, 3))
#else
#define SX_TILE 8
#define SX_V256(f) _mm256_##f##_ps
#define SX_V256_T __m256
#define SX_MASK_256(count) \
    _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(count)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7))
#endif

/* v[i] (row i of a block) becomes column i of it. */
SX_ALWAYS_INLINE SX_TARGET void SX_NAME(sx_transpose_block)(SX_V256_T v[SX_TILE])
{
#if SX_F64
    /* t0 = v0[0] v1[0] | v0[2] v1[2], t1 = v0[1] v1[1] | v0[3] v1[3], ... */
    const __m256d t0 = _mm256_unpacklo_pd(v[0], v[1]), t1 = _mm256_unpackhi_pd(v[0], v[1]);
    const __m256d t2 = _mm256_unpacklo_pd(v[2], v[3]), t3 = _mm256_unpackhi_pd(v[2], v[3]);
    v[0] = _mm256_permute2f128_pd(t0, t2, 0x20);
    v[1] = _mm256_permute2f128_pd(t1, t3, 0x20);
    v[2] = _mm256_permute2f128_pd(t0, t2, 0x31);
    v[3] = _mm256_permute2f128_pd(t1, t3, 0x31);
#else
    /* pairs of rows interleaved: t[2i] = v[2i][0] v[2i+1][0] v[2i][1] v[2i+1][1] | the same
       of [4] and [5]; t[2i+1] the same of [2], [3] | [6], [7] */
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
    }
    /* u[4q + c] = column c of rows 4q..4q+3 | column c + 4 of them */
    for (int q = 0; q < 8; q += 4) {
        u[q] = _mm256_shuffle_ps(t[q], t[q + 2], 0x44);
        u[q + 1] = _mm256_shuffle_ps(t[q], t[q + 2], 0xEE);
        u[q + 2] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0x44);
        u[q + 3] = _mm256_shuffle_ps(t[q + 1], t[q + 3], 0xEE);
    }
    for (int c = 0; c < 4; ++c) {
        v[c] = _mm256_permute2f128_ps(u[c], u[c + 4], 0x20);
        v[c + 4] = _mm256_permute2f128_ps(u[c], u[c + 4], 0x31);
    }
#endif
}

/* The first `count` (< SX_TILE) lanes of v to dst, by halves, quarters and
 * single lanes: a loop of scalar stores became a call of memcpy per column
 * (gcc), 9 % of softmax of (65536, 10) float32, and VMASKMOV stores were
 * slower still (Zen 3: 1.05-1.08x the time). */
SX_ALWAYS_INLINE SX_TARGET void SX_NAME(sx_store_first)(SX_T *dst, SX_V256_T v, ptrdiff_t count)
{
    ptrdiff_t at = 0;
#if SX_F64
    __m128d part = _mm256_castpd256_pd128(v);
    if (count & 2) {
        _mm_storeu_pd(dst, part);
        part = _mm256_extractf128_pd(v, 1);
        at = 2;
    }
    if (count & 1) { _mm_store_sd(dst + at, part); }
#else
    __m128 part = _mm256_castps256_ps128(v);
    if (count & 4) {
        _mm_storeu_ps(dst, part);
        part = _mm256_extractf128_ps(v, 1);
        at = 4;
    }
    if (count & 2) {
        _mm_storel_epi64((__m128i *)(void *)(dst + at), _mm_castps_si128(part));
        part = _mm_movehl_ps(part, part);
        at += 2;
    }
    if (count & 1) { _mm_store_ss(dst + at, part); }
#endif
}

/* One block at an edge: rows r < nr and columns c < nc of it exist. */
static SX_TARGET void SX_NAME(sx_transpose_edge)(const SX_T *src, ptrdiff_t lds, SX_T *dst,
                                                 ptrdiff_t ldd, ptrdiff_t nr, ptrdiff_t nc)
{
    SX_V256_T v[SX_TILE];
    const __m256i columns = SX_MASK_256(nc);
    for (ptrdiff_t r = 0; r < SX_TILE; ++r) {
        v[r] = r < nr ? SX_V256(maskload)(src + r * lds, columns) : SX_V256(setzero)();
    }
    SX_NAME(sx_transpose_block)(v);
    for (ptrdiff_t c = 0; c < nc; ++c) {
        if (nr == SX_TILE) {
            SX_V256(storeu)(dst + c * ldd, v[c]);
        } else {
            SX_NAME(sx_store_first)(dst + c * ldd, v[c], nr);
        }
    }
}

/* The blocks of a transpose at least one block high and wide. */
static SX_TARGET void SX_NAME(sx_transpose_blocks)(const SX_T *src, ptrdiff_t lds, SX_T *dst,
                                                   ptrdiff_t ldd, ptrdiff_t rows, ptrdiff_t cols)
{
    ptrdiff_t r0 = 0;
    for (; r0 + SX_TILE <= rows; r0 += SX_TILE) {
        ptrdiff_t c0 = 0;
        for (; c0 + SX_TILE <= cols; c0 += SX_TILE) {
            SX_V256_T v[SX_TILE];
            for (ptrdiff_t r = 0; r < SX_TILE; ++r) {
                v[r] = SX_V256(loadu)(src + (r0 + r) * lds + c0);
            }
            SX_NAME(sx_transpose_block)(v);
            for (ptrdiff_t c = 0; c < SX_TILE; ++c) {
                SX_V256(storeu)(dst + (c0 + c) * ldd + r0, v[c]);
            }
        }
        if (c0 < cols) {
            SX_NAME(sx_transpose_edge)(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd,
                                       SX_TILE, cols - c0);
        }
    }
    if (r0 < rows) {
        for (ptrdiff_t c0 = 0; c0 < cols; c0 += SX_TILE) {
            SX_NAME(sx_transpose_edge)(src + r0 * lds + c0, lds, dst + c0 * ldd + r0, ldd,
                                       rows - r0, SX_MIN(SX_TILE, cols - c0));
        }
    }
}
#endif

static SX_TARGET void SX_NAME(tile_transpose)(const void *srcv, ptrdiff_t lds, void *dstv,
                                              ptrdiff_t ldd, ptrdiff_t rows, ptrdiff_t cols)
{
    const SX_T *src = (const SX_T *)srcv;
    SX_T *dst = (SX_T *)dstv;
#if defined(SX_TRANSPOSE_256)
    if (rows >= SX_TILE && cols >= SX_TILE) {
        SX_NAME(sx_transpose_blocks)(src, lds, dst, ldd, rows, cols);
        return;
    }
#endif
    for (ptrdiff_t r = 0; r < rows; ++r) {
        for (ptrdiff_t c = 0; c < cols; ++c) { dst[c * ldd + r] = src[r * lds + c]; }
    }
}

#if defined(SX_TRANSPOSE_256)
#undef SX_TILE
#undef SX_V256
#undef SX_V256_T
#endif
