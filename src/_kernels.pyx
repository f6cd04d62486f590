# Kernels of softmax_ext: softmax, log_softmax, logsumexp and their VJPs.
#
# Design
# ------
# The Python layer (softmax_ext/_core.py) hands every kernel a view in one of
# two shapes, chosen by which axis is contiguous in memory:
#   rows: (rows, K) with the reduced axis K contiguous; rows at any stride.
#   cols: (outer, K, inner) with `inner` contiguous and K strided; reduced
#         vertically over column strips of SX_STRIP columns, no transpose.
# Kernels write into preallocated outputs, return nothing and never touch
# Python objects inside the parallel loops; every prange gets num_threads
# explicitly (resolved by the caller in the calling thread).
#
# Per-row work is done by the SIMD primitives of row_kernels.h, reached through
# a table chosen at import for this CPU (AVX-512, AVX2+FMA or portable).
# A softmax row costs three sweeps: max, exp(x - max) stored while summing in
# double, then one multiply by 1/sum (log_softmax: (x - max) - log(sum)).
#
# Short rows (K < SHORT_ROW) are transposed in tiles of rows into a per-thread
# scratch and computed across rows by the column primitives; a strided axis is
# reduced over column tiles whose strided data is read once into a stage.
#
# Thread-count invariance: the route depends on K alone, except that a long
# row is handled whole by one thread or, when there are too few rows to keep
# every thread busy, as SX_CHUNK-element pieces spread over threads whose
# partial results are combined in piece order.  The primitives sum in exactly
# that chunked order, so both give the same bits and the result never depends
# on num_threads.
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, NAN, exp, isfinite, isnan, log
from libc.stdlib cimport free, malloc

ctypedef fused floating:
    float
    double

cdef extern from "omp_shim.h":
    int SX_OPENMP_ENABLED
    int sx_omp_max_threads() noexcept nogil

cdef extern from "row_kernels.h":
    enum:
        SX_CHUNK
        SX_STRIP
        SX_ISA_PORTABLE
        SX_ISA_AVX2
        SX_ISA_AVX512
    ctypedef struct sx_table:
        double (*row_max)(const void *x, Py_ssize_t n) noexcept nogil
        double (*row_exp_sum)(const void *x, void *out, Py_ssize_t n, double shift) noexcept nogil
        void (*row_scale)(void *out, Py_ssize_t n, double factor) noexcept nogil
        void (*row_log_normalize)(const void *x, void *out, Py_ssize_t n, double shift,
                                  double log_sum) noexcept nogil
        double (*row_dot)(const void *a, const void *b, const void *c, Py_ssize_t n,
                          double shift) noexcept nogil
        void (*row_softmax_bwd)(const void *p, const void *g, void *out, Py_ssize_t n,
                                double dot) noexcept nogil
        void (*row_log_softmax_bwd)(const void *logp, const void *g, void *out, Py_ssize_t n,
                                    double grad_sum) noexcept nogil
        void (*row_xent_grad)(const void *e, const void *u, const void *v, void *out,
                              Py_ssize_t n, double alpha, double beta,
                              double gamma) noexcept nogil
        void (*col_max)(const void *x, Py_ssize_t ldx, Py_ssize_t K, Py_ssize_t w,
                        void *m, void *copy, Py_ssize_t ldc) noexcept nogil
        void (*col_exp_sum)(const void *x, Py_ssize_t ldx, void *out, Py_ssize_t ldo,
                            Py_ssize_t K, Py_ssize_t w, const void *shift,
                            double *sum) noexcept nogil
        void (*col_scale)(const void *src, Py_ssize_t lds, void *out, Py_ssize_t ldo,
                          Py_ssize_t K, Py_ssize_t w, const void *factor) noexcept nogil
        void (*col_log_normalize)(const void *x, Py_ssize_t ldx, void *out, Py_ssize_t ldo,
                                  Py_ssize_t K, Py_ssize_t w, const void *shift,
                                  const void *log_sum) noexcept nogil
        void (*col_dot)(const void *a, Py_ssize_t lda, const void *b, Py_ssize_t ldb,
                        Py_ssize_t K, Py_ssize_t w, double *sum, void *a_copy, void *b_copy,
                        Py_ssize_t ldc) noexcept nogil
        void (*col_softmax_bwd)(const void *p, Py_ssize_t ldp, const void *g, Py_ssize_t ldg,
                                void *out, Py_ssize_t ldo, Py_ssize_t K, Py_ssize_t w,
                                const void *dot) noexcept nogil
        void (*col_log_softmax_bwd)(const void *logp, Py_ssize_t ldl, const void *g,
                                    Py_ssize_t ldg, void *out, Py_ssize_t ldo, Py_ssize_t K,
                                    Py_ssize_t w, const void *grad_sum) noexcept nogil
    const sx_table *sx_table_f32
    const sx_table *sx_table_f64
    int sx_cpu_isa_level()
    int sx_select_isa(int requested)

cdef enum:
    # Rows shorter than this are transposed in tiles of rows into a per-thread
    # scratch and run through the column primitives, vectorising across rows:
    # a short row alone leaves most vector lanes and the lane reduction idle.
    SHORT_ROW = 32
    # Per-thread scratch for staging column tiles, shared by the staged
    # operands (one forward, two backward).  Measured on a 512 KiB-L2 Zen 3:
    # wide tiles (long contiguous runs per strided row) matter more than
    # fitting in L2.
    STAGE_BYTES = 1024 * 1024
    # Short rows per transposed cross-entropy tile.
    XENT_TILE = 64

# Operations, passed by the Python layer as `op`.
cpdef enum Op:
    SOFTMAX = 0
    LOG_SOFTMAX = 1
    LOGSUMEXP = 2
    SOFTMAX_BACKWARD = 3
    LOG_SOFTMAX_BACKWARD = 4

ISA_NAMES = {SX_ISA_PORTABLE: "portable", SX_ISA_AVX2: "avx2", SX_ISA_AVX512: "avx512"}
_isa_level = sx_select_isa(SX_ISA_AVX512)


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(SX_OPENMP_ENABLED)


def omp_max_threads():
    """omp_get_max_threads() in the calling thread (honours OMP_NUM_THREADS and
    threadpoolctl's limits); 1 without OpenMP."""
    return sx_omp_max_threads()


def cpu_isa():
    """Name of the widest kernel instruction set this CPU can run."""
    return ISA_NAMES[sx_cpu_isa_level()]


def selected_isa():
    """Name of the kernel instruction set in use."""
    return ISA_NAMES[_isa_level]


def select_isa(str name):
    """Use the kernels for `name` ('portable', 'avx2', 'avx512'), or the best
    this CPU supports below it; returns the name of the set now in use.
    Not thread-safe: call it while no kernel runs."""
    global _isa_level
    levels = {v: k for k, v in ISA_NAMES.items()}
    if name not in levels:
        raise ValueError(f"unknown instruction set {name!r}; expected one of {sorted(levels)}")
    _isa_level = sx_select_isa(levels[name])
    return ISA_NAMES[_isa_level]


def exp_into(const floating[::1] x not None, floating[::1] out not None):
    """out[i] = exp(x[i]) by the kernels' polynomial exp (exposed for tests)."""
    check_view("x", 1, &x.shape[0], &x.strides[0], &x[0], sizeof(floating), None, True)
    check_view("out", 1, &out.shape[0], &out.strides[0], &out[0], sizeof(floating),
               (x.shape[0],), True)
    if x.shape[0]:
        table_for(&x[0]).row_exp_sum(&x[0], &out[0], x.shape[0], 0.0)


cdef inline const sx_table *table_for(const floating *x) noexcept nogil:
    if floating is float:
        return sx_table_f32
    else:
        return sx_table_f64


cdef inline double forward_shift(int op, double row_max) noexcept nogil:
    # softmax/log_softmax shift by the max even when it is infinite, so that
    # a row holding +inf, or only -inf, gives NaN as in PyTorch and SciPy;
    # logsumexp shifts by 0 then, giving +inf / -inf as SciPy does.
    if op == LOGSUMEXP and not isfinite(row_max):
        return 0.0
    return row_max


cdef inline void forward_finish(const sx_table *t, int op, const floating *x, floating *out,
                                Py_ssize_t n, double shift, double total) noexcept nogil:
    """Second sweep over (a piece of) a row once its shift and sum are known."""
    if op == SOFTMAX:
        t.row_scale(out, n, 1.0 / total)
    elif op == LOG_SOFTMAX:
        t.row_log_normalize(x, out, n, shift, log(total))


cdef inline double backward_reduce(const sx_table *t, int op, const floating *y,
                                   const floating *g, Py_ssize_t n) noexcept nogil:
    # softmax: <g, p>;  log_softmax: sum(g)
    return t.row_dot(g, y if op == SOFTMAX_BACKWARD else NULL, NULL, n, 0.0)


cdef inline void backward_finish(const sx_table *t, int op, const floating *y, const floating *g,
                                 floating *out, Py_ssize_t n, double total) noexcept nogil:
    if op == SOFTMAX_BACKWARD:
        t.row_softmax_bwd(y, g, out, n, total)
    else:
        t.row_log_softmax_bwd(y, g, out, n, total)


cdef inline const floating *at(const floating *p, Py_ssize_t offset) noexcept nogil:
    """p + offset, keeping NULL (an absent operand) NULL."""
    return p + offset if p != NULL else NULL


cdef void whole_row(const sx_table *t, int op, const floating *x, const floating *g,
                    floating *out, floating *lse, Py_ssize_t K) noexcept nogil:
    """`op` on one contiguous row of K elements, by the calling thread."""
    cdef double shift, total
    if op == SOFTMAX_BACKWARD or op == LOG_SOFTMAX_BACKWARD:
        backward_finish(t, op, x, g, out, K, backward_reduce(t, op, x, g, K))
        return
    shift = forward_shift(op, t.row_max(x, K))
    total = t.row_exp_sum(x, out if op == SOFTMAX else NULL, K, shift)
    if op == LOGSUMEXP:
        lse[0] = <floating>(shift + log(total))
    else:
        forward_finish(t, op, x, out, K, shift, total)


cdef inline void short_row_softmax_backward(const floating *p, const floating *g, floating *out,
                                            Py_ssize_t K) noexcept nogil:
    """p * (g - <g, p>) for a row of K < SHORT_ROW: no exp to amortise, so a
    plain loop beats both the lane machinery and a transposed tile."""
    cdef double dot = 0.0
    cdef floating d
    cdef Py_ssize_t k
    for k in range(K):
        dot += <double>g[k] * p[k]
    d = <floating>dot
    for k in range(K):
        out[k] = p[k] * (g[k] - d)


cdef void rows_kernel(int op, const floating *x, Py_ssize_t ldx, const floating *g,
                      Py_ssize_t ldg, floating *out, Py_ssize_t ldo, floating *lse,
                      Py_ssize_t rows, Py_ssize_t K, int num_threads) noexcept nogil:
    """All five operations over (rows, K) with contiguous rows.

    `x` is the input (p or logp for the backward ops), `g` the upstream
    gradient (backward only), `out` the (rows, K) result and `lse` the (rows,)
    result of LOGSUMEXP.  Short rows go to tiles_kernel as transposed tiles
    (element (k, j) of row j at x[j*ldx + k]), long rows whole or split.
    """
    cdef const sx_table *t = table_for(x)
    cdef Py_ssize_t r
    if K < SHORT_ROW and op == SOFTMAX_BACKWARD:
        for r in prange(rows, schedule="static", num_threads=num_threads):
            short_row_softmax_backward(x + r * ldx, g + r * ldg, out + r * ldo, K)
        return
    if K < SHORT_ROW:
        tiles_kernel(op, x, 0, 1, ldx, g, 0, 1, ldg, out, 0, 1, ldo, lse, 0, 1,
                     1, K, rows, num_threads)
        return
    if K >= 2 * SX_CHUNK and rows < 4 * num_threads:
        if rows_kernel_split(op, x, ldx, g, ldg, out, ldo, lse, rows, K, num_threads) == 0:
            return
        # (no memory for the per-piece scratch: whole rows still work)
    for r in prange(rows, schedule="static", num_threads=num_threads):
        whole_row(t, op, x + r * ldx, at(g, r * ldg), <floating *>at(out, r * ldo),
                  <floating *>at(lse, r), K)


cdef int rows_kernel_split(int op, const floating *x, Py_ssize_t ldx, const floating *g,
                           Py_ssize_t ldg, floating *out, Py_ssize_t ldo, floating *lse,
                           Py_ssize_t rows, Py_ssize_t K, int num_threads) noexcept nogil:
    """rows_kernel for few long rows: every sweep runs over SX_CHUNK pieces in
    parallel, and the per-piece results are combined serially in piece order.
    Returns -1, having done nothing, when its scratch cannot be allocated."""
    cdef const sx_table *t = table_for(x)
    cdef bint backward = op == SOFTMAX_BACKWARD or op == LOG_SOFTMAX_BACKWARD
    cdef Py_ssize_t pieces = (K + SX_CHUNK - 1) // SX_CHUNK
    cdef Py_ssize_t items = rows * pieces
    cdef Py_ssize_t it, r, c, start, n
    cdef double m
    cdef double *part = <double *>malloc(items * sizeof(double))
    cdef double *shift = <double *>malloc(rows * sizeof(double))
    cdef double *total = <double *>malloc(rows * sizeof(double))
    if part == NULL or shift == NULL or total == NULL:
        free(part)
        free(shift)
        free(total)
        return -1
    if not backward:
        for it in prange(items, schedule="static", num_threads=num_threads):
            r = it // pieces
            start = (it % pieces) * SX_CHUNK
            part[it] = t.row_max(x + r * ldx + start, min(SX_CHUNK, K - start))
        for r in range(rows):
            m = part[r * pieces]
            for c in range(1, pieces):
                if part[r * pieces + c] > m:
                    m = part[r * pieces + c]
            shift[r] = forward_shift(op, m)
    for it in prange(items, schedule="static", num_threads=num_threads):
        r = it // pieces
        start = (it % pieces) * SX_CHUNK
        n = min(SX_CHUNK, K - start)
        if backward:
            part[it] = backward_reduce(t, op, x + r * ldx + start, g + r * ldg + start, n)
        else:
            part[it] = t.row_exp_sum(x + r * ldx + start,
                                     out + r * ldo + start if op == SOFTMAX else NULL,
                                     n, shift[r])
    for r in range(rows):
        total[r] = 0.0
        for c in range(pieces):
            total[r] += part[r * pieces + c]
        if op == LOGSUMEXP:
            lse[r] = <floating>(shift[r] + log(total[r]))
    if op != LOGSUMEXP:
        for it in prange(items, schedule="static", num_threads=num_threads):
            r = it // pieces
            start = (it % pieces) * SX_CHUNK
            n = min(SX_CHUNK, K - start)
            if backward:
                backward_finish(t, op, x + r * ldx + start, g + r * ldg + start,
                                out + r * ldo + start, n, total[r])
            else:
                forward_finish(t, op, x + r * ldx + start, out + r * ldo + start, n,
                               shift[r], total[r])
    free(part)
    free(shift)
    free(total)
    return 0


cdef void strip_kernel(const sx_table *t, int op, const floating *x, Py_ssize_t ldx,
                       const floating *g, Py_ssize_t ldg, floating *out, Py_ssize_t ldo,
                       floating *lse, Py_ssize_t K, Py_ssize_t w, floating *stage) noexcept nogil:
    """One strip of w <= SX_STRIP contiguous columns of a (K, .) slab: the
    column counterpart of whole_row.

    With `stage` (room for 2*K*w values) the strided operands are read once,
    into a contiguous copy (fused with the max sweep), the middle sweep runs
    in cache, and the last sweep writes `out`: walking a large power-of-two
    stride three times would thrash a few cache sets instead.
    """
    cdef floating shift[SX_STRIP]
    cdef floating param[SX_STRIP]
    cdef double total[SX_STRIP]
    cdef Py_ssize_t j
    cdef const floating *src = x
    cdef const floating *grad = g
    cdef Py_ssize_t lds = ldx, ldgrad = ldg
    if op == SOFTMAX_BACKWARD or op == LOG_SOFTMAX_BACKWARD:
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
    t.col_max(x, ldx, K, w, shift, stage, w)
    if stage != NULL:
        src, lds = stage, w
    for j in range(w):
        shift[j] = <floating>forward_shift(op, shift[j])
    if op == SOFTMAX:
        # exp goes to the stage (in place) when there is one, else straight to out
        t.col_exp_sum(src, lds, stage if stage != NULL else out, w if stage != NULL else ldo,
                      K, w, shift, total)
        for j in range(w):
            param[j] = <floating>(1.0 / total[j])
        if stage != NULL:
            t.col_scale(stage, w, out, ldo, K, w, param)
        else:
            t.col_scale(out, ldo, out, ldo, K, w, param)
        return
    t.col_exp_sum(src, lds, NULL, 0, K, w, shift, total)
    if op == LOG_SOFTMAX:
        for j in range(w):
            param[j] = <floating>log(total[j])
        t.col_log_normalize(src, lds, out, ldo, K, w, shift, param)
    else:
        for j in range(w):
            lse[j] = <floating>(shift[j] + log(total[j]))


cdef void copy_tile(const floating *src, Py_ssize_t sk, Py_ssize_t sj, floating *dst,
                    Py_ssize_t dk, Py_ssize_t dj, Py_ssize_t K, Py_ssize_t w) noexcept nogil:
    """dst[k*dk + j*dj] = src[k*sk + j*sj] for a (K, w) tile."""
    cdef Py_ssize_t k, j
    if sj == 1 and dj == 1:
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
    copy_tile(x, xk, xj, xs, w, 1, K, w)
    if g != NULL:
        copy_tile(g, gk, gj, gs, w, 1, K, w)
    strip_kernel(t, op, xs, w, gs if g != NULL else NULL, w, xs, w, lse, K, w, NULL)
    if out != NULL:
        copy_tile(xs, w, 1, out, ok, oj, K, w)


cdef void tiles_kernel(int op, const floating *x, Py_ssize_t xo, Py_ssize_t xk, Py_ssize_t xj,
                       const floating *g, Py_ssize_t go, Py_ssize_t gk, Py_ssize_t gj,
                       floating *out, Py_ssize_t oo, Py_ssize_t ok, Py_ssize_t oj,
                       floating *lse, Py_ssize_t lo, Py_ssize_t lj,
                       Py_ssize_t outer, Py_ssize_t K, Py_ssize_t inner,
                       int num_threads) noexcept nogil:
    """All five operations reducing over k, for elements x[o*xo + k*xk + j*xj]
    (likewise g, out; lse[o*lo + j*lj]), as (K, w) tiles spread over threads.

    Tiles go through a per-thread scratch of at most STAGE_BYTES per operand
    (see strip_kernel and transposed_tile), w shrinking as K grows; when even
    a 16-column tile does not fit, unit-stride columns are reduced without
    it.  Without memory for a scratch, short rows (non-unit columns, which
    only rows views have: k is contiguous there) fall back to whole_row.
    """
    cdef const sx_table *t = table_for(x)
    cdef Py_ssize_t width = SX_STRIP, tiles, it, o, j0, w, j
    cdef Py_ssize_t operands = 2 if g != NULL else 1
    cdef Py_ssize_t bytes_per_column = K * operands * <Py_ssize_t>sizeof(floating)
    # The strip primitives index every operand with the same column step 1;
    # any other column stride (short rows of a rows view, whose "columns" are
    # rows) goes through transposed tiles, each operand with its own strides.
    cdef bint unit_columns = xj == 1 and (g == NULL or gj == 1) and (out == NULL or oj == 1)
    cdef bint staged = bytes_per_column * 16 <= STAGE_BYTES or not unit_columns
    cdef floating *scratch = NULL
    if staged:
        width = min(SX_STRIP, max(16, STAGE_BYTES // bytes_per_column // 16 * 16))
    tiles = (inner + width - 1) // width
    with parallel(num_threads=num_threads):
        scratch = <floating *>malloc(operands * K * width * sizeof(floating)) if staged else NULL
        for it in prange(outer * tiles, schedule="static"):
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
                for j in range(j0, j0 + w):
                    whole_row(t, op, x + o * xo + j * xj, at(g, o * go + j * gj),
                              <floating *>at(out, o * oo + j * oj),
                              <floating *>at(lse, o * lo + j * lj), K)
        free(scratch)


# ---- operand checks ------------------------------------------------------------
#
# Every entry point checks every view it will index, in code that always runs
# (never `assert`): shapes against what the loops will index, strides that are
# whole elements, aligned data, and a contiguous last axis where the
# primitives need one.  These checks are what keep a wrong call from the
# Python layer (or from a user calling _kernels directly) from reading or
# writing outside an operand.

cdef int check_view(str name, int ndim, const Py_ssize_t *shape, const Py_ssize_t *strides,
                    const void *data, Py_ssize_t itemsize, tuple expected,
                    bint unit_last) except -1:
    """Raise ValueError unless the view has shape `expected` (when given),
    strides that are multiples of `itemsize`, aligned data and, with
    `unit_last`, a contiguous last axis (Cython's ::1 would demand full C
    contiguity; only the last axis needs it)."""
    cdef int i
    cdef Py_ssize_t count = 1
    if expected is not None:
        actual = tuple([shape[i] for i in range(ndim)])
        if actual != expected:
            raise ValueError(f"{name} has shape {actual}, expected {expected}")
    for i in range(ndim):
        count *= shape[i]
    if count == 0:
        return 0
    for i in range(ndim):
        if shape[i] > 1 and strides[i] % itemsize:
            raise ValueError(f"{name} has stride {strides[i]} on axis {i}, "
                             f"not a multiple of its itemsize {itemsize}")
    if <size_t>data % <size_t>itemsize:
        raise ValueError(f"{name} is not aligned to its itemsize {itemsize}")
    if unit_last and shape[ndim - 1] > 1 and strides[ndim - 1] != itemsize:
        raise ValueError(f"{name} must be contiguous along its last axis "
                         f"(stride {strides[ndim - 1]}, itemsize {itemsize})")
    return 0


cdef int check_threads(int num_threads) except -1:
    if num_threads < 1:
        raise ValueError(f"num_threads must be at least 1, got {num_threads}")
    return 0


cdef int check_request(int op, bint has_grad, bint has_out, bint has_lse,
                       int num_threads) except -1:
    """The operands `op` needs are given, and no others."""
    if not SOFTMAX <= op <= LOG_SOFTMAX_BACKWARD:
        raise ValueError(f"unknown op {op}")
    backward = op == SOFTMAX_BACKWARD or op == LOG_SOFTMAX_BACKWARD
    if has_grad != backward:
        raise ValueError("grad is required by, and only by, the backward ops")
    if has_out == (op == LOGSUMEXP) or has_lse != (op == LOGSUMEXP):
        raise ValueError("LOGSUMEXP writes lse only; every other op writes out only")
    return check_threads(num_threads)


# ---- softmax-family entry points ---------------------------------------------------

def rows(*, int op, const floating[:, :] x not None, const floating[:, :] grad=None,
         floating[:, :] out=None, floating[:] lse=None, int num_threads):
    """Run `op` over the rows of x, shaped (rows, K) with K contiguous; rows
    may be any (multiple of the itemsize) apart, overlapping included.

    Outputs: `out` (same shape and layout rules as x) for every op but
    LOGSUMEXP, which writes `lse` (one value per row).  `grad` is the upstream
    gradient of the backward ops, with x holding p (softmax) or log p
    (log_softmax).  `out` must not overlap itself, nor an input other than
    exactly (same data, same strides).
    """
    cdef Py_ssize_t size = sizeof(floating)
    cdef Py_ssize_t n_rows = x.shape[0], K = x.shape[1]
    cdef const floating *gp = NULL
    cdef floating *op_ = NULL
    cdef floating *lp = NULL
    cdef Py_ssize_t ldg = 0, ldo = 0
    check_request(op, grad is not None, out is not None, lse is not None, num_threads)
    shape = (n_rows, K)
    check_view("x", 2, &x.shape[0], &x.strides[0], &x[0, 0], size, shape, True)
    if grad is not None:
        check_view("grad", 2, &grad.shape[0], &grad.strides[0], &grad[0, 0], size, shape, True)
        gp, ldg = &grad[0, 0], grad.strides[0] // size
    if out is not None:
        check_view("out", 2, &out.shape[0], &out.strides[0], &out[0, 0], size, shape, True)
        op_, ldo = &out[0, 0], out.strides[0] // size
    if lse is not None:
        check_view("lse", 1, &lse.shape[0], &lse.strides[0], &lse[0], size, (n_rows,), True)
        lp = &lse[0]
    if n_rows == 0:
        return
    if K == 0:
        if lse is not None:
            lse[:] = -INFINITY  # log of a sum of no terms
        return
    with nogil:
        rows_kernel(op, &x[0, 0], x.strides[0] // size, gp, ldg, op_, ldo, lp,
                    n_rows, K, num_threads)


def cols(*, int op, const floating[:, :, :] x not None, const floating[:, :, :] grad=None,
         floating[:, :, :] out=None, floating[:, :] lse=None, int num_threads):
    """Run `op` over axis 1 of x, shaped (outer, K, inner) with inner
    contiguous; the other axes may have any strides (multiples of the
    itemsize).  Outputs and `grad` as for `rows`; `lse` is (outer, inner)."""
    cdef Py_ssize_t size = sizeof(floating)
    cdef Py_ssize_t outer = x.shape[0], K = x.shape[1], inner = x.shape[2]
    cdef const floating *gp = NULL
    cdef floating *op_ = NULL
    cdef floating *lp = NULL
    cdef Py_ssize_t go = 0, gk = 0, oo = 0, ok = 0, lo = 0
    check_request(op, grad is not None, out is not None, lse is not None, num_threads)
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
        check_view("lse", 2, &lse.shape[0], &lse.strides[0], &lse[0, 0], size, (outer, inner),
                   True)
        lp, lo = &lse[0, 0], lse.strides[0] // size
    if outer == 0 or inner == 0:
        return
    if K == 0:
        if lse is not None:
            lse[:, :] = -INFINITY
        return
    with nogil:
        tiles_kernel(op, &x[0, 0, 0], x.strides[0] // size, x.strides[1] // size, 1,
                     gp, go, gk, 1, op_, oo, ok, 1, lp, lo, 1,
                     outer, K, inner, num_threads)


# ---- cross-entropy ---------------------------------------------------------------
#
# Per row, with m = max z, S = sum exp(z - m), log p_k = (z_k - m) - log S and
# target coefficients c_k (class weight w_k, label smoothing e, K classes):
#   index target y:        c_k = (1 - e) w_y [k == y] + e/K w_k
#   probability target t:  c_k = ((1 - e) t_k + e/K) w_k
#   loss = -sum_k c_k log p_k = C log S - sum_k c_k (z_k - m),   C = sum_k c_k
#   dloss/dz_i = C p_i - c_i = (C / S) exp(z_i - m) - c_i
# Sweeps over a row: max; the dot products the loss needs (with smoothing or
# probability targets); exp(z - m) summed and stored in the gradient; the
# gradient from those exps (one exp per element in all).  The gradient may
# overwrite the logits in place.  Per-row losses go
# to a float64 array that the caller sums in a fixed order, so the total does
# not depend on the thread count.

cdef double prob_target_dot(const sx_table *t, const floating *z, const floating *probs,
                            const floating *weight, Py_ssize_t n, double shift, double smoothing,
                            double share) noexcept nogil:
    """sum_k c_k (z_k - shift) for c_k = ((1 - e) t_k + e/K) w_k, as PyTorch
    forms it: where smoothing makes c_k > 0, z_k = -inf gives -inf even if
    t_k = 0.  Vectorised as two dot products; the NaN that splitting makes
    of 0 * -inf (rare: a -inf logit) is recomputed element by element."""
    cdef double dot = (1.0 - smoothing) * t.row_dot(z, probs, weight, n, shift)
    cdef Py_ssize_t k
    if smoothing == 0.0:
        return dot
    dot += share * t.row_dot(z, weight, NULL, n, shift)
    if isnan(dot):
        dot = 0.0
        for k in range(n):
            dot += ((1.0 - smoothing) * probs[k] + share) * (weight[k] if weight != NULL else 1.0) \
                * (z[k] - shift)
    return dot


cdef void xent_row(const sx_table *t, const floating *z, Py_ssize_t K, Py_ssize_t target,
                   const floating *probs, const floating *weight, double weight_sum,
                   double smoothing, double grad_scale, double *loss,
                   floating *grad) noexcept nogil:
    """Loss (and gradient, unless grad is NULL) of one row; grad may be z."""
    cdef double m = t.row_max(z, K)
    cdef double share = smoothing / K          # e/K
    cdef double total_c, shifted_dot, total_exp, w_y = 1.0
    # everything that reads the logits comes before the sweep that may overwrite them
    if probs == NULL:
        if weight != NULL:
            w_y = weight[target]
        total_c = (1.0 - smoothing) * w_y + share * weight_sum
        shifted_dot = (1.0 - smoothing) * w_y * (z[target] - m)
    else:
        total_c = (1.0 - smoothing) * t.row_dot(probs, weight, NULL, K, 0.0) + share * weight_sum
        shifted_dot = prob_target_dot(t, z, probs, weight, K, m, smoothing, share)
    if smoothing != 0.0 and probs == NULL:
        shifted_dot += share * t.row_dot(z, weight, NULL, K, m)
    total_exp = t.row_exp_sum(z, grad, K, m)   # grad <- exp(z - m)
    loss[0] = total_c * log(total_exp) - shifted_dot
    if grad != NULL:
        t.row_xent_grad(grad, probs, weight, grad, K, grad_scale * total_c / total_exp,
                        grad_scale * (1.0 - smoothing), grad_scale * share)
        if probs == NULL:
            grad[target] -= <floating>(grad_scale * (1.0 - smoothing) * w_y)


cdef void xent_short_rows(const sx_table *t, const floating *z, Py_ssize_t ldz, Py_ssize_t K,
                          Py_ssize_t w, const Py_ssize_t *target, Py_ssize_t ignore_index,
                          const floating *probs, Py_ssize_t ldp, const floating *weight,
                          double weight_sum, double smoothing, double grad_scale, double *loss,
                          floating *grad, Py_ssize_t ldg) noexcept nogil:
    """xent_row for w <= XENT_TILE rows of K < SHORT_ROW classes at once: the
    rows are transposed into a (K, w) tile so that the max and exp sweeps
    vectorise across rows; the per-element target terms are cheap loops."""
    cdef floating tile[SHORT_ROW * XENT_TILE]
    cdef floating shift[XENT_TILE]
    cdef double total_exp[XENT_TILE]
    cdef double total_c[XENT_TILE]
    cdef double shifted_dot[XENT_TILE]
    cdef floating alpha[XENT_TILE]
    cdef floating gamma[XENT_TILE]
    cdef floating one_hot[XENT_TILE]
    cdef double share = smoothing / K, w_y, dot, target_weight
    cdef Py_ssize_t j, k, y
    cdef floating v_k, m
    cdef bint kept
    copy_tile(z, 1, ldz, tile, w, 1, K, w)          # tile[k, j] = z[j, k]
    t.col_max(tile, w, K, w, shift, NULL, 0)
    for j in range(w):
        m = shift[j]
        kept = probs != NULL or target[j] != ignore_index
        shifted_dot[j] = 0.0
        total_c[j] = 0.0
        one_hot[j] = 0
        if not kept:
            continue
        if probs == NULL:
            y = target[j]
            w_y = weight[y] if weight != NULL else 1.0
            total_c[j] = (1.0 - smoothing) * w_y + share * weight_sum
            shifted_dot[j] = (1.0 - smoothing) * w_y * (tile[y * w + j] - m)
            one_hot[j] = <floating>(grad_scale * (1.0 - smoothing) * w_y)
        else:
            target_weight = 0.0
            for k in range(K):
                target_weight += probs[j * ldp + k] * (weight[k] if weight != NULL else 1)
            total_c[j] = (1.0 - smoothing) * target_weight + share * weight_sum
            shifted_dot[j] = prob_target_dot(t, z + j * ldz, probs + j * ldp, weight, K, m,
                                             smoothing, share)
            continue
        if smoothing != 0.0:
            dot = 0.0
            for k in range(K):
                dot += (weight[k] if weight != NULL else 1) * (tile[k * w + j] - m)
            shifted_dot[j] += share * dot
    t.col_exp_sum(tile, w, tile, w, K, w, shift, total_exp)   # tile <- exp(z - m)
    for j in range(w):
        kept = probs != NULL or target[j] != ignore_index
        loss[j] = total_c[j] * log(total_exp[j]) - shifted_dot[j] if kept else 0.0
        alpha[j] = <floating>(grad_scale * total_c[j] / total_exp[j]) if kept else 0
        gamma[j] = <floating>(grad_scale * share) if kept else 0
    if grad == NULL:
        return
    if probs == NULL and smoothing == 0.0:  # the common case: alpha p - one-hot
        t.col_scale(tile, w, tile, w, K, w, alpha)
    else:
        for k in range(K):
            v_k = weight[k] if weight != NULL else 1
            for j in range(w):
                tile[k * w + j] = alpha[j] * tile[k * w + j] - gamma[j] * v_k
            if probs != NULL:
                for j in range(w):
                    tile[k * w + j] -= (<floating>(grad_scale * (1.0 - smoothing))
                                        * probs[j * ldp + k] * v_k)
    if probs == NULL:
        for j in range(w):
            if target[j] != ignore_index:
                tile[target[j] * w + j] -= one_hot[j]
    copy_tile(tile, w, 1, grad, 1, ldg, K, w)       # grad[j, k] = tile[k, j]


cdef int xent_operands(const floating[:, :] logits, const Py_ssize_t[::1] target,
                       const floating[:, :] probs, const floating[::1] weight,
                       const floating **z0, Py_ssize_t *ldz, const Py_ssize_t **y0,
                       const floating **p0, Py_ssize_t *ldp, const floating **w0,
                       double *weight_sum) except -1:
    """Check the cross-entropy operands (logits (N, K), exactly one of target
    (N,) and probs (N, K), weight (K,)) and give their pointers, row strides
    (in elements) and the sum of the class weights; 1 when there is nothing
    to compute (no rows or no classes), else 0."""
    cdef Py_ssize_t size = sizeof(floating), k
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1]
    if (target is None) == (probs is None):
        raise ValueError("give exactly one of target and probs")
    check_view("logits", 2, &logits.shape[0], &logits.strides[0], &logits[0, 0], size,
               (N, K), True)
    if probs is not None:
        check_view("probs", 2, &probs.shape[0], &probs.strides[0], &probs[0, 0], size,
                   (N, K), True)
    if target is not None:
        check_view("target", 1, &target.shape[0], &target.strides[0], &target[0],
                   sizeof(Py_ssize_t), (N,), True)
    if weight is not None:
        check_view("weight", 1, &weight.shape[0], &weight.strides[0], &weight[0], size, (K,), True)
    if N == 0 or K == 0:
        return 1
    z0[0], ldz[0] = &logits[0, 0], logits.strides[0] // size
    y0[0], p0[0], ldp[0], w0[0] = NULL, NULL, 0, NULL
    weight_sum[0] = K
    if weight is not None:
        w0[0] = &weight[0]
        weight_sum[0] = 0.0
        for k in range(K):
            weight_sum[0] += weight[k]
    if probs is not None:
        p0[0], ldp[0] = &probs[0, 0], probs.strides[0] // size
    else:
        y0[0] = &target[0]
    return 0


def cross_entropy(*, const floating[:, :] logits not None, const Py_ssize_t[::1] target=None,
                  const floating[:, :] probs=None, const floating[::1] weight=None,
                  Py_ssize_t ignore_index=-100, double smoothing=0.0, double grad_scale=1.0,
                  double[::1] loss not None, floating[:, :] grad=None, int num_threads):
    """Per-row cross-entropy of logits (N, K) into `loss` (N,), and its
    gradient times `grad_scale` into `grad` (which may be `logits` itself).

    Targets are class indices `target` (rows equal to `ignore_index` get loss
    0 and gradient 0) or class probabilities `probs` (N, K).  Every index
    must be in [0, K) or equal ignore_index (checked here too: the loops
    index the logits with it).  With K = 0 every loss is 0 (a sum of no terms).
    """
    cdef Py_ssize_t size = sizeof(floating)
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], r, k, y
    cdef Py_ssize_t ldz, ldp, ldg = 0
    cdef const floating *z0
    cdef const floating *p0
    cdef const floating *w0
    cdef floating *g0 = NULL
    cdef const Py_ssize_t *y0
    cdef double weight_sum
    cdef const sx_table *t
    check_threads(num_threads)
    check_view("loss", 1, &loss.shape[0], &loss.strides[0], &loss[0], sizeof(double), (N,), True)
    if grad is not None:
        check_view("grad", 2, &grad.shape[0], &grad.strides[0], &grad[0, 0], size, (N, K), True)
    if target is not None:
        for r in range(target.shape[0]):
            if target[r] != ignore_index and not 0 <= target[r] < K:
                raise ValueError(f"target[{r}] = {target[r]} is outside [0, {K}) "
                                 f"and not ignore_index ({ignore_index})")
    if xent_operands(logits, target, probs, weight, &z0, &ldz, &y0, &p0, &ldp, &w0, &weight_sum):
        loss[:] = 0.0
        return
    t = table_for(z0)
    if grad is not None:
        g0, ldg = &grad[0, 0], grad.strides[0] // size
    if K < SHORT_ROW:
        with nogil:
            for r in prange((N + XENT_TILE - 1) // XENT_TILE, schedule="static",
                            num_threads=num_threads):
                y = r * XENT_TILE  # first row of the tile
                xent_short_rows(t, z0 + y * ldz, ldz, K, min(XENT_TILE, N - y),
                                y0 + y if y0 != NULL else NULL, ignore_index,
                                at(p0, y * ldp), ldp, w0, weight_sum, smoothing, grad_scale,
                                &loss[y], <floating *>at(g0, y * ldg), ldg)
        return
    with nogil:
        for r in prange(N, schedule="static", num_threads=num_threads):
            y = y0[r] if y0 != NULL else 0
            if y0 != NULL and y == ignore_index:
                loss[r] = 0.0
                if g0 != NULL:
                    for k in range(K):
                        g0[r * ldg + k] = 0
            else:
                xent_row(t, z0 + r * ldz, K, y, at(p0, r * ldp), w0, weight_sum, smoothing,
                         grad_scale, &loss[r], <floating *>at(g0, r * ldg))


# ---- Jacobians -------------------------------------------------------------------

def softmax_jacobian(*, const floating[:, ::1] p not None, floating[:, :, ::1] out not None,
                     int num_threads):
    """out[n, j, i] = p[n, j] * (delta_ij - p[n, i]) for each row of p."""
    cdef Py_ssize_t N = p.shape[0], K = p.shape[1], n, j, i
    cdef floating pj
    check_threads(num_threads)
    check_view("p", 2, &p.shape[0], &p.strides[0], &p[0, 0], sizeof(floating), None, True)
    check_view("out", 3, &out.shape[0], &out.strides[0], &out[0, 0, 0], sizeof(floating),
               (N, K, K), True)
    with nogil:
        for n in prange(N, schedule="static", num_threads=num_threads):
            for j in range(K):
                pj = p[n, j]
                for i in range(K):
                    out[n, j, i] = -pj * p[n, i]
                out[n, j, j] = pj * (1 - pj)


def softmax_weight_jacobian(*, const floating[:, ::1] p not None, const floating[:, ::1] x not None,
                            floating[:, :, :, ::1] out not None, int num_threads):
    """out[n, j, i, :] = p[n, j] * (delta_ij - p[n, i]) * x[n, :]: d sigma_j / d w_i
    for logits z = x W^T + b, one (K, K, D) block per row."""
    cdef Py_ssize_t N = p.shape[0], K = p.shape[1], D = x.shape[1], item, n, j, i, d
    cdef floating coefficient
    check_threads(num_threads)
    check_view("p", 2, &p.shape[0], &p.strides[0], &p[0, 0], sizeof(floating), None, True)
    check_view("x", 2, &x.shape[0], &x.strides[0], &x[0, 0], sizeof(floating), (N, D), True)
    check_view("out", 4, &out.shape[0], &out.strides[0], &out[0, 0, 0, 0], sizeof(floating),
               (N, K, K, D), True)
    with nogil:
        for item in prange(N * K, schedule="static", num_threads=num_threads):
            n = item // K
            j = item % K
            for i in range(K):
                coefficient = p[n, j] * ((1 if i == j else 0) - p[n, i])
                for d in range(D):
                    out[n, j, i, d] = coefficient * x[n, d]


# ---- cross-entropy over blocks of classes (very wide K) --------------------------
#
# When even a few rows of logits are too many to hold, linear_cross_entropy
# computes them one block of classes at a time, twice: a first pass merges per
# row the online logsumexp (running max m, sum s of exp(z - m)) and the raw
# dot products the loss needs; the loss follows from those; a second pass
# recomputes each block and turns it into its gradient.
cdef enum:  # STATS columns, per row (float64)
    STAT_MAX = 0        # running max m
    STAT_SUM = 1        # sum of exp(z - m)
    STAT_TARGET = 2     # index target: z_y;  probabilities: sum_k c_k z_k
    STAT_SMOOTH = 3     # index target with label smoothing: sum_k w_k z_k
    STAT_MASS = 4       # probabilities: C = sum_k c_k, c_k = ((1 - e) t_k + e/K) w_k
STATS = 5


def cross_entropy_block_stats(*, const floating[:, :] logits not None, Py_ssize_t first_class,
                              const Py_ssize_t[::1] target=None, const floating[:, :] probs=None,
                              const floating[::1] weight=None, double smoothing,
                              Py_ssize_t classes, double[:, ::1] stats not None,
                              int num_threads):
    """Merge classes [first_class, first_class + logits.shape[1]) of every row
    into `stats` (N, 5).  `probs` and `weight` hold the same classes only;
    `classes` is K, the number of all classes (label smoothing spreads e/K)."""
    cdef Py_ssize_t N = logits.shape[0], Kb = logits.shape[1], r, y, ldz, ldp
    cdef const floating *z0
    cdef const floating *p0
    cdef const floating *w0
    cdef const Py_ssize_t *y0
    cdef const sx_table *t
    cdef double block_max, block_sum, m, weight_block_sum, mass
    cdef double share = smoothing / classes if classes > 0 else 0.0
    check_threads(num_threads)
    check_view("stats", 2, &stats.shape[0], &stats.strides[0], &stats[0, 0], sizeof(double),
               (N, STATS), True)
    if xent_operands(logits, target, probs, weight, &z0, &ldz, &y0, &p0, &ldp, &w0,
                     &weight_block_sum):
        return
    t = table_for(z0)
    with nogil:
        for r in prange(N, schedule="static", num_threads=num_threads):
            block_max = t.row_max(z0 + r * ldz, Kb)
            m = stats[r, STAT_MAX]
            if block_max == -INFINITY:
                # only -inf (adds nothing) or NaN (must reach the loss) here
                if t.row_exp_sum(z0 + r * ldz, NULL, Kb, 0.0) != 0:
                    stats[r, STAT_SUM] = NAN
            else:
                block_sum = t.row_exp_sum(z0 + r * ldz, NULL, Kb, block_max)
                if block_max > m:
                    stats[r, STAT_SUM] = stats[r, STAT_SUM] * exp(m - block_max) + block_sum
                    stats[r, STAT_MAX] = block_max
                else:
                    stats[r, STAT_SUM] += block_sum * exp(block_max - m)
            if y0 != NULL:
                y = y0[r] - first_class
                if 0 <= y < Kb:
                    stats[r, STAT_TARGET] = z0[r * ldz + y]
            elif p0 != NULL:
                # smoothing included: c_k = ((1 - e) t_k + e/K) w_k; the block
                # max comes off before the products and back on in double
                mass = (1.0 - smoothing) * t.row_dot(p0 + r * ldp, w0, NULL, Kb, 0.0) \
                    + share * weight_block_sum
                stats[r, STAT_TARGET] += prob_target_dot(t, z0 + r * ldz, p0 + r * ldp, w0, Kb,
                                                         block_max, smoothing, share) \
                    + block_max * mass
                stats[r, STAT_MASS] += mass
            if smoothing != 0.0 and y0 != NULL:
                stats[r, STAT_SMOOTH] += t.row_dot(z0 + r * ldz, w0, NULL, Kb, block_max) \
                    + block_max * weight_block_sum


def cross_entropy_block_grad(*, floating[:, :] logits not None, Py_ssize_t first_class,
                             const Py_ssize_t[::1] target=None, const floating[:, :] probs=None,
                             const floating[::1] weight=None, const double[::1] shift not None,
                             const double[::1] alpha not None, const double[::1] one_hot not None,
                             double beta, double gamma, int num_threads):
    """Overwrite a block of logits with its gradient, from per-row `shift`
    (the row max), alpha = scale * C / s and the index-target term `one_hot`:
    grad = alpha exp(z - shift) - (beta t + gamma) w, minus one_hot at y."""
    cdef Py_ssize_t N = logits.shape[0], Kb = logits.shape[1], r, y, ldz, ldp
    cdef const floating *logits0
    cdef floating *z0
    cdef const floating *p0
    cdef const floating *w0
    cdef const Py_ssize_t *y0
    cdef const sx_table *t
    cdef double unused_weight_sum
    check_threads(num_threads)
    check_view("shift", 1, &shift.shape[0], &shift.strides[0], &shift[0], sizeof(double), (N,), True)
    check_view("alpha", 1, &alpha.shape[0], &alpha.strides[0], &alpha[0], sizeof(double), (N,), True)
    check_view("one_hot", 1, &one_hot.shape[0], &one_hot.strides[0], &one_hot[0], sizeof(double),
               (N,), True)
    if xent_operands(logits, target, probs, weight, &logits0, &ldz, &y0, &p0, &ldp, &w0,
                     &unused_weight_sum):
        return
    z0 = &logits[0, 0]  # the writable view of the same memory
    t = table_for(logits0)
    with nogil:
        for r in prange(N, schedule="static", num_threads=num_threads):
            t.row_exp_sum(z0 + r * ldz, z0 + r * ldz, Kb, shift[r])
            t.row_xent_grad(z0 + r * ldz, at(p0, r * ldp), w0, z0 + r * ldz, Kb, alpha[r],
                            beta if p0 != NULL else 0.0, gamma)
            if y0 != NULL:
                y = y0[r] - first_class
                if 0 <= y < Kb:
                    z0[r * ldz + y] -= <floating>one_hot[r]
