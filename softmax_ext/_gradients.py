"""Gradients through softmax: Jacobians, cross-entropy and the fused linear layer.

For logits z = x W^T + b (x: (N, D), W: (K, D) with row w_i for class i, as in
torch.nn.Linear, b: (K,)) and sigma = softmax(z):

    d sigma_j / d z_i = sigma_j (delta_ij - sigma_i)
    d sigma_j / d w_i = sigma_j (delta_ij - sigma_i) x
"""

from __future__ import annotations

import math
import numbers
import operator
from dataclasses import dataclass, replace
from typing import Any, Literal, Optional, Union, cast, overload

import numpy as np
from numpy.typing import ArrayLike

from . import _kernels
from ._core import softmax
from ._dtypes import (as_float_array, as_native_array, compute_dtype, half_format,
                      kernel_storage)
from ._layout import Plan, kernel_contiguous, normalize_axis, row_major
from ._linear import ChunkedLinearCrossEntropy
from ._threads import _check_count, resolve_num_threads

REDUCTIONS = ("mean", "sum", "none")
_INTP = np.iinfo(np.intp)

Loss = Union[np.floating, np.ndarray]
Reduced = Literal["mean", "sum"]


def softmax_jacobian(x: ArrayLike, axis: Optional[int] = -1) -> np.ndarray:
    r"""The softmax Jacobian of every slice along `axis`.

    .. math:: J_{ji} = \frac{\partial p_j}{\partial z_i} = p_j (\delta_{ij} - p_i),
              \quad p = \mathrm{softmax}(z)

    Parameters
    ----------
    x : array_like
        Logits; dtypes as in `softmax`.
    axis : int, optional
        The class axis (default -1); None is refused (TypeError).

    Returns
    -------
    ndarray
        Shape ``(..., K, K)``: the other axes of `x` in order, then ``J[j, i]``.
    """
    z = as_native_array(x, "x")
    if z.ndim == 0:
        raise ValueError("x must have at least one dimension")
    if axis is None:
        raise TypeError("softmax_jacobian needs an int axis (the class axis); for the whole "
                        "array as one distribution, pass x.reshape(-1) and axis=0")
    axis = normalize_axis(axis, z.ndim)
    p = np.ascontiguousarray(np.moveaxis(softmax(z, axis=axis), axis, -1))
    K = p.shape[-1]
    rows = p.reshape(-1, K) if p.size else np.empty((math.prod(p.shape[:-1]), K), z.dtype)
    out = np.empty((rows.shape[0], K, K), dtype=z.dtype)
    if out.size:
        _kernels.softmax_jacobian(p=rows, out=out, num_threads=resolve_num_threads(None, out.size))
    return out.reshape(p.shape[:-1] + (K, K))


def _linear_inputs(x: ArrayLike, W: ArrayLike, b: Optional[ArrayLike]
                   ) -> tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]:
    """x (N, D), W (K, D) and b (K,) or None, in one float dtype; 1-D x is one row."""
    x_arr, W_arr = as_native_array(x, "x"), as_native_array(W, "W")
    b_arr = None if b is None else as_native_array(b, "b")
    dtype = np.result_type(x_arr, W_arr, *(() if b_arr is None else (b_arr,)))
    if x_arr.ndim not in (1, 2):
        raise ValueError(f"x must have shape (N, D) or (D,), got {x_arr.shape}")
    if W_arr.ndim != 2:
        raise ValueError(f"W must have shape (K, D), got {W_arr.shape}")
    if x_arr.shape[-1] != W_arr.shape[1]:
        raise ValueError(f"x has D={x_arr.shape[-1]} features but W has D={W_arr.shape[1]}")
    if b_arr is not None and b_arr.shape != (W_arr.shape[0],):
        raise ValueError(f"b must have shape ({W_arr.shape[0]},), got {b_arr.shape}")
    return (x_arr.astype(dtype, copy=False), W_arr.astype(dtype, copy=False),
            None if b_arr is None else b_arr.astype(dtype, copy=False))


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
    rows = kernel_contiguous(np.atleast_2d(x_arr))
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
    x_arr, d_arr = as_native_array(x, "x"), as_native_array(dlogits, "dlogits")
    dtype = np.result_type(x_arr, d_arr)
    x2, d2 = np.atleast_2d(x_arr).astype(dtype, copy=False), np.atleast_2d(d_arr).astype(dtype, copy=False)
    if x_arr.ndim == 0 or x2.ndim != 2 or d2.ndim != 2 or x2.shape[0] != d2.shape[0] \
            or x_arr.ndim != d_arr.ndim:
        raise ValueError(f"x (N, D) and dlogits (N, K) must have the same N, got {x_arr.shape} and {d_arr.shape}")
    return d2.T @ x2, d2.sum(axis=0)


# ---- cross-entropy -------------------------------------------------------------


@dataclass(frozen=True)
class _Targets:
    index: Optional[np.ndarray]  # class indices (N,) as intp, or None
    probs: Optional[np.ndarray]  # class probabilities (N, K), or None
    denominator: float  # what reduction="mean" divides by
    ignore_index: int  # as the kernels take it: an intp that no kept index equals

    def grad_scale(self, reduction: str) -> float:
        """Factor of the per-row gradients: 1 / denominator for "mean"."""
        return 1.0 / self.denominator if reduction == "mean" and self.denominator else 1.0


def _check_options(label_smoothing: float, reduction: str) -> float:
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    if isinstance(label_smoothing, (bool, np.bool_)) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"label_smoothing must be a real number in [0, 1], got {label_smoothing!r}")
    smoothing = float(label_smoothing)
    if not 0.0 <= smoothing <= 1.0:  # also rejects NaN
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return smoothing


def _class_weight(weight: Optional[ArrayLike], K: int, dtype: np.dtype) -> Optional[np.ndarray]:
    if weight is None:
        return None
    w = as_native_array(weight, "weight")
    if w.shape != (K,):
        raise ValueError(f"weight must have shape ({K},) (one per class), got {w.shape}")
    return kernel_contiguous(w, dtype)


def _targets(target: ArrayLike, N: int, K: int, dtype: np.dtype, weight: Optional[np.ndarray],
             ignore_index: object) -> _Targets:
    if isinstance(ignore_index, (bool, np.bool_)):
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}")
    try:
        ignored = operator.index(ignore_index)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"ignore_index must be an integer, got {ignore_index!r}") from None
    # An ignore_index no intp can hold matches no target: the kernels get -1
    # instead, which no index left after the range check below equals.
    representable = _INTP.min <= ignored <= _INTP.max
    kernel_ignore_index = ignored if representable else -1
    t = np.asarray(target)
    if t.dtype.kind in "iu":
        if t.shape != (N,):
            raise ValueError(f"class-index target must have shape ({N},), got {t.shape}")
        lowest, highest = (int(t.min()), int(t.max())) if N else (0, -1)
        # The common case takes these two passes: every index in [0, K) and
        # none equal to ignore_index, so every row is kept (kept stays None).
        kept: Optional[np.ndarray] = None
        if not (0 <= lowest and highest < K and not lowest <= ignored <= highest):
            kept = t != ignored if representable else np.ones(t.shape, bool)
            outside = kept & ((t < 0) | (t >= K))
            if outside.any():
                raise ValueError(f"target holds class index {t[outside][0]}, outside [0, {K}) "
                                 f"and not ignore_index ({ignore_index})")
        index = kernel_contiguous(t, np.intp)  # every value fits: checked above
        if weight is not None:
            kept_index = index if kept is None else index[kept]
            denominator = float(weight[kept_index].sum(dtype=np.float64))
        else:
            denominator = float(N if kept is None else np.count_nonzero(kept))
        return _Targets(index, None, denominator, kernel_ignore_index)
    if t.dtype.kind == "f" or half_format(t.dtype) is not None:  # bfloat16's kind is "V"
        if t.shape != (N, K):
            raise ValueError(f"class-probability target must have shape ({N}, {K}), got {t.shape}")
        return _Targets(None, kernel_contiguous(t, dtype), float(N), kernel_ignore_index)
    raise TypeError(f"target must hold class indices (an integer dtype) or class probabilities "
                    f"(a float dtype), got dtype {t.dtype}")


def _rows_contiguous(a: np.ndarray) -> np.ndarray:
    """(N, K) `a` as the row kernels take it: viewed when its layout allows
    (the rows plan of _layout), else a C copy."""
    if row_major(a):
        return a
    view = Plan(axes=(1,), outer=(0,), inner=()).view(a)
    return view if view is not None else np.array(a, order="C")


def _reduce(loss_rows: np.ndarray, reduction: str, denominator: float, dtype: np.dtype) -> Loss:
    if reduction == "none":
        return loss_rows.astype(dtype)
    total = float(loss_rows.sum())  # one fixed order (numpy's pairwise), whatever the threads
    if reduction == "mean":
        total = total / denominator if denominator != 0 else math.nan
    scalar: np.floating = dtype.type(total)
    return scalar


@overload
def cross_entropy(logits: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., label_smoothing: float = ...,
                  reduction: Reduced = ..., return_grad: Literal[False] = ...,
                  num_threads: Optional[int] = ...) -> np.floating[Any]: ...
@overload
def cross_entropy(logits: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., label_smoothing: float = ...,
                  reduction: Literal["none"], return_grad: Literal[False] = ...,
                  num_threads: Optional[int] = ...) -> np.ndarray: ...
@overload
def cross_entropy(logits: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., label_smoothing: float = ...,
                  reduction: Reduced = ..., return_grad: Literal[True],
                  num_threads: Optional[int] = ...) -> tuple[np.floating[Any], np.ndarray]: ...
@overload
def cross_entropy(logits: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., label_smoothing: float = ...,
                  reduction: Literal["none"], return_grad: Literal[True],
                  num_threads: Optional[int] = ...) -> tuple[np.ndarray, np.ndarray]: ...
@overload
def cross_entropy(logits: ArrayLike, target: ArrayLike, *, weight: Optional[ArrayLike] = ...,
                  ignore_index: int = ..., label_smoothing: float = ..., reduction: str = ...,
                  return_grad: bool = ..., num_threads: Optional[int] = ...
                  ) -> Union[np.floating[Any], np.ndarray, tuple[Union[np.floating[Any], np.ndarray], np.ndarray]]: ...
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
) -> Union[np.floating[Any], np.ndarray, tuple[Union[np.floating[Any], np.ndarray], np.ndarray]]:
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
        Only with ``return_grad=True``: same shape and dtype as `logits`.

    Notes
    -----
    float16 and bfloat16 logits are computed in float32 tile by tile inside
    the kernel (no float32 copy of the logits), the per-row losses summed in
    float64; loss and gradient come back in the logits' dtype, as in PyTorch.
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
    loss_rows, grad, denominator = cross_entropy_rows(
        z, target, weight, ignore_index, smoothing, reduction, return_grad, num_threads)
    loss = _reduce(loss_rows, reduction, denominator, z.dtype)
    if single and reduction == "none":
        loss = cast(np.ndarray, loss)[0]
    if grad is None:
        return loss
    return loss, (grad[0] if single else grad)


def cross_entropy_rows(z: np.ndarray, target: ArrayLike, weight: Optional[ArrayLike],
                       ignore_index: int, smoothing: float, reduction: str, return_grad: bool,
                       num_threads: Optional[int], denominator: Optional[float] = None
                       ) -> tuple[np.ndarray, Optional[np.ndarray], float]:
    """Per-row losses (float64), the gradient (or None) and the mean's
    denominator for (N, K) logits `z` (a float array, any dtype of the rule).

    The gradient is scaled for `reduction` by the denominator of this batch,
    or by `denominator` when given: a block of a larger batch
    (softmax_ext.dask) takes the whole batch's.
    """
    fmt = half_format(z.dtype)  # 16-bit logits: float32 arithmetic inside the kernel
    computed_in = compute_dtype(z.dtype)
    N, K = z.shape
    w = _class_weight(weight, K, computed_in)
    targets = _targets(target, N, K, computed_in, w, ignore_index)
    if denominator is not None:
        targets = replace(targets, denominator=denominator)
    z = _rows_contiguous(z)
    loss_rows = np.empty(N, np.float64)
    grad = np.empty_like(z, order="C") if return_grad else None
    kernel, half = (_kernels.cross_entropy, {}) if fmt is None else \
        (_kernels.cross_entropy_half, {"fmt": fmt})
    kernel(logits=kernel_storage(z), target=targets.index, probs=targets.probs, weight=w,
           ignore_index=targets.ignore_index, smoothing=smoothing,
           grad_scale=targets.grad_scale(reduction), loss=loss_rows, grad=kernel_storage(grad),
           num_threads=resolve_num_threads(num_threads, z.size), **half)
    return loss_rows, grad, targets.denominator


def target_denominator(target: ArrayLike, K: int, dtype: np.dtype, weight: Optional[ArrayLike],
                       ignore_index: int) -> float:
    """What reduction="mean" divides by for these targets (checked as
    cross_entropy checks them) over K classes, logits of `dtype`."""
    computed_in = compute_dtype(dtype)
    w = _class_weight(weight, K, computed_in)
    t = np.asarray(target)
    return _targets(t, len(t), K, computed_in, w, ignore_index).denominator


@overload
def linear_cross_entropy(x: ArrayLike, W: ArrayLike, target: ArrayLike,
                         b: Optional[ArrayLike] = ..., *, weight: Optional[ArrayLike] = ...,
                         ignore_index: int = ..., label_smoothing: float = ...,
                         reduction: Reduced = ..., return_grad: Literal[True] = ...,
                         chunk_size: Optional[int] = ..., num_threads: Optional[int] = ...
                         ) -> tuple[np.floating[Any], tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]: ...
@overload
def linear_cross_entropy(x: ArrayLike, W: ArrayLike, target: ArrayLike,
                         b: Optional[ArrayLike] = ..., *, weight: Optional[ArrayLike] = ...,
                         ignore_index: int = ..., label_smoothing: float = ...,
                         reduction: Literal["none"], return_grad: Literal[True] = ...,
                         chunk_size: Optional[int] = ..., num_threads: Optional[int] = ...
                         ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]: ...
@overload
def linear_cross_entropy(x: ArrayLike, W: ArrayLike, target: ArrayLike,
                         b: Optional[ArrayLike] = ..., *, weight: Optional[ArrayLike] = ...,
                         ignore_index: int = ..., label_smoothing: float = ...,
                         reduction: Reduced = ..., return_grad: Literal[False],
                         chunk_size: Optional[int] = ..., num_threads: Optional[int] = ...
                         ) -> np.floating[Any]: ...
@overload
def linear_cross_entropy(x: ArrayLike, W: ArrayLike, target: ArrayLike,
                         b: Optional[ArrayLike] = ..., *, weight: Optional[ArrayLike] = ...,
                         ignore_index: int = ..., label_smoothing: float = ...,
                         reduction: str = ..., return_grad: bool = ...,
                         chunk_size: Optional[int] = ..., num_threads: Optional[int] = ...
                         ) -> Union[np.floating[Any], np.ndarray, tuple[Union[np.floating[Any], np.ndarray], tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]]: ...
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
) -> Union[np.floating[Any], np.ndarray, tuple[Union[np.floating[Any], np.ndarray], tuple[np.ndarray, np.ndarray, Optional[np.ndarray]]]]:
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

    The GEMMs run on BLAS's own threads, as numpy's matmul would: this
    function never changes BLAS's (process-wide) thread setting; use
    threadpoolctl's ``threadpool_limits`` around the call to change it.

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
        Rows per chunk; default: as many as fit in 4 MiB of logits for up
        to 32 input features D, D / 32 times that for wider inputs (small
        chunks keep the logits in cache between the GEMMs, long ones spare
        the GEMMs' per-call work, which weighs more the larger D is), but at
        least 512 rows and at most 64 MiB of logits (at least 64 rows).
        Classes are chunked too when 64 rows' logits exceed 64 MiB.
    num_threads : int, optional
        Threads of the cross-entropy kernel between the GEMMs (default
        `get_num_threads()`) while BLAS is single-threaded. While BLAS is
        multi-threaded the kernel runs on the calling thread alone, whatever
        is asked: BLAS's idle workers spin between GEMMs, and a second pool
        beside them made the layer up to 11x slower (measured on 2 cores).

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
    layer = linear_layer(x_arr, W_arr, b_arr, target, weight, ignore_index, smoothing, reduction,
                         return_grad, chunk_size, num_threads)
    layer.run()
    loss = _reduce(layer.loss_rows, reduction, layer.targets.denominator, x_arr.dtype)
    if layer.grads is None:
        return loss
    return loss, (cast(np.ndarray, layer.grads.dx), layer.grads.dW, layer.grads.db)


def linear_layer(x: np.ndarray, W: np.ndarray, b: Optional[np.ndarray], target: ArrayLike,
                 weight: Optional[ArrayLike], ignore_index: int, smoothing: float,
                 reduction: str, return_grad: bool, chunk_size: Optional[int],
                 num_threads: Optional[int], denominator: Optional[float] = None,
                 input_grad: bool = True) -> ChunkedLinearCrossEntropy:
    """The layer for validated x (N, D), W, b (from _linear_inputs), ready to
    run; gradients scaled by `denominator` when given, as in cross_entropy_rows;
    no dx (nor its GEMM) unless `input_grad`."""
    N, K = x.shape[0], W.shape[0]
    w = _class_weight(weight, K, x.dtype)
    targets = _targets(target, N, K, x.dtype, w, ignore_index)
    if denominator is not None:
        targets = replace(targets, denominator=denominator)
    chunk_rows = None if chunk_size is None else _check_count(chunk_size, "chunk_size")
    return ChunkedLinearCrossEntropy(x, W, b, targets, w, smoothing, reduction, return_grad,
                                     chunk_rows, num_threads, input_grad)
