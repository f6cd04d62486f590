"""The softmax family over a reduced axis that is split across blocks.

This is the numpy half of `softmax_ext.dask` (which only builds graphs), and
works on any block of a larger array:

1. `block_statistics` runs the ``split_stats`` kernel on one block: per slice
   of the block, the max m, and sum(exp(x - m)) as the logsumexp kernel keeps
   it (terms equal to 1 counted as ties, the rest summed as excess), or for
   the backward ops the partial dot product.
2. `merge_statistics` merges blocks' statistics exactly as logsumexp merges
   partial results: with M the largest max, a block's sums are scaled by
   exp(m - M).  It is associative, so dask may merge in any tree.
3. `normalize` runs the ``split_finish`` kernel on one block with the merged
   statistics (the whole slice's shift and sum), and `log_sum` gives
   logsumexp from them.

Statistics keep the block's dimensions with the reduced axes of length one
(``keepdims``), so that blocks concatenate and broadcast like the data.  The
forward statistics are a structured array (`FORWARD_STATS`); the backward
ones plain float64.  float16 and bfloat16 blocks are widened to float32
block by block (the split path only; whole-axis blocks use the 16-bit kernels).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from . import _kernels
from ._dtypes import as_float_array, common_float_arrays, compute_dtype
from ._core import weighted_exp_terms
from ._layout import Plan, input_view, planned_view
from ._threads import resolve_num_threads

FORWARD_STATS = np.dtype([("max", np.float64), ("excess", np.float64), ("ties", np.float64)])
_BACKWARD_OPS = (_kernels.Op.SOFTMAX_BACKWARD, _kernels.Op.LOG_SOFTMAX_BACKWARD)


def _operands(x: np.ndarray, grad: Optional[np.ndarray]
              ) -> tuple[np.ndarray, Optional[np.ndarray], np.dtype]:
    """x (and grad) in one kernel dtype, float64 or float32 (16-bit widened),
    and the dtype of the result (the numpy functions' rule)."""
    if grad is not None:
        x, grad = common_float_arrays(x, grad, ("x", "grad"))
    else:
        x = as_float_array(x, "x")
    dtype, computed_in = x.dtype, compute_dtype(x.dtype)
    if computed_in != dtype:
        x = x.astype(computed_in)
        grad = None if grad is None else grad.astype(computed_in)
    return x, grad, dtype


def _kernel_view(plan: Plan, view: np.ndarray) -> np.ndarray:
    """A plan's view as the split kernels take it: (outer, K, inner)."""
    return view[:, :, None] if plan.kind == "rows" else view


def _slices_shape(plan: Plan, shape: tuple[int, ...]) -> tuple[int, int]:
    """(outer, inner) of the kernels' per-slice tables under `plan`."""
    outer = int(np.prod([shape[ax] for ax in plan.outer], dtype=np.int64))
    inner = int(np.prod([shape[ax] for ax in plan.inner], dtype=np.int64))
    return outer, inner


def _to_keepdims(table: np.ndarray, plan: Plan, shape: tuple[int, ...],
                 axes: tuple[int, ...]) -> np.ndarray:
    """A kernel table (outer, inner, c) as `shape` with `axes` of length one, then c."""
    dims = plan.result_axes
    columns = table.shape[-1]
    table = table.reshape([shape[ax] for ax in dims] + [columns])
    table = table.transpose(list(np.argsort(dims)) + [len(dims)])
    keepdims = tuple(1 if ax in axes else n for ax, n in enumerate(shape))
    return np.ascontiguousarray(table).reshape(keepdims + (columns,))


def _from_keepdims(values: np.ndarray, plan: Plan, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of `_to_keepdims`: (keepdims..., c) to a C-contiguous kernel table."""
    dims = plan.result_axes
    rest = [ax for ax in range(len(shape)) if ax not in dims]  # all of length one
    table = values.transpose(list(dims) + rest + [len(shape)])
    outer, inner = _slices_shape(plan, shape)
    return np.ascontiguousarray(table, dtype=np.float64).reshape(outer, inner, values.shape[-1])


def block_statistics(x: np.ndarray, grad: Optional[np.ndarray] = None, *, op: int,
                     axes: tuple[int, ...], num_threads: Optional[int]) -> np.ndarray:
    """Per-slice statistics of one block over its part of the reduced `axes`.

    Returns an array of x's shape with `axes` of length one: `FORWARD_STATS`
    records for the forward ops (softmax, log_softmax, logsumexp), float64
    partial sums (<g, p> or sum(g)) for the backward ops.
    """
    x, grad, _ = _operands(x, grad)
    shape = x.shape
    backward = op in _BACKWARD_OPS
    columns = 1 if backward else len(FORWARD_STATS.fields or ())
    if x.size == 0:  # no slices, or slices of no terms: max -inf, sums 0
        keepdims = tuple(1 if ax in axes else n for ax, n in enumerate(shape))
        empty = np.zeros(keepdims, np.float64 if backward else FORWARD_STATS)
        if not backward:
            empty["max"] = -np.inf
        return empty
    x, plan, view = planned_view(x, axes)
    grad_view = None if grad is None else _kernel_view(plan, input_view(plan, grad))
    table = np.empty(_slices_shape(plan, shape) + (columns,))
    _kernels.split_stats(op=op, x=_kernel_view(plan, view), grad=grad_view, stats=table,
                         num_threads=resolve_num_threads(num_threads, x.size))
    stats = _to_keepdims(table, plan, shape, axes)
    return stats[..., 0] if backward else stats.view(FORWARD_STATS)[..., 0]


def weighted_block_statistics(a: np.ndarray, b: np.ndarray, *, axes: tuple[int, ...]) -> np.ndarray:
    """`FORWARD_STATS` of sum(b exp(a)) over one block, for logsumexp's `b`:
    the max of a where b != 0, the signed sum relative to it as excess (no
    ties; a NaN makes both NaN, which the merge keeps).  The numpy
    logsumexp's arithmetic with `b`, summed in float64."""
    a, b = common_float_arrays(a, b, ("a", "b"))
    m, terms = weighted_exp_terms(a, b, axes)
    stats = np.empty(m.shape, FORWARD_STATS)
    stats["max"] = m
    stats["excess"] = np.sum(terms, axis=axes, keepdims=True, dtype=np.float64)
    stats["ties"] = 0.0
    return stats


def merge_statistics(stats: np.ndarray, axis: tuple[int, ...], keepdims: bool = True
                     ) -> np.ndarray:
    """Merge blocks' statistics concatenated along `axis` (dask's combine).

    Backward statistics add.  Forward ones: with M the largest max, a block
    whose max is M adds its excess and ties, any other its whole sum
    (excess + ties) times exp(m - M); a block of only -inf adds nothing (but
    its NaN, if any).  Infinite M keeps the sums relative to 0, as the
    kernels do.
    """
    if stats.dtype != FORWARD_STATS:
        total: np.ndarray = np.sum(stats, axis=axis, keepdims=keepdims)
        return total
    m, excess, ties = stats["max"], stats["excess"], stats["ties"]
    top = np.max(m, axis=axis, keepdims=True)
    merged = np.empty(top.shape, FORWARD_STATS)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = np.where(m == -np.inf, 0.0, np.exp(m - np.where(np.isfinite(top), top, 0.0)))
        at_top = m == top
        merged["excess"] = np.sum(np.where(at_top, excess, (excess + ties) * scale),
                                  axis=axis, keepdims=True)
    merged["ties"] = np.sum(np.where(at_top, ties, 0.0), axis=axis, keepdims=True)
    merged["max"] = top
    return merged if keepdims else np.squeeze(merged, axis=axis)


def log_sum(stats: np.ndarray, weighted: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(logsumexp, sign of the sum) from merged forward statistics.

    As the kernels and scipy: NaN anywhere gives NaN, a max of +inf gives
    +inf and of -inf (no terms) -inf; else m + log1p(excess + ties - 1),
    or with `weighted` (signed excess, no ties) m + log|excess|.
    """
    m, excess, ties = stats["max"], stats["excess"], stats["ties"]
    with np.errstate(invalid="ignore", divide="ignore"):
        if weighted:
            total = excess
            lse = np.log(np.abs(total)) + np.where(np.isfinite(m), m, 0.0)
        else:
            total = excess + ties
            lse = np.where(np.isfinite(m), m + np.log1p(excess + (ties - 1.0)), m)
    lse = np.where(np.isnan(total), np.nan, lse)
    return lse, np.sign(total)


def normalize(x: np.ndarray, stats: np.ndarray, grad: Optional[np.ndarray] = None, *, op: int,
              axes: tuple[int, ...], num_threads: Optional[int]) -> np.ndarray:
    """One block of softmax (or the others) from the merged `stats` of its slices.

    `stats` has x's shape with `axes` of length one.  A slice whose max is
    infinite (+inf, or only -inf) or whose sum is NaN gives NaN throughout,
    as the whole-axis kernels do.
    """
    x, grad, dtype = _operands(x, grad)
    shape = x.shape
    if x.size == 0:
        return np.empty(shape, dtype)
    if op in _BACKWARD_OPS:
        params = np.stack([np.zeros(stats.shape), stats], axis=-1)
    else:
        m, total = stats["max"], stats["excess"] + stats["ties"]
        total = np.where(np.isfinite(m), total, np.nan)
        params = np.stack([np.where(np.isfinite(m), m, 0.0), total], axis=-1)
    x, plan, view = planned_view(x, axes)
    grad_view = None if grad is None else _kernel_view(plan, input_view(plan, grad))
    result, out_view = plan.empty(shape, x.dtype)
    _kernels.split_finish(op=op, x=_kernel_view(plan, view), grad=grad_view,
                          params=_from_keepdims(params, plan, shape),
                          out=_kernel_view(plan, out_view),
                          num_threads=resolve_num_threads(num_threads, x.size))
    return result if result.dtype == dtype else result.astype(dtype)
