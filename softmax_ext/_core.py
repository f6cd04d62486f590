"""The public softmax-family functions: validation here, arithmetic in _kernels."""

from __future__ import annotations

from typing import Any, Callable, Literal, Optional, Union, overload

import numpy as np
from numpy.typing import ArrayLike

from . import _kernels
from ._dtypes import as_float_array, common_float_arrays, compute_dtype, half_format, kernel_storage
from ._layout import (
    check_out,
    input_view,
    last_axis_rows,
    last_axis_view,
    normalize_axes,
    output_buffer,
    overlaps_partially,
    planned_view,
)
from ._threads import resolve_num_threads


# A float16 / bfloat16 kernel holds a float32 (K, w) tile per operand and
# thread; past this K a strided reduced axis is copied contiguous instead.
HALF_MAX_STRIDED_K = 16384


# An output this library allocates of at least this many bytes comes straight
# from the OS, its pages never written: glibc's mmap threshold never exceeds
# 32 MiB (smaller blocks are reused from the heap once freed, pages and all),
# and other allocators map large blocks likewise.  The first store to each
# page faults it in and the OS zeroes it, through the cache; the row kernels
# then write it by ordinary stores (`fresh_out`), as streaming ones would
# write each line a second time.  Measured on the Xeon (new / old time,
# allocating calls, float32 unless noted): softmax (512, 32000) 0.69-0.73 at
# 1 and 2 threads, log_softmax 0.74-0.80, softmax_backward 0.74-0.77 at 2
# threads, float64 (8, 1000000) 0.95-0.97, log_softmax float64 0.88-0.90;
# into heap-reused outputs below 32 MiB streaming stores still win (ordinary
# ones: softmax_backward (8, 1000000) 1.20-1.35, log_softmax float64
# (4096, 1000) 1.19-1.42).
FRESH_OUTPUT_BYTES = 32 * 2**20


def _kernel_for(plan_kind: str, dtype: np.dtype) -> tuple[Callable[..., None], dict[str, int]]:
    """The kernel entry point for a plan and dtype, and its extra arguments."""
    fmt = half_format(dtype)
    if fmt is None:
        return (_kernels.rows if plan_kind == "rows" else _kernels.cols), {}
    return (_kernels.rows_half if plan_kind == "rows" else _kernels.cols_half), {"fmt": fmt}


def _output_arguments(plan_kind: str, result: np.ndarray, out: Optional[np.ndarray]
                      ) -> dict[str, bool]:
    """The row kernels' `fresh_out` for writing `result`: true when this call
    allocated it (it is not the caller's `out`) and it is large enough to come
    straight from the OS (FRESH_OUTPUT_BYTES)."""
    if plan_kind != "rows":
        return {}
    return {"fresh_out": result is not out and result.nbytes >= FRESH_OUTPUT_BYTES}


def _max_strided_k(dtype: np.dtype) -> Optional[int]:
    return None if half_format(dtype) is None else HALF_MAX_STRIDED_K


def _reduced_axes(axis: object, ndim: int) -> tuple[int, ...]:
    """`normalize_axes`, and for a 0-d array (one distribution of one value,
    as in scipy.special) None or the default axis -1; any other axis is out
    of bounds there, as numpy says."""
    if ndim == 0:
        if axis is not None and (isinstance(axis, bool) or axis != -1):
            raise np.exceptions.AxisError(f"axis {axis!r} is out of bounds for a 0-d array")
        return ()
    return normalize_axes(axis, ndim)


def _run_elementwise(
    op: int,
    x: np.ndarray,
    grad: Optional[np.ndarray],
    axis: Union[int, tuple[int, ...], None],
    out: Optional[np.ndarray],
    num_threads: Optional[int],
) -> np.ndarray:
    """Run a kernel whose result has x's shape, into `out` if given."""
    if out is not None:
        check_out(out, x.shape, x.dtype)
    threads = resolve_num_threads(num_threads, x.size)
    axes = _reduced_axes(axis, x.ndim)
    if x.size == 0:
        return np.empty_like(x) if out is None else out
    rows = last_axis_rows(x, grad, out, axes)
    if rows is not None:
        result, x_view, grad_view, out_view = rows
        kind = "rows"
    else:
        x, plan, x_view = planned_view(x, axes, _max_strided_k(x.dtype))
        grad_view = None if grad is None else input_view(plan, grad)
        writable_out = None if out is None or overlaps_partially(out, x, grad) else out
        result, out_view = output_buffer(plan, writable_out, x.shape, x.dtype)
        kind = plan.kind
    kernel, extra = _kernel_for(kind, x.dtype)
    kernel(op=op, x=kernel_storage(x_view), grad=kernel_storage(grad_view),
           out=kernel_storage(out_view), num_threads=threads, **extra,
           **_output_arguments(kind, result, out))
    if out is not None and result is not out:
        np.copyto(out, result)
        return out
    return result


def softmax(
    x: ArrayLike, axis: Union[int, tuple[int, ...], None] = -1, *, out: Optional[np.ndarray] = None, num_threads: Optional[int] = None
) -> np.ndarray:
    r"""Softmax along an axis.

    .. math:: \mathrm{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \quad m = \max_j x_j

    Subtracting the maximum makes the result exact for logits of any
    magnitude (1e30-scale logits give exact 0 and 1).

    Parameters
    ----------
    x : array_like
        Logits, any byte order.  float64 and float32 are computed natively,
        float16 and ml_dtypes.bfloat16 in float32 inside the kernels (and
        returned in their own dtype), bool and integers in float64; other
        dtypes raise TypeError (the table in softmax_ext/_dtypes.py).
    axis : int, tuple of ints or None, optional
        Axis holding the classes (default -1, as in PyTorch and JAX).  A
        tuple of axes forms one distribution; None the whole array.
        scipy.special's default is ``axis=None``: write ``softmax(x, axis=None)``
        for scipy's result.
    out : ndarray, optional
        Where to write the result; must have the result's shape and dtype.
    num_threads : int, optional
        Threads to use; default `get_num_threads()` (small inputs use one).

    Returns
    -------
    ndarray
        Probabilities, same shape as `x`; `out` if given. A slice holding NaN
        or +inf, or only -inf, gives NaN (as in PyTorch and SciPy).

    Examples
    --------
    >>> import softmax_ext as sx
    >>> sx.softmax([1.0, 2.0, 3.0]).round(4)
    array([0.09  , 0.2447, 0.6652])
    """
    return _run_elementwise(_kernels.Op.SOFTMAX, as_float_array(x, "x"), None, axis, out, num_threads)


def log_softmax(
    x: ArrayLike, axis: Union[int, tuple[int, ...], None] = -1, *, out: Optional[np.ndarray] = None, num_threads: Optional[int] = None
) -> np.ndarray:
    r"""Logarithm of the softmax along an axis.

    .. math:: \log\mathrm{softmax}(x)_i = (x_i - m) - \log \sum_j e^{x_j - m}, \quad m = \max_j x_j

    evaluated in that order, so that 1e8-scale logits keep their differences
    (``log(softmax(x))`` would give -inf or lose every digit).

    Parameters
    ----------
    x : array_like
        Logits; dtypes as in `softmax`.
    axis : int, tuple of ints or None, optional
        Axis holding the classes (default -1); a tuple of axes forms one
        distribution, None the whole array.  scipy.special's default is
        ``axis=None``: write ``log_softmax(x, axis=None)`` for scipy's result.
    out : ndarray, optional
        Where to write the result; must have the result's shape and dtype.
    num_threads : int, optional
        Threads to use; default `get_num_threads()`.

    Returns
    -------
    ndarray
        Log-probabilities, same shape as `x`; `out` if given.

    Examples
    --------
    >>> import softmax_ext as sx
    >>> sx.log_softmax([1e8, 1e8 + 1.0]).round(4)
    array([-1.3133, -0.3133])
    """
    return _run_elementwise(_kernels.Op.LOG_SOFTMAX, as_float_array(x, "x"), None, axis, out, num_threads)


@overload
def logsumexp(a: ArrayLike, axis: Union[int, tuple[int, ...], None] = -1,
              b: Optional[ArrayLike] = None, keepdims: bool = False,
              return_sign: Literal[False] = False, *, out: Optional[np.ndarray] = None,
              num_threads: Optional[int] = None) -> Union[np.ndarray, np.floating[Any]]: ...
@overload
def logsumexp(a: ArrayLike, axis: Union[int, tuple[int, ...], None] = -1,
              b: Optional[ArrayLike] = None, keepdims: bool = False, *,
              return_sign: Literal[True], out: Optional[np.ndarray] = None,
              num_threads: Optional[int] = None
              ) -> tuple[Union[np.ndarray, np.floating[Any]], Union[np.ndarray, np.floating[Any]]]: ...
@overload
def logsumexp(a: ArrayLike, axis: Union[int, tuple[int, ...], None], b: Optional[ArrayLike],
              keepdims: bool, return_sign: Literal[True], *, out: Optional[np.ndarray] = None,
              num_threads: Optional[int] = None
              ) -> tuple[Union[np.ndarray, np.floating[Any]], Union[np.ndarray, np.floating[Any]]]: ...
def logsumexp(
    a: ArrayLike,
    axis: Union[int, tuple[int, ...], None] = -1,
    b: Optional[ArrayLike] = None,
    keepdims: bool = False,
    return_sign: bool = False,
    *,
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
) -> Any:
    r"""Logarithm of the sum of exponentials along an axis, as scipy.special.logsumexp.

    .. math:: \mathrm{logsumexp}(a) = m + \log \sum_j b_j e^{a_j - m}, \quad m = \max_j a_j

    with m replaced by 0 when it is infinite, as in scipy.special: +inf in a
    slice gives +inf, a slice of only -inf (or an empty slice) gives -inf, and
    NaN gives NaN.  Without `b` the sum is accumulated in double also for
    float32 input.

    Parameters
    ----------
    a : array_like
        Values; dtypes as in `softmax`.
    axis : int, tuple of ints or None, optional
        Axes to reduce together (default -1, as in PyTorch and JAX);
        None reduces the whole array.  scipy's default is ``axis=None``:
        write ``logsumexp(a, axis=None)`` for scipy's result.
    b : array_like, optional
        Weights :math:`b_j`, broadcast against `a`; may hold zeros and
        negative values (then ask for `return_sign`).  Elements with
        :math:`b_j = 0` take no part, even where :math:`a_j` is infinite.
        Computed with numpy operations, not the kernels.
    keepdims : bool, optional
        Keep the reduced axes with length one.
    return_sign : bool, optional
        Also return the sign of the sum: 1, -1, 0 (an empty or all-zero
        sum, whose log is -inf) or NaN.  Without it a negative sum gives NaN.
    out : ndarray, optional
        Where to write the log-sum; must have the result's shape and dtype.
    num_threads : int, optional
        Threads to use; default `get_num_threads()`.

    Returns
    -------
    ndarray or scalar, or (lse, sign)
        The reduced values in the result dtype of `a` (and `b`); a numpy
        scalar when 0-dimensional (`out` if given).  With `return_sign`,
        the pair ``(lse, sign)`` as scipy returns it.

    Examples
    --------
    >>> import softmax_ext as sx
    >>> float(sx.logsumexp([1000.0, 1000.0]))
    1000.6931471805599
    >>> sx.logsumexp([1.0, 2.0], b=[1.0, -1.0], return_sign=True)
    (np.float64(1.5413248546129181), np.float64(-1.0))
    """
    arr = as_float_array(a, "a")
    weights = None
    if b is not None:
        arr_b, weights_b = np.broadcast_arrays(arr, np.asarray(b))
        arr, weights = common_float_arrays(arr_b, weights_b, ("a", "b"))
    axes = _reduced_axes(axis, arr.ndim)
    reduced_shape = tuple(n for ax, n in enumerate(arr.shape) if ax not in axes)
    result_shape = tuple(1 if ax in axes else n for ax, n in enumerate(arr.shape)) \
        if keepdims else reduced_shape
    if out is not None:
        check_out(out, result_shape, arr.dtype)
    sign: Optional[np.ndarray]
    if weights is not None:
        lse, sign = _weighted_logsumexp(arr, weights, axes)
        if not return_sign:  # the log of a negative sum
            lse[sign < 0] = np.nan
    else:
        lse = _logsumexp_kernel(arr, axes, reduced_shape, num_threads)
        # a sum of exponentials is positive, zero (log -inf) or NaN
        sign = np.where(np.isnan(lse), np.nan, np.where(lse == -np.inf, 0.0, 1.0)).astype(
            arr.dtype) if return_sign else None
    lse = lse.reshape(result_shape)
    if out is not None:
        np.copyto(out, lse)
    result = out if out is not None else lse[()]
    if sign is None or not return_sign:
        return result
    return result, sign.reshape(result_shape)[()]


def _logsumexp_kernel(arr: np.ndarray, axes: tuple[int, ...], reduced_shape: tuple[int, ...],
                      num_threads: Optional[int]) -> np.ndarray:
    """logsumexp of `arr` over `axes` by the kernels, shaped `reduced_shape`."""
    if arr.size == 0:
        return np.full(reduced_shape, -np.inf, dtype=arr.dtype)
    threads = resolve_num_threads(num_threads, arr.size)
    view = last_axis_view(arr, axes)
    if view is not None:  # the commonest call: no planning, nothing to put back
        lse = _logsumexp_into("rows", view, threads)
        return lse.reshape(reduced_shape).astype(arr.dtype, copy=False)
    arr, plan, view = planned_view(arr, axes, _max_strided_k(arr.dtype))
    lse = _logsumexp_into(plan.kind, view, threads)
    # lse's dimensions are plan.result_axes in kernel order: put them back.
    dims = plan.result_axes
    lse = lse.reshape([arr.shape[ax] for ax in dims]).transpose(
        sorted(range(len(dims)), key=dims.__getitem__))  # argsort, without numpy's overhead
    return lse.reshape(reduced_shape).astype(arr.dtype)  # a C-order copy; keeps 0-d


def _logsumexp_into(plan_kind: str, view: np.ndarray, threads: int) -> np.ndarray:
    """The `plan_kind` kernel's logsumexp of a rows (rows, K) or cols
    (outer, K, inner) view: (rows,) or (outer, inner), float32 for 16-bit
    input."""
    kernel, extra = _kernel_for(plan_kind, view.dtype)
    lse_dtype = view.dtype if not extra else np.dtype(np.float32)
    lse = np.empty((view.shape[0],) + view.shape[2:], dtype=lse_dtype)
    kernel(op=_kernels.Op.LOGSUMEXP, x=kernel_storage(view), lse=lse, num_threads=threads,
           **extra)
    return lse


def weighted_exp_terms(a: np.ndarray, b: np.ndarray, axes: tuple[int, ...]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """(m, terms) of sum(b e^a) over `axes`, in the compute dtype (16-bit: float32).

    m: the max of a where b != 0 (keepdims; -inf where there is none, NaN
    with a NaN); terms: b e^(a - shift) elementwise, shift = m where finite
    else 0, and 0 where b == 0 (even where a is infinite).
    """
    computed_in = compute_dtype(a.dtype)
    a_c, b_c = a.astype(computed_in), b.astype(computed_in)
    taking_part = b_c != 0
    masked = np.where(taking_part, a_c, -np.inf)
    with np.errstate(invalid="ignore", over="ignore"):
        m = np.max(masked, axis=axes, keepdims=True, initial=-np.inf)
        terms = np.where(taking_part, b_c * np.exp(masked - np.where(np.isfinite(m), m, 0.0)), 0.0)
    return m, terms


def _weighted_logsumexp(arr: np.ndarray, weights: np.ndarray, axes: tuple[int, ...]
                        ) -> tuple[np.ndarray, np.ndarray]:
    """(log|sum b e^a|, sign of the sum) over `axes`, scipy's semantics."""
    m, terms = weighted_exp_terms(arr, weights, axes)
    shift = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        total = np.sum(terms, axis=axes, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        lse = np.log(np.abs(total)) + shift
    sign = np.sign(total)
    return (np.squeeze(lse, axis=axes).astype(arr.dtype),
            np.squeeze(sign, axis=axes).astype(arr.dtype))


def softmax_backward(
    p: ArrayLike,
    grad: ArrayLike,
    axis: Union[int, tuple[int, ...], None] = -1,
    *,
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
) -> np.ndarray:
    r"""Vector-Jacobian product of softmax: the gradient with respect to the logits.

    With :math:`p = \mathrm{softmax}(z)` and the Jacobian
    :math:`\partial p_j / \partial z_i = p_j(\delta_{ij} - p_i)`,

    .. math:: \frac{\partial L}{\partial z_i} = \sum_j g_j p_j (\delta_{ij} - p_i)
              = p_i \Big(g_i - \sum_j g_j p_j\Big)

    computed without forming the K x K Jacobian.

    Parameters
    ----------
    p : array_like
        Softmax output (the forward result).
    grad : array_like
        Upstream gradient :math:`g = \partial L / \partial p`, same shape as `p`.
        The result dtype is the common one of `p` and `grad`: the widest
        wins, float64 > float32 > {float16, bfloat16}, and float16 with
        bfloat16 gives float32.
    axis : int, tuple of ints or None, optional
        The softmax axis or axes (default -1); None: the whole array.
    out : ndarray, optional
        Where to write the result; must have the result's shape and dtype.
    num_threads : int, optional
        Threads to use; default `get_num_threads()`.

    Returns
    -------
    ndarray
        :math:`\partial L / \partial z`, same shape as `p`; `out` if given.
    """
    p_arr, g_arr = common_float_arrays(p, grad, ("p", "grad"))
    return _run_elementwise(_kernels.Op.SOFTMAX_BACKWARD, p_arr, g_arr, axis, out, num_threads)


def log_softmax_backward(
    logp: ArrayLike,
    grad: ArrayLike,
    axis: Union[int, tuple[int, ...], None] = -1,
    *,
    out: Optional[np.ndarray] = None,
    num_threads: Optional[int] = None,
) -> np.ndarray:
    r"""Vector-Jacobian product of log_softmax: the gradient with respect to the logits.

    With :math:`\ell = \log\mathrm{softmax}(z)`,
    :math:`\partial \ell_j / \partial z_i = \delta_{ij} - p_i`, so

    .. math:: \frac{\partial L}{\partial z_i} = g_i - e^{\ell_i} \sum_j g_j

    Parameters
    ----------
    logp : array_like
        log_softmax output (the forward result).
    grad : array_like
        Upstream gradient :math:`g = \partial L / \partial \ell`, same shape.
    axis : int, tuple of ints or None, optional
        The log_softmax axis or axes (default -1); None: the whole array.
    out : ndarray, optional
        Where to write the result; must have the result's shape and dtype.
    num_threads : int, optional
        Threads to use; default `get_num_threads()`.

    Returns
    -------
    ndarray
        :math:`\partial L / \partial z`, same shape as `logp`; `out` if given.
    """
    l_arr, g_arr = common_float_arrays(logp, grad, ("logp", "grad"))
    return _run_elementwise(_kernels.Op.LOG_SOFTMAX_BACKWARD, l_arr, g_arr, axis, out, num_threads)
