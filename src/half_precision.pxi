# float16 and bfloat16 softmax-family kernels: 16-bit storage, float32 arithmetic.
# Included by _kernels.pyx.
#
# Design
# ------
# The Python layer views float16 and ml_dtypes.bfloat16 arrays as uint16 and
# names the format.  No kernel converts a whole array.  Rows longer than
# HALF_TILE, forward, are swept in 16 bits by the sx_half_table row
# primitives (half_convert_impl.h): each widens one SX_BLOCK at a time into
# L1 and runs the float32 primitive on it, so the row's max and exp sweeps
# read 16-bit memory and the last sweep writes it, rounding once to nearest
# even; only softmax's exps are kept in float32, in a per-thread scratch of
# a row.  Everything else (short rows, column strips, the backward ops)
# loads a tile of 16-bit values into a per-thread float32 scratch (rows of
# about HALF_TILE values per operand, in L1, or one whole row), runs the
# float32 code of _kernels.pyx on it in cache, and stores the result back
# rounded: forward rows of SHORT_ROW to HALF_TILE values in their last sweep
# (whole_rows with `narrow`: 0.77-0.98 of the time of a float32 sweep and a
# separate narrowing pass, float16 and bfloat16, K = 32-4096, 1 thread).
# Either way the sums are formed in the float32 routes' order (short rows as
# transposed tiles, column strips, long rows in SX_CHUNK pieces whose sums
# are added in order), so the result is the float32 result
# on the widened input, rounded once, for any thread count.  The rows swept in
# 16 bits write by streaming stores when input and output come to the stream
# footprint (stream_footprint_bytes) and the output is not one the call
# has just allocated (fresh_out), as the float32 rows do (measured,
# new / old time, float16 and bfloat16 softmax and log_softmax: (512, 32000)
# 0.78-0.91 at 2 threads, 0.82-0.89 at 1; (2048, 8192) 0.86-0.98).  A
# backward row longer than HALF_WHOLE_ROW is streamed piece by piece, loading
# each piece once per sweep: the price of never holding a float32 copy of it.

cdef enum:
    # Rows up to this long are held whole in a thread's float32 scratch (4 MiB
    # per operand: the backward operands, softmax's exps); longer backward rows
    # are streamed in SX_CHUNK pieces, and longer softmax rows have their exps
    # computed twice.
    HALF_WHOLE_ROW = 1048576
    # Floats per operand in a tile of rows up to SX_CHUNK long (at least one
    # row): the tile is swept four or five times, so it should stay in L1.
    # Measured (float16, 1 thread): 4096 floats (16 KiB) against SX_CHUNK
    # (64 KiB), softmax of (4096, 1000) 1.40-1.53 against 2.06-2.27 ms,
    # (16384, 128) 0.77-0.81 against 0.87-0.91 ms; 8192 in between.
    HALF_TILE = 4096

# 16-bit formats, passed by the Python layer as `fmt`.
cpdef enum HalfFormat:
    FLOAT16 = 0
    BFLOAT16 = 1


cdef int check_format(int fmt) except -1:
    if fmt != FLOAT16 and fmt != BFLOAT16:
        raise ValueError(f"unknown 16-bit format {fmt}")
    return 0


cdef inline const sx_half_table *half_table(int fmt) noexcept nogil:
    return sx_table_bf16 if fmt == BFLOAT16 else sx_table_f16


cdef void half_rows_tile(const sx_table *t, const sx_half_table *h, int op,
                         const uint16_t *x, Py_ssize_t ldx, const uint16_t *g, Py_ssize_t ldg,
                         uint16_t *out, Py_ssize_t ldo, float *lse, Py_ssize_t n, Py_ssize_t K,
                         float *scratch, Py_ssize_t capacity) noexcept nogil:
    """`op` on n rows of K values, n * K <= capacity (n <= TILE_WIDTH when
    K < SHORT_ROW), through a scratch of 2 * capacity floats (4 * capacity
    for K < SHORT_ROW: the transposed tile follows)."""
    cdef float *xs = scratch
    cdef float *gs = scratch + capacity if g != NULL else NULL
    cdef float *results = xs if out != NULL else NULL
    cdef Py_ssize_t i
    h.load(x, ldx, xs, K, n, K)
    if g != NULL:
        h.load(g, ldg, gs, K, n, K)
    if K < SHORT_ROW and op == SOFTMAX_BACKWARD:  # the float32 route (rows_kernel)
        for i in range(n):
            short_row_softmax_backward(xs + i * K, gs + i * K, xs + i * K, K)
    elif K < SHORT_ROW:
        # element (k, j) of row j at xs[j*K + k]; the transposing scratch follows
        transposed_tile(t, op, xs, 1, K, gs, 1, K, results, 1, K, lse, K, n,
                        scratch + 2 * capacity)
    elif op == SOFTMAX or op == LOG_SOFTMAX:  # the last sweep writes 16 bits
        whole_rows(t, op, xs, K, gs, K, results, K, lse, 1, n, K, NULL, False, NULL, h, out,
                   ldo)
        return
    else:
        whole_rows(t, op, xs, K, gs, K, results, K, lse, 1, n, K, NULL, False, NULL, NULL,
                   NULL, 0)
    if out != NULL:
        h.store(xs, K, out, ldo, n, K)


cdef void half_forward_row(const sx_half_table *h, int op, const uint16_t *x, uint16_t *out,
                           float *lse, Py_ssize_t K, float *exps, Py_ssize_t capacity,
                           const uint16_t *ahead, bint stream) noexcept nogil:
    """Forward `op` on one row of K 16-bit values, read and written in 16 bits
    by the sx_half_table row primitives, fetching the row `ahead` (or NULL)
    into cache meanwhile; with `stream`, `out` is written by streaming stores
    (see STREAM_FOOTPRINT_MIN_BYTES).  softmax keeps its float32 exps in `exps`
    (`capacity` floats); a longer row has them computed again, piece by
    piece, for the normalisation."""
    cdef double low
    cdef double largest = h.row_max(x, K, &low)
    cdef double shift = forward_shift(op, largest)
    cdef double total, ties
    cdef Py_ssize_t piece, start, n
    low = sweep_low(shift, largest, low)
    if op == LOGSUMEXP:
        total = h.row_exp_excess(x, K, shift, low, &ties, ahead)
        lse[0] = <float>log_sum_exp(shift, total, ties)
        return
    total = h.row_exp_sum(x, exps if op == SOFTMAX and K <= capacity else NULL, K, shift, low,
                          ahead)
    if op == LOG_SOFTMAX:
        (h.row_log_normalize_stream if stream else h.row_log_normalize)(x, out, K, shift,
                                                                        log(total))
        return
    for piece in range((K + capacity - 1) // capacity):
        start = piece * capacity
        n = min(capacity, K - start)
        if K > capacity:
            h.row_exp_sum(x + start, exps, n, shift, low, NULL)
        (h.row_scale_store_stream if stream else h.row_scale_store)(exps, out + start, n,
                                                                    1.0 / total)


cdef void half_long_row_backward(const sx_table *t, const sx_half_table *h, int op,
                                 const uint16_t *y, const uint16_t *g, uint16_t *out,
                                 Py_ssize_t K, float *scratch) noexcept nogil:
    """A backward `op` on one row of K > HALF_WHOLE_ROW values, streamed in
    SX_CHUNK pieces through a scratch of 2 * SX_CHUNK floats: the reduction
    over every piece, then the gradient piece by piece."""
    cdef float *ys = scratch
    cdef float *gs = scratch + SX_CHUNK
    cdef double total = 0.0
    cdef Py_ssize_t pieces = (K + SX_CHUNK - 1) // SX_CHUNK, piece, start, n
    for piece in range(pieces):
        start = piece * SX_CHUNK
        n = min(SX_CHUNK, K - start)
        h.load(y + start, 0, ys, 0, 1, n)
        h.load(g + start, 0, gs, 0, 1, n)
        total += backward_reduce(t, op, ys, gs, n)
    for piece in range(pieces):
        start = piece * SX_CHUNK
        n = min(SX_CHUNK, K - start)
        h.load(y + start, 0, ys, 0, 1, n)
        h.load(g + start, 0, gs, 0, 1, n)
        backward_finish(t, op, ys, gs, ys, n, total, False)
        h.store(ys, 0, out + start, 0, 1, n)


cdef int half_forward_rows(const sx_half_table *h, int op, const uint16_t *x, Py_ssize_t ldx,
                           uint16_t *out, Py_ssize_t ldo, float *lse, Py_ssize_t n_rows,
                           Py_ssize_t K, bint fresh_out, int num_threads) noexcept nogil:
    """half_forward_row over the rows, in parallel; softmax's float32 exps go
    to a per-thread scratch of a row, up to HALF_WHOLE_ROW floats; streaming
    stores as rows_kernel's.  Returns -1 when a scratch cannot be allocated."""
    cdef Py_ssize_t capacity = min(K, HALF_WHOLE_ROW) if op == SOFTMAX else 0
    cdef bint ahead = fetch_ahead(K, sizeof(uint16_t))
    cdef bint stream = out != NULL and not fresh_out and streams(2, n_rows * K, sizeof(uint16_t))
    cdef Py_ssize_t r
    cdef float *exps
    cdef int failed = 0
    cdef int *failed_flag = &failed
    with parallel(num_threads=num_threads):
        exps = <float *>malloc(capacity * sizeof(float)) if capacity else NULL
        if capacity and exps == NULL:
            failed_flag[0] = 1
        for r in prange(n_rows, schedule="dynamic",
                        chunksize=dynamic_chunk(n_rows, num_threads)):
            if capacity and exps == NULL:
                continue
            half_forward_row(h, op, x + r * ldx, <uint16_t *>at(out, r * ldo),
                             <float *>at(lse, r), K, exps, capacity,
                             row_to_fetch(x, ldx, r + 1, n_rows, ahead), stream)
        if stream:
            sx_store_fence()
        free(exps)
    return -1 if failed else 0


def rows_half(*, int op, int fmt, const uint16_t[:, :] x not None,
              const uint16_t[:, :] grad=None, uint16_t[:, :] out=None, float[:] lse=None,
              bint fresh_out=False, int num_threads):
    """`rows` for 16-bit storage: x, grad and out hold float16 or bfloat16
    bits (`fmt`), viewed as uint16; `lse` is float32; `fresh_out` as in rows."""
    cdef Py_ssize_t size = sizeof(uint16_t)
    cdef Py_ssize_t n_rows = x.shape[0], K = x.shape[1], per_tile, tiles, it, r0, capacity
    cdef const uint16_t *gp = NULL
    cdef uint16_t *op_ = NULL
    cdef float *lp = NULL
    cdef float *scratch
    cdef Py_ssize_t ldx = x.strides[0] // size, ldg = 0, ldo = 0
    cdef const sx_table *t = sx_table_f32
    cdef const sx_half_table *h = half_table(fmt)
    cdef int failed = 0
    cdef int *failed_flag = &failed
    check_request(op, grad is not None, out is not None, lse is not None, num_threads)
    check_format(fmt)
    shape = (n_rows, K)
    check_view("x", 2, &x.shape[0], &x.strides[0], &x[0, 0], size, shape, True)
    if grad is not None:
        check_view("grad", 2, &grad.shape[0], &grad.strides[0], &grad[0, 0], size, shape, True)
        gp, ldg = &grad[0, 0], grad.strides[0] // size
    if out is not None:
        check_view("out", 2, &out.shape[0], &out.strides[0], &out[0, 0], size, shape, True)
        op_, ldo = &out[0, 0], out.strides[0] // size
    if lse is not None:
        check_view("lse", 1, &lse.shape[0], &lse.strides[0], &lse[0], sizeof(float), (n_rows,),
                   True)
        lp = &lse[0]
    if n_rows == 0:
        return
    if K == 0:
        if lse is not None:
            lse[:] = -INFINITY
        return
    if K > HALF_TILE and not is_backward(op):
        with nogil:
            if half_forward_rows(h, op, &x[0, 0], ldx, op_, ldo, lp, n_rows, K, fresh_out,
                                 num_threads):
                with gil:
                    raise MemoryError("no memory for the per-thread float32 scratch")
        return
    # floats per operand in a thread's scratch: a tile of rows, a whole row
    # up to HALF_WHOLE_ROW, else SX_CHUNK pieces of a streamed row
    capacity = K if SX_CHUNK < K <= HALF_WHOLE_ROW else SX_CHUNK
    if K > SX_CHUNK:
        per_tile = 1
    elif K < SHORT_ROW:
        per_tile = min(TILE_WIDTH, SX_CHUNK // K)
    else:
        per_tile = max(1, HALF_TILE // K)
    tiles = (n_rows + per_tile - 1) // per_tile
    with nogil, parallel(num_threads=num_threads):
        # two operands, and for short rows the transposed tile after them
        scratch = <float *>malloc((4 if K < SHORT_ROW else 2) * capacity * sizeof(float))
        if scratch == NULL:
            failed_flag[0] = 1
        for it in prange(tiles, schedule="dynamic",
                         chunksize=dynamic_chunk(tiles, num_threads)):
            if scratch == NULL:
                continue
            r0 = it * per_tile
            if K > HALF_WHOLE_ROW:
                half_long_row_backward(t, h, op, &x[0, 0] + r0 * ldx, gp + r0 * ldg,
                                       op_ + r0 * ldo, K, scratch)
            else:
                half_rows_tile(t, h, op, &x[0, 0] + r0 * ldx, ldx,
                               <const uint16_t *>at(gp, r0 * ldg), ldg,
                               <uint16_t *>at(op_, r0 * ldo), ldo, <float *>at(lp, r0),
                               min(per_tile, n_rows - r0), K, scratch, capacity)
        free(scratch)
    if failed:
        raise MemoryError("no memory for the per-thread float32 scratch")


def cols_half(*, int op, int fmt, const uint16_t[:, :, :] x not None,
              const uint16_t[:, :, :] grad=None, uint16_t[:, :, :] out=None,
              float[:, :] lse=None, int num_threads):
    """`cols` for 16-bit storage (see rows_half).  Each thread holds a float32
    (K, w) tile per operand, 16 <= w <= TILE_WIDTH: the caller keeps K moderate
    (large K is better served by a rows layout)."""
    cdef Py_ssize_t size = sizeof(uint16_t)
    cdef Py_ssize_t outer = x.shape[0], K = x.shape[1], inner = x.shape[2]
    cdef Py_ssize_t width, tiles, it, o, j0, w
    cdef Py_ssize_t xo = x.strides[0] // size, xk = x.strides[1] // size
    cdef Py_ssize_t go = 0, gk = 0, oo = 0, ok = 0, lo = 0
    cdef const uint16_t *gp = NULL
    cdef uint16_t *op_ = NULL
    cdef float *lp = NULL
    cdef float *xs
    cdef float *gs
    cdef const sx_table *t = sx_table_f32
    cdef const sx_half_table *h = half_table(fmt)
    cdef int failed = 0
    cdef int *failed_flag = &failed
    check_request(op, grad is not None, out is not None, lse is not None, num_threads)
    check_format(fmt)
    shape = (outer, K, inner)
    check_view("x", 3, &x.shape[0], &x.strides[0], &x[0, 0, 0], size, shape, True)
    if grad is not None:
        check_view("grad", 3, &grad.shape[0], &grad.strides[0], &grad[0, 0, 0], size, shape,
                   True)
        gp, go, gk = &grad[0, 0, 0], grad.strides[0] // size, grad.strides[1] // size
    if out is not None:
        check_view("out", 3, &out.shape[0], &out.strides[0], &out[0, 0, 0], size, shape, True)
        op_, oo, ok = &out[0, 0, 0], out.strides[0] // size, out.strides[1] // size
    if lse is not None:
        check_view("lse", 2, &lse.shape[0], &lse.strides[0], &lse[0, 0], sizeof(float),
                   (outer, inner), True)
        lp, lo = &lse[0, 0], lse.strides[0] // sizeof(float)
    if outer == 0 or inner == 0:
        return
    if K == 0:
        if lse is not None:
            lse[:, :] = -INFINITY
        return
    width = min(TILE_WIDTH, max(16, 2 * SX_CHUNK // K))
    tiles = (inner + width - 1) // width
    with nogil, parallel(num_threads=num_threads):
        xs = <float *>malloc(2 * K * width * sizeof(float))
        if xs == NULL:
            failed_flag[0] = 1
        for it in prange(outer * tiles, schedule="dynamic",
                         chunksize=dynamic_chunk(outer * tiles, num_threads)):
            if xs == NULL:
                continue
            o = it // tiles
            j0 = (it % tiles) * width
            w = min(width, inner - j0)
            gs = xs + K * w if gp != NULL else NULL
            h.load(&x[0, 0, 0] + o * xo + j0, xk, xs, w, K, w)
            if gp != NULL:
                h.load(gp + o * go + j0, gk, gs, w, K, w)
            strip_kernel(t, op, xs, w, gs, w, xs if op_ != NULL else NULL, w,
                         <float *>at(lp, o * lo + j0), K, w, <float *>NULL)
            if op_ != NULL:
                h.store(xs, w, op_ + o * oo + j0, ok, K, w)
        free(xs)
    if failed:
        raise MemoryError("no memory for the per-thread float32 tiles")


def narrow_into(const float[::1] x not None, uint16_t[::1] out not None, int fmt):
    """out[i] = x[i] rounded to the 16-bit format `fmt` (exposed for tests)."""
    check_format(fmt)
    check_view("x", 1, &x.shape[0], &x.strides[0], &x[0], sizeof(float), None, True)
    check_view("out", 1, &out.shape[0], &out.strides[0], &out[0], sizeof(uint16_t),
               (x.shape[0],), True)
    if x.shape[0]:
        half_table(fmt).store(&x[0], 0, &out[0], 0, 1, x.shape[0])


def widen_into(const uint16_t[::1] x not None, float[::1] out not None, int fmt):
    """out[i] = the 16-bit value x[i] (format `fmt`) as float32 (exposed for tests)."""
    check_format(fmt)
    check_view("x", 1, &x.shape[0], &x.strides[0], &x[0], sizeof(uint16_t), None, True)
    check_view("out", 1, &out.shape[0], &out.strides[0], &out[0], sizeof(float),
               (x.shape[0],), True)
    if x.shape[0]:
        half_table(fmt).load(&x[0], 0, &out[0], 0, 1, x.shape[0])


# ---- cross-entropy on 16-bit logits ------------------------------------------------

def cross_entropy_half(*, int fmt, const uint16_t[:, :] logits not None,
                       const Py_ssize_t[::1] target=None, const float[:, :] probs=None,
                       const float[::1] weight=None, Py_ssize_t ignore_index=-100,
                       double smoothing=0.0, double grad_scale=1.0, double[::1] loss not None,
                       uint16_t[:, :] grad=None, int num_threads):
    """`cross_entropy` for 16-bit logits (`fmt`, viewed as uint16): each thread
    loads a tile of rows into its float32 scratch, runs the float32 row code
    on it (the gradient overwrites the scratch) and stores the gradient back
    rounded to nearest even; losses stay float64.  `probs` and `weight` are
    float32.  `grad` may be `logits` itself."""
    cdef Py_ssize_t size = sizeof(uint16_t)
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], ldz = logits.strides[0] // size
    cdef Py_ssize_t ldp, ldg = 0, per_tile, tiles, it, r0, n, capacity
    cdef const float *p0
    cdef const float *w0
    cdef const Py_ssize_t *y0
    cdef uint16_t *g0 = NULL
    cdef double weight_sum
    cdef float *scratch
    cdef const sx_table *t = sx_table_f32
    cdef const sx_half_table *h = half_table(fmt)
    cdef int failed = 0
    cdef int *failed_flag = &failed
    check_threads(num_threads)
    check_format(fmt)
    check_view("logits", 2, &logits.shape[0], &logits.strides[0], &logits[0, 0], size, (N, K),
               True)
    check_view("loss", 1, &loss.shape[0], &loss.strides[0], &loss[0], sizeof(double), (N,), True)
    if grad is not None:
        check_view("grad", 2, &grad.shape[0], &grad.strides[0], &grad[0, 0], size, (N, K), True)
        g0, ldg = &grad[0, 0], grad.strides[0] // size
    check_targets_in_range(target, K, ignore_index)
    if xent_targets(N, K, target, probs, weight, &y0, &p0, &ldp, &w0, &weight_sum):
        loss[:] = 0.0
        return
    # rows per tile: a transposed tile of short rows, else rows up to SX_CHUNK
    # values in all (a row longer than that is one tile of its own)
    per_tile = XENT_TILE if K < SHORT_ROW else max(1, SX_CHUNK // K)
    capacity = per_tile * K
    tiles = (N + per_tile - 1) // per_tile
    with nogil, parallel(num_threads=num_threads):
        scratch = <float *>malloc(capacity * sizeof(float))
        if scratch == NULL:
            failed_flag[0] = 1
        for it in prange(tiles, schedule="dynamic",
                         chunksize=dynamic_chunk(tiles, num_threads)):
            if scratch == NULL:
                continue
            r0 = it * per_tile
            n = min(per_tile, N - r0)
            h.load(&logits[0, 0] + r0 * ldz, ldz, scratch, K, n, K)
            xent_tile(t, scratch, K, K, n, at(y0, r0), ignore_index, at(p0, r0 * ldp), ldp, w0,
                      weight_sum, smoothing, grad_scale, &loss[r0],
                      scratch if g0 != NULL else NULL, K, NULL)
            if g0 != NULL:
                h.store(scratch, K, g0 + r0 * ldg, ldg, n, K)
        free(scratch)
    if failed:
        raise MemoryError("no memory for the per-thread float32 scratch")
