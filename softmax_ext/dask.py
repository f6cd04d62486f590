# mypy: disallow-untyped-calls=False, warn-return-any=False
# (dask ships no type information: its calls are untyped and return Any)
"""softmax_ext on dask arrays: the same functions, lazily, block by block.

Install with ``pip install 'softmax_ext[dask]'``.  Every function takes dask
arrays and returns lazy dask arrays (chunked like the input) whose tasks call
the numpy kernels of softmax_ext on one block each, on dask's own schedulers:
the threaded scheduler, or a ``dask.distributed`` cluster::

    import dask.array as da
    import softmax_ext.dask as sxd

    # 40 GB of float32 logits over a million classes, in 64K-class chunks
    x = da.random.default_rng(0).standard_normal((10_000, 1_000_000), chunks=(1_000, 65_536),
                                                 dtype="float32")
    p = sxd.softmax(x, axis=-1)          # nothing computed yet
    p.sum(axis=-1).compute()             # ones, computed chunk by chunk

How the reduced axis is handled
-------------------------------
- In one chunk (every chunk holds whole slices): one task per block, the
  numpy function on it; the result is bitwise the numpy function's.
- Split over several chunks (a 1M-class axis in 64K-class chunks, or
  ``axis=None``): each block reports per-slice statistics (max and sum of
  exponentials, or the backward's dot product), dask merges them in a tree
  exactly as logsumexp merges, and each block is normalised with the merged
  values by a kernel that takes them.  The reduced axis is never rechunked,
  so no task holds more than a block (and its small statistics).

Threads
-------
Inside a task the kernels use one thread by default: a dask worker runs as
many tasks at once as it has threads, so one thread per task fills it without
oversubscription (threaded scheduler, and ``threads_per_worker=1`` workers
alike).  ``num_threads=`` sets the kernels' threads per task (for a worker
that runs fewer tasks than it has cores).  The GEMMs of
`linear_cross_entropy` use BLAS's threads; dask's worker processes start
with one BLAS thread (``distributed.nanny.pre-spawn-environ``), and on the
threaded scheduler threadpoolctl's ``threadpool_limits`` around ``compute()``
sets them.
"""

from __future__ import annotations

import functools
import math
import operator
from typing import Any, Callable, Optional, Union

import numpy as np

try:
    import dask.array as da
except ImportError as _error:  # pragma: no cover - depends on the installation
    raise ImportError(
        "softmax_ext.dask needs dask (dask[array] and distributed): "
        "pip install 'softmax_ext[dask]'"
    ) from _error

from . import _core, _gradients, _kernels, _split
from ._dtypes import common_dtype, compute_dtype, half_format, result_dtype
from ._threads import _check_count

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "softmax_backward",
    "log_softmax_backward",
    "cross_entropy",
    "linear_cross_entropy",
]

Axis = Union[int, tuple[int, ...], None]
Op = _kernels.Op


# ---- checks, done while the graph is built ----------------------------------------


def _dask_array(x: object, name: str, numpy_name: str) -> da.Array:
    """`x` if it is a dask array with known chunk sizes, else a clear error."""
    if not isinstance(x, da.Array):
        raise TypeError(f"{name} must be a dask array, got {type(x).__name__}; for numpy "
                        f"arrays call softmax_ext.{numpy_name}")
    if any(math.isnan(n) for chunks in x.chunks for n in chunks):
        raise ValueError(f"{name} has unknown chunk sizes (nan); call "
                         f"{name}.compute_chunk_sizes() first")
    return x


def _same_chunks(a: da.Array, b: da.Array, names: tuple[str, str]) -> None:
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, "
                         f"got {a.shape} and {b.shape}")
    if a.chunks != b.chunks:
        raise ValueError(f"{names[1]} must be chunked like {names[0]}: got chunks {b.chunks} "
                         f"and {a.chunks}; rechunk with {names[1]}.rechunk({names[0]}.chunks)")


def _same_row_chunks(rows: da.Array, other: da.Array, names: tuple[str, str]) -> None:
    """`other` splits axis 0 as `rows` does, and its other axes are whole."""
    if other.shape[:1] != rows.shape[:1]:
        raise ValueError(f"{names[1]} must have {rows.shape[0]} rows as {names[0]} has, "
                         f"got shape {other.shape}")
    if other.chunks[0] != rows.chunks[0]:
        raise ValueError(f"{names[1]} must be chunked over rows like {names[0]}: got "
                         f"{other.chunks[0]} and {rows.chunks[0]}; rechunk with "
                         f"{names[1]}.rechunk({{0: {names[0]}.chunks[0]}})")
    _whole_trailing_axes(other, names[1])


def _whole_trailing_axes(x: da.Array, name: str) -> None:
    for ax in range(1, x.ndim):
        if len(x.chunks[ax]) > 1:
            raise ValueError(f"{name} must be chunked over rows only (axis 0): axis {ax} is in "
                             f"{len(x.chunks[ax])} chunks; rechunk with "
                             f"{name}.rechunk({{{ax}: -1}})")


def _threads(num_threads: Optional[int]) -> int:
    """Kernel threads per task: one unless given (see the module docstring)."""
    return 1 if num_threads is None else _check_count(num_threads, "num_threads")


def _split_over_blocks(x: da.Array, axes: tuple[int, ...]) -> bool:
    return any(len(x.chunks[ax]) > 1 for ax in axes)


def _meta(ndim: int, dtype: np.dtype) -> np.ndarray:
    return np.empty((0,) * ndim, dtype)


# ---- the softmax family -------------------------------------------------------------


def _merged_statistics(op: int, x: da.Array, grad: Optional[da.Array], axes: tuple[int, ...],
                       threads: int) -> da.Array:
    """Per-slice statistics of the whole reduced axes: one task per block,
    then dask's tree reduction over the blocks along `axes`."""
    stats_dtype = np.dtype(np.float64) if grad is not None else _split.FORWARD_STATS
    arrays = (x,) if grad is None else (x, grad)
    stats = da.map_blocks(_split.block_statistics, *arrays, op=op, axes=axes,
                          num_threads=threads, chunks=_per_block(x, axes), dtype=stats_dtype,
                          meta=_meta(x.ndim, stats_dtype))
    return _merge(stats, axes)


def _per_block(x: da.Array, axes: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Chunks of per-block statistics: length one per block along `axes`."""
    return tuple((1,) * len(c) if ax in axes else c for ax, c in enumerate(x.chunks))


def _merge(stats: da.Array, axes: tuple[int, ...]) -> da.Array:
    return da.reduction(stats, chunk=_unchanged, combine=_split.merge_statistics,
                        aggregate=_split.merge_statistics, axis=axes, keepdims=True,
                        dtype=stats.dtype, concatenate=True, meta=_meta(stats.ndim, stats.dtype))


def _unchanged(stats: np.ndarray, axis: object = None, keepdims: bool = True) -> np.ndarray:
    return stats


def _elementwise(op: int, numpy_function: Callable[..., np.ndarray], x: da.Array,
                 grad: Optional[da.Array], axis: Axis, num_threads: Optional[int],
                 dtype: np.dtype) -> da.Array:
    """An op whose result has x's shape: blockwise, or statistics then blockwise."""
    axes = _core._reduced_axes(axis, x.ndim)
    threads = _threads(num_threads)
    arrays = (x,) if grad is None else (x, grad)
    if not _split_over_blocks(x, axes):
        return da.map_blocks(numpy_function, *arrays, axis=axes, num_threads=threads,
                             dtype=dtype, meta=_meta(x.ndim, dtype))
    merged = _merged_statistics(op, x, grad, axes, threads)
    return da.map_blocks(_split.normalize, x, merged, *arrays[1:], op=op, axes=axes,
                         num_threads=threads, dtype=dtype, meta=_meta(x.ndim, dtype))


def softmax(x: da.Array, axis: Axis = -1, *, num_threads: Optional[int] = None) -> da.Array:
    r"""Softmax along an axis, lazily: `softmax_ext.softmax` on dask arrays.

    .. math:: \mathrm{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \quad m = \max_j x_j

    Parameters
    ----------
    x : dask.array.Array
        Logits; dtypes as in `softmax_ext.softmax`.
    axis : int, tuple of ints or None, optional
        Axis or axes forming one distribution (default -1); they may be split
        over any number of chunks.
    num_threads : int, optional
        Kernel threads per task (default 1).

    Returns
    -------
    dask.array.Array
        Probabilities, chunked like `x`.  Bitwise `softmax_ext.softmax` when
        each chunk holds whole slices; else within a few ulp of it.
    """
    x = _dask_array(x, "x", "softmax")
    return _elementwise(Op.SOFTMAX, _core.softmax, x, None, axis, num_threads,
                        result_dtype(x.dtype, "x"))


def log_softmax(x: da.Array, axis: Axis = -1, *, num_threads: Optional[int] = None) -> da.Array:
    r"""Logarithm of the softmax along an axis, lazily (`softmax_ext.log_softmax`).

    .. math:: \log\mathrm{softmax}(x)_i = (x_i - m) - \log \sum_j e^{x_j - m}

    Parameters and result as in `softmax`.
    """
    x = _dask_array(x, "x", "log_softmax")
    return _elementwise(Op.LOG_SOFTMAX, _core.log_softmax, x, None, axis, num_threads,
                        result_dtype(x.dtype, "x"))


def _backward(op: int, numpy_function: Callable[..., np.ndarray], y: da.Array, grad: da.Array,
              names: tuple[str, str], axis: Axis, num_threads: Optional[int]) -> da.Array:
    name = numpy_function.__name__
    y, grad = _dask_array(y, names[0], name), _dask_array(grad, names[1], name)
    _same_chunks(y, grad, names)
    dtype = common_dtype((result_dtype(y.dtype, names[0]), result_dtype(grad.dtype, names[1])))
    return _elementwise(op, numpy_function, y, grad, axis, num_threads, dtype)


def softmax_backward(p: da.Array, grad: da.Array, axis: Axis = -1, *,
                     num_threads: Optional[int] = None) -> da.Array:
    r"""Vector-Jacobian product of softmax, lazily (`softmax_ext.softmax_backward`).

    .. math:: \frac{\partial L}{\partial z_i} = p_i \Big(g_i - \sum_j g_j p_j\Big)

    with the dot product reduced over the blocks first when the axis is split.

    Parameters
    ----------
    p, grad : dask.array.Array
        Softmax output and upstream gradient, same shape and chunks.
    axis, num_threads
        As in `softmax`.
    """
    return _backward(Op.SOFTMAX_BACKWARD, _core.softmax_backward, p, grad, ("p", "grad"),
                     axis, num_threads)


def log_softmax_backward(logp: da.Array, grad: da.Array, axis: Axis = -1, *,
                         num_threads: Optional[int] = None) -> da.Array:
    r"""Vector-Jacobian product of log_softmax, lazily (`softmax_ext.log_softmax_backward`).

    .. math:: \frac{\partial L}{\partial z_i} = g_i - e^{\ell_i} \sum_j g_j

    Parameters
    ----------
    logp, grad : dask.array.Array
        log_softmax output and upstream gradient, same shape and chunks.
    axis, num_threads
        As in `softmax`.
    """
    return _backward(Op.LOG_SOFTMAX_BACKWARD, _core.log_softmax_backward, logp, grad,
                     ("logp", "grad"), axis, num_threads)


def _logsumexp_whole(a: np.ndarray, b: Optional[np.ndarray] = None, *, axes: tuple[int, ...],
                     return_sign: bool, num_threads: int) -> np.ndarray:
    """One block holding whole slices: numpy's logsumexp, with keepdims;
    (lse, sign) stacked on a new first axis when `return_sign`."""
    if return_sign:
        return np.stack(_core.logsumexp(a, axes, b, True, return_sign=True, num_threads=num_threads))
    return np.asarray(_core.logsumexp(a, axes, b, True, num_threads=num_threads))


def _logsumexp_from(stats: np.ndarray, *, weighted: bool, return_sign: bool,
                    out_dtype: np.dtype) -> np.ndarray:
    """logsumexp (and sign, stacked first) from merged statistics, as numpy's logsumexp."""
    lse, sign = _split.log_sum(stats, weighted)
    if weighted and not return_sign:
        lse = np.where(sign < 0, np.nan, lse)  # the log of a negative sum
    return np.stack([lse, sign]).astype(out_dtype) if return_sign else lse.astype(out_dtype)


def logsumexp(a: da.Array, axis: Axis = -1, b: Optional[Any] = None, keepdims: bool = False,
              return_sign: bool = False, *, num_threads: Optional[int] = None) -> Any:
    r"""Logarithm of the sum of exponentials, lazily (`softmax_ext.logsumexp`).

    .. math:: \mathrm{logsumexp}(a) = m + \log \sum_j b_j e^{a_j - m}, \quad m = \max_j a_j

    scipy.special's parameters (our default axis is -1; scipy's is None).

    Parameters
    ----------
    a : dask.array.Array
        Values.
    axis : int, tuple of ints or None, optional
        Axes to reduce (default -1), in any number of chunks.
    b : array_like or dask.array.Array, optional
        Weights, broadcast against `a` (and chunked like it).
    keepdims, return_sign
        As in `softmax_ext.logsumexp`.
    num_threads : int, optional
        Kernel threads per task (default 1).

    Returns
    -------
    dask.array.Array, or (lse, sign)
        Chunked like `a` along the kept axes.
    """
    a = _dask_array(a, "a", "logsumexp")
    dtype = result_dtype(a.dtype, "a")
    weights = None
    if b is not None:
        weights = da.broadcast_to(da.asarray(b), a.shape).rechunk(a.chunks)
        dtype = common_dtype((dtype, result_dtype(weights.dtype, "b")))
    axes = _core._reduced_axes(axis, a.ndim)
    threads = _threads(num_threads)
    arrays = (a,) if weights is None else (a, weights)
    per_block = _per_block(a, axes)
    stacked = ((2,),) if return_sign else ()  # (lse, sign) on a new first axis
    new_axis = [0] if return_sign else []
    if not _split_over_blocks(a, axes):
        result = da.map_blocks(_logsumexp_whole, *arrays, axes=axes, return_sign=return_sign,
                               num_threads=threads, chunks=stacked + per_block,
                               new_axis=new_axis, dtype=dtype,
                               meta=_meta(a.ndim + len(new_axis), dtype))
    else:
        if weights is None:
            stats = da.map_blocks(_split.block_statistics, a, op=Op.LOGSUMEXP, axes=axes,
                                  num_threads=threads, chunks=per_block,
                                  dtype=_split.FORWARD_STATS,
                                  meta=_meta(a.ndim, _split.FORWARD_STATS))
        else:
            stats = da.map_blocks(_split.weighted_block_statistics, a, weights, axes=axes,
                                  chunks=per_block, dtype=_split.FORWARD_STATS,
                                  meta=_meta(a.ndim, _split.FORWARD_STATS))
        result = da.map_blocks(
            _logsumexp_from, _merge(stats, axes), weighted=weights is not None, return_sign=return_sign,
            out_dtype=dtype, dtype=dtype, chunks=stacked + _merge_chunks(a, axes), new_axis=new_axis,
            meta=_meta(a.ndim + len(new_axis), dtype))
    kept_axes = tuple(ax + len(new_axis) for ax in axes)
    if not keepdims:
        result = result.squeeze(axis=kept_axes) if kept_axes else result
    return (result[0], result[1]) if return_sign else result


def _merge_chunks(a: da.Array, axes: tuple[int, ...]) -> tuple[tuple[int, ...], ...]:
    """Chunks of merged statistics: one chunk of length one along `axes`."""
    return tuple((1,) if ax in axes else c for ax, c in enumerate(a.chunks))


# ---- cross-entropy and the fused linear layer ---------------------------------------------


def _whole(a: Optional[Any]) -> Optional[da.Array]:
    """An operand every task takes whole: dask arrays as they are, a numpy
    one as a one-chunk dask array (one key in the graph, sent once to each
    worker that runs a task needing it, not once per task)."""
    if a is None or isinstance(a, da.Array):
        return a
    arr = np.asarray(a)
    return da.from_array(arr, chunks=arr.shape or ())


def _letters(ndim: int, first: int) -> str:
    return "".join(chr(ord("a") + first + i) for i in range(ndim))


def _per_row_block(function: Callable[..., tuple[np.ndarray, ...]],
                   rows: list[Optional[da.Array]], shared: list[Optional[da.Array]],
                   outputs: list[tuple[str, tuple[int, ...], np.dtype]],
                   **kwargs: Any) -> list[da.Array]:
    """Call `function(*row_blocks, *shared, **kwargs)` once per block of rows.

    `rows`: arrays split over axis 0 alike (other axes whole; None passes
    None); `shared`: arrays given whole to every call (None passes None).
    The function returns one array per entry of `outputs`, (kind, shape,
    dtype): kind "rows" is one block of a result split like axis 0 (shape:
    its trailing axes), kind "sum" is this block's term of a result summed
    over the blocks (shape: the whole result), summed by dask in a tree.
    """
    chunks = next(a for a in rows if a is not None).chunks[0]
    args: list[Any] = []
    used = 1  # letter "a" is the row index; every other axis gets its own
    for a, split in [(a, True) for a in rows] + [(a, False) for a in shared]:
        if a is None:
            args += [None, None]
            continue
        whole_axes = a.ndim - 1 if split else a.ndim
        args += [a, ("a" if split else "") + _letters(whole_axes, used)]
        used += whole_axes
    fused = da.blockwise(function, "a", *args, concatenate=True, dtype=object,
                         meta=np.empty((0,), object), **kwargs)
    results = []
    for position, (kind, shape, dtype) in enumerate(outputs):
        new_axes = list(range(1, 1 + len(shape)))
        if kind == "rows":
            results.append(fused.map_blocks(
                operator.getitem, position, chunks=(chunks,) + tuple((n,) for n in shape),
                new_axis=new_axes, dtype=dtype, meta=_meta(1 + len(shape), dtype)))
        else:
            terms = fused.map_blocks(
                _term, position, chunks=((1,) * len(chunks),) + tuple((n,) for n in shape),
                new_axis=new_axes, dtype=dtype, meta=_meta(1 + len(shape), dtype))
            results.append(terms.sum(axis=0, dtype=dtype))
    return results


def _term(results: tuple[np.ndarray, ...], position: int) -> np.ndarray:
    return results[position][None]


def _rows_and_target(rows: object, target: object, names: tuple[str, str],
                     function: str) -> tuple[da.Array, da.Array]:
    """The (N, K or D) operand and the target, both dask arrays chunked over
    rows only, and alike."""
    name, columns = names
    rows = _dask_array(rows, name, function)
    target = _dask_array(target, "target", function)
    if rows.ndim != 2:
        raise ValueError(f"{name} must have shape (N, {columns}), got {rows.shape}")
    _whole_trailing_axes(rows, name)
    _same_row_chunks(rows, target, (name, "target"))
    return rows, target


def _target_kind(target: da.Array, K: int) -> str:
    """"index" or "probs", checked against K before anything is computed."""
    if target.dtype.kind in "iu":
        if target.ndim != 1:
            raise ValueError(f"class-index target must have shape (N,), got {target.shape}")
        return "index"
    if target.dtype.kind == "f" or half_format(target.dtype) is not None:
        if target.ndim != 2 or target.shape[1] != K:
            raise ValueError(f"class-probability target must have shape (N, {K}), "
                             f"got {target.shape}")
        return "probs"
    raise TypeError(f"target must hold class indices (an integer dtype) or class probabilities "
                    f"(a float dtype), got dtype {target.dtype}")


def _denominator(target: da.Array, kind: str, K: int, dtype: np.dtype,
                 weight: Optional[np.ndarray], ignore_index: int) -> Any:
    """What reduction="mean" divides by, over all blocks: N for probability
    targets, else the kept rows' class weights summed (a dask scalar)."""
    if kind == "probs":
        return float(target.shape[0])
    per_block = functools.partial(_block_denominator, K=K, logits_dtype=dtype, weight=weight,
                                  ignore_index=ignore_index)
    return da.reduction(target, chunk=per_block, aggregate=_sum_terms, axis=0,
                        dtype=np.float64, concatenate=True, meta=np.empty((), np.float64))


def _block_denominator(target: np.ndarray, axis: object, keepdims: bool, *, K: int,
                       logits_dtype: np.dtype, weight: Optional[np.ndarray],
                       ignore_index: int) -> np.ndarray:
    value = _gradients.target_denominator(target, K, logits_dtype, weight, ignore_index)
    return np.array([value])


def _sum_terms(terms: np.ndarray, axis: tuple[int, ...], keepdims: bool) -> np.ndarray:
    total: np.ndarray = np.sum(terms, axis=axis, keepdims=keepdims)
    return total


def _mean_or_sum(loss_rows: da.Array, reduction: str, denominator: Any,
                 dtype: np.dtype) -> da.Array:
    """The reduced loss, as numpy's cross_entropy reduces it (mean of an empty batch: nan)."""
    if reduction == "none":
        return loss_rows.astype(dtype)
    total = loss_rows.sum()
    if reduction == "sum":
        return total.astype(dtype)
    return da.map_blocks(_ratio_or_nan, total, denominator, out_dtype=dtype, dtype=dtype,
                         meta=np.empty((), dtype))


def _ratio_or_nan(total: np.ndarray, denominator: Any, out_dtype: np.dtype) -> np.ndarray:
    denominator = float(denominator)
    return np.asarray(float(total) / denominator if denominator != 0 else math.nan, out_dtype)


def _block_scaling(reduction: str, denominator: Any) -> tuple[str, Optional[float]]:
    """(reduction, denominator) for the block tasks.  A denominator known
    now (N, for probability targets) scales the gradients inside the
    kernels.  One that dask must reduce first (index targets) would make
    every block task wait for all targets, and so hold every block of data
    that the targets are computed from: those blocks run as "sum" and their
    gradients are scaled afterwards (`_loss_and_grads`)."""
    if reduction == "mean" and isinstance(denominator, da.Array):
        return "sum", None
    return reduction, float(denominator)


def _loss_and_grads(results: list[da.Array], reduction: str, denominator: Any,
                    dtype: np.dtype, return_grad: bool) -> Any:
    """The reduced loss and the gradients, these scaled by 1 / denominator
    where the block tasks could not (see _block_scaling)."""
    loss = _mean_or_sum(results[0], reduction, denominator, dtype)
    if not return_grad:
        return loss
    grads = results[1:]
    if _block_scaling(reduction, denominator)[1] is None:
        grads = [da.map_blocks(_divided, g, denominator, dtype=g.dtype, meta=_meta(g.ndim, g.dtype))
                 for g in grads]
    return (loss, *grads)


def _divided(gradient: np.ndarray, denominator: Any) -> np.ndarray:
    """gradient / denominator, as the kernels' grad_scale (no scaling by 1 / 0)."""
    denominator = float(denominator)
    scale = 1.0 / denominator if denominator else 1.0
    return gradient * gradient.dtype.type(scale)


def cross_entropy(logits: da.Array, target: da.Array, *, weight: Optional[Any] = None,
                  ignore_index: int = -100, label_smoothing: float = 0.0,
                  reduction: str = "mean", return_grad: bool = False,
                  num_threads: Optional[int] = None) -> Any:
    r"""Cross-entropy of row-chunked logits, lazily (`softmax_ext.cross_entropy`).

    Every option of the numpy function.  Each block of rows runs the fused
    kernel once; "mean" divides by the denominator of the whole batch (the
    kept rows' class weights, or N).  With class-index targets that
    denominator is a reduction over every target block, so the gradient
    blocks are divided by it once it is known rather than waiting for it:
    a block of logits is never held until all targets are read.

    Parameters
    ----------
    logits : dask.array.Array
        Shape (N, K), chunked over rows only (each chunk holds whole rows).
    target : dask.array.Array
        Class indices (N,) or probabilities (N, K), chunked over rows as `logits`.
    weight : array_like, optional
        Class weights (K,), numpy: sent once to each worker.
    ignore_index, label_smoothing, reduction, return_grad
        As in `softmax_ext.cross_entropy`.
    num_threads : int, optional
        Kernel threads per task (default 1).

    Returns
    -------
    loss : dask.array.Array
        0-d for "mean" and "sum", (N,) for "none".
    dlogits : dask.array.Array
        Only with ``return_grad=True``: chunked like `logits`.
    """
    smoothing = _gradients._check_options(label_smoothing, reduction)
    z, t = _rows_and_target(logits, target, ("logits", "K"), "cross_entropy")
    dtype = result_dtype(z.dtype, "logits")
    K = z.shape[1]
    kind = _target_kind(t, K)
    w = _gradients._class_weight(weight, K, compute_dtype(dtype))
    denominator = _denominator(t, kind, K, dtype, w, ignore_index)
    outputs: list[tuple[str, tuple[int, ...], np.dtype]] = [("rows", (), np.dtype(np.float64))]
    if return_grad:
        outputs.append(("rows", (K,), dtype))
    block_reduction, block_denominator = _block_scaling(reduction, denominator)
    results = _per_row_block(
        _cross_entropy_block, [z, t], [_whole(w)], outputs,
        ignore_index=ignore_index, smoothing=smoothing, reduction=block_reduction,
        denominator=block_denominator, return_grad=return_grad,
        num_threads=_threads(num_threads))
    return _loss_and_grads(results, reduction, denominator, dtype, return_grad)


def _cross_entropy_block(z: np.ndarray, target: np.ndarray, weight: Optional[np.ndarray], *,
                         ignore_index: int, smoothing: float, reduction: str,
                         denominator: Optional[float], return_grad: bool, num_threads: int
                         ) -> tuple[np.ndarray, ...]:
    loss_rows, grad, _ = _gradients.cross_entropy_rows(
        z, target, weight, ignore_index, smoothing, reduction, return_grad, num_threads,
        denominator=denominator)
    return (loss_rows,) if grad is None else (loss_rows, grad)


def linear_cross_entropy(x: da.Array, W: Any, target: da.Array, b: Optional[Any] = None, *,
                         weight: Optional[Any] = None, ignore_index: int = -100,
                         label_smoothing: float = 0.0, reduction: str = "mean",
                         return_grad: bool = True, return_dx: bool = True,
                         chunk_size: Optional[int] = None,
                         num_threads: Optional[int] = None) -> Any:
    r"""Cross-entropy of the linear layer z = x W^T + b over row-chunked data, lazily.

    Data-parallel `softmax_ext.linear_cross_entropy`: each block of rows runs
    the chunked numpy layer (so a task never holds more than one chunk of
    its logits), ``dx`` comes back chunked like `x`, and ``dW``, ``db`` are
    the blocks' terms summed by dask in a tree.

    Parameters
    ----------
    x : dask.array.Array
        Inputs (N, D), chunked over rows only.
    W : array_like
        Weights (K, D), numpy: sent once to each worker, not once per task.
    target : dask.array.Array
        As in `cross_entropy`, chunked over rows as `x`.
    b : array_like, optional
        Bias (K,), numpy.
    weight, ignore_index, label_smoothing, reduction, return_grad, chunk_size
        As in `softmax_ext.linear_cross_entropy` (`chunk_size`: rows per
        chunk inside a task).
    return_dx : bool, optional
        Default True.  False: ``dx`` is None and its GEMM is skipped (training
        a model whose inputs are data: a third less work, and no task result
        the size of its block of x).
    num_threads : int, optional
        Threads of the cross-entropy kernel per task (default 1).

    Returns
    -------
    loss : dask.array.Array
        0-d, or (N,) for "none".
    (dx, dW, db) : tuple of dask.array.Array
        Only with ``return_grad=True``; ``dx`` is None when `return_dx` is
        false, ``db`` when `b` is None.
    """
    smoothing = _gradients._check_options(label_smoothing, reduction)
    x, t = _rows_and_target(x, target, ("x", "D"), "linear_cross_entropy")
    if chunk_size is not None:
        _check_count(chunk_size, "chunk_size")
    # W and b checked, and the common dtype found, on a zero-row stand-in for x
    x0, W_arr, b_arr = _gradients._linear_inputs(np.empty((0, x.shape[1]), x.dtype), W, b)
    dtype = x0.dtype
    K, D = W_arr.shape
    kind = _target_kind(t, K)
    w = _gradients._class_weight(weight, K, dtype)
    denominator = _denominator(t, kind, K, dtype, w, ignore_index)
    outputs: list[tuple[str, tuple[int, ...], np.dtype]] = [("rows", (), np.dtype(np.float64))]
    if return_grad:
        outputs += [("rows", (D,), dtype)] if return_dx else []
        outputs.append(("sum", (K, D), dtype))
        if b_arr is not None:
            outputs.append(("sum", (K,), dtype))
    block_reduction, block_denominator = _block_scaling(reduction, denominator)
    results = _per_row_block(
        _linear_block, [x, t], [_whole(W_arr), _whole(b_arr), _whole(w)], outputs,
        ignore_index=ignore_index, smoothing=smoothing, reduction=block_reduction,
        denominator=block_denominator, return_grad=return_grad, return_dx=return_dx,
        chunk_size=chunk_size, num_threads=_threads(num_threads))
    if not return_grad:
        return _loss_and_grads(results, reduction, denominator, dtype, False)
    loss, *grads = _loss_and_grads(results, reduction, denominator, dtype, True)
    dx = grads.pop(0) if return_dx else None
    return loss, (dx, grads[0], grads[1] if len(grads) > 1 else None)


def _linear_block(x: np.ndarray, target: np.ndarray, W: np.ndarray, b: Optional[np.ndarray],
                  weight: Optional[np.ndarray], *, ignore_index: int, smoothing: float,
                  reduction: str, denominator: Optional[float], return_grad: bool,
                  return_dx: bool, chunk_size: Optional[int], num_threads: int
                  ) -> tuple[np.ndarray, ...]:
    x, W, b = _gradients._linear_inputs(x, W, b)
    layer = _gradients.linear_layer(x, W, b, target, weight, ignore_index, smoothing, reduction,
                                    return_grad, chunk_size, num_threads,
                                    denominator=denominator, input_grad=return_dx)
    layer.run()
    if layer.grads is None:
        return (layer.loss_rows,)
    grads = layer.grads
    return tuple(a for a in (layer.loss_rows, grads.dx, grads.dW, grads.db) if a is not None)
