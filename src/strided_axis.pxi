# Strided-axis kernels of softmax_ext: the reduced axis k is not contiguous.
# Included by _kernels.pyx, whose primitives (sx_table), helpers and sizes
# (TILE_WIDTH, SX_STRIP, STAGE_BYTES, TILE_BYTES_IN_L1) they use.
#
# Design
# ------
# Elements x[o*xo + k*xk + j*xj] are reduced over k as (K, w) tiles: w
# columns side by side, so that the column primitives (col_kernels_impl.h)
# vectorise across j and every sweep walks the strided axis once per tile.
#   unit-stride strips (j contiguous): short ones (TILE_WIDTH columns spanning
#     at most TILE_BYTES_IN_L1) are read once into a per-thread stage that L1
#     keeps between the sweeps; longer ones are swept in place, up to SX_STRIP
#     columns, whose long contiguous runs per strided row the hardware
#     prefetches (strip_kernel);
#   transposed tiles (k contiguous, j strided: short rows of a rows view) are
#     transposed into the stage, computed there as a unit-stride strip and
#     transposed back (transposed_tile).
# Each column's sums run down k in the same order whatever the tile width,
# so the bits do not depend on the strip sizes nor on the thread count.


cdef void strip_kernel(const sx_table *t, int op, const floating *x, Py_ssize_t ldx,
                       const floating *g, Py_ssize_t ldg, floating *out, Py_ssize_t ldo,
                       floating *lse, Py_ssize_t K, Py_ssize_t w, floating *stage) noexcept nogil:
    """One strip of w <= SX_STRIP contiguous columns of a (K, .) slab: the
    column counterpart of whole_rows.

    With `stage` (room for 2*K*w values) the strided operands are read once,
    into a contiguous copy (fused with the max sweep), the middle sweep runs
    in cache, and the last sweep writes `out`: walking a large power-of-two
    stride three times would thrash a few cache sets instead.
    """
    cdef floating shift[SX_STRIP]
    cdef floating param[SX_STRIP]
    cdef double total[SX_STRIP]
    cdef double ties[SX_STRIP]
    cdef Py_ssize_t j
    cdef const floating *src = x
    cdef const floating *grad = g
    cdef Py_ssize_t lds = ldx, ldgrad = ldg
    cdef int tame
    if is_backward(op):
        # sum of g (times p for softmax), copying g (and p) to the stage
        if op == SOFTMAX_BACKWARD:
            t.col_dot(g, ldg, x, ldx, K, w, total, stage, <floating *>at(stage, K * w), w)
        else:
            t.col_dot(g, ldg, NULL, 0, K, w, total, stage, NULL, w)
        if stage != NULL:
            grad, ldgrad = stage, w
            if op == SOFTMAX_BACKWARD:
                src, lds = stage + K * w, w
        for j in range(w):
            param[j] = <floating>total[j]
        if op == SOFTMAX_BACKWARD:
            t.col_softmax_bwd(src, lds, grad, ldgrad, out, ldo, K, w, param)
        else:
            t.col_log_softmax_bwd(src, lds, grad, ldgrad, out, ldo, K, w, param)
        return
    # softmax and log_softmax shift by the max: col_max's verdict holds
    tame = t.col_max(x, ldx, K, w, shift, stage, w)
    if stage != NULL:
        src, lds = stage, w
    for j in range(w):
        shift[j] = <floating>forward_shift(op, shift[j])
    if op == SOFTMAX:
        # exp goes to the stage (in place) when there is one, else straight to out
        t.col_exp_sum(src, lds, stage if stage != NULL else out, w if stage != NULL else ldo,
                      K, w, shift, tame, total)
        for j in range(w):
            param[j] = <floating>(1.0 / total[j])
        if stage != NULL:
            t.col_scale(stage, w, out, ldo, K, w, param)
        else:
            t.col_scale(out, ldo, out, ldo, K, w, param)
        return
    if op == LOG_SOFTMAX:
        t.col_exp_sum(src, lds, NULL, 0, K, w, shift, tame, total)
        for j in range(w):
            param[j] = <floating>log(total[j])
        t.col_log_normalize(src, lds, out, ldo, K, w, shift, param)
    else:
        t.col_exp_excess(src, lds, K, w, shift, total, ties)
        for j in range(w):
            lse[j] = <floating>log_sum_exp(shift[j], total[j], ties[j])


cdef void copy_tile(const sx_table *t, const floating *src, Py_ssize_t sk, Py_ssize_t sj,
                    floating *dst, Py_ssize_t dk, Py_ssize_t dj, Py_ssize_t K,
                    Py_ssize_t w) noexcept nogil:
    """dst[k*dk + j*dj] = src[k*sk + j*sj] for a (K, w) tile: a transpose
    (t.tile_transpose) when k is contiguous on one side and j on the other."""
    cdef Py_ssize_t k, j
    if sk == 1 and dj == 1:
        t.tile_transpose(src, sj, dst, dk, w, K)
    elif sj == 1 and dk == 1:
        t.tile_transpose(src, sk, dst, dj, K, w)
    elif sj == 1 and dj == 1:
        for k in range(K):
            for j in range(w):
                dst[k * dk + j] = src[k * sk + j]
    else:
        for k in range(K):
            for j in range(w):
                dst[k * dk + j * dj] = src[k * sk + j * sj]


cdef void transposed_tile(const sx_table *t, int op,
                          const floating *x, Py_ssize_t xk, Py_ssize_t xj,
                          const floating *g, Py_ssize_t gk, Py_ssize_t gj,
                          floating *out, Py_ssize_t ok, Py_ssize_t oj,
                          floating *lse, Py_ssize_t K, Py_ssize_t w,
                          floating *scratch) noexcept nogil:
    """strip_kernel on a (K, w) tile whose element (k, j) is x[k*xk + j*xj]
    (likewise g and out) with xj != 1: w short rows, transposed into
    `scratch` (room for 2*K*w values) so that the column primitives vectorise
    across rows, computed in place there and transposed back."""
    cdef floating *xs = scratch
    cdef floating *gs = scratch + K * w
    copy_tile(t, x, xk, xj, xs, w, 1, K, w)
    if g != NULL:
        copy_tile(t, g, gk, gj, gs, w, 1, K, w)
    strip_kernel(t, op, xs, w, gs if g != NULL else NULL, w, xs, w, lse, K, w, NULL)
    if out != NULL:
        copy_tile(t, xs, w, 1, out, ok, oj, K, w)


cdef void tiles_kernel(int op, const floating *x, Py_ssize_t xo, Py_ssize_t xk, Py_ssize_t xj,
                       const floating *g, Py_ssize_t go, Py_ssize_t gk, Py_ssize_t gj,
                       floating *out, Py_ssize_t oo, Py_ssize_t ok, Py_ssize_t oj,
                       floating *lse, Py_ssize_t lo, Py_ssize_t lj,
                       Py_ssize_t outer, Py_ssize_t K, Py_ssize_t inner,
                       int num_threads) noexcept nogil:
    """All five operations reducing over k, for elements x[o*xo + k*xk + j*xj]
    (likewise g, out; lse[o*lo + j*lj]), as (K, w) tiles spread over threads.

    Transposed tiles (non-unit columns), and unit-stride strips whose
    TILE_WIDTH columns span at most TILE_BYTES_IN_L1, go through a
    per-thread scratch of at most STAGE_BYTES per operand (see strip_kernel
    and transposed_tile), w shrinking as K grows; other unit-stride strips
    are read in place, up to SX_STRIP columns wide (see TILE_WIDTH).
    Without memory for a scratch, short rows (non-unit columns, which only
    rows views have: k is contiguous there) fall back to whole_rows.
    """
    cdef const sx_table *t = table_for(x)
    cdef Py_ssize_t width = SX_STRIP, tiles, it, o, j0, w
    cdef Py_ssize_t operands = 2 if g != NULL else 1
    cdef Py_ssize_t bytes_per_column = K * operands * <Py_ssize_t>sizeof(floating)
    # The strip primitives index every operand with the same column step 1;
    # any other column stride (short rows of a rows view, whose "columns" are
    # rows) goes through transposed tiles, each operand with its own strides.
    cdef bint unit_columns = xj == 1 and (g == NULL or gj == 1) and (out == NULL or oj == 1)
    cdef bint staged = bytes_per_column * TILE_WIDTH <= TILE_BYTES_IN_L1 or not unit_columns
    cdef floating *scratch = NULL
    if staged:
        width = min(TILE_WIDTH, max(16, STAGE_BYTES // bytes_per_column // 16 * 16))
    while width > TILE_WIDTH and outer * ((inner + width - 1) // width) < \
            TILES_PER_THREAD * num_threads:
        width //= 2
    tiles = (inner + width - 1) // width
    with parallel(num_threads=num_threads):
        scratch = <floating *>malloc(operands * K * width * sizeof(floating)) if staged else NULL
        for it in prange(outer * tiles, schedule="dynamic",
                         chunksize=dynamic_chunk(outer * tiles, num_threads)):
            o = it // tiles
            j0 = (it % tiles) * width
            w = min(width, inner - j0)
            if unit_columns:
                strip_kernel(t, op, x + o * xo + j0, xk, at(g, o * go + j0), gk,
                             <floating *>at(out, o * oo + j0), ok,
                             <floating *>at(lse, o * lo + j0), K, w, scratch)
            elif scratch != NULL:
                transposed_tile(t, op, x + o * xo + j0 * xj, xk, xj, at(g, o * go + j0 * gj), gk, gj,
                                <floating *>at(out, o * oo + j0 * oj), ok, oj,
                                <floating *>at(lse, o * lo + j0 * lj), K, w, scratch)
            else:  # no memory for a tile of short rows: row by row
                whole_rows(t, op, x + o * xo + j0 * xj, xj, at(g, o * go + j0 * gj), gj,
                           <floating *>at(out, o * oo + j0 * oj), oj,
                           <floating *>at(lse, o * lo + j0 * lj), lj, w, K, NULL, False, NULL,
                           NULL, NULL, 0)
        free(scratch)
