"""The public softmax-family functions: validation here, arithmetic in _kernels."""

from __future__ import annotations

from typing import Optional, Union

import numpy as np
from numpy.typing import ArrayLike

from . import _kernels
from ._layout import (
    as_float_array,
    check_out,
    common_float_arrays,
    input_view,
    normalize_axis,
    output_buffer,
    overlaps_partially,
    planned_view,
)
from ._threads import resolve_num_threads

Axis = Optional[int]


def _run_elementwise(
    op: int,
    x: np.ndarray,
    grad: Optional[np.ndarray],
    axis: Axis,
    out: Optional[np.ndarray],
    num_threads: Optional[int],
) -> np.ndarray:
    """Run a kernel whose result has x's shape, into `out` if given."""
    if out is not None:
        check_out(out, x.shape, x.dtype)
    threads = resolve_num_threads(num_threads, x.size)
    if axis is None:
        flat_out = out.reshape(-1) if out is not None and out.flags.c_contiguous else None
        result = _run_elementwise(
            op, x.reshape(-1), None if grad is None else grad.reshape(-1), 0, flat_out, threads
        ).reshape(x.shape)
        if out is not None and flat_out is None:
            np.copyto(out, result)
        return result if out is None else out
    axis = normalize_axis(axis, x.ndim)
    if x.size == 0:
        return np.empty_like(x) if out is None else out
    x, plan, x_view = planned_view(x, axis)
    grad_view = None if grad is None else input_view(plan, grad)
    writable_out = None if out is None or overlaps_partially(out, x, grad) else out
    result, out_view = output_buffer(plan, writable_out, x.shape, x.dtype)
    kernel = _kernels.rows if plan.kind == "rows" else _kernels.cols
    kernel(op=op, x=x_view, grad=grad_view, out=out_view, num_threads=threads)
    if out is not None and result is not out:
        np.copyto(out, result)
        return out
    return result


def softmax(
    x: ArrayLike, axis: Axis = -1, *, out: Optional[np.ndarray] = None, num_threads: Optional[int] = None
) -> np.ndarray:
    r"""Softmax along an axis.

    .. math:: \mathrm{softmax}(x)_i = \frac{e^{x_i - m}}{\sum_j e^{x_j - m}}, \quad m = \max_j x_j

    Subtracting the maximum makes the result exact for logits of any
    magnitude (1e30-scale logits give exact 0 and 1).

    Parameters
    ----------
    x : array_like
        Logits. float32 and float64 are computed natively; bool, integer and
        float16 are promoted to float64; other dtypes raise TypeError.
    axis : int or None, optional
        Axis holding the classes (default -1). None treats the whole array as
        one distribution.
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
    x: ArrayLike, axis: Axis = -1, *, out: Optional[np.ndarray] = None, num_threads: Optional[int] = None
) -> np.ndarray:
    r"""Logarithm of the softmax along an axis.

    .. math:: \log\mathrm{softmax}(x)_i = (x_i - m) - \log \sum_j e^{x_j - m}, \quad m = \max_j x_j

    evaluated in that order, so that 1e8-scale logits keep their differences
    (``log(softmax(x))`` would give -inf or lose every digit).

    Parameters
    ----------
    x : array_like
        Logits; dtypes as in `softmax`.
    axis : int or None, optional
        Axis holding the classes (default -1); None: the whole array.
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


def logsumexp(
    x: ArrayLike, axis: Axis = -1, *, keepdims: bool = False, num_threads: Optional[int] = None
) -> Union[np.ndarray, np.floating]:
    r"""Logarithm of the sum of exponentials along an axis.

    .. math:: \mathrm{logsumexp}(x) = m + \log \sum_j e^{x_j - m}, \quad m = \max_j x_j

    with m replaced by 0 when it is infinite, as in scipy.special: +inf in a
    slice gives +inf, a slice of only -inf (or an empty slice) gives -inf, and
    NaN gives NaN. The sum is accumulated in double also for float32 input.

    Parameters
    ----------
    x : array_like
        Values; dtypes as in `softmax`.
    axis : int or None, optional
        Axis to reduce (default -1); None reduces the whole array.
    keepdims : bool, optional
        Keep the reduced axis with length one.
    num_threads : int, optional
        Threads to use; default `get_num_threads()`.

    Returns
    -------
    ndarray or scalar
        The reduced values, in the dtype of the (promoted) input; a numpy
        scalar when the result is 0-dimensional.

    Examples
    --------
    >>> import softmax_ext as sx
    >>> float(sx.logsumexp([1000.0, 1000.0]))
    1000.6931471805599
    """
    arr = as_float_array(x, "x")
    if axis is None:
        flat = arr.reshape(-1)
        result = logsumexp(flat, 0, keepdims=False, num_threads=num_threads)
        shape = (1,) * arr.ndim if keepdims else ()
        return np.reshape(result, shape)[()]
    axis = normalize_axis(axis, arr.ndim)
    threads = resolve_num_threads(num_threads, arr.size)
    reduced_shape = arr.shape[:axis] + arr.shape[axis + 1 :]
    if arr.size == 0:
        result = np.full(reduced_shape, -np.inf, dtype=arr.dtype)
    else:
        arr, plan, view = planned_view(arr, axis)
        lse = np.empty((view.shape[0],) + view.shape[2:], dtype=arr.dtype)
        kernel = _kernels.rows if plan.kind == "rows" else _kernels.cols
        kernel(op=_kernels.Op.LOGSUMEXP, x=view, lse=lse, num_threads=threads)
        # lse's dimensions are plan.result_axes in kernel order: put them back.
        dims = plan.result_axes
        lse = lse.reshape([arr.shape[ax] for ax in dims]).transpose(np.argsort(dims))
        result = lse.reshape(reduced_shape).copy()  # C order; keeps 0-d
    if keepdims:
        result = np.expand_dims(result, axis)
    return result[()]


def softmax_backward(
    p: ArrayLike,
    grad: ArrayLike,
    axis: Axis = -1,
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
    axis : int or None, optional
        The softmax axis (default -1); None: the whole array.
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
    axis: Axis = -1,
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
    axis : int or None, optional
        The log_softmax axis (default -1); None: the whole array.
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
