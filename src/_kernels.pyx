# Kernels of softmax_ext: softmax, log_softmax, logsumexp and their VJPs.
#
# Design
# ------
# The Python layer (softmax_ext/_core.py) hands every kernel a view in one of
# two shapes, chosen by which axis is contiguous in memory:
#   rows: (rows, K) with the reduced axis K contiguous; rows at any stride.
#   cols: (outer, K, inner) with `inner` contiguous and K strided; reduced
#         vertically over column strips of up to SX_STRIP columns, no transpose.
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
# reduced over strips of columns.  Both are in strided_axis.pxi; the
# cross-entropy and Jacobian kernels in gradients.pxi, float16 / bfloat16 in
# half_precision.pxi, an axis split across blocks (dask) in split_axis.pxi.
#
# Thread-count invariance: the route depends on K alone, except that a long
# row is handled whole by one thread or, when there are too few rows to keep
# every thread busy, as SX_CHUNK-element pieces spread over threads whose
# partial results are combined in piece order.  The primitives sum in exactly
# that chunked order, so both give the same bits and the result never depends
# on num_threads.
from cython.parallel cimport parallel, prange
from libc.math cimport INFINITY, NAN, exp, isfinite, isnan, log
from libc.stdint cimport uint16_t
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
        SX_ISA_LEVELS
    ctypedef struct sx_table:
        double (*row_max)(const void *x, Py_ssize_t n, double *low) noexcept nogil
        double (*row_exp_sum)(const void *x, void *out, Py_ssize_t n, double shift, double low,
                              const void *ahead) noexcept nogil
        double (*row_exp_excess)(const void *x, Py_ssize_t n, double shift, double low,
                                 double *ties, const void *ahead) noexcept nogil
        void (*row_scale)(void *out, Py_ssize_t n, double factor) noexcept nogil
        void (*row_log_normalize)(const void *x, void *out, Py_ssize_t n, double shift,
                                  double log_sum) noexcept nogil
        double (*row_dot)(const void *a, const void *b, const void *c, Py_ssize_t n,
                          double shift) noexcept nogil
        void (*row_softmax_bwd)(const void *p, const void *g, void *out, Py_ssize_t n,
                                double dot) noexcept nogil
        void (*row_softmax_bwd_stream)(const void *p, const void *g, void *out, Py_ssize_t n,
                                       double dot) noexcept nogil
        void (*row_log_normalize_stream)(const void *x, void *out, Py_ssize_t n, double shift,
                                         double log_sum) noexcept nogil
        void (*row_scale_stream)(const void *e, void *out, Py_ssize_t n,
                                 double factor) noexcept nogil
        void (*row_log_softmax_bwd)(const void *logp, const void *g, void *out, Py_ssize_t n,
                                    double grad_sum) noexcept nogil
        void (*row_log_softmax_bwd_stream)(const void *logp, const void *g, void *out,
                                           Py_ssize_t n, double grad_sum) noexcept nogil
        void (*row_xent_grad)(const void *e, const void *u, const void *v, void *out,
                              Py_ssize_t n, double alpha, double beta,
                              double gamma) noexcept nogil
        int (*col_max)(const void *x, Py_ssize_t ldx, Py_ssize_t K, Py_ssize_t w,
                       void *m, void *copy, Py_ssize_t ldc) noexcept nogil
        void (*col_exp_sum)(const void *x, Py_ssize_t ldx, void *out, Py_ssize_t ldo,
                            Py_ssize_t K, Py_ssize_t w, const void *shift, int tame,
                            double *sum) noexcept nogil
        void (*col_exp_excess)(const void *x, Py_ssize_t ldx, Py_ssize_t K, Py_ssize_t w,
                               const void *shift, double *sum, double *ties) noexcept nogil
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
        void (*tile_transpose)(const void *src, Py_ssize_t lds, void *dst, Py_ssize_t ldd,
                               Py_ssize_t rows, Py_ssize_t cols) noexcept nogil
    const sx_table *sx_table_f32
    const sx_table *sx_table_f64
    # 16-bit storage (float16, bfloat16; half_precision.pxi)
    ctypedef struct sx_half_table:
        void (*load)(const void *src, Py_ssize_t lds, float *dst, Py_ssize_t ldd,
                     Py_ssize_t rows, Py_ssize_t n) noexcept nogil
        void (*store)(const float *src, Py_ssize_t lds, void *dst, Py_ssize_t ldd,
                      Py_ssize_t rows, Py_ssize_t n) noexcept nogil
        double (*row_max)(const void *x, Py_ssize_t n, double *low) noexcept nogil
        double (*row_exp_sum)(const void *x, float *out, Py_ssize_t n, double shift, double low,
                              const void *ahead) noexcept nogil
        double (*row_exp_excess)(const void *x, Py_ssize_t n, double shift, double low,
                                 double *ties, const void *ahead) noexcept nogil
        void (*row_scale_store)(const float *e, void *out, Py_ssize_t n,
                                double factor) noexcept nogil
        void (*row_scale_store_stream)(const float *e, void *out, Py_ssize_t n,
                                       double factor) noexcept nogil
        void (*row_log_normalize)(const void *x, void *out, Py_ssize_t n, double shift,
                                  double log_sum) noexcept nogil
        void (*row_log_normalize_stream)(const void *x, void *out, Py_ssize_t n, double shift,
                                         double log_sum) noexcept nogil
        void (*row_log_normalize_store)(const float *x, void *out, Py_ssize_t n, double shift,
                                        double log_sum) noexcept nogil
    const sx_half_table *sx_table_f16
    const sx_half_table *sx_table_bf16
    const char *const sx_isa_names[]
    int sx_cpu_isa_level()
    int sx_runnable_isa_level()
    int sx_select_isa(int requested)
    long sx_l3_cache_bytes()
    void sx_store_fence() noexcept nogil

cdef enum:
    # Rows shorter than this are transposed in tiles of rows into a per-thread
    # scratch and run through the column primitives, vectorising across rows:
    # a short row alone leaves most vector lanes and the lane reduction idle.
    SHORT_ROW = 32
    # Short rows go through the sweeps ROW_GROUP at a time (whole_rows) when
    # the group spans at most GROUP_BYTES_FORWARD / _BACKWARD (rows_per_group),
    # which hides each row's latency behind the next row's work.  Measured
    # here (float32, 1 thread): K = 128 20-25 % faster forward and backward;
    # K = 1000 (a 16 KiB group) 15-25 % slower, the sweeps no longer sharing
    # L1.  Groups of 8 KiB (K <= 512): forward K = 300-512 0.82-0.97 of the
    # time of single rows (float16 / bfloat16 tiles 0.77-0.85), backward
    # 0.93-1.10, so backward groups stay within 4 KiB.
    ROW_GROUP = 4
    GROUP_BYTES_FORWARD = 8192
    GROUP_BYTES_BACKWARD = 4096
    # Rows of AHEAD_MIN_BYTES to AHEAD_MAX_BYTES (the latter fits L2 beside
    # the row being swept) have the next row fetched into cache during their
    # exp sweep (row_exp_sum's `ahead`), so that its max sweep reads L2 while
    # this sweep computes.  Measured (float32, out of cache, best of 5
    # alternating runs): 1 thread, softmax / log_softmax / logsumexp of
    # (512, 32768) 5.30 / 6.35 / 4.56 -> 4.75 / 5.25 / 3.41 ms; 2 threads,
    # (8192, 2048) 4.01 / 4.79 / 3.62 -> 3.46 / 3.28 / 2.08 ms; rows of 2 KiB
    # still gain (3-14 %), rows of 1000 in L3 are unchanged; float16 softmax
    # of (512, 32000), 2 threads, 3.2 -> 2.5 ms.  Rows swept in groups fetch
    # the matching row of the next group (whole_rows): on Zen 3, softmax
    # float32 (16384, 128) 0.83-0.95 of the time at 1 thread, 0.95-0.97 at
    # 2, (8192, 256) 0.88-0.91; rows of 128 or 256 bytes gained nothing
    # (0.98-1.04), so AHEAD_MIN_BYTES stays at 512.
    AHEAD_MIN_BYTES = 512
    AHEAD_MAX_BYTES = 262144
    # log_softmax and both backward ops write their output by streaming
    # stores (row_*_stream), which skip reading each output line before
    # writing it, when the call's operands (the output and the arrays read)
    # come to the stream footprint or more (stream_footprint_bytes): the L3
    # the OS reports, held within STREAM_FOOTPRINT_MIN_BYTES and _MAX_BYTES,
    # as the caches would not keep such an output anyway.
    # Zen 3, 32 MiB of L3 (one process, both builds, min of 40,
    # numpy-allocated operands), new / old time of streaming from 32 MiB,
    # softmax_backward at 2 threads: float32 (512, 32000) 0.80,
    # (8, 1M) 0.81; float64 (16384, 128) 0.81, (4096, 1000) 0.72,
    # (512, 32000) 0.86, (8, 1M) 0.85; 1 thread 0.85-1.00.  log_softmax, 2
    # threads: float32 (512, 32000) 0.82, (65536, 128) 0.84, float64
    # (16384, 128) 0.85, (4096, 1000) 0.86, (512, 32000) 0.83, (8, 1M) 0.97;
    # 1 thread 0.80-0.94.  log_softmax_backward, 2 threads: float32
    # (512, 32000) 0.90, (8, 1M) 0.87, (65536, 128) 0.80; float64
    # (16384, 128) 0.89, (4096, 1000) 0.89, (512, 32000) 0.83, (8, 1M) 0.87,
    # (65536, 128) 0.86; 1 thread 0.82-1.05.  The footprint rather than the
    # output alone: softmax_backward float32 (4096, 1000) (15.6 MiB out,
    # 47 MiB in all) streamed 0.87-0.93 at 2 threads, (16384, 128) (8 MiB
    # out, 24 MiB in all, which L3 keeps from call to call) 1.01-1.09.
    # A fence after each row instead of one per thread made rows of 128 2-3x
    # slower; scalar exps for each row's partial lines (before the masked
    # vector groups) made float32 rows of 128 1.2-1.7x slower.
    # A Xeon VM (2 MiB of L2 a core) reports its host's 480 MiB of L3,
    # shared with other tenants.  There not streaming (same method, new /
    # old time, 1 and 2 threads) won up to 48 MiB in all: softmax_backward
    # float32 (4096, 1000) (47 MiB) 0.93-1.0, log_softmax_backward 0.92-1.0,
    # float64 (16384, 128) (48 MiB) 0.95-0.98 and 0.76-0.81, log_softmax
    # float64 (16384, 128) (32 MiB) 0.95-0.97; it lost from 61 MiB on:
    # log_softmax float32 (8, 1M) (61 MiB) 1.17-1.20, float64 (4096, 1000)
    # (62.5 MiB) 1.07-1.09, softmax_backward float32 (8, 1M) (92 MiB)
    # 1.10-1.28, (512, 32000) 1.65-1.69.  Hence a cap between the two.  An
    # OS that reports no L3 (or less) gets the minimum.  An output the caller
    # has just allocated from the OS is never streamed (rows' fresh_out).
    STREAM_FOOTPRINT_MIN_BYTES = 32 * 1024 * 1024
    STREAM_FOOTPRINT_MAX_BYTES = 56 * 1024 * 1024
    # float32 softmax streams its output too (row_scale_stream) for rows of
    # STREAM_EXPS_MIN_BYTES to STREAM_EXPS_BYTES: their exps go to a
    # per-thread scratch, kept in L2 from the exp sweep to the scaling one;
    # other rows keep their exps in the output, scaled in place.  Measured
    # (new / old time, 48 MiB arrays): float32 K = 1000-65536 0.83-0.94 at 1
    # thread, 0.78-0.90 at 2, (512, 32000) 0.86-0.90; K = 256 0.96-1.24 at
    # 1 thread.  float64, whose exps cost twice as much per byte, measured
    # 0.90-1.09 and does not stream: the in-place version's write-backs
    # overlap its arithmetic, the streamed scaling sweep does not.
    STREAM_EXPS_MIN_BYTES = 2048
    STREAM_EXPS_BYTES = 512 * 1024
    # Per-thread scratch for staging column tiles, shared by the staged
    # operands (one forward, two backward).  Measured on a 512 KiB-L2 Zen 3:
    # wide tiles (long contiguous runs per strided row) matter more than
    # fitting in L2.
    STAGE_BYTES = 1024 * 1024
    # Transposed tiles hold at most TILE_WIDTH short rows.  Unit-stride
    # strips are staged, at most TILE_WIDTH columns wide, only when those
    # columns span at most TILE_BYTES_IN_L1 (short K: the strip then stays
    # in L1 from sweep to sweep); longer ones are swept in place, up to
    # SX_STRIP columns wide (halved down to TILE_WIDTH while there are
    # fewer than TILES_PER_THREAD strips per thread), the longer contiguous
    # runs per strided row letting the hardware prefetch.  Against strips
    # of at most 256 columns, all staged (new / old time on the Xeon, one
    # process, same bits), axis 0 of (1000, 4096) at 1 / 2 threads:
    # softmax_backward float32 0.69-0.72 / 0.68-0.72, float64 0.62-0.63 /
    # 0.51-0.54, log_softmax_backward float32 - / 0.69-0.71, softmax
    # float32 0.81-0.82 / 0.81-0.83, float64 0.86-0.90 / -, logsumexp
    # float32 0.76 / -, log_softmax float64 1.05-1.10 / 0.86-0.87 (the one
    # loss: three sweeps of 8 KiB runs from L3 where the stage kept two in
    # L2); softmax float32 (10000, 400) 0.51 / 0.30, (100, 40000) 0.79 / -,
    # (64, 250000) - / 0.93.  Transposed tiles of 1024 short rows instead of
    # 256 made softmax of (65536, 10) 1.17-1.34x slower, and strips of 1024
    # unstaged columns (16, 1000000) 1.21x: hence TILE_WIDTH and
    # TILE_BYTES_IN_L1.
    TILE_WIDTH = 256
    TILE_BYTES_IN_L1 = 32 * 1024
    TILES_PER_THREAD = 4
    # Short rows per transposed cross-entropy tile.  Zen 3, cross_entropy +
    # grad, new / old time: (65536, 10) 0.94-1.00 with 256 rows against 64,
    # (65536, 25) 0.95-0.96; 128 rows 0.98-1.01.
    XENT_TILE = 256

# Operations, passed by the Python layer as `op`.
cpdef enum Op:
    SOFTMAX = 0
    LOG_SOFTMAX = 1
    LOGSUMEXP = 2
    SOFTMAX_BACKWARD = 3
    LOG_SOFTMAX_BACKWARD = 4

# This architecture's kernel instruction sets, lowest first (row_kernels.h).
ISA_NAMES = tuple(sx_isa_names[level].decode() for level in range(SX_ISA_LEVELS))
# Calls whose operands come to this many bytes or more write by streaming
# stores (see STREAM_FOOTPRINT_MIN_BYTES); in Python for the tests.
cdef Py_ssize_t stream_footprint_bytes = min(max(<Py_ssize_t>sx_l3_cache_bytes(),
                                                 STREAM_FOOTPRINT_MIN_BYTES),
                                             STREAM_FOOTPRINT_MAX_BYTES)
STREAM_FOOTPRINT = stream_footprint_bytes
STREAM_FOOTPRINT_RANGE = (STREAM_FOOTPRINT_MIN_BYTES, STREAM_FOOTPRINT_MAX_BYTES)


def l3_cache_bytes():
    """The L3 cache size the OS reports, in bytes; 0 where it reports none."""
    return sx_l3_cache_bytes()

_isa_level = sx_select_isa(SX_ISA_LEVELS - 1)


def openmp_enabled():
    """True when the extension was compiled with OpenMP."""
    return bool(SX_OPENMP_ENABLED)


def omp_max_threads():
    """omp_get_max_threads() in the calling thread (honours OMP_NUM_THREADS and
    threadpoolctl's limits); 1 without OpenMP."""
    return sx_omp_max_threads()


def cpu_isa():
    """Name of the widest kernel instruction set of this architecture that the
    CPU can run (this build may not have compiled it: see runnable_isas)."""
    return ISA_NAMES[sx_cpu_isa_level()]


def runnable_isas():
    """Names of the instruction sets this build has and this CPU runs, lowest first."""
    return ISA_NAMES[: sx_runnable_isa_level() + 1]


def selected_isa():
    """Name of the kernel instruction set in use."""
    return ISA_NAMES[_isa_level]


def select_isa(str name):
    """Use the kernels for `name` (one of ISA_NAMES: 'portable', 'avx2', 'avx512'
    on x86-64; 'portable', 'neon' on AArch64), or the best this CPU and build
    have below it; returns the name of the set now in use.
    Not thread-safe: call it while no kernel runs."""
    global _isa_level
    if name not in ISA_NAMES:
        raise ValueError(f"unknown instruction set {name!r}; expected one of {list(ISA_NAMES)}")
    _isa_level = sx_select_isa(ISA_NAMES.index(name))
    return ISA_NAMES[_isa_level]


def exp_into(const floating[::1] x not None, floating[::1] out not None):
    """out[i] = exp(x[i]) by the kernels' polynomial exp (exposed for tests)."""
    check_view("x", 1, &x.shape[0], &x.strides[0], &x[0], sizeof(floating), None, True)
    check_view("out", 1, &out.shape[0], &out.strides[0], &out[0], sizeof(floating),
               (x.shape[0],), True)
    if x.shape[0]:
        table_for(&x[0]).row_exp_sum(&x[0], &out[0], x.shape[0], 0.0, -INFINITY, NULL)


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


cdef inline double sweep_low(double shift, double row_max, double low) noexcept nogil:
    """The `low` for an exp sweep by `shift`: the row's smallest value, which
    the sweep relies on (to take its faster exp) only when shift is the row
    max; -inf otherwise."""
    return low if shift == row_max else -INFINITY


cdef inline double log_one_plus(double y) noexcept nogil:
    """log(1 + y) for y >= -1, to log's own accuracy also where y is tiny: the
    log of the rounded sum s = 1 + y plus that rounding's error r over s
    (1 + y = s + r exactly, by 2Sum; log(s + r) = log(s) + r/s within
    2^-107).  glibc's log1p, which this replaces, was the slow part of a
    short row: (Xeon, one process, new / old time) logsumexp float32
    (32768, 64) 0.67-0.68, (16384, 128) 0.74-0.77 at 1 and 2 threads,
    (4096, 1000) 0.93-0.95, float64 (16384, 128) 0.84-0.86, as accurate
    (mean and largest error against long double the same).  y = -1 (no
    terms: a slice of -inf) gives -inf, +inf +inf and NaN NaN."""
    cdef double s = 1.0 + y
    if not (0.0 < s < INFINITY):
        return log(s)
    cdef double t = s - y
    cdef double rounding = (1.0 - t) + (y - (s - t))
    return log(s) + rounding / s


cdef inline double log_sum_exp(double shift, double excess, double ties) noexcept nogil:
    """logsumexp from row_exp_excess's results: shift + log(excess + ties),
    as shift + log(1 + y) with y the sum of the terms other than the maxima,
    so that a dominant term keeps the small ones' digits."""
    return shift + log_one_plus(excess + (ties - 1.0))


cdef inline void forward_finish(const sx_table *t, int op, const floating *x, floating *out,
                                Py_ssize_t n, double shift, double total,
                                bint stream) noexcept nogil:
    """Second sweep over (a piece of) a row once its shift and sum are known;
    with `stream`, log_softmax writes by streaming stores (see
    STREAM_FOOTPRINT_MIN_BYTES)."""
    if op == SOFTMAX:
        t.row_scale(out, n, 1.0 / total)
    elif op == LOG_SOFTMAX:
        (t.row_log_normalize_stream if stream else t.row_log_normalize)(x, out, n, shift,
                                                                        log(total))


cdef inline void narrow_finish(const sx_half_table *h, int op, const float *x, const float *e,
                               uint16_t *out, Py_ssize_t n, double shift,
                               double total) noexcept nogil:
    """forward_finish writing 16-bit results (float16 or bfloat16 per `h`),
    each the float32 result rounded once: softmax from its exps `e`."""
    if op == SOFTMAX:
        h.row_scale_store(e, out, n, 1.0 / total)
    elif op == LOG_SOFTMAX:
        h.row_log_normalize_store(x, out, n, shift, log(total))


cdef inline bint is_backward(int op) noexcept nogil:
    return op == SOFTMAX_BACKWARD or op == LOG_SOFTMAX_BACKWARD


cdef inline double backward_reduce(const sx_table *t, int op, const floating *y,
                                   const floating *g, Py_ssize_t n) noexcept nogil:
    # softmax: <g, p>;  log_softmax: sum(g)
    return t.row_dot(g, y if op == SOFTMAX_BACKWARD else NULL, NULL, n, 0.0)


cdef inline void backward_finish(const sx_table *t, int op, const floating *y, const floating *g,
                                 floating *out, Py_ssize_t n, double total,
                                 bint stream) noexcept nogil:
    """The gradient sweep; with `stream`, by streaming stores (see
    STREAM_FOOTPRINT_MIN_BYTES)."""
    if op == SOFTMAX_BACKWARD:
        (t.row_softmax_bwd_stream if stream else t.row_softmax_bwd)(y, g, out, n, total)
    else:
        (t.row_log_softmax_bwd_stream if stream else t.row_log_softmax_bwd)(y, g, out, n, total)


ctypedef fused element:
    float
    double
    unsigned short  # float16 / bfloat16 storage (half_precision.pxi)
    Py_ssize_t      # class-index targets


cdef inline const element *at(const element *p, Py_ssize_t offset) noexcept nogil:
    """p + offset, keeping NULL (an absent operand) NULL."""
    return p + offset if p != NULL else NULL


cdef inline bint streams(Py_ssize_t operands, Py_ssize_t elements,
                         size_t itemsize) noexcept nogil:
    """Whether a call on `operands` arrays (read and written) of `elements`
    values each writes its output by streaming stores: when they come to
    stream_footprint_bytes or more."""
    return operands * elements * <Py_ssize_t>itemsize >= stream_footprint_bytes


cdef inline Py_ssize_t dynamic_chunk(Py_ssize_t items, int num_threads) noexcept nogil:
    """Chunk size for a prange over independent items (rows, tiles) with
    schedule="dynamic": about a sixteenth of a thread's share.  A thread that
    starts late (a vCPU waking up, another library's pool still spinning on
    the core, a busy machine) then holds the call up by a chunk rather than
    by its whole static share; no item's result depends on the thread that
    computes it, so the bits stay the same.  Measured at 2 threads (new / old
    time, one process): softmax float32 (16384, 128) 0.83-0.91 alone and
    0.74-0.91 interleaved with PyTorch calls, softmax_backward 0.83-0.93
    alone, rows of 1000 and more 0.93-1.02."""
    return max(1, items // (16 * num_threads))


cdef inline Py_ssize_t rows_per_group(int op, Py_ssize_t K, size_t itemsize) noexcept nogil:
    """Rows of K elements that whole_rows takes through the sweeps of `op` together."""
    cdef Py_ssize_t limit = GROUP_BYTES_BACKWARD if is_backward(op) else GROUP_BYTES_FORWARD
    return ROW_GROUP if K * ROW_GROUP * <Py_ssize_t>itemsize <= limit else 1


cdef inline bint fetch_ahead(Py_ssize_t K, size_t itemsize) noexcept nogil:
    """Whether a row of K elements should fetch the next one during its exp sweep."""
    return AHEAD_MIN_BYTES <= K * <Py_ssize_t>itemsize <= AHEAD_MAX_BYTES


cdef inline const element *row_to_fetch(const element *x, Py_ssize_t ld, Py_ssize_t index,
                                        Py_ssize_t count, bint fetch) noexcept nogil:
    """Row `index` of `count` rows `ld` apart, for an exp sweep to fetch into
    cache; NULL when `fetch` is off or there is no such row."""
    return x + index * ld if fetch and index < count else NULL


cdef inline const floating *row_after(const floating *x, Py_ssize_t ldx, Py_ssize_t i,
                                      Py_ssize_t count, const floating *ahead,
                                      Py_ssize_t step) noexcept nogil:
    """The row `step` rows after row i of `count` (ldx apart), counting on
    into `ahead`'s rows after the last: what row i's exp sweep fetches
    into cache.  NULL when `ahead` is NULL (nothing to fetch)."""
    if ahead == NULL:
        return NULL
    return x + (i + step) * ldx if i + step < count else ahead + (i + step - count) * ldx


cdef inline floating *softmax_exps(int op, floating *out, floating *exps,
                                   Py_ssize_t offset) noexcept nogil:
    """Where row_exp_sum keeps a row's exps: nowhere but for softmax, which
    keeps them in its output row, or at `offset` in `exps` unless NULL."""
    if op != SOFTMAX:
        return NULL
    return out if exps == NULL else exps + offset


cdef void whole_rows(const sx_table *t, int op, const floating *x, Py_ssize_t ldx,
                     const floating *g, Py_ssize_t ldg, floating *out, Py_ssize_t ldo,
                     floating *lse, Py_ssize_t lde, Py_ssize_t count, Py_ssize_t K,
                     const floating *ahead, bint stream, floating *exps,
                     const sx_half_table *narrow, uint16_t *narrowed,
                     Py_ssize_t ldn) noexcept nogil:
    """`op` on `count` contiguous rows of K elements (row i at x + i*ldx, its
    logsumexp at lse[i*lde]), by the calling thread.  Unless `ahead` is NULL,
    each forward row's exp sweep fetches into cache the row that the same
    sweep reads next, rows_per_group rows on: `ahead` holds the rows after
    the last (the first of at least `count` rows, ldx apart, that this
    thread reads next).  With `stream`,
    log_softmax and both backward ops write `out` by streaming stores; the
    caller then runs sx_store_fence once.  Softmax streams when `exps` is not
    NULL (a scratch of rows_per_group rows of K, where it keeps its exps and
    then streams them into `out` scaled: row_scale_stream); otherwise it
    keeps them in `out`.  Unless `narrow` is NULL (float32 only), softmax and
    log_softmax write their results rounded to 16 bits into `narrowed` (rows
    ldn apart) in their last sweep, by narrow's row_scale_store /
    row_log_normalize_store; softmax's exps still go to `out`.

    Short rows go through each sweep rows_per_group at a time (every max,
    then every sum, then every normalisation), so that the CPU overlaps one
    row's dependency chain (max -> exp -> sum -> 1/sum -> scale) with the
    next row's work; each row still gets exactly the primitives, hence the
    bits, it would get alone."""
    cdef double shift[ROW_GROUP]
    cdef double largest[ROW_GROUP]
    cdef double low[ROW_GROUP]
    cdef double total[ROW_GROUP]
    cdef double ties
    cdef Py_ssize_t per = rows_per_group(op, K, sizeof(floating))
    cdef Py_ssize_t group, first, i, n
    for group in range((count + per - 1) // per):
        first = group * per
        n = min(per, count - first)
        if is_backward(op):
            for i in range(first, first + n):
                total[i - first] = backward_reduce(t, op, x + i * ldx, g + i * ldg, K)
            for i in range(first, first + n):
                backward_finish(t, op, x + i * ldx, g + i * ldg, out + i * ldo, K,
                                total[i - first], stream)
            continue
        for i in range(first, first + n):
            largest[i - first] = t.row_max(x + i * ldx, K, &low[i - first])
            shift[i - first] = forward_shift(op, largest[i - first])
            low[i - first] = sweep_low(shift[i - first], largest[i - first], low[i - first])
        if op == LOGSUMEXP:
            for i in range(first, first + n):
                total[i - first] = t.row_exp_excess(x + i * ldx, K, shift[i - first],
                                                    low[i - first], &ties,
                                                    row_after(x, ldx, i, count, ahead, per))
                lse[i * lde] = <floating>log_sum_exp(shift[i - first], total[i - first], ties)
            continue
        for i in range(first, first + n):
            total[i - first] = t.row_exp_sum(x + i * ldx, softmax_exps(op, out + i * ldo, exps,
                                                                       (i - first) * K),
                                             K, shift[i - first], low[i - first],
                                             row_after(x, ldx, i, count, ahead, per))
        for i in range(first, first + n):
            if op == SOFTMAX and exps != NULL:
                t.row_scale_stream(exps + (i - first) * K, out + i * ldo, K,
                                   1.0 / total[i - first])
                continue
            if floating is float:
                if narrow != NULL:
                    narrow_finish(narrow, op, x + i * ldx, out + i * ldo, narrowed + i * ldn, K,
                                  shift[i - first], total[i - first])
                    continue
            forward_finish(t, op, x + i * ldx, out + i * ldo, K, shift[i - first],
                           total[i - first], stream)


cdef inline void short_row_softmax_backward(const floating *p, const floating *g, floating *out,
                                            Py_ssize_t K) noexcept nogil:
    """p * (g - <g, p>) for a row of K < SHORT_ROW: no exp to amortise, so a
    plain loop beats both the lane machinery and a transposed tile (with the
    vector transposes, before their edge-store fix: 1.2-1.5x the time for
    float32 K = 3-20).  The dot product runs in two chains (even and odd k),
    which halves its latency: Zen 3, (65536, 10) float32 0.95-0.98 of the
    time, float64 0.91-0.93, (65536, 25) 0.89-0.91."""
    cdef double even = 0.0, odd = 0.0
    cdef floating d
    cdef Py_ssize_t k
    for k in range(0, K - 1, 2):
        even += <double>g[k] * p[k]
        odd += <double>g[k + 1] * p[k + 1]
    if K % 2:
        even += <double>g[K - 1] * p[K - 1]
    d = <floating>(even + odd)
    for k in range(K):
        out[k] = p[k] * (g[k] - d)


cdef void rows_kernel(int op, const floating *x, Py_ssize_t ldx, const floating *g,
                      Py_ssize_t ldg, floating *out, Py_ssize_t ldo, floating *lse,
                      Py_ssize_t rows, Py_ssize_t K, bint fresh_out,
                      int num_threads) noexcept nogil:
    """All five operations over (rows, K) with contiguous rows.

    `x` is the input (p or logp for the backward ops), `g` the upstream
    gradient (backward only), `out` the (rows, K) result and `lse` the (rows,)
    result of LOGSUMEXP.  Short rows go to tiles_kernel as transposed tiles
    (element (k, j) of row j at x[j*ldx + k]), long rows whole or split.
    `out` is written by streaming stores at the stream footprint unless
    `fresh_out` (see rows).
    """
    cdef const sx_table *t = table_for(x)
    cdef Py_ssize_t r
    if K < SHORT_ROW and op == SOFTMAX_BACKWARD:
        for r in prange(rows, schedule="dynamic", chunksize=dynamic_chunk(rows, num_threads),
                        num_threads=num_threads):
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
    cdef Py_ssize_t group = rows_per_group(op, K, sizeof(floating))
    cdef Py_ssize_t groups = (rows + group - 1) // group
    # whole_rows takes a dynamic schedule's chunk of groups in one call, not
    # a group a call: on the Xeon, float32 softmax (16384, 128) 0.93-0.98 of
    # the time, (4096, 100) 0.92-0.96, (65536, 64) at 2 threads 0.93-0.94
    cdef Py_ssize_t chunk_groups = dynamic_chunk(groups, num_threads)
    cdef Py_ssize_t chunk = chunk_groups * group
    cdef Py_ssize_t chunks = (groups + chunk_groups - 1) // chunk_groups
    cdef bint ahead = fetch_ahead(K, sizeof(floating))
    cdef bint stream = not fresh_out and streams(2 + (g != NULL), rows * K, sizeof(floating))
    cdef Py_ssize_t exps_size = 0
    cdef floating *exps
    if floating is float:
        if stream and op == SOFTMAX and \
                STREAM_EXPS_MIN_BYTES <= K * <Py_ssize_t>sizeof(float) <= STREAM_EXPS_BYTES:
            exps_size = group * K
    with parallel(num_threads=num_threads):
        # softmax's per-thread scratch for its exps (see STREAM_EXPS_BYTES);
        # without it (no memory) the exps go to `out`, scaled in place
        exps = <floating *>malloc(exps_size * sizeof(floating)) if exps_size else NULL
        for r in prange(chunks, schedule="dynamic", chunksize=1):
            whole_rows(t, op, x + r * chunk * ldx, ldx, at(g, r * chunk * ldg), ldg,
                       <floating *>at(out, r * chunk * ldo), ldo, <floating *>at(lse, r * chunk),
                       1, min(chunk, rows - r * chunk), K,
                       # the group after the chunk, when it is whole (see whole_rows)
                       row_to_fetch(x, group * ldx, (r + 1) * chunk_groups, rows // group, ahead),
                       stream, exps, NULL, NULL, 0)
        if stream:
            sx_store_fence()
        free(exps)


cdef int rows_kernel_split(int op, const floating *x, Py_ssize_t ldx, const floating *g,
                           Py_ssize_t ldg, floating *out, Py_ssize_t ldo, floating *lse,
                           Py_ssize_t rows, Py_ssize_t K, int num_threads) noexcept nogil:
    """rows_kernel for few long rows: every sweep runs over SX_CHUNK pieces in
    parallel, and the per-piece results are combined serially in piece order.
    Returns -1, having done nothing, when its scratch cannot be allocated."""
    cdef const sx_table *t = table_for(x)
    cdef bint backward = is_backward(op)
    cdef Py_ssize_t pieces = (K + SX_CHUNK - 1) // SX_CHUNK
    cdef Py_ssize_t items = rows * pieces
    cdef Py_ssize_t it, r, c, start, n
    cdef double m
    cdef double *part = <double *>malloc(items * sizeof(double))
    cdef double *part_low = <double *>malloc(items * sizeof(double))
    cdef double *shift = <double *>malloc(rows * sizeof(double))
    cdef double *low = <double *>malloc(rows * sizeof(double))
    cdef double *total = <double *>malloc(rows * sizeof(double))
    cdef double *tie_part = <double *>malloc(items * sizeof(double))  # LOGSUMEXP
    cdef double ties
    if (part == NULL or part_low == NULL or shift == NULL or low == NULL or total == NULL
            or tie_part == NULL):
        free(part)
        free(part_low)
        free(shift)
        free(low)
        free(total)
        free(tie_part)
        return -1
    if not backward:
        for it in prange(items, schedule="static", num_threads=num_threads):
            r = it // pieces
            start = (it % pieces) * SX_CHUNK
            part[it] = t.row_max(x + r * ldx + start, min(SX_CHUNK, K - start), &part_low[it])
        for r in range(rows):
            m = part[r * pieces]
            low[r] = part_low[r * pieces]
            for c in range(1, pieces):
                m = max(m, part[r * pieces + c])
                low[r] = min(low[r], part_low[r * pieces + c])
            shift[r] = forward_shift(op, m)
            low[r] = sweep_low(shift[r], m, low[r])
    for it in prange(items, schedule="static", num_threads=num_threads):
        r = it // pieces
        start = (it % pieces) * SX_CHUNK
        n = min(SX_CHUNK, K - start)
        if backward:
            part[it] = backward_reduce(t, op, x + r * ldx + start, g + r * ldg + start, n)
        elif op == LOGSUMEXP:
            part[it] = t.row_exp_excess(x + r * ldx + start, n, shift[r], low[r], &tie_part[it],
                                        NULL)
        else:
            part[it] = t.row_exp_sum(x + r * ldx + start,
                                     out + r * ldo + start if op == SOFTMAX else NULL,
                                     n, shift[r], low[r], NULL)
    for r in range(rows):
        total[r] = 0.0
        for c in range(pieces):
            total[r] += part[r * pieces + c]
        if op == LOGSUMEXP:
            ties = 0.0
            for c in range(pieces):
                ties += tie_part[r * pieces + c]
            lse[r] = <floating>log_sum_exp(shift[r], total[r], ties)
    if op != LOGSUMEXP:
        for it in prange(items, schedule="static", num_threads=num_threads):
            r = it // pieces
            start = (it % pieces) * SX_CHUNK
            n = min(SX_CHUNK, K - start)
            if backward:
                backward_finish(t, op, x + r * ldx + start, g + r * ldg + start,
                                out + r * ldo + start, n, total[r], False)
            else:
                forward_finish(t, op, x + r * ldx + start, out + r * ldo + start, n,
                               shift[r], total[r], False)
    free(part)
    free(part_low)
    free(shift)
    free(low)
    free(total)
    free(tie_part)
    return 0


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


cdef int check_op(int op, bint has_grad) except -1:
    """`op` is one of Op, and grad is given for, and only for, a backward op."""
    if not SOFTMAX <= op <= LOG_SOFTMAX_BACKWARD:
        raise ValueError(f"unknown op {op}")
    if has_grad != is_backward(op):
        raise ValueError("grad is required by, and only by, the backward ops")
    return 0


cdef int check_request(int op, bint has_grad, bint has_out, bint has_lse,
                       int num_threads) except -1:
    """The operands `op` needs are given, and no others."""
    check_op(op, has_grad)
    if has_out == (op == LOGSUMEXP) or has_lse != (op == LOGSUMEXP):
        raise ValueError("LOGSUMEXP writes lse only; every other op writes out only")
    return check_threads(num_threads)


# ---- softmax-family entry points ---------------------------------------------------

def rows(*, int op, const floating[:, :] x not None, const floating[:, :] grad=None,
         floating[:, :] out=None, floating[:] lse=None, bint fresh_out=False, int num_threads):
    """Run `op` over the rows of x, shaped (rows, K) with K contiguous; rows
    may be any (multiple of the itemsize) apart, overlapping included.

    Outputs: `out` (same shape and layout rules as x) for every op but
    LOGSUMEXP, which writes `lse` (one value per row).  `grad` is the upstream
    gradient of the backward ops, with x holding p (softmax) or log p
    (log_softmax).  `out` must not overlap itself, nor an input other than
    exactly (same data, same strides).  `fresh_out` says that `out`'s pages
    have never been written (a large array just allocated): it is then
    written by ordinary stores, never streaming ones, whatever its size (the
    OS zeroes each page into the cache as the first store faults it in, and
    streaming stores would write every line a second time).
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
                    n_rows, K, fresh_out, num_threads)


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


include "strided_axis.pxi"
include "gradients.pxi"
include "half_precision.pxi"
include "split_axis.pxi"
