"""Gradients through softmax: Jacobians, cross-entropy and the fused linear layer.

For logits z = x W^T + b (x: (N, D), W: (K, D) with row w_i for class i, as in
torch.nn.Linear, b: (K,)) and sigma = softmax(z):

    d sigma_j / d z_i = sigma_j (delta_ij - sigma_i)
    d sigma_j / d w_i = sigma_j (delta_ij - sigma_i) x
"""

from __future__ import annotations

import contextlib
import math
import operator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Optional, Union

import numpy as np
from numpy.typing import ArrayLike
from threadpoolctl import threadpool_limits

from . import _kernels
from ._core import softmax
from ._layout import Plan, as_float_array, normalize_axis
from ._threads import resolve_num_threads

REDUCTIONS = ("mean", "sum", "none")
# Logits held at once by linear_cross_entropy when chunk_size is None: the
# only sizeable memory it adds beyond x, W and the gradients.  Measured at
# N=2048, D=256, K=32000 float32 on 2 cores: 128 / 262 / 512 / 1024 rows took
# 1.38 / 1.32 / 1.17 / 1.13 x the three bare GEMMs (small chunks make the dW
# GEMM's inner dimension short and repeat the dW accumulation).
CHUNK_BYTES = 64 * 2**20
# Rows per chunk at least (when K is very wide), so that GEMMs stay efficient;
# when even these rows of logits exceed CHUNK_BYTES, classes are chunked too.
MIN_CHUNK_ROWS = 64
# dW is accumulated in blocks of classes through a temporary of at most this
# size per worker (numpy's matmul cannot accumulate into its output); 1 MiB
# ran as fast as 4 MiB at N=2048, D=256, K=32000.
DW_BLOCK_BYTES = 1 * 2**20

Loss = Union[np.floating, np.ndarray]


def softmax_jacobian(x: ArrayLike, axis: Optional[int] = -1) -> np.ndarray:
    r"""The softmax Jacobian of every slice along `axis`.

    .. math:: J_{ji} = \frac{\partial p_j}{\partial z_i} = p_j (\delta_{ij} - p_i),
              \quad p = \mathrm{softmax}(z)

    Parameters
    ----------
    x : array_like
        Logits; dtypes as in `softmax`.
    axis : int, optional
        The class axis (default -1).

    Returns
    -------
    ndarray
        Shape ``(..., K, K)``: the other axes of `x` in order, then ``J[j, i]``.
    """
    z = as_float_array(x, "x")
    if z.ndim == 0:
        raise ValueError("x must have at least one dimension")
    axis = normalize_axis(axis, z.ndim)
    p = np.ascontiguousarray(np.moveaxis(softmax(z, axis=axis), axis, -1))
    K = p.shape[-1]
    rows = p.reshape(-1, K)
    out = np.empty((rows.shape[0], K, K), dtype=z.dtype)
    if out.size:
        _kernels.softmax_jacobian(p=rows, out=out, num_threads=resolve_num_threads(None, out.size))
    return out.reshape(p.shape[:-1] + (K, K))


def _linear_inputs(x: ArrayLike, W: ArrayLike, b: Optional[ArrayLike]):
    """x (N, D), W (K, D) and b (K,) or None, in one float dtype; 1-D x is one row."""
    x_arr, W_arr = as_float_array(x, "x"), as_float_array(W, "W")
    b_arr = None if b is None else as_float_array(b, "b")
    dtype = np.result_type(x_arr, W_arr, *(() if b_arr is None else (b_arr,)))
    if x_arr.ndim not in (1, 2):
        raise ValueError(f"x must have shape (N, D) or (D,), got {x_arr.shape}")
    if W_arr.ndim != 2:
        raise ValueError(f"W must have shape (K, D), got {W_arr.shape}")
    if x_arr.shape[-1] != W_arr.shape[1]:
        raise ValueError(f"x has D={x_arr.shape[-1]} features but W has D={W_arr.shape[1]}")
    if b_arr is not None and b_arr.shape != (W_arr.shape[0],):
        raise ValueError(f"b must have shape ({W_arr.shape[0]},), got {b_arr.shape}")
    cast = lambda a: None if a is None else a.astype(dtype, copy=False)  # noqa: E731
    return cast(x_arr), cast(W_arr), cast(b_arr)


def softmax_weight_jacobian(x: ArrayLike, W: ArrayLike, b: Optional[ArrayLike] = None) -> np.ndarray:
    r"""Derivative of the probabilities with respect to the weights.

    For logits :math:`z = x W^T + b` and :math:`\sigma = \mathrm{softmax}(z)`,

    .. math:: \frac{\partial \sigma_j}{\partial w_i} = \sigma_j (\delta_{ij} - \sigma_i)\, x

    by the chain rule through :math:`\partial z_k / \partial w_i = \delta_{ki} x`.

    Parameters
    ----------
    x : array_like
        Inputs, shape (N, D), or (D,) for one sample.
    W : array_like
        Weights, shape (K, D): row ``W[i]`` produces logit i.
    b : array_like, optional
        Bias, shape (K,).

    Returns
    -------
    ndarray
        ``out[n, j, i, :]`` = d sigma_j / d w_i for sample n, shape (N, K, K, D);
        (K, K, D) for 1-D `x`. Memory grows as N K^2 D: for training use
        `cross_entropy` / `weight_grad`, which never form it.
    """
    x_arr, W_arr, b_arr = _linear_inputs(x, W, b)
    rows = np.ascontiguousarray(np.atleast_2d(x_arr))
    logits = rows @ W_arr.T
    if b_arr is not None:
        logits += b_arr
    p = np.ascontiguousarray(softmax(logits, axis=-1))
    N, K, D = rows.shape[0], W_arr.shape[0], W_arr.shape[1]
    out = np.empty((N, K, K, D), dtype=rows.dtype)
    if out.size:
        _kernels.softmax_weight_jacobian(p=p, x=rows, out=out,
                                         num_threads=resolve_num_threads(None, out.size))
    return out[0] if x_arr.ndim == 1 else out


def weight_grad(x: ArrayLike, dlogits: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    r"""Gradients of the weights and bias of z = x W^T + b from dL/dz.

    .. math:: \frac{\partial L}{\partial W} = \delta^T x, \qquad
              \frac{\partial L}{\partial b} = \sum_n \delta_n, \qquad \delta = \partial L / \partial z

    Parameters
    ----------
    x : array_like
        Inputs, shape (N, D) (or (D,) for one sample).
    dlogits : array_like
        dL/dz, shape (N, K) (or (K,)).

    Returns
    -------
    dW : ndarray
        Shape (K, D).
    db : ndarray
        Shape (K,).
    """
    x_arr, d_arr = as_float_array(x, "x"), as_float_array(dlogits, "dlogits")
    dtype = np.result_type(x_arr, d_arr)
    x2, d2 = np.atleast_2d(x_arr).astype(dtype, copy=False), np.atleast_2d(d_arr).astype(dtype, copy=False)
    if x2.ndim != 2 or d2.ndim != 2 or x2.shape[0] != d2.shape[0] or x_arr.ndim != d_arr.ndim:
        raise ValueError(f"x (N, D) and dlogits (N, K) must have the same N, got {x_arr.shape} and {d_arr.shape}")
    return d2.T @ x2, d2.sum(axis=0)


# ---- cross-entropy -------------------------------------------------------------


@dataclass(frozen=True)
class _Targets:
    index: Optional[np.ndarray]  # class indices (N,) as intp, or None
    probs: Optional[np.ndarray]  # class probabilities (N, K), or None
    denominator: float  # what reduction="mean" divides by

    def grad_scale(self, reduction: str) -> float:
        """Factor of the per-row gradients: 1 / denominator for "mean"."""
        return 1.0 / self.denominator if reduction == "mean" and self.denominator else 1.0


def _check_options(label_smoothing: float, reduction: str) -> float:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    try:
        smoothing = float(label_smoothing)
    except (TypeError, ValueError):
        raise ValueError(f"label_smoothing must be a number in [0, 1], got {label_smoothing!r}") from None
    if not 0.0 <= smoothing <= 1.0:  # also rejects NaN
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return smoothing


def _class_weight(weight: Optional[ArrayLike], K: int, dtype: np.dtype) -> Optional[np.ndarray]:
    if weight is None:
        return None
    w = as_float_array(weight, "weight")
    if w.shape != (K,):
        raise ValueError(f"weight must have shape ({K},) (one per class), got {w.shape}")
    return np.ascontiguousarray(w, dtype=dtype)


def _targets(target: ArrayLike, N: int, K: int, dtype: np.dtype, weight: Optional[np.ndarray],
             ignore_index: int) -> _Targets:
    t = np.asarray(target)
    if t.dtype.kind in "iu":
        if t.shape != (N,):
            raise ValueError(f"class-index target must have shape ({N},), got {t.shape}")
        kept = t != ignore_index
        outside = kept & ((t < 0) | (t >= K))
        if outside.any():
            raise ValueError(f"target holds class index {t[outside][0]}, outside [0, {K}) "
                             f"and not ignore_index ({ignore_index})")
        index = np.ascontiguousarray(t, dtype=np.intp)  # every value fits: checked above
        if weight is not None:
            denominator = float(weight[index[kept]].sum(dtype=np.float64))
        else:
            denominator = float(np.count_nonzero(kept))
        return _Targets(index, None, denominator)
    if t.dtype.kind == "f":
        if t.shape != (N, K):
            raise ValueError(f"class-probability target must have shape ({N}, {K}), got {t.shape}")
        return _Targets(None, np.ascontiguousarray(t, dtype=dtype), float(N))
    raise TypeError(f"target must hold class indices (an integer dtype) or class probabilities "
                    f"(a float dtype), got dtype {t.dtype}")


def _rows_contiguous(a: np.ndarray) -> np.ndarray:
    """(N, K) `a` as the row kernels take it: viewed when its layout allows
    (the rows plan of _layout), else a C copy."""
    view = Plan(axis=1, outer=(0,), inner=()).view(a)
    return view if view is not None else np.array(a, order="C")


def _reduce(loss_rows: np.ndarray, reduction: str, denominator: float, dtype: np.dtype) -> Loss:
    if reduction == "none":
        return loss_rows.astype(dtype)
    total = float(np.sum(loss_rows))  # one fixed order, whatever the threads
    if reduction == "mean":
        total = total / denominator if denominator != 0 else math.nan
    return dtype.type(total)


def cross_entropy(
    logits: ArrayLike,
    target: ArrayLike,
    *,
    weight: Optional[ArrayLike] = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    return_grad: bool = False,
    num_threads: Optional[int] = None,
) -> Union[Loss, tuple[Loss, np.ndarray]]:
    r"""Cross-entropy of logits against targets, as ``torch.nn.functional.cross_entropy``.

    With :math:`\log p = \mathrm{log\_softmax}(z)`, class weights :math:`w`
    (ones by default), label smoothing :math:`\varepsilon` and K classes, each
    row's loss is :math:`\ell = -\sum_k c_k \log p_k` with

    - class index :math:`y`: :math:`c_k = (1-\varepsilon) w_y [k=y] + \tfrac{\varepsilon}{K} w_k`;
      rows with :math:`y` = `ignore_index` have loss 0 and gradient 0;
    - class probabilities :math:`t`: :math:`c_k = ((1-\varepsilon) t_k + \tfrac{\varepsilon}{K}) w_k`,

    and its gradient is :math:`\partial \ell / \partial z_i = p_i \sum_k c_k - c_i`.
    ``reduction="mean"`` divides the sum by :math:`\sum w_{y_n}` over kept rows
    (index targets) or by N (probability targets); an empty batch gives nan.

    Parameters
    ----------
    logits : array_like
        Shape (N, K), or (K,) for one sample.
    target : array_like
        Class indices, shape (N,), any integer dtype; or class probabilities,
        shape (N, K), a float dtype.
    weight : array_like, optional
        Class weights, shape (K,).
    ignore_index : int, optional
        Index-target value whose rows are skipped (default -100).
    label_smoothing : float, optional
        In [0, 1] (default 0).
    reduction : {"mean", "sum", "none"}, optional
        Default "mean".
    return_grad : bool, optional
        Also return dloss/dlogits (of ``loss.sum()`` for "none").
    num_threads : int, optional
        Threads to use; default `get_num_threads()`.

    Returns
    -------
    loss : scalar or ndarray
        A scalar of the logits' dtype, or shape (N,) for "none".
    dlogits : ndarray
        Only with ``return_grad=True``: same shape as `logits`.
    """
    smoothing = _check_options(label_smoothing, reduction)
    z = as_float_array(logits, "logits")
    single = z.ndim == 1
    if single:
        z = z[None, :]
        t = np.asarray(target)
        target = t[None] if t.ndim in (0, 1) else t
    if z.ndim != 2:
        raise ValueError(f"logits must have shape (N, K) or (K,), got {np.shape(logits)}")
    N, K = z.shape
    w = _class_weight(weight, K, z.dtype)
    targets = _targets(target, N, K, z.dtype, w, operator.index(ignore_index))
    scale = targets.grad_scale(reduction)
    z = _rows_contiguous(z)
    loss_rows = np.empty(N, np.float64)
    grad = np.empty_like(z, order="C") if return_grad else None
    _kernels.cross_entropy(logits=z, target=targets.index, probs=targets.probs, weight=w,
                           ignore_index=ignore_index, smoothing=smoothing, grad_scale=scale,
                           loss=loss_rows, grad=grad,
                           num_threads=resolve_num_threads(num_threads, z.size))
    loss = _reduce(loss_rows, reduction, targets.denominator, z.dtype)
    if single and reduction == "none":
        loss = loss[0]
    if not return_grad:
        return loss
    return loss, (grad[0] if single else grad)


def linear_cross_entropy(
    x: ArrayLike,
    W: ArrayLike,
    target: ArrayLike,
    b: Optional[ArrayLike] = None,
    *,
    weight: Optional[ArrayLike] = None,
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    return_grad: bool = True,
    chunk_size: Optional[int] = None,
    num_threads: Optional[int] = None,
) -> Union[Loss, tuple[Loss, tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]]:
    r"""Cross-entropy of the linear layer z = x W^T + b, without holding all N x K logits.

    Computes ``cross_entropy(x @ W.T + b, target, ...)`` and its gradients
    with respect to x, W and b. The batch is processed in chunks of rows: a
    chunk's logits come from one GEMM, are overwritten in place by their
    gradient (the fused cross-entropy kernel), and then give

    .. math:: \frac{\partial L}{\partial x} = \delta W, \quad
              \frac{\partial L}{\partial W} \mathrel{+}= \delta^T x, \quad
              \frac{\partial L}{\partial b} \mathrel{+}= \textstyle\sum_n \delta_n

    by two more GEMMs, so the extra memory is one chunk of logits. When even
    64 rows of logits exceed the chunk budget (very wide K), each chunk of
    rows is also taken a block of classes at a time: a first pass merges an
    online logsumexp over the blocks, a second recomputes each block's
    logits and turns them into its gradient (four GEMMs instead of three).

    BLAS runs single-threaded inside `num_threads` worker threads, which
    also run the cross-entropy kernel: alternating OpenBLAS's pthreads with
    OpenMP threads made the layer up to 35 % slower on 2 cores.

    Parameters
    ----------
    x : array_like
        Inputs, shape (N, D).
    W : array_like
        Weights, shape (K, D) (row i produces logit i, as in torch.nn.Linear).
    target : array_like
        As in `cross_entropy`.
    b : array_like, optional
        Bias, shape (K,).
    weight, ignore_index, label_smoothing, reduction
        As in `cross_entropy`.
    return_grad : bool, optional
        Return the gradients too (default True).
    chunk_size : int, optional
        Rows per chunk; default: as many as fit in 64 MiB of logits (at
        least 64). Classes are chunked too when the rows' logits exceed 64 MiB.
    num_threads : int, optional
        Threads for the whole computation (GEMMs included); default
        `get_num_threads()`.

    Returns
    -------
    loss : scalar or ndarray
        As in `cross_entropy`.
    (dx, dW, db) : tuple of ndarray
        Only with ``return_grad=True``; ``db`` is None when `b` is None.
    """
    smoothing = _check_options(label_smoothing, reduction)
    x_arr, W_arr, b_arr = _linear_inputs(x, W, b)
    if x_arr.ndim != 2:
        raise ValueError(f"x must have shape (N, D), got {x_arr.shape}")
    N, D = x_arr.shape
    K = W_arr.shape[0]
    dtype = x_arr.dtype
    w = _class_weight(weight, K, dtype)
    targets = _targets(target, N, K, dtype, w, operator.index(ignore_index))
    scale = targets.grad_scale(reduction)
    if chunk_size is None:
        rows = max(MIN_CHUNK_ROWS, CHUNK_BYTES // max(1, K * dtype.itemsize))
    else:
        rows = operator.index(chunk_size)
        if rows < 1:
            raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    rows = min(rows, max(N, 1))
    # very wide K: blocks of classes with an online logsumexp (see _kernels)
    class_width = K if rows * K * dtype.itemsize <= CHUNK_BYTES else \
        max(1, CHUNK_BYTES // (rows * dtype.itemsize))
    workers = resolve_num_threads(num_threads, rows * K)
    loss_rows = np.empty(N, np.float64)
    logits = np.empty((rows, class_width), dtype)
    dx = np.empty((N, D), dtype) if return_grad else None
    dW = np.zeros((K, D), dtype) if return_grad else None
    db = np.zeros(K, dtype) if return_grad and b_arr is not None else None
    class_block = max(1, min(K, DW_BLOCK_BYTES // max(1, D * dtype.itemsize)))
    dW_blocks = [np.empty((class_block, D), dtype) for _ in range(workers)] if return_grad else None
    dx_blocks = [np.empty((rows, D), dtype) for _ in range(workers)] \
        if return_grad and class_width < K else None

    def logits_and_gradient(start: int, stop: int, offset: int) -> None:
        """Rows [start, stop) of the batch: logits, loss, dlogits in place, dx."""
        z = logits[start - offset: stop - offset]
        np.matmul(x_arr[start:stop], W_arr.T, out=z)
        if b_arr is not None:
            z += b_arr
        _kernels.cross_entropy(
            logits=z,
            target=None if targets.index is None else targets.index[start:stop],
            probs=None if targets.probs is None else targets.probs[start:stop],
            weight=w, ignore_index=ignore_index, smoothing=smoothing, grad_scale=scale,
            loss=loss_rows[start:stop], grad=z if return_grad else None, num_threads=1)
        if return_grad:
            np.matmul(z, W_arr, out=dx[start:stop])

    def accumulate_weights(worker: int, first: int, last: int, start: int, stop: int,
                           logits_first_class: int = 0) -> None:
        """Classes [first, last) of dW and db from the gradient of rows [start, stop),
        held in `logits` from class `logits_first_class` on."""
        z = logits[: stop - start]
        for block_start in range(first, last, class_block):
            block_stop = min(last, block_start + class_block)
            columns = slice(block_start - logits_first_class, block_stop - logits_first_class)
            block = dW_blocks[worker][: block_stop - block_start]
            np.matmul(z[:, columns].T, x_arr[start:stop], out=block)
            dW[block_start:block_stop] += block
            if db is not None:
                db[block_start:block_stop] += z[:, columns].sum(axis=0)

    def class_block_logits(start: int, stop: int, chunk_start: int, first: int, last: int):
        """Logits of rows [start, stop) and classes [first, last), in `logits`."""
        z = logits[start - chunk_start: stop - chunk_start, : last - first]
        np.matmul(x_arr[start:stop], W_arr[first:last].T, out=z)
        if b_arr is not None:
            z += b_arr[first:last]
        return z

    def wide_chunk(run, start: int, stop: int) -> None:
        """Rows [start, stop) a block of classes at a time: online logsumexp
        statistics first, then the loss, then each block's gradient."""
        stats = np.zeros((stop - start, _kernels.STATS))
        stats[:, 0] = -np.inf
        blocks = [(first, min(K, first + class_width)) for first in range(0, K, class_width)]
        row_parts = _split(start, stop, workers)

        def merge_stats(a: int, b_: int, first: int, last: int) -> None:
            _kernels.cross_entropy_block_stats(
                logits=class_block_logits(a, b_, start, first, last), first_class=first,
                target=None if targets.index is None else targets.index[a:b_],
                probs=None if targets.probs is None else targets.probs[a:b_, first:last],
                weight=None if w is None else w[first:last], smoothing=smoothing != 0.0,
                stats=stats[a - start: b_ - start], num_threads=1)

        for first, last in blocks:
            run(merge_stats, [(a, b_, first, last) for a, b_ in row_parts])
        alpha, one_hot = _loss_from_stats(
            stats, targets, slice(start, stop), w, smoothing, scale, ignore_index, K,
            loss_rows[start:stop])
        if not return_grad:
            return
        dx[start:stop] = 0
        row_max = np.ascontiguousarray(stats[:, 0])

        def block_gradient(worker: int, a: int, b_: int, first: int, last: int) -> None:
            z = class_block_logits(a, b_, start, first, last)
            rows_slice = slice(a - start, b_ - start)
            _kernels.cross_entropy_block_grad(
                logits=z, first_class=first,
                target=None if targets.index is None else targets.index[a:b_],
                probs=None if targets.probs is None else targets.probs[a:b_, first:last],
                weight=None if w is None else w[first:last], shift=row_max[rows_slice],
                alpha=alpha[rows_slice], one_hot=one_hot[rows_slice],
                beta=scale * (1.0 - smoothing), gamma=scale * smoothing / K, num_threads=1)
            if targets.index is not None:
                z[targets.index[a:b_] == ignore_index] = 0
            dx_part = dx_blocks[worker][: b_ - a]
            np.matmul(z, W_arr[first:last], out=dx_part)
            dx[a:b_] += dx_part

        for first, last in blocks:
            run(block_gradient, [(i, a, b_, first, last) for i, (a, b_) in enumerate(row_parts)])
            run(accumulate_weights, [(i, a, b_, start, stop, first)
                                     for i, (a, b_) in enumerate(_split(first, last, workers))])

    # One thread pool at a time: BLAS runs single-threaded inside `workers`
    # Python threads, each also running the cross-entropy kernel on one
    # thread.  Alternating OpenBLAS's spinning pthreads with OpenMP threads
    # cost up to 35 % here (OpenBLAS issue 3187); see the README.
    with threadpool_limits(limits=1, user_api="blas"), _worker_pool(workers) as run:
        for start in range(0, N, rows):
            stop = min(N, start + rows)
            if class_width < K:
                wide_chunk(run, start, stop)
                continue
            run(logits_and_gradient, [(a, b_, start) for a, b_ in _split(start, stop, workers)])
            if return_grad:
                run(accumulate_weights, [(i, a, b_, start, stop)
                                         for i, (a, b_) in enumerate(_split(0, K, workers))])
    loss = _reduce(loss_rows, reduction, targets.denominator, dtype)
    if not return_grad:
        return loss
    return loss, (dx, dW, db)


def _loss_from_stats(stats: np.ndarray, targets: _Targets, rows: slice, w: Optional[np.ndarray],
                     smoothing: float, scale: float, ignore_index: int, K: int,
                     loss_out: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row losses (into loss_out) from merged block statistics, and the
    per-row gradient factors alpha = scale * C / s and one_hot = scale (1 - e) w_y.

    With m the row max, s = sum exp(z - m), C = sum_k c_k:
    loss = C log s + sum_k c_k (m - z_k), each term formed from differences
    with m so that huge logits cancel exactly.
    """
    m, s = stats[:, 0], stats[:, 1]
    weight_sum = float(K) if w is None else float(np.sum(w, dtype=np.float64))
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        log_s = np.log(s)
        smooth_term = smoothing / K * (m * weight_sum - stats[:, 3]) if smoothing else 0.0
        if targets.index is not None:
            index = targets.index[rows]
            kept = index != ignore_index
            w_y = np.where(kept, 1.0 if w is None else w[np.where(kept, index, 0)].astype(np.float64), 0.0)
            total_c = (1.0 - smoothing) * w_y + smoothing / K * weight_sum
            loss = total_c * log_s + (1.0 - smoothing) * w_y * (m - stats[:, 2]) + smooth_term
            loss_out[...] = np.where(kept, loss, 0.0)
            one_hot = scale * (1.0 - smoothing) * w_y
        else:
            mass = stats[:, 4]
            total_c = (1.0 - smoothing) * mass + smoothing / K * weight_sum
            loss_out[...] = total_c * log_s + (1.0 - smoothing) * (m * mass - stats[:, 2]) + smooth_term
            one_hot = np.zeros(len(m))
        alpha = scale * total_c / s
    return alpha, one_hot


def _split(start: int, stop: int, parts: int) -> list[tuple[int, int]]:
    """[start, stop) cut into at most `parts` contiguous, nonempty, near-equal pieces."""
    n = stop - start
    parts = max(1, min(parts, n))
    bounds = [start + n * i // parts for i in range(parts + 1)]
    return [(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i] < bounds[i + 1]]


@contextlib.contextmanager
def _worker_pool(workers: int):
    """Yields run(function, argument_tuples): calls them all, in parallel when workers > 1."""
    if workers == 1:
        yield lambda function, calls: [function(*args) for args in calls]
        return
    with ThreadPoolExecutor(max_workers=workers) as pool:
        def run(function, calls):
            for future in [pool.submit(function, *args) for args in calls]:
                future.result()
        yield run
