# Softmax over an axis split across blocks (the kernels of softmax_ext.dask).
# Included by _kernels.pyx, whose primitives (sx_table) and checks it uses.
#
# Design
# ------
# When the reduced axis of a softmax is cut into blocks that no single call
# sees whole, each block first reports per-slice statistics (split_stats);
# the caller merges them over the blocks exactly as logsumexp merges (in
# softmax_ext/_split.py); then each block is normalised with the merged
# values (split_finish).  Forward statistics are those of the whole-row
# logsumexp: the max m (NaN ignored), and the sum of exp(x - m) split into
# the terms equal to 1 (ties, counted) and the rest (excess), so that a
# dominant term keeps the small ones' digits (log_sum_exp).  Backward statistics are
# the dot product <g, p> (softmax) or sum(g) (log_softmax).
#
# Views are (outer, K, inner): a contiguous K when inner == 1 (row
# primitives), else column strips of TILE_WIDTH contiguous columns reduced down
# a strided K (column primitives).  Statistics and parameters are float64,
# (outer, inner, columns), C-contiguous.

cdef enum:
    SPLIT_FORWARD_STATS = 3   # max, excess, ties
    SPLIT_BACKWARD_STATS = 1  # <g, p> or sum(g)
    SPLIT_PARAMS = 2          # shift, total


cdef void row_split_stats(const sx_table *t, int op, const floating *x, const floating *g,
                          Py_ssize_t K, double *stats, const floating *ahead) noexcept nogil:
    """A slice's statistics; the forward exp sweep fetches the row `ahead`
    (or NULL) into cache, as whole_rows does."""
    cdef double m, low, shift, ties
    if is_backward(op):
        stats[0] = backward_reduce(t, op, x, g, K)
        return
    m = t.row_max(x, K, &low)
    shift = forward_shift(LOGSUMEXP, m)
    stats[1] = t.row_exp_excess(x, K, shift, sweep_low(shift, m, low), &ties, ahead)
    stats[0] = m
    stats[2] = ties


cdef void strip_split_stats(const sx_table *t, int op, const floating *x, Py_ssize_t ldx,
                            const floating *g, Py_ssize_t ldg, Py_ssize_t K, Py_ssize_t w,
                            double *stats, Py_ssize_t columns) noexcept nogil:
    cdef floating m[TILE_WIDTH]
    cdef floating shift[TILE_WIDTH]
    cdef double total[TILE_WIDTH]
    cdef double ties[TILE_WIDTH]
    cdef Py_ssize_t j
    if is_backward(op):
        t.col_dot(g, ldg, x if op == SOFTMAX_BACKWARD else NULL, ldx, K, w, total,
                  NULL, NULL, 0)
        for j in range(w):
            stats[j * columns] = total[j]
        return
    t.col_max(x, ldx, K, w, m, NULL, 0)
    for j in range(w):
        shift[j] = <floating>forward_shift(LOGSUMEXP, m[j])
    t.col_exp_excess(x, ldx, K, w, shift, total, ties)
    for j in range(w):
        stats[j * columns] = m[j]
        stats[j * columns + 1] = total[j]
        stats[j * columns + 2] = ties[j]


cdef void row_split_finish(const sx_table *t, int op, const floating *x, const floating *g,
                           floating *out, Py_ssize_t K, const double *params,
                           const floating *ahead) noexcept nogil:
    """A slice's result from its merged `params`; softmax's exp sweep
    fetches the row `ahead` (or NULL) into cache."""
    if is_backward(op):
        backward_finish(t, op, x, g, out, K, params[1], False)
        return
    if op == SOFTMAX:
        t.row_exp_sum(x, out, K, params[0], -INFINITY, ahead)
    forward_finish(t, op, x, out, K, params[0], params[1], False)


cdef void strip_split_finish(const sx_table *t, int op, const floating *x, Py_ssize_t ldx,
                             const floating *g, Py_ssize_t ldg, floating *out, Py_ssize_t ldo,
                             Py_ssize_t K, Py_ssize_t w, const double *params) noexcept nogil:
    cdef floating shift[TILE_WIDTH]
    cdef floating param[TILE_WIDTH]
    cdef double unused_sum[TILE_WIDTH]
    cdef Py_ssize_t j
    for j in range(w):
        shift[j] = <floating>params[j * SPLIT_PARAMS]
        if op == SOFTMAX:
            param[j] = <floating>(1.0 / params[j * SPLIT_PARAMS + 1])
        elif op == LOG_SOFTMAX:
            param[j] = <floating>log(params[j * SPLIT_PARAMS + 1])
        else:
            param[j] = <floating>params[j * SPLIT_PARAMS + 1]
    if op == SOFTMAX:
        t.col_exp_sum(x, ldx, out, ldo, K, w, shift, False, unused_sum)
        t.col_scale(out, ldo, out, ldo, K, w, param)
    elif op == LOG_SOFTMAX:
        t.col_log_normalize(x, ldx, out, ldo, K, w, shift, param)
    elif op == SOFTMAX_BACKWARD:
        t.col_softmax_bwd(x, ldx, g, ldg, out, ldo, K, w, param)
    else:
        t.col_log_softmax_bwd(x, ldx, g, ldg, out, ldo, K, w, param)


cdef void split_kernel(bint finish, int op, const floating *x, Py_ssize_t xo, Py_ssize_t xk,
                       const floating *g, Py_ssize_t go, Py_ssize_t gk,
                       floating *out, Py_ssize_t oo, Py_ssize_t ok,
                       double *table, Py_ssize_t columns,
                       Py_ssize_t outer, Py_ssize_t K, Py_ssize_t inner,
                       int num_threads) noexcept nogil:
    """split_stats (finish false: `table` receives the statistics) or
    split_finish (finish true: `table` holds the parameters) over every slice."""
    cdef const sx_table *t = table_for(x)
    cdef bint contiguous_rows = inner == 1 and (K == 1 or (
        xk == 1 and (g == NULL or gk == 1) and (out == NULL or ok == 1)))
    cdef Py_ssize_t tiles = (inner + TILE_WIDTH - 1) // TILE_WIDTH
    cdef Py_ssize_t it, o, j0, w
    cdef bint ahead = fetch_ahead(K, sizeof(floating))
    cdef const floating *next_row
    if contiguous_rows:
        for o in prange(outer, schedule="static", num_threads=num_threads):
            next_row = row_to_fetch(x, xo, o + 1, outer, ahead)
            if finish:
                row_split_finish(t, op, x + o * xo, at(g, o * go), <floating *>at(out, o * oo),
                                 K, table + o * columns, next_row)
            else:
                row_split_stats(t, op, x + o * xo, at(g, o * go), K, table + o * columns,
                                next_row)
        return
    for it in prange(outer * tiles, schedule="static", num_threads=num_threads):
        o = it // tiles
        j0 = (it % tiles) * TILE_WIDTH
        w = min(<Py_ssize_t>TILE_WIDTH, inner - j0)
        if finish:
            strip_split_finish(t, op, x + o * xo + j0, xk, at(g, o * go + j0), gk,
                               <floating *>at(out, o * oo + j0), ok, K, w,
                               table + (o * inner + j0) * columns)
        else:
            strip_split_stats(t, op, x + o * xo + j0, xk, at(g, o * go + j0), gk, K, w,
                              table + (o * inner + j0) * columns, columns)


def split_stats(*, int op, const floating[:, :, :] x not None,
                const floating[:, :, :] grad=None, double[:, :, ::1] stats not None,
                int num_threads):
    """Per-slice statistics of one block of a reduced axis split over blocks.

    x is (outer, K, inner): K contiguous when inner == 1, else inner
    contiguous.  Forward ops (SOFTMAX, LOG_SOFTMAX, LOGSUMEXP) write
    stats[o, j] = (m, excess, ties): m the max over k (NaN ignored, -inf when
    there is none), and row_exp_excess's sums relative to m (relative to 0
    when m is infinite).  The backward ops write stats[o, j, 0] = <g, p>
    (SOFTMAX_BACKWARD, x holding p) or sum(g) (LOG_SOFTMAX_BACKWARD).
    """
    cdef Py_ssize_t size = sizeof(floating)
    cdef Py_ssize_t outer = x.shape[0], K = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t columns = SPLIT_BACKWARD_STATS if is_backward(op) else SPLIT_FORWARD_STATS
    cdef const floating *gp = NULL
    cdef Py_ssize_t go = 0, gk = 0
    check_op(op, grad is not None)
    check_threads(num_threads)
    shape = (outer, K, inner)
    check_view("x", 3, &x.shape[0], &x.strides[0], &x[0, 0, 0], size, shape, True)
    check_view("stats", 3, &stats.shape[0], &stats.strides[0], &stats[0, 0, 0], sizeof(double),
               (outer, inner, columns), True)
    if grad is not None:
        check_view("grad", 3, &grad.shape[0], &grad.strides[0], &grad[0, 0, 0], size, shape,
                   True)
        gp, go, gk = &grad[0, 0, 0], grad.strides[0] // size, grad.strides[1] // size
    if outer == 0 or inner == 0:
        return
    if K == 0:  # no terms: max -inf, sums 0
        stats[:, :, :] = 0.0
        if columns == SPLIT_FORWARD_STATS:
            stats[:, :, 0] = -INFINITY
        return
    with nogil:
        split_kernel(False, op, &x[0, 0, 0], x.strides[0] // size, x.strides[1] // size,
                     gp, go, gk, NULL, 0, 0, &stats[0, 0, 0], columns, outer, K, inner,
                     num_threads)


def split_finish(*, int op, const floating[:, :, :] x not None,
                 const floating[:, :, :] grad=None, const double[:, :, ::1] params not None,
                 floating[:, :, :] out not None, int num_threads):
    """Normalise one block of a reduced axis split over blocks, from the
    merged per-slice params[o, j] = (shift, total):

    - SOFTMAX: exp(x - shift) / total
    - LOG_SOFTMAX: (x - shift) - log(total)
    - SOFTMAX_BACKWARD: p (g - total), total = <g, p> over the whole slice
    - LOG_SOFTMAX_BACKWARD: g - exp(logp) total, total = sum(g)

    x, grad and out are (outer, K, inner) as in split_stats; out must not
    overlap an input.
    """
    cdef Py_ssize_t size = sizeof(floating)
    cdef Py_ssize_t outer = x.shape[0], K = x.shape[1], inner = x.shape[2]
    cdef const floating *gp = NULL
    cdef Py_ssize_t go = 0, gk = 0
    check_op(op, grad is not None)
    if op == LOGSUMEXP:  # its result is the merged statistics themselves
        raise ValueError(f"unknown op {op} for split_finish")
    check_threads(num_threads)
    shape = (outer, K, inner)
    check_view("x", 3, &x.shape[0], &x.strides[0], &x[0, 0, 0], size, shape, True)
    check_view("out", 3, &out.shape[0], &out.strides[0], &out[0, 0, 0], size, shape, True)
    check_view("params", 3, &params.shape[0], &params.strides[0], &params[0, 0, 0],
               sizeof(double), (outer, inner, SPLIT_PARAMS), True)
    if grad is not None:
        check_view("grad", 3, &grad.shape[0], &grad.strides[0], &grad[0, 0, 0], size, shape,
                   True)
        gp, go, gk = &grad[0, 0, 0], grad.strides[0] // size, grad.strides[1] // size
    if outer == 0 or inner == 0 or K == 0:
        return
    with nogil:
        split_kernel(True, op, &x[0, 0, 0], x.strides[0] // size, x.strides[1] // size,
                     gp, go, gk, &out[0, 0, 0], out.strides[0] // size, out.strides[1] // size,
                     <double *>&params[0, 0, 0], SPLIT_PARAMS, outer, K, inner, num_threads)
