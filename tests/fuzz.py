"""Guard-buffer fuzzing of every public function over random memory layouts.

Each case calls one public function with every operand (inputs, ``out=``,
``grad``, class weights, targets) placed inside a larger buffer ("arena")
filled with a sentinel byte, in a random layout: C, F, permuted, gapped,
negative strides, unaligned, or (read-only inputs) zero-stride and
overlapping views; ``out`` may also alias an input exactly or partly.  Shapes
are drawn to reach every kernel route (K = 0, 1, 2..31, 32, 33, 512, 16K+,
few huge rows, any axis), in float32 and float64 (and float16 for the
softmax family and cross_entropy, whose 16-bit kernels work through float32
scratch tiles), every instruction set this CPU runs and 1-8 threads.  After the call:

- the result matches a float64 plain-numpy reference (tests/reference.py);
- no byte outside any operand's footprint changed (the sentinel, 0xFF, reads
  as NaN in both dtypes, so a stray read also poisons the result);
- inputs are unchanged, except where ``out`` overlaps them.

The normal suite runs a fixed-seed slice (tests/test_fuzz.py); a long run:

    python tests/fuzz.py --cases 20000 --seed 1
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))  # reference.py, when run as a script
import reference as ref  # noqa: E402

import softmax_ext as sx  # noqa: E402
from softmax_ext import _kernels, _linear, _split, _threads  # noqa: E402

SENTINEL = 0xFF
PAD = 64  # guard bytes on each side of every operand
ISAS = list(_kernels.runnable_isas())
# Reduced-axis lengths that reach every route: empty, tiles of short rows, the
# SHORT_ROW boundary, whole rows, and rows split over threads (>= 2 * 16384).
CLASS_COUNTS = [0, 1, 2, 3, 5, 8, 13, 31, 32, 33, 100, 512, 16385, 40000]


class Arena:
    """A sentinel-filled byte buffer holding one operand and any views aliasing it."""

    def __init__(self, nbytes: int):
        self.raw = np.full(nbytes + 2 * PAD, SENTINEL, np.uint8)
        self.views: list[np.ndarray] = []
        self.before: np.ndarray | None = None

    def offset_of(self, view: np.ndarray) -> int:
        return view.__array_interface__["data"][0] - self.raw.__array_interface__["data"][0]

    def footprint(self, views=None) -> np.ndarray:
        """Mask of the bytes the views (default: all of them) may touch."""
        mask = np.zeros(self.raw.shape, bool)
        for view in self.views if views is None else views:
            offsets = np.full((1,) * view.ndim, self.offset_of(view), np.int64)
            for axis, (n, stride) in enumerate(zip(view.shape, view.strides)):
                shape = [1] * view.ndim
                shape[axis] = n
                offsets = offsets + (np.arange(n, dtype=np.int64) * stride).reshape(shape)
            starts = offsets.reshape(-1)
            for byte in range(view.itemsize):
                mask[starts + byte] = True
        return mask

    def guard_intact(self) -> bool:
        return bool(np.all(self.raw[~self.footprint()] == SENTINEL))


@dataclass
class Case:
    """What one fuzz case placed, so that the checks can look at it afterwards."""

    rng: np.random.Generator
    arenas: list[Arena] = field(default_factory=list)
    inputs: list[Arena] = field(default_factory=list)
    arena_of: dict[int, Arena] = field(default_factory=dict)  # id(view) -> its arena
    log: list[str] = field(default_factory=list)

    def regular(self, values: np.ndarray):
        """`values` copied into a random strided layout (permuted, gapped,
        flipped, maybe unaligned) inside a new arena; the view is writable."""
        rng, shape, nd = self.rng, values.shape, values.ndim
        order = rng.permutation(nd)  # memory order, slowest first
        steps = rng.choice([1, 1, 2], nd)
        signs = rng.choice([1, 1, -1], nd)
        unaligned = values.itemsize > 1 and rng.random() < 0.15
        base_shape = [int(shape[a] * steps[a]) for a in order]
        arena = Arena(math.prod(base_shape) * values.itemsize + 1)
        base = np.ndarray(base_shape, values.dtype, buffer=arena.raw, offset=PAD + int(unaligned))
        view = base[tuple(slice(None, None, int(steps[a] * signs[a])) for a in order)]
        view = view.transpose(np.argsort(order))
        view[...] = values
        arena.views.append(view)
        self.arenas.append(arena)
        self.arena_of[id(view)] = arena
        self.log.append(f"regular order={order.tolist()} steps={steps.tolist()} signs={signs.tolist()} "
                        f"unaligned={unaligned}")
        return view, arena

    def aliased(self, shape: tuple[int, ...], dtype, fill):
        """A read-only view whose elements may share memory: zero strides
        (broadcast) and small strides (overlapping windows), any sign."""
        rng, itemsize = self.rng, np.dtype(dtype).itemsize
        strides = [int(rng.choice([0, 1, 2, 3]) * rng.choice([1, -1])) for _ in shape]
        low = sum(min(0, (n - 1) * s) for n, s in zip(shape, strides))
        high = sum(max(0, (n - 1) * s) for n, s in zip(shape, strides))
        length = high - low + 1
        arena = Arena(length * itemsize)
        storage = np.ndarray((length,), dtype, buffer=arena.raw, offset=PAD)
        storage[...] = fill((length,))
        view = np.ndarray(shape, dtype, buffer=arena.raw, offset=PAD - low * itemsize,
                          strides=[s * itemsize for s in strides])
        view.flags.writeable = False
        arena.views.append(storage)
        self.arenas.append(arena)
        self.log.append(f"aliased strides={strides}")
        return view, arena

    def input(self, shape, dtype, fill, aliased_ok: bool = True):
        """An input operand in a random layout; remembered for the unchanged check."""
        if aliased_ok and all(shape) and self.rng.random() < 0.25:
            view, arena = self.aliased(shape, dtype, fill)
        else:
            view, arena = self.regular(np.asarray(fill(shape), dtype))
        self.inputs.append(arena)
        return view

    def out_for(self, shape, dtype, aliases: list[np.ndarray]):
        """None, a fresh out= in a random layout, or an out= aliasing one of
        `aliases` (writable inputs) exactly or shifted by one element."""
        choice = self.rng.random()
        writable = [a for a in aliases if a.flags.writeable and a.shape == shape and a.dtype == dtype]
        if choice < 0.3:
            return None
        if writable and choice < 0.5:
            self.log.append("out is an input")
            return writable[0]
        if writable and choice < 0.6 and all(shape):
            a = writable[0]
            arena = self.arena_of[id(a)]
            shift = a.itemsize * int(self.rng.choice([1, -1]))
            out = np.ndarray(shape, dtype, buffer=arena.raw, offset=arena.offset_of(a) + shift,
                             strides=a.strides)
            arena.views.append(out)
            self.log.append("out overlaps an input partly")
            return out
        view, _ = self.regular(np.zeros(shape, dtype))
        return view

    def snapshot(self):
        for arena in self.inputs:
            arena.before = arena.raw.copy()

    def check_memory(self, outs=()):
        for arena in self.arenas:
            _require(arena.guard_intact(), "a byte outside every operand changed", self.log)
        for arena in self.inputs:
            written = np.zeros(arena.raw.shape, bool)
            for out in outs:
                if out is not None and any(np.shares_memory(out, v) for v in arena.views):
                    written |= arena.footprint([out])
            same = arena.raw == arena.before
            _require(np.all(same | written), "an input changed", self.log)


def _require(condition, what: str, log: list[str]) -> None:
    """An assertion that also holds under ``python -O`` (this is no test
    module, so pytest does not rewrite its asserts)."""
    if not condition:
        raise AssertionError(f"{what}: " + "; ".join(log))


def _close(actual, expected, dtype, what, log, scale=None):
    """|actual - expected| <= rtol |expected| + atol max(1, scale) elementwise;
    `scale` (default: the largest |expected|) may be an array, to allow for
    the cancellation each element's formula has."""
    expected = np.asarray(expected, np.float64)
    if np.dtype(dtype).itemsize == 2:  # what float16 can hold: beyond 65504 is inf
        expected = expected.astype(dtype).astype(np.float64)
    actual = np.asarray(actual).astype(np.float64)
    _require(actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}", log)
    if scale is None:
        scale = float(np.max(np.abs(expected))) if expected.size else 1.0
    rtol, atol = {2: (2e-3, 2e-3), 4: (3e-5, 3e-6), 8: (1e-10, 1e-12)}[np.dtype(dtype).itemsize]
    bound = rtol * np.abs(expected) + atol * np.maximum(1.0, scale)
    with np.errstate(invalid="ignore"):
        good = (np.abs(actual - expected) <= bound) | (actual == expected) \
            | (np.isnan(actual) & np.isnan(expected))
    if not np.all(good):
        worst = np.unravel_index(np.argmax(np.where(good, 0, np.abs(actual - expected))), good.shape)
        raise AssertionError(f"{what}: {np.count_nonzero(~good)} of {good.size} differ, e.g. at "
                             f"{worst}: {actual[worst]!r} vs {expected[worst]!r}; " + "; ".join(log))


def _shape_with_classes(rng, ndim, K, axis):
    """A shape of `ndim` axes whose axis `axis` has length K, small elsewhere
    (fewer, shorter other axes when K is large)."""
    budget = max(1, 3000 // max(K, 1))
    shape = [int(rng.integers(1, min(9, budget) + 1)) if K > 512 else int(rng.integers(0, 12))
             for _ in range(ndim)]
    if K > 512:
        shape = [1] * ndim
        shape[int(rng.integers(ndim))] = int(rng.integers(1, 3))
    shape[axis] = K
    return tuple(shape)


def _normal(rng):
    return lambda shape: rng.standard_normal(shape) * 3


def fuzz_softmax_family(case: Case, dtype):
    rng = case.rng
    ndim = int(rng.integers(1, 4))
    # -ndim - 2 stands for a tuple of two axes (one distribution), -ndim - 1 for None
    axis_choice = int(rng.integers(-ndim - 2, ndim))
    axis: object = None if axis_choice == -ndim - 1 else axis_choice
    if axis_choice == -ndim - 2:
        axis = tuple(int(a) for a in rng.choice(ndim, size=min(2, ndim), replace=False))
    K = int(rng.choice(CLASS_COUNTS))
    if not isinstance(axis, int):
        K = min(K, 600)
    shape = _shape_with_classes(rng, ndim, K, axis[0] if isinstance(axis, tuple) else
                                0 if axis is None else axis)
    name = str(rng.choice(["softmax", "log_softmax", "logsumexp", "softmax_backward",
                           "log_softmax_backward"]))
    case.log.append(f"{name} {np.dtype(dtype).name} shape={shape} axis={axis}")
    x = case.input(shape, dtype, _normal(rng))
    if name.endswith("backward"):
        g = case.input(shape, dtype, _normal(rng))
        out = case.out_for(shape, dtype, [g, x])
        x_values, g_values = np.array(x, np.float64), np.array(g, np.float64)
        case.snapshot()
        func = getattr(sx, name)
        result = func(x, g, axis=axis, out=out)
        if name == "softmax_backward":  # p (g - <g, p>): the explicit Jacobian of ref would be K x K
            flat = axis is None
            p_, g_ = (x_values.reshape(-1), g_values.reshape(-1)) if flat else (x_values, g_values)
            along = 0 if flat else axis  # an int or a tuple, as numpy's sum takes it
            want = (p_ * (g_ - (g_ * p_).sum(axis=along, keepdims=True))).reshape(shape)
        else:
            want = ref.log_softmax_backward(x_values, g_values, axis) if x.size else np.empty(shape)
    elif name == "logsumexp":
        keepdims = bool(rng.integers(2))
        x_values = np.array(x, np.float64)
        case.snapshot()
        out = None
        result = sx.logsumexp(x, axis=axis, keepdims=keepdims)
        if x.size:
            want = ref.logsumexp(x_values, axis)
        else:
            want = np.full(np.sum(np.zeros(shape), axis=axis).shape, -np.inf)
        if keepdims:
            want = np.reshape(want, np.sum(np.zeros(shape), axis=axis, keepdims=True).shape)
    else:
        out = case.out_for(shape, dtype, [x])
        x_values = np.array(x, np.float64)
        case.snapshot()
        result = getattr(sx, name)(x, axis=axis, out=out)
        reference = ref.softmax if name == "softmax" else ref.log_softmax
        want = reference(x_values, axis) if x.size else np.empty(shape)
    if out is not None:
        _require(result is out, "out= was not returned", case.log)
    scale = None
    if name.endswith("backward") and x.size:  # y_i times a sum of |g|-sized terms
        y = np.abs(x_values) if name == "softmax_backward" else np.exp(x_values)
        terms = np.abs(g_values) * (y if name == "softmax_backward" else 1.0)
        along = None if axis is None else axis
        scale = y * np.sum(terms, axis=along, keepdims=along is not None)
    _close(result, want, dtype, name, case.log, scale)
    case.check_memory([out])


def _targets(case: Case, N, K, dtype, kind):
    rng = case.rng
    if kind == "probs":
        return case.input((N, K), dtype, lambda shape: rng.dirichlet(np.ones(max(K, 1)), shape[0])[:, :K]
                          if len(shape) == 2 else rng.random(shape))
    labels = rng.integers(0, max(K, 1), N) if K else np.full(N, -100)
    labels[rng.random(N) < 0.2] = -100
    dtype_index = rng.choice([np.int64, np.int32, np.int16, np.uint8]) if 0 < K <= 255 else np.int64
    if np.dtype(dtype_index).kind == "u":
        labels[labels < 0] = 0
    view, arena = case.regular(labels.astype(dtype_index))
    case.inputs.append(arena)
    return view


def _mean_denominator(target, weight, kind) -> float:
    """What reduction="mean" divides by: N for probabilities, else the
    weights (or count) of the rows that are not ignored."""
    if kind == "probs":
        return float(len(target))
    kept = [int(t) for t in target if t != -100]
    return float(len(kept) if weight is None else sum(weight[t] for t in kept))


def fuzz_cross_entropy(case: Case, dtype):
    rng = case.rng
    K = int(rng.choice([k for k in CLASS_COUNTS if k <= 16385]))
    N = int(rng.integers(0, 6)) if K > 512 else int(rng.integers(0, 150))
    kind = str(rng.choice(["index", "probs"]))
    weighted, smoothing = bool(rng.integers(2)), float(rng.choice([0.0, 0.0, 0.2, 1.0]))
    reduction = str(rng.choice(["mean", "sum", "none"]))
    case.log.append(f"cross_entropy {np.dtype(dtype).name} N={N} K={K} {kind} weighted={weighted} "
                    f"smoothing={smoothing} {reduction}")
    z = case.input((N, K), dtype, _normal(rng))
    target = _targets(case, N, K, dtype, kind)
    weight = case.input((K,), dtype, lambda s: rng.uniform(0.5, 1.5, s)) if weighted else None
    values = [np.array(a) if a is not None else None for a in (z, target, weight)]
    case.snapshot()
    loss, grad = sx.cross_entropy(z, target, weight=weight, label_smoothing=smoothing,
                                  reduction=reduction, return_grad=True)
    if N and K:
        want, coefficients = ref.cross_entropy(values[0], values[1], values[2],
                                               label_smoothing=smoothing, reduction=reduction)
    else:  # no rows or no classes: every row's loss is a sum of no terms
        denominator = _mean_denominator(values[1], values[2], kind)
        want = {"none": np.zeros(N), "sum": 0.0,
                "mean": 0.0 / denominator if denominator else np.nan}[reduction]
    if N and K:
        p = ref.softmax(values[0], axis=1)
        want_grad = p * coefficients.sum(axis=1, keepdims=True) - coefficients
        if reduction == "mean":
            want_grad /= _mean_denominator(values[1], values[2], kind) or 1.0
        _close(grad, want_grad, dtype, "dlogits", case.log)
    if not (reduction == "mean" and np.isnan(want)):
        _close(loss, want, dtype, "loss", case.log)
    case.check_memory()


def fuzz_linear(case: Case, dtype):
    rng = case.rng
    N, D, K = int(rng.integers(0, 40)), int(rng.integers(1, 9)), int(rng.choice([0, 1, 5, 33, 200]))
    kind = str(rng.choice(["index", "probs"]))
    biased, smoothing = bool(rng.integers(2)), float(rng.choice([0.0, 0.3]))
    chunk_size = int(rng.integers(1, 50)) if rng.random() < 0.7 else None
    budget = int(rng.choice([_linear.CHUNK_BYTES, 256]))  # 256 bytes: blocks of classes
    case.log.append(f"linear_cross_entropy {np.dtype(dtype).name} N={N} D={D} K={K} {kind} "
                    f"bias={biased} smoothing={smoothing} chunk={chunk_size} budget={budget}")
    x = case.input((N, D), dtype, _normal(rng))
    W = case.input((K, D), dtype, lambda s: rng.standard_normal(s) * 0.3)
    b = case.input((K,), dtype, _normal(rng)) if biased else None
    target = _targets(case, N, K, dtype, kind)
    x_v, W_v, t_v = np.array(x, np.float64), np.array(W, np.float64), np.array(target)
    b_v = None if b is None else np.array(b, np.float64)
    case.snapshot()
    saved, _linear.CHUNK_BYTES = _linear.CHUNK_BYTES, budget
    try:
        loss, (dx, dW, db) = sx.linear_cross_entropy(x, W, target, b, label_smoothing=smoothing,
                                                     reduction="sum", chunk_size=chunk_size)
    finally:
        _linear.CHUNK_BYTES = saved
    z = x_v @ W_v.T + (0 if b_v is None else b_v)
    if z.size:
        want, coefficients = ref.cross_entropy(z, t_v, label_smoothing=smoothing, reduction="sum")
        dz = ref.softmax(z, axis=1) * coefficients.sum(axis=1, keepdims=True) - coefficients
        # each dz term before its cancellation (p C - c can be ~0 where p ~ c/C)
        dz_terms = np.abs(dz + coefficients) + np.abs(coefficients)
    else:
        want, dz = 0.0, np.zeros(z.shape)
        dz_terms = dz
    _close(loss, want, dtype, "loss", case.log)
    _close(dx, dz @ W_v, dtype, "dx", case.log, dz_terms @ np.abs(W_v))
    _close(dW, dz.T @ x_v, dtype, "dW", case.log, dz_terms.T @ np.abs(x_v))
    if b is not None:
        _close(db, dz.sum(axis=0), dtype, "db", case.log, dz_terms.sum(axis=0))
    case.check_memory()


def fuzz_jacobians(case: Case, dtype):
    rng = case.rng
    name = str(rng.choice(["softmax_jacobian", "softmax_weight_jacobian", "weight_grad"]))
    N, D, K = int(rng.integers(0, 6)), int(rng.integers(1, 5)), int(rng.choice([0, 1, 2, 7, 33]))
    case.log.append(f"{name} {np.dtype(dtype).name} N={N} D={D} K={K}")
    if name == "softmax_jacobian":
        ndim = int(rng.integers(1, 3))
        axis = int(rng.integers(-ndim, ndim))
        shape = _shape_with_classes(rng, ndim, K, axis)
        x = case.input(shape, dtype, _normal(rng))
        values = np.array(x, np.float64)
        case.snapshot()
        J = sx.softmax_jacobian(x, axis=axis)
        p = np.moveaxis(ref.softmax(values, axis) if values.size else values, axis, -1)
        want = np.empty(p.shape[:-1] + (K, K))
        for index in np.ndindex(p.shape[:-1]):
            want[index] = ref.jacobian(p[index])
        _close(J, want, dtype, name, case.log)
    elif name == "softmax_weight_jacobian":
        x = case.input((N, D), dtype, _normal(rng))
        W = case.input((K, D), dtype, lambda s: rng.standard_normal(s) * 0.3)
        x_v, W_v = np.array(x, np.float64), np.array(W, np.float64)
        case.snapshot()
        J = sx.softmax_weight_jacobian(x, W)
        p = ref.softmax(x_v @ W_v.T, axis=1) if N and K else np.zeros((N, K))
        want = np.einsum("nji,nd->njid", np.stack([ref.jacobian(row) for row in p])
                         if N else np.zeros((0, K, K)), x_v)
        _close(J, want, dtype, name, case.log)
    else:
        x = case.input((N, D), dtype, _normal(rng))
        d = case.input((N, K), dtype, _normal(rng))
        x_v, d_v = np.array(x, np.float64), np.array(d, np.float64)
        case.snapshot()
        dW, db = sx.weight_grad(x, d)
        _close(dW, d_v.T @ x_v, dtype, "dW", case.log)
        _close(db, d_v.sum(axis=0), dtype, "db", case.log)
    case.check_memory()


def fuzz_split_axis(case: Case, dtype):
    """The kernels of softmax_ext.dask (through softmax_ext._split): an array
    cut along its reduced axis into 2-3 blocks, each an operand in its own
    layout; per-block statistics, their merge, then each block normalised."""
    rng = case.rng
    ndim = int(rng.integers(1, 4))
    axis = int(rng.integers(ndim))
    K = min(int(rng.choice(CLASS_COUNTS[2:])), 3000)
    shape = _shape_with_classes(rng, ndim, K, axis)
    cuts = sorted(int(c) for c in rng.choice(np.arange(1, K), size=min(2, K - 1), replace=False))
    name = str(rng.choice(["softmax", "log_softmax", "logsumexp", "softmax_backward",
                           "log_softmax_backward"]))
    op = getattr(_kernels.Op, name.upper())
    case.log.append(f"split {name} {np.dtype(dtype).name} shape={shape} axis={axis} cuts={cuts}")
    backward = name.endswith("backward")
    x_values = _normal(rng)(shape).astype(dtype)
    g_values = _normal(rng)(shape).astype(dtype) if backward else None
    blocks = [case.input(piece.shape, dtype, lambda s, piece=piece: np.resize(piece, s))
              for piece in np.split(x_values, cuts, axis)]
    grads = [case.input(piece.shape, dtype, lambda s, piece=piece: np.resize(piece, s))
             for piece in np.split(g_values, cuts, axis)] if backward else [None] * len(blocks)
    case.snapshot()
    axes = (axis,)
    stats = np.concatenate([_split.block_statistics(b, g, op=op, axes=axes, num_threads=None)
                            for b, g in zip(blocks, grads)], axis=axis)
    merged = _split.merge_statistics(stats, axes)
    # the values the blocks hold (an aliased view holds other values than it was filled with)
    x64 = np.concatenate([np.array(b, np.float64) for b in blocks], axis=axis)
    scale = None
    if name == "logsumexp":
        result = np.squeeze(_split.log_sum(merged)[0], axis=axis)
        want = ref.logsumexp(x64, axis) if x64.size else np.empty(result.shape)
    else:
        result = np.concatenate([_split.normalize(b, merged, g, op=op, axes=axes, num_threads=None)
                                 for b, g in zip(blocks, grads)], axis=axis)
        _require(result.dtype == dtype, f"result dtype {result.dtype}", case.log)
        if name == "softmax":
            want = ref.softmax(x64, axis)
        elif name == "log_softmax":
            want = ref.log_softmax(x64, axis)
        else:
            g64 = np.concatenate([np.array(g, np.float64) for g in grads], axis=axis)
            if name == "softmax_backward":
                want = x64 * (g64 - (g64 * x64).sum(axis=axis, keepdims=True))
                terms = np.abs(g64) * np.abs(x64)
                scale = np.abs(x64) * terms.sum(axis=axis, keepdims=True)
            else:
                want = ref.log_softmax_backward(x64, g64, axis)
                scale = np.exp(x64) * np.abs(g64).sum(axis=axis, keepdims=True)
    _close(result, want, dtype, name, case.log, scale)
    case.check_memory()


FUZZERS = [fuzz_softmax_family] * 4 + [fuzz_cross_entropy] * 2 + [fuzz_linear, fuzz_jacobians,
                                                                 fuzz_split_axis]


@contextlib.contextmanager
def _isa_and_threads(isa: str, threads: int):
    """Kernels of one instruction set on exactly `threads` threads."""
    saved_min = _threads.MIN_ELEMENTS_PER_THREAD
    _kernels.select_isa(isa)
    _threads.MIN_ELEMENTS_PER_THREAD = 1
    sx.set_num_threads(threads)
    try:
        yield
    finally:
        sx.set_num_threads(None)
        _threads.MIN_ELEMENTS_PER_THREAD = saved_min
        _kernels.select_isa(ISAS[-1])


def run_case(seed: int) -> None:
    """One fuzz case, fully determined by `seed`."""
    rng = np.random.default_rng(seed)
    fuzzer = FUZZERS[int(rng.integers(len(FUZZERS)))]
    # the softmax family and cross_entropy also run their float16 kernels (16-bit
    # storage, float32 arithmetic)
    half_kernels = fuzzer in (fuzz_softmax_family, fuzz_cross_entropy, fuzz_split_axis)
    dtypes = [np.float32, np.float64] + ([np.float16] if half_kernels else [])
    dtype = dtypes[int(rng.integers(len(dtypes)))]
    isa, threads = str(rng.choice(ISAS)), int(rng.integers(1, 9))
    case = Case(rng)
    case.log.append(f"seed={seed} isa={isa} threads={threads}")
    with _isa_and_threads(isa, threads), np.errstate(all="ignore"):
        fuzzer(case, dtype)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20000)
    parser.add_argument("--seed", type=int, default=1, help="first seed; case i uses seed + i")
    args = parser.parse_args(argv)
    for i in range(args.cases):
        run_case(args.seed + i)
        if (i + 1) % 1000 == 0:
            print(f"{i + 1} cases clean", flush=True)
    print(f"{args.cases} cases clean (seeds {args.seed}..{args.seed + args.cases - 1})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
