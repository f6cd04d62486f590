"""Input validation and the memory layouts the kernels accept.

The kernels see either a 2-D ``rows`` view (rows, K) whose reduced axis is
contiguous, or a 3-D ``cols`` view (outer, K, inner) whose trailing axis is
contiguous.  `plan_for` finds such a view of the caller's array without
copying whenever its strides allow (C order, F order, sliced rows, any axis,
zero-stride broadcasts and overlapping read-only views); only arrays with no
contiguous axis at all are copied once.  Several reduced axes (a tuple
`axis`) are one distribution: they become the kernels' K dimension when
their strides merge, else the array is copied with them last.  Buffers the
kernels write are made by `Plan.empty` in the plan's own axis order, so their
view always exists, and an ``out=`` that overlaps itself or partly overlaps
an input is never written by a kernel directly.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Optional, TypeVar, cast

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import DTypeLike

# The layout decisions below depend only on (shape, strides, itemsize), so
# they are cached on those: a call on a small array would otherwise spend
# most of its time planning (softmax of a (32, 10) array took 12.3 us before,
# 6.3 us after, of which about 2 us is the kernel call).
CACHED_GEOMETRIES = 512

_Function = TypeVar("_Function", bound=Callable[..., Any])


def memoised(function: _Function) -> _Function:
    """`function` memoised on its (hashable) arguments, its signature kept
    for the type checkers."""
    return cast(_Function, functools.lru_cache(maxsize=CACHED_GEOMETRIES)(function))


def kernel_contiguous(a: object, dtype: Optional[DTypeLike] = None) -> np.ndarray:
    """`a` C-contiguous and aligned, as the kernels' ``::1`` views take it;
    copied only when it is not (``np.ascontiguousarray`` keeps misaligned
    data misaligned)."""
    if isinstance(a, np.ndarray) and row_major(a) and (dtype is None or a.dtype == dtype):
        return a  # what np.require gives back, without its cost on small calls
    return np.require(a, dtype=dtype, requirements=["C_CONTIGUOUS", "ALIGNED"])


def normalize_axis(axis: object, ndim: int) -> int:
    """One axis as a non-negative int; AxisError (a ValueError) when out of range."""
    if isinstance(axis, bool):
        raise TypeError(f"axis must be an int, a tuple of ints or None, got {axis!r}")
    try:
        index = operator.index(axis)  # type: ignore[arg-type]
    except TypeError:
        raise TypeError(f"axis must be an int, a tuple of ints or None, got {axis!r}") from None
    if not -ndim <= index < ndim:
        raise np.exceptions.AxisError(index, ndim)
    return index % ndim


def normalize_axes(axis: object, ndim: int) -> tuple[int, ...]:
    """The reduced axes, sorted: None is every axis, an int one axis, a tuple
    those axes together (as numpy's reductions take them); duplicates raise."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, tuple):
        axes = tuple(normalize_axis(ax, ndim) for ax in axis)
        if len(set(axes)) != len(axes):
            raise ValueError(f"repeated axis in {axis!r}")
        return tuple(sorted(axes))
    return (normalize_axis(axis, ndim),)


def check_out(out: object, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a numpy.ndarray, got {type(out).__name__}")
    if out.dtype != dtype:
        raise TypeError(f"out has dtype {out.dtype}, the result has dtype {dtype}")
    if out.shape != shape:
        raise ValueError(f"out has shape {out.shape}, the result has shape {shape}")
    if not out.flags.writeable:
        raise ValueError("out is read-only")
    return out


def overlaps_itself(a: np.ndarray) -> bool:
    """True unless the elements of `a` provably sit at distinct addresses.

    Taking the axes by increasing stride, each stride must step over all the
    memory the faster axes span (zero strides and interleaved views fail).
    """
    return _overlaps_itself(a.shape, a.strides, a.itemsize)


@memoised
def _overlaps_itself(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> bool:
    span = itemsize
    for stride, length in sorted((abs(s), n) for s, n in zip(strides, shape) if n > 1):
        if stride < span:
            return True
        span += stride * (length - 1)
    return False


def overlaps_partially(out: np.ndarray, *inputs: Optional[np.ndarray]) -> bool:
    """True if `out` shares memory with an input without being exactly it.

    Exact aliasing (softmax(x, out=x)) is safe: every kernel reads an element
    before it writes the same element and never reads it again afterwards.
    """
    for a in inputs:
        if a is None or a is out or not np.may_share_memory(out, a):
            continue
        same = (
            a.__array_interface__["data"][0] == out.__array_interface__["data"][0]
            and a.strides == out.strides
        )
        if not same:
            return True
    return False


@dataclass(frozen=True)
class Plan:
    """How to view an array (of one fixed shape) for the kernels.

    axes  : the reduced axes of length > 1, slowest first, merged into the
            kernels' K dimension (one distribution over all of them).
    outer : the other axes (of length > 1) merged into the leading dimension,
            slowest first.
    inner : ``cols`` only: axes merged into the contiguous trailing dimension.
    """

    axes: tuple[int, ...]
    outer: tuple[int, ...]
    inner: tuple[int, ...]

    @property
    def kind(self) -> str:
        return "cols" if self.inner else "rows"

    @property
    def result_axes(self) -> tuple[int, ...]:
        """Original axes, in order, of the dimensions of a reduced (lse) result."""
        return self.outer + self.inner

    @property
    def memory_order(self) -> tuple[int, ...]:
        """The planned axes, slowest first, as the kernels' views take them."""
        return self.outer + self.axes + self.inner

    def empty(self, shape: tuple[int, ...], dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
        """(array, view): a new array of `shape` laid out in this plan's axis
        order, and its kernel view (which therefore always exists)."""
        order = self._allocation_order(len(shape))
        if order == tuple(range(len(shape))):
            array = np.empty(shape, dtype)
        else:
            array = np.empty([shape[ax] for ax in order], dtype).transpose(_inverse(order))
        return array, self.checked_view(array)

    @memoised
    def _allocation_order(self, ndim: int) -> tuple[int, ...]:
        """Axes of a new ndim-array, slowest first: the unplanned (length-1)
        axes, then the plan's memory order."""
        planned = self.memory_order
        return tuple(ax for ax in range(ndim) if ax not in planned) + planned

    def checked_view(self, a: np.ndarray) -> np.ndarray:
        """`view(a)` for an array laid out for this plan; a RuntimeError
        (never an assert, which ``python -O`` removes) if it is not."""
        view = self.view(a)
        if view is None:
            raise RuntimeError(f"internal error: no {self.kind} view of strides {a.strides} "
                               f"under {self}")
        return view

    def view(self, a: np.ndarray) -> Optional[np.ndarray]:
        """The kernel-shaped view of `a`, or None if its strides do not allow one."""
        if not a.flags.aligned:
            return None
        geometry = self._view_geometry(a.shape, a.strides, a.itemsize)
        if geometry is None:
            return None
        shape, strides, back_to_back = geometry
        if back_to_back and a.flags.c_contiguous:
            # rows back to back: the same view, by numpy's cheap reshape
            return a.reshape(shape)
        return as_strided(a, shape, strides)

    @memoised
    def _view_geometry(self, shape: tuple[int, ...], strides: tuple[int, ...], size: int
                       ) -> Optional[tuple[tuple[int, ...], tuple[int, ...], bool]]:
        """(shape, strides, rows back to back) of the kernel view of an array
        of this geometry, or None if its strides do not allow one."""
        if any(s % size for s in strides):
            return None
        outer = _merged(shape, strides, size, self.outer)
        reduced = _merged(shape, strides, size, self.axes)
        if outer is None or reduced is None:
            return None
        if self.kind == "rows":
            if reduced[0] > 1 and reduced[1] != size:
                return None
            return ((outer[0], reduced[0]), (outer[1], size),
                    outer[0] <= 1 or outer[1] == reduced[0] * size)
        inner = _merged(shape, strides, size, self.inner)
        if inner is None or inner[1] != size:
            return None
        return (outer[0], reduced[0], inner[0]), (outer[1], reduced[1], size), False


def _merged(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int,
            axes: tuple[int, ...]) -> Optional[tuple[int, int]]:
    """(length, stride) of `axes` taken as one dimension, or None if uneven."""
    length, stride = 1, itemsize
    for i, ax in enumerate(axes):
        if i and strides[axes[i - 1]] != strides[ax] * shape[ax]:
            return None
        length *= shape[ax]
        stride = strides[ax]
    return length, stride


def _inverse(order: tuple[int, ...]) -> tuple[int, ...]:
    """The permutation that undoes `order`."""
    inverse = [0] * len(order)
    for position, ax in enumerate(order):
        inverse[ax] = position
    return tuple(inverse)


def _slowest_first(shape: tuple[int, ...], strides: tuple[int, ...],
                   axes: Iterable[int]) -> tuple[int, ...]:
    """The axes of length > 1 among `axes`, by decreasing |stride|."""
    return tuple(sorted((ax for ax in axes if shape[ax] > 1), key=lambda ax: -abs(strides[ax])))


def plan_for(a: np.ndarray, axes: tuple[int, ...]) -> Plan:
    """A layout plan for reducing `a` over `axes`, copying nothing if possible.

    Returns a plan whose ``view(a)`` may still be None (uneven strides); the
    caller then copies `a` with the reduced axes last, for which every plan works.
    """
    return _plan(a.shape, a.strides, a.itemsize, axes)


@memoised
def _plan(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int,
          axes: tuple[int, ...]) -> Plan:
    reduced = _slowest_first(shape, strides, axes)
    others = _slowest_first(shape, strides, [ax for ax in range(len(shape)) if ax not in axes])
    if not reduced or strides[reduced[-1]] == itemsize:
        return Plan(reduced, others, ())
    if others and strides[others[-1]] == itemsize:
        split = len(others) - 1
        while split > 0 and (
            strides[others[split - 1]] == strides[others[split]] * shape[others[split]]
        ):
            split -= 1
        return Plan(reduced, others[:split], others[split:])
    return Plan(reduced, others, ())  # no contiguous axis: view is None, so a copy


def planned_view(a: np.ndarray, axes: tuple[int, ...], max_strided_length: Optional[int] = None
                 ) -> tuple[np.ndarray, Plan, np.ndarray]:
    """(array, plan, view): `a` itself when it can be viewed, else a copy with
    the reduced axes last (arrays with no contiguous axis, reduced axes that do
    not merge, uneven strides or misaligned data).  With `max_strided_length`,
    reduced axes longer than that are never taken strided (``cols``)."""
    plan = plan_for(a, axes)
    view = plan.view(a)
    if view is None and not a.flags.aligned:
        # Misaligned data (unpickled buffers: dask workers): an aligned copy
        # in the same memory order keeps the route, hence the bits, of the
        # aligned original.
        a = np.copy(a, order="K")
        plan = plan_for(a, axes)
        view = plan.view(a)
    too_long = max_strided_length is not None and view is not None and \
        view.shape[1] > max_strided_length
    if view is None or (plan.kind == "cols" and too_long):
        order = tuple(ax for ax in range(a.ndim) if ax not in axes) + tuple(axes)
        # a fresh (so aligned) copy, C-contiguous in that axis order
        a = np.array(a.transpose(order), order="C").transpose(_inverse(order))
        plan = plan_for(a, axes)
        view = plan.checked_view(a)
    return a, plan, view


def last_axis_rows(x: np.ndarray, grad: Optional[np.ndarray], out: Optional[np.ndarray],
                   axes: tuple[int, ...]
                   ) -> Optional[tuple[np.ndarray, np.ndarray, Optional[np.ndarray], np.ndarray]]:
    """(result, x view, grad view, out view) of the commonest call, whose plan
    needs no planning: the last axis reduced, x (and grad) C-contiguous and
    aligned, and `out`, if given, C-contiguous, aligned, and either exactly
    an input or apart from every input (overlaps_partially).  The views are
    then the ``rows`` plan's, (rows, K) reshapes, and the result a new
    C-order array unless `out`.  None otherwise: `planned_view` and
    `output_buffer` decide.  A call on a small array spent half its time
    planning (softmax of (8, 128) float32, 7.5 us in all)."""
    x_view = last_axis_view(x, axes)
    if x_view is None or (grad is not None and not row_major(grad)):
        return None
    if out is None:
        out = np.empty(x.shape, x.dtype)
    elif not row_major(out) or overlaps_partially(out, x, grad):
        return None
    rows = x_view.shape
    return out, x_view, None if grad is None else grad.reshape(rows), out.reshape(rows)


def last_axis_view(x: np.ndarray, axes: tuple[int, ...]) -> Optional[np.ndarray]:
    """Non-empty `x` as the ``rows`` plan views it, a (rows, K) reshape,
    without planning, when `axes` is the last axis alone and `x` is
    C-contiguous and aligned; None otherwise."""
    if axes != (x.ndim - 1,) or not row_major(x):
        return None
    return x.reshape(x.size // x.shape[-1], x.shape[-1])


def row_major(a: np.ndarray) -> bool:
    """Whether `a` is C-contiguous and aligned, as the kernels' ``::1`` views take it."""
    flags = a.flags
    return bool(flags.c_contiguous and flags.aligned)


def input_view(plan: Plan, a: np.ndarray) -> np.ndarray:
    """`a` viewed under `plan`, copied into the plan's layout first if needed."""
    view = plan.view(a)
    if view is None:
        copy, view = plan.empty(a.shape, a.dtype)
        np.copyto(copy, a)
    return view


def output_buffer(plan: Plan, out: Optional[np.ndarray], shape: tuple[int, ...],
                  dtype: np.dtype) -> tuple[np.ndarray, np.ndarray]:
    """(buffer, view) to compute into: `out` itself when the kernels can
    write it directly (a plan view exists and no element overlaps another),
    else a new array in the plan's layout."""
    if out is not None and not overlaps_itself(out):
        view = plan.view(out)
        if view is not None:
            return out, view
    return plan.empty(shape, dtype)
