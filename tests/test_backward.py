"""Backward passes (VJPs) against the explicit Jacobian and finite differences."""

import platform
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import softmax_ext as sx
from softmax_ext import _kernels
import reference as ref
from conftest import assert_close, bits
from layouts import LAYOUTS, in_layout

SHAPES_AXES = [((17,), 0), ((13, 40), 0), ((40, 300), 0), ((13, 40), -1), ((70, 5), 1), ((37, 19), 1),
               ((4, 5, 33), 1), ((2, 3, 4, 37), 2), ((2, 3, 4, 37), None), ((3, 70000), -1)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
@pytest.mark.parametrize("num_threads", [1, 2])
def test_backward_matches_reference(rng, exact_threads, dtype, layout, shape, axis, num_threads):
    z = rng.standard_normal(shape) * 3
    p = ref.softmax(z, axis).astype(dtype)
    logp = ref.log_softmax(z, axis).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    # 70000-wide slices are too long for an explicit K x K Jacobian
    softmax_reference = _softmax_backward_formula if max(shape) > 1000 else ref.softmax_backward
    for func, y, reference in (
        (sx.softmax_backward, p, softmax_reference),
        (sx.log_softmax_backward, logp, ref.log_softmax_backward),
    ):
        want = reference(y, g, axis)
        scale = np.abs(want).max()
        got = func(in_layout(y, layout), in_layout(g, layout), axis=axis, num_threads=num_threads)
        assert got.dtype == dtype and got.shape == shape
        assert_close(got, want, dtype, scale=scale * 10)
        out = np.empty(shape, dtype)
        assert func(y, g, axis=axis, out=out, num_threads=num_threads) is out
        assert_close(out, want, dtype, scale=scale * 10)


def _softmax_backward_formula(p, g, axis):
    """p * (g - sum(g p)): the Jacobian-free form, for slices too long to build J."""
    p, g = np.asarray(p, np.float64), np.asarray(g, np.float64)
    return p * (g - (g * p).sum(axis=axis, keepdims=True))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_every_instruction_set(isa, rng, dtype):
    for shape, axis in [((9, 300), -1), ((300, 9), 0), ((64, 7), -1)]:
        z = rng.standard_normal(shape)
        p, logp = ref.softmax(z, axis), ref.log_softmax(z, axis)
        g = rng.standard_normal(shape)
        assert_close(sx.softmax_backward(p.astype(dtype), g.astype(dtype), axis=axis),
                     ref.softmax_backward(p.astype(dtype), g.astype(dtype), axis), dtype, scale=10)
        assert_close(sx.log_softmax_backward(logp.astype(dtype), g.astype(dtype), axis=axis),
                     ref.log_softmax_backward(logp.astype(dtype), g.astype(dtype), axis), dtype, scale=10)


def test_gradients_match_central_differences(rng):
    """d/dz sum(g * softmax(z)) and d/dz sum(g * log_softmax(z)) by 4th-order differences."""
    z = rng.standard_normal((3, 6))
    g = rng.standard_normal((3, 6))
    h = 1e-3
    for forward, backward in ((sx.softmax, sx.softmax_backward),
                              (sx.log_softmax, sx.log_softmax_backward)):
        numeric = np.zeros_like(z)
        for index in np.ndindex(z.shape):
            def loss(delta):
                shifted = z.copy()
                shifted[index] += delta
                return float((g * forward(shifted)).sum())
            numeric[index] = (-loss(2 * h) + 8 * loss(h) - 8 * loss(-h) + loss(-2 * h)) / (12 * h)
        analytic = backward(forward(z), g)
        np.testing.assert_allclose(analytic, numeric, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("axis", [0, 1])
def test_gradient_in_another_layout_than_p(rng, axis):
    z = rng.standard_normal((30, 50))
    p = np.asfortranarray(ref.softmax(z, axis))
    g = rng.standard_normal((30, 50))  # C order
    np.testing.assert_allclose(sx.softmax_backward(p, g, axis=axis),
                               ref.softmax_backward(p, g, axis), rtol=1e-12, atol=1e-15)
    g_strided = in_layout(g, "strided")
    np.testing.assert_allclose(sx.softmax_backward(p, g_strided, axis=axis),
                               ref.softmax_backward(p, g, axis), rtol=1e-12, atol=1e-15)


def test_mixed_dtypes_promote():
    p = np.full((2, 4), 0.25, np.float32)
    g = np.arange(8.0).reshape(2, 4)  # float64
    result = sx.softmax_backward(p, g)
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, ref.softmax_backward(p, g), rtol=1e-7)


def test_grad_aliasing_out():
    rng = np.random.default_rng(2)
    p = ref.softmax(rng.standard_normal((5, 9)))
    g = rng.standard_normal((5, 9))
    expected = ref.softmax_backward(p, g)
    sx.softmax_backward(p, g, out=g)
    np.testing.assert_allclose(g, expected, rtol=1e-13, atol=1e-15)


# ---- properties ------------------------------------------------------------------

logit_arrays = hnp.arrays(
    np.float64,
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=12),
    elements=st.floats(-60, 60, allow_nan=False),
)


def _axes(x):
    return st.sampled_from([None] + list(range(-x.ndim, x.ndim)))


@settings(max_examples=60, deadline=None)
@given(data=st.data(), x=logit_arrays)
def test_property_sums_to_one_and_shift_invariant(data, x):
    axis = data.draw(_axes(x))
    p = sx.softmax(x, axis=axis)
    sums = p.sum() if axis is None else p.sum(axis=axis)
    np.testing.assert_allclose(sums, 1.0, rtol=1e-12)
    shift = data.draw(st.floats(-100, 100))
    shifted = sx.softmax(x + shift, axis=axis)
    np.testing.assert_allclose(shifted, p, rtol=1e-9, atol=1e-15)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), x=logit_arrays)
def test_property_backward_is_jacobian_transpose_product(data, x):
    axis = data.draw(_axes(x))
    g = data.draw(hnp.arrays(np.float64, x.shape, elements=st.floats(-5, 5)))
    p = sx.softmax(x, axis=axis)
    np.testing.assert_allclose(sx.softmax_backward(p, g, axis=axis),
                               ref.softmax_backward(p, g, axis), rtol=1e-9, atol=1e-12)
    logp = sx.log_softmax(x, axis=axis)
    np.testing.assert_allclose(sx.log_softmax_backward(logp, g, axis=axis),
                               ref.log_softmax_backward(logp, g, axis), rtol=1e-9, atol=1e-12)


@settings(max_examples=60, deadline=None)
@given(data=st.data(), x=logit_arrays)
def test_property_log_softmax_is_log_of_softmax(data, x):
    axis = data.draw(_axes(x))
    p = sx.softmax(x, axis=axis)
    logp = sx.log_softmax(x, axis=axis)
    finite = p > 1e-300
    np.testing.assert_allclose(logp[finite], np.log(p[finite]), rtol=1e-12, atol=1e-12)
    lse = sx.logsumexp(x, axis=axis, keepdims=True)
    np.testing.assert_allclose(logp, x - lse, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward", "log_softmax",
                                  "softmax"])
@pytest.mark.parametrize("K", [100, 1001])  # rows in groups of 4, and one at a time
def test_streamed_output_has_the_ordinary_bits(isa, rng, name, dtype, K):
    """softmax, log_softmax and both backward ops write by streaming stores
    when their operands come to STREAM_FOOTPRINT bytes or more: the same bits
    as the ordinary path (the rows in halves, each below the threshold), for
    1 and 2 threads; rows of an odd length start at every alignment."""
    row_bytes = (3 if name.endswith("_backward") else 2) * K * np.dtype(dtype).itemsize
    rows = _kernels.STREAM_FOOTPRINT // row_bytes + 3
    half = rows // 2
    assert half * row_bytes < _kernels.STREAM_FOOTPRINT
    x = rng.standard_normal((rows, K)).astype(dtype)
    g = rng.standard_normal((rows, K)).astype(dtype)
    forward = {"softmax_backward": sx.softmax, "log_softmax_backward": sx.log_softmax}
    args = (forward[name](x), g) if name in forward else (x,)
    func = getattr(sx, name)
    ordinary = np.concatenate([func(*(a[:half] for a in args), num_threads=1),
                               func(*(a[half:] for a in args), num_threads=1)])
    into = np.empty_like(ordinary)
    for threads in (1, 2):
        streamed = func(*args, num_threads=threads)
        np.testing.assert_array_equal(bits(streamed), bits(ordinary), err_msg=f"{isa} {threads}")
        func(*args, out=into, num_threads=threads)  # a caller's out: streamed whatever its size
        np.testing.assert_array_equal(bits(into), bits(ordinary), err_msg=f"{isa} {threads} out")
    sample = slice(0, rows, 97)
    wide = [a[sample].astype(np.float64) for a in args]
    reference = {"softmax_backward": ref.softmax_backward,
                 "log_softmax_backward": ref.log_softmax_backward, "log_softmax": ref.log_softmax,
                 "softmax": ref.softmax}
    expected = reference[name](*wide)
    assert_close(ordinary[sample], expected, dtype)


@pytest.mark.parametrize("dtype, K", [(np.float32, 1000), (np.float64, 1001), (np.float16, 4099)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmax_backward"])
def test_large_allocated_outputs_are_written_by_ordinary_stores(monkeypatch, name, dtype, K):
    """An output the call allocates of FRESH_OUTPUT_BYTES or more (pages never
    written) goes to the row kernels with fresh_out, which write it by
    ordinary stores; a caller's `out` of the same size is streamed.  Both
    give the same bits, for 1 and 2 threads."""
    from softmax_ext import _core

    rows = _core.FRESH_OUTPUT_BYTES // (K * np.dtype(dtype).itemsize) + 3
    assert 2 * rows * K * np.dtype(dtype).itemsize >= _kernels.STREAM_FOOTPRINT
    rng = np.random.default_rng(13)
    x = (rng.standard_normal((rows, K)) * 3).astype(dtype)
    args = (sx.softmax(x), rng.standard_normal((rows, K)).astype(dtype)) \
        if name == "softmax_backward" else (x,)
    func = getattr(sx, name)
    fresh = []

    def spy(kind, result, out):
        arguments = _output_arguments(kind, result, out)
        fresh.append(arguments.get("fresh_out"))
        return arguments

    _output_arguments = _core._output_arguments
    monkeypatch.setattr(_core, "_output_arguments", spy)
    into = np.empty_like(x)
    for threads in (1, 2):
        allocated = func(*args, num_threads=threads)
        func(*args, out=into, num_threads=threads)
        np.testing.assert_array_equal(bits(allocated), bits(into), err_msg=f"{threads}")
    assert fresh == [True, False, True, False]


def _sysfs_l3_bytes():
    """The L3 size Linux lists in sysfs (an independent reading), or None."""
    caches = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(caches.glob("index*")):
        try:
            if (index / "level").read_text().strip() == "3":
                size = (index / "size").read_text().strip()  # e.g. "32768K"
                return int(size[:-1]) * {"K": 2**10, "M": 2**20}[size[-1]]
        except (OSError, ValueError, KeyError):
            return None
    return None


def test_stream_footprint_follows_the_reported_l3():
    """Calls stream from the L3 size the OS reports, held within the range
    measured; where Linux lists an L3 in sysfs, the kernels' sysconf reading
    must find one too (glibc x86-64)."""
    low, high = _kernels.STREAM_FOOTPRINT_RANGE
    l3 = _kernels.l3_cache_bytes()
    assert low < high
    assert _kernels.STREAM_FOOTPRINT == min(max(l3, low), high)
    listed = _sysfs_l3_bytes()
    if listed is None or platform.machine() != "x86_64" or platform.libc_ver()[0] != "glibc":
        pytest.skip("no L3 listed in sysfs, or not glibc on x86-64")
    assert l3 > 0
    assert abs(l3 - listed) <= listed // 8  # the same cache, read two ways
