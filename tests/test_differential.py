"""One generated matrix over the softmax family: layouts x dtypes x axes, and
``out=`` in every layout, against plain-numpy float64 references (the named
axes merged into one) and against scipy.special where scipy computes in the
same dtype.

Every case also checks the result dtype (softmax_ext/_dtypes.py's table) and
that the input is unchanged.
"""

import itertools

import numpy as np
import pytest

import softmax_ext as sx

import reference as ref
from layouts import LAYOUTS, in_layout

special = pytest.importorskip("scipy.special")
try:
    import ml_dtypes
except ImportError:  # bfloat16 cases are left out
    ml_dtypes = None

SHAPE = (3, 4, 5)
DTYPES = [np.float64, np.float32, np.float16] + ([ml_dtypes.bfloat16] if ml_dtypes else []) + \
    [np.int32, np.bool_]
AXES = [-1, 0, 1, None, (0, 2), (2, 1)]
MORE_LAYOUTS = LAYOUTS + ["big-endian", "memmap", "broadcast"]
FORWARD = ["softmax", "log_softmax", "logsumexp"]
BACKWARD = {"softmax_backward": "softmax", "log_softmax_backward": "log_softmax"}
OUT_LAYOUTS = ["C", "F", "strided", "negative"]


def dtype_id(dtype):
    return np.dtype(dtype).name


def result_dtype(dtype):
    dtype = np.dtype(dtype)
    return np.dtype(np.float64) if dtype.kind in "biu" else dtype


def tolerance(dtype):
    """(rtol, atol) of a result in `dtype` against a float64 reference on the
    same stored values: the result rounded once, or a few float32 ulp."""
    name = np.dtype(dtype).name
    return {"float64": (1e-12, 1e-14), "float32": (4e-6, 1e-6), "float16": (2e-3, 1e-3),
            "bfloat16": (1.6e-2, 8e-3)}[name]


def values_in(dtype, shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    if np.dtype(dtype) == np.bool_:
        return rng.integers(0, 2, shape).astype(bool)
    if np.dtype(dtype).kind == "i":
        return rng.integers(-6, 7, shape).astype(dtype)
    return (rng.standard_normal(shape) * 3).astype(dtype)


def laid_out(values, layout, tmp_path):
    """`values` in `layout`: tests/layouts.py's, or big-endian, a memmap, or
    a zero-stride broadcast of its first row along axis 1."""
    if layout == "big-endian":
        if values.dtype.byteorder == "|" or values.dtype.kind == "V":
            return None  # no byte order (bool, bfloat16)
        return values.astype(values.dtype.newbyteorder(">"))
    if layout == "memmap":
        mapped = np.memmap(tmp_path / "values.bin", values.dtype, "w+", shape=values.shape)
        mapped[...] = values
        return mapped
    if layout == "broadcast":
        return np.broadcast_to(values[:, :1, :], values.shape)
    return in_layout(values, layout)


def reference(name, stored, axis, *extra):
    """The float64 reference on the values as stored (0-d and empty handled)."""
    wide = np.asarray(stored, np.float64)
    extra = [np.asarray(e, np.float64) for e in extra]
    if wide.ndim == 0:
        return ref.merged(name, wide.reshape(1), None, *(e.reshape(1) for e in extra)).reshape(())
    return ref.merged(name, wide, axis, *extra)


def check(result, want, dtype):
    assert result.dtype == result_dtype(dtype), (result.dtype, dtype)
    rtol, atol = tolerance(result.dtype)
    np.testing.assert_allclose(np.asarray(result, np.float64), want, rtol=rtol, atol=atol)


@pytest.mark.parametrize("layout", MORE_LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", FORWARD)
def test_forward_matrix(name, dtype, layout, tmp_path):
    values = values_in(dtype)
    x = laid_out(values, layout, tmp_path)
    if x is None:
        pytest.skip(f"{dtype_id(dtype)} has no byte order")
    stored = np.array(x)
    func = getattr(sx, name)
    for axis in AXES:
        result = func(x, axis=axis)
        want = reference(name, stored, axis)
        check(result, want, dtype)
        if np.dtype(dtype) in (np.float32, np.float64):  # scipy keeps these dtypes
            theirs = getattr(special, name)(stored, axis=axis)
            rtol, atol = tolerance(dtype)
            np.testing.assert_allclose(result, theirs, rtol=rtol, atol=atol)
    np.testing.assert_array_equal(np.asarray(x), stored)  # the input is unchanged


@pytest.mark.parametrize("out_layout", OUT_LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16], ids=dtype_id)
@pytest.mark.parametrize("name", FORWARD + list(BACKWARD))
def test_out_in_every_layout(name, dtype, out_layout):
    values = values_in(dtype)
    grad = values_in(dtype, seed=1)
    for axis in AXES:
        if name in BACKWARD:
            forward = getattr(sx, BACKWARD[name])(values, axis=axis)
            args, want = (forward, grad), reference(name, forward, axis, grad)
        else:
            args, want = (values,), reference(name, values, axis)
        if name == "logsumexp":
            out = in_layout(np.zeros(want.shape, dtype), out_layout) if want.ndim else \
                np.zeros((), dtype)
        else:
            out = in_layout(np.zeros(SHAPE, dtype), out_layout)
        result = getattr(sx, name)(*args, axis=axis, out=out)
        assert result is out
        check(out, want, dtype)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES[:4], ids=dtype_id)
@pytest.mark.parametrize("name", list(BACKWARD))
def test_backward_matrix(name, dtype, layout):
    grad = values_in(dtype, seed=1)
    for axis in AXES:
        forward = getattr(sx, BACKWARD[name])(values_in(dtype), axis=axis)
        y, g = in_layout(forward, layout), in_layout(grad, layout)
        result = getattr(sx, name)(y, g, axis=axis)
        check(result, reference(name, forward, axis, grad), dtype)
        np.testing.assert_array_equal(np.asarray(y), forward)


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_id)
@pytest.mark.parametrize("name", FORWARD)
def test_zero_d_and_empty(name, dtype):
    func = getattr(sx, name)
    scalar = values_in(dtype, shape=())
    for axis in (-1, None):
        check(np.asarray(func(scalar, axis=axis)), reference(name, scalar, None), dtype)
    empty = values_in(dtype, shape=(3, 0, 5))
    for axis in AXES:
        result = func(empty, axis=axis)
        assert result.dtype == result_dtype(dtype)
        if name != "logsumexp":
            assert result.shape == empty.shape
            continue
        # the log of an empty sum is -inf; an empty kept axis leaves nothing
        reduced = range(3) if axis is None else \
            [a % 3 for a in ((axis,) if isinstance(axis, int) else axis)]
        kept = [n for a, n in enumerate(empty.shape) if a not in reduced]
        np.testing.assert_array_equal(result, np.full(kept, -np.inf))


def test_matrix_is_generated_as_described():
    """The matrix really spans what the module docstring claims."""
    cases = list(itertools.product(FORWARD, DTYPES, MORE_LAYOUTS, AXES))
    assert len(cases) == len(FORWARD) * len(DTYPES) * len(MORE_LAYOUTS) * len(AXES)
    assert {"big-endian", "memmap", "broadcast", "unaligned", "negative"} <= set(MORE_LAYOUTS)
    assert {np.dtype(np.float16), np.dtype(np.int32), np.dtype(np.bool_)} <= set(map(np.dtype, DTYPES))
