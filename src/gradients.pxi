# Gradient kernels of softmax_ext: cross-entropy (whole rows and blocks of
# classes) and the explicit Jacobians.  Included by _kernels.pyx, whose
# primitives (sx_table), tiles and operand checks they use.

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
# gradient from those exps (one exp per element in all); short rows take each
# sweep a group of rows at a time (xent_tile).  The gradient may
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


cdef struct xent_state:
    # what one row of cross-entropy carries from sweep to sweep
    double shift        # m, the row's max
    double low          # its smallest logit (row_max's, for the exp sweep)
    double total_c      # C = sum_k c_k
    double shifted_dot  # sum_k c_k (z_k - m)
    double w_y          # the target's class weight (index targets)
    double total_exp    # S = sum_k exp(z_k - m)


cdef inline void xent_row_prepare(const sx_table *t, const floating *z, Py_ssize_t K,
                                  Py_ssize_t target, const floating *probs,
                                  const floating *weight, double weight_sum, double smoothing,
                                  xent_state *row) noexcept nogil:
    """The sweeps of one row that read its logits before its exp sweep (which
    may overwrite them): the max, C and sum_k c_k (z_k - m)."""
    cdef double share = smoothing / K          # e/K
    row.shift = t.row_max(z, K, &row.low)
    row.w_y = 1.0
    if probs == NULL:
        if weight != NULL:
            row.w_y = weight[target]
        row.total_c = (1.0 - smoothing) * row.w_y + share * weight_sum
        row.shifted_dot = (1.0 - smoothing) * row.w_y * (z[target] - row.shift)
    else:
        row.total_c = (1.0 - smoothing) * t.row_dot(probs, weight, NULL, K, 0.0) + \
            share * weight_sum
        row.shifted_dot = prob_target_dot(t, z, probs, weight, K, row.shift, smoothing, share)
    if smoothing != 0.0 and probs == NULL:
        row.shifted_dot += share * t.row_dot(z, weight, NULL, K, row.shift)


cdef inline void xent_row_finish(const sx_table *t, Py_ssize_t K, Py_ssize_t target,
                                 const floating *probs, const floating *weight, double smoothing,
                                 double grad_scale, const xent_state *row, double *loss,
                                 floating *grad) noexcept nogil:
    """One row's loss, and its gradient (unless grad is NULL) from the exps
    that its exp sweep left in grad."""
    loss[0] = row.total_c * log(row.total_exp) - row.shifted_dot
    if grad == NULL:
        return
    t.row_xent_grad(grad, probs, weight, grad, K, grad_scale * row.total_c / row.total_exp,
                    grad_scale * (1.0 - smoothing), grad_scale * smoothing / K)
    if probs == NULL:
        grad[target] -= <floating>(grad_scale * (1.0 - smoothing) * row.w_y)


cdef void xent_row(const sx_table *t, const floating *z, Py_ssize_t K, Py_ssize_t target,
                   const floating *probs, const floating *weight, double weight_sum,
                   double smoothing, double grad_scale, double *loss, floating *grad,
                   const floating *ahead) noexcept nogil:
    """Loss (and gradient, unless grad is NULL) of one row, its sweeps one
    after another; grad may be z.  The exp sweep fetches the row `ahead` (or
    NULL) into cache, as whole_rows."""
    cdef xent_state row
    xent_row_prepare(t, z, K, target, probs, weight, weight_sum, smoothing, &row)
    row.total_exp = t.row_exp_sum(z, grad, K, row.shift, row.low, ahead)   # grad <- exp(z - m)
    xent_row_finish(t, K, target, probs, weight, smoothing, grad_scale, &row, loss, grad)


cdef inline void xent_skip_row(Py_ssize_t K, double *loss, floating *grad) noexcept nogil:
    """Loss 0 and gradient 0 (unless grad is NULL): a row whose target is ignore_index."""
    cdef Py_ssize_t k
    loss[0] = 0.0
    if grad != NULL:
        for k in range(K):
            grad[k] = 0


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
    cdef int tame
    copy_tile(t, z, 1, ldz, tile, w, 1, K, w)          # tile[k, j] = z[j, k]
    tame = t.col_max(tile, w, K, w, shift, NULL, 0)
    for j in range(w):
        m = shift[j]
        kept = not xent_ignored(target, j, ignore_index)
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
    t.col_exp_sum(tile, w, tile, w, K, w, shift, tame, total_exp)   # tile <- exp(z - m)
    for j in range(w):
        kept = not xent_ignored(target, j, ignore_index)
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
    copy_tile(t, tile, w, 1, grad, 1, ldg, K, w)       # grad[j, k] = tile[k, j]


cdef inline bint xent_ignored(const Py_ssize_t *target, Py_ssize_t i,
                              Py_ssize_t ignore_index) noexcept nogil:
    """Whether row i's index target (none with probability targets) is ignore_index."""
    return target != NULL and target[i] == ignore_index


cdef inline Py_ssize_t xent_class(const Py_ssize_t *target, Py_ssize_t i) noexcept nogil:
    """Row i's target class for the row helpers: its index, or 0 (unread)
    with probability targets."""
    return target[i] if target != NULL else 0


cdef void xent_tile(const sx_table *t, const floating *z, Py_ssize_t ldz, Py_ssize_t K,
                    Py_ssize_t n, const Py_ssize_t *target, Py_ssize_t ignore_index,
                    const floating *probs, Py_ssize_t ldp, const floating *weight,
                    double weight_sum, double smoothing, double grad_scale, double *loss,
                    floating *grad, Py_ssize_t ldg, const floating *ahead) noexcept nogil:
    """Losses (and gradients, unless grad is NULL) of n rows: one transposed
    tile when K < SHORT_ROW (n <= XENT_TILE), else whole rows; a row whose
    target is ignore_index gets loss 0 and gradient 0.  grad may be z.

    Whole rows go through the sweeps rows_per_group at a time, as whole_rows
    takes log_softmax's (every max and target term, then every exp sweep,
    then every loss and gradient), so that one row's dependency chain
    overlaps the next row's work; rows too long for a group go one at a
    time (xent_row).  Unless `ahead` is NULL (the rows after the last), each
    exp sweep fetches the matching row of the next group.  Measured on the
    Xeon against rows one at a time (new / old time, one process, same
    bits): cross_entropy + grad float32 (4096, 100) 0.79-0.85 at 1 thread,
    (4096, 128) 0.79-0.82 at 2, float64 (4096, 200) 0.84-0.85, bfloat16
    (4096, 100) 0.90-0.96, without grad (256, 100) 0.89-0.90.  Groups of
    one through the same three loops were 3-5 % slower than xent_row
    (float64 K = 300, float32 K = 600), hence xent_row for those."""
    cdef xent_state rows[ROW_GROUP]
    cdef Py_ssize_t per = rows_per_group(LOG_SOFTMAX, K, sizeof(floating))
    cdef Py_ssize_t group, first, i
    if K < SHORT_ROW:
        xent_short_rows(t, z, ldz, K, n, target, ignore_index, probs, ldp, weight, weight_sum,
                        smoothing, grad_scale, loss, grad, ldg)
        return
    if per == 1:
        for i in range(n):
            if xent_ignored(target, i, ignore_index):
                xent_skip_row(K, &loss[i], <floating *>at(grad, i * ldg))
            else:
                xent_row(t, z + i * ldz, K, xent_class(target, i),
                         at(probs, i * ldp), weight, weight_sum, smoothing, grad_scale, &loss[i],
                         <floating *>at(grad, i * ldg), row_after(z, ldz, i, n, ahead, 1))
        return
    for group in range((n + per - 1) // per):
        first = group * per
        for i in range(first, min(n, first + per)):
            if not xent_ignored(target, i, ignore_index):
                xent_row_prepare(t, z + i * ldz, K, xent_class(target, i),
                                 at(probs, i * ldp), weight, weight_sum, smoothing,
                                 &rows[i - first])
        for i in range(first, min(n, first + per)):
            if not xent_ignored(target, i, ignore_index):
                rows[i - first].total_exp = t.row_exp_sum(      # grad <- exp(z - m)
                    z + i * ldz, <floating *>at(grad, i * ldg), K, rows[i - first].shift,
                    rows[i - first].low, row_after(z, ldz, i, n, ahead, per))
        for i in range(first, min(n, first + per)):
            if xent_ignored(target, i, ignore_index):
                xent_skip_row(K, &loss[i], <floating *>at(grad, i * ldg))
            else:
                xent_row_finish(t, K, xent_class(target, i), at(probs, i * ldp),
                                weight, smoothing, grad_scale, &rows[i - first], &loss[i],
                                <floating *>at(grad, i * ldg))


cdef int xent_targets(Py_ssize_t N, Py_ssize_t K, const Py_ssize_t[::1] target,
                      const floating[:, :] probs, const floating[::1] weight,
                      const Py_ssize_t **y0, const floating **p0, Py_ssize_t *ldp,
                      const floating **w0, double *weight_sum) except -1:
    """Check the cross-entropy targets of N rows of K classes (exactly one of
    target (N,) and probs (N, K); weight (K,)) and give their pointers, the
    probs row stride (in elements) and the sum of the class weights; 1 when
    there is nothing to compute (no rows or no classes), else 0."""
    cdef Py_ssize_t size = sizeof(floating), k
    if (target is None) == (probs is None):
        raise ValueError("give exactly one of target and probs")
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


cdef int check_targets_in_range(const Py_ssize_t[::1] target, Py_ssize_t K,
                                Py_ssize_t ignore_index) except -1:
    """Every index in [0, K) or equal to ignore_index: the whole-row loops
    index the logits with it."""
    cdef Py_ssize_t r
    if target is not None:
        for r in range(target.shape[0]):
            if target[r] != ignore_index and not 0 <= target[r] < K:
                raise ValueError(f"target[{r}] = {target[r]} is outside [0, {K}) "
                                 f"and not ignore_index ({ignore_index})")
    return 0


cdef int xent_operands(const floating[:, :] logits, const Py_ssize_t[::1] target,
                       const floating[:, :] probs, const floating[::1] weight,
                       const floating **z0, Py_ssize_t *ldz, const Py_ssize_t **y0,
                       const floating **p0, Py_ssize_t *ldp, const floating **w0,
                       double *weight_sum) except -1:
    """xent_targets, and the logits (N, K) with their pointer and row stride;
    1 when there is nothing to compute, else 0."""
    cdef Py_ssize_t size = sizeof(floating)
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1]
    check_view("logits", 2, &logits.shape[0], &logits.strides[0], &logits[0, 0], size,
               (N, K), True)
    if xent_targets(N, K, target, probs, weight, y0, p0, ldp, w0, weight_sum):
        return 1
    z0[0], ldz[0] = &logits[0, 0], logits.strides[0] // size
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
    cdef Py_ssize_t N = logits.shape[0], K = logits.shape[1], r, r0, per_tile
    cdef Py_ssize_t ldz, ldp, ldg = 0
    cdef bint ahead
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
    check_targets_in_range(target, K, ignore_index)
    if xent_operands(logits, target, probs, weight, &z0, &ldz, &y0, &p0, &ldp, &w0, &weight_sum):
        loss[:] = 0.0
        return
    t = table_for(z0)
    if grad is not None:
        g0, ldg = &grad[0, 0], grad.strides[0] // size
    # short rows in transposed tiles of XENT_TILE rows, longer ones a group of
    # rows at a time (see xent_tile)
    per_tile = XENT_TILE if K < SHORT_ROW else rows_per_group(LOG_SOFTMAX, K, size)
    ahead = fetch_ahead(K, size)
    with nogil:
        for r in prange((N + per_tile - 1) // per_tile, schedule="dynamic",
                        chunksize=dynamic_chunk((N + per_tile - 1) // per_tile, num_threads),
                        num_threads=num_threads):
            r0 = r * per_tile  # first row of the tile
            xent_tile(t, z0 + r0 * ldz, ldz, K, min(per_tile, N - r0), at(y0, r0), ignore_index,
                      at(p0, r0 * ldp), ldp, w0, weight_sum, smoothing, grad_scale, &loss[r0],
                      <floating *>at(g0, r0 * ldg), ldg,
                      row_to_fetch(z0, ldz, r0 + per_tile, N, ahead))


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
    cdef double block_max, block_low, block_sum, m, weight_block_sum, mass
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
            block_max = t.row_max(z0 + r * ldz, Kb, &block_low)
            m = stats[r, STAT_MAX]
            if block_max == -INFINITY:
                # only -inf (adds nothing) or NaN (must reach the loss) here
                if t.row_exp_sum(z0 + r * ldz, NULL, Kb, 0.0, -INFINITY, NULL) != 0:
                    stats[r, STAT_SUM] = NAN
            else:
                block_sum = t.row_exp_sum(z0 + r * ldz, NULL, Kb, block_max, block_low, NULL)
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
            t.row_exp_sum(z0 + r * ldz, z0 + r * ldz, Kb, shift[r], -INFINITY, NULL)
            t.row_xent_grad(z0 + r * ldz, at(p0, r * ldp), w0, z0 + r * ldz, Kb, alpha[r],
                            beta if p0 != NULL else 0.0, gamma)
            if y0 != NULL:
                y = y0[r] - first_class
                if 0 <= y < Kb:
                    z0[r * ldz + y] -= <floating>one_hot[r]
