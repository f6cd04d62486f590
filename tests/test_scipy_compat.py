"""scipy.special's signatures: tuple axes, 0-d input, logsumexp's b, keepdims,
return_sign and out=, checked against scipy (a test extra) and against a
plain-numpy reference that merges the named axes into one."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import softmax_ext as sx

import reference as ref
from layouts import LAYOUTS, in_layout

special = pytest.importorskip("scipy.special")

AXES_3D = [0, -1, (0,), (1, 2), (0, 2), (2, 0), (0, 1, 2), (), None]
FORWARD = ["softmax", "log_softmax", "logsumexp"]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("axis", AXES_3D, ids=str)
@pytest.mark.parametrize("name", FORWARD)
def test_tuple_axes_are_one_distribution(name, axis, layout):
    values = np.random.default_rng(1).standard_normal((4, 5, 6)) * 3
    x = in_layout(values, layout)
    result = getattr(sx, name)(x, axis=axis)
    np.testing.assert_allclose(result, ref.merged(name, values, axis), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(result, getattr(special, name)(values, axis=axis), rtol=1e-13,
                               atol=1e-15)
    np.testing.assert_array_equal(x, values)  # the input is unchanged


@pytest.mark.parametrize("axis", AXES_3D, ids=str)
def test_tuple_axes_backward(axis):
    rng = np.random.default_rng(2)
    z = rng.standard_normal((4, 5, 6))
    g = rng.standard_normal((4, 5, 6))
    p, logp = sx.softmax(z, axis=axis), sx.log_softmax(z, axis=axis)
    np.testing.assert_allclose(sx.softmax_backward(p, g, axis=axis),
                               ref.merged("softmax_backward", p, axis, g), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sx.log_softmax_backward(logp, g, axis=axis),
                               ref.merged("log_softmax_backward", logp, axis, g), rtol=1e-12,
                               atol=1e-14)


def test_tuple_axes_take_mergeable_strides_without_a_copy():
    """Reduced axes whose strides merge become one K of the caller's own
    memory; axes that do not merge are copied once, with them last."""
    from softmax_ext._layout import planned_view

    x = np.random.default_rng(3).standard_normal((3, 4, 5))
    for a, axes, kind in ((x, (1, 2), "rows"), (np.asfortranarray(x), (0, 1), "rows"),
                          (x, (0, 1), "cols"), (x[::-1], (1, 2), "rows")):
        array, plan, view = planned_view(a, axes)
        assert array is a and plan.kind == kind and np.shares_memory(view, a)
    array, plan, view = planned_view(x, (0, 2))  # not adjacent in memory
    assert array is not x and plan.kind == "rows" and view.shape == (4, 15)


def test_axis_tuple_of_one_equals_the_int_and_bad_tuples_raise():
    x = np.random.default_rng(4).standard_normal((3, 7))
    for name in FORWARD:
        func = getattr(sx, name)
        np.testing.assert_array_equal(func(x, axis=(1,)), func(x, axis=1))
        np.testing.assert_array_equal(func(x, axis=(-2,)), func(x, axis=0))
        with pytest.raises(ValueError, match="repeated"):
            func(x, axis=(1, -1))
        with pytest.raises(np.exceptions.AxisError):
            func(x, axis=(0, 2))
        with pytest.raises(TypeError, match="axis"):
            func(x, axis=(0, 1.0))


def test_logsumexp_keepdims_with_tuple_axes():
    x = np.random.default_rng(5).standard_normal((3, 4, 5))
    result = sx.logsumexp(x, axis=(0, 2), keepdims=True)
    assert result.shape == (1, 4, 1)
    np.testing.assert_allclose(result, special.logsumexp(x, axis=(0, 2), keepdims=True),
                               rtol=1e-14)


# ---- logsumexp(a, axis, b, keepdims, return_sign) --------------------------------

SIGN_CASES = [
    ([-np.inf, -np.inf], None), ([1.0, 2.0], [1.0, -1.0]), ([1.0, 1.0], [1.0, -1.0]),
    ([np.nan, 1.0], None), ([np.inf, 1.0], None), ([np.inf, np.inf], [1.0, -1.0]),
    ([1.0, 2.0], [0.0, 0.0]), ([np.inf, 1.0], [0.0, 1.0]), ([[1.0, 2.0], [3.0, 4.0]], [2.0, -1.0]),
    ([[1.0, 2.0], [3.0, 4.0]], [[2.0], [-1.0]]), ([1000.0, 1000.0], [3.0, 1.0]),
]


@pytest.mark.parametrize("a, b", SIGN_CASES, ids=str)
@pytest.mark.parametrize("return_sign", [False, True])
def test_logsumexp_b_and_return_sign_as_scipy(a, b, return_sign):
    with np.errstate(all="ignore"):
        expected = special.logsumexp(a, axis=None, b=b, return_sign=return_sign)
    result = sx.logsumexp(a, None, b, False, return_sign)  # scipy's positional order
    if return_sign:
        np.testing.assert_allclose(result[0], expected[0], rtol=1e-15)
        np.testing.assert_array_equal(result[1], expected[1])
    else:
        np.testing.assert_allclose(result, expected, rtol=1e-15)


def test_logsumexp_sign_of_an_empty_sum_is_zero():
    """scipy 1.17 says -1 here; a sum of no terms is 0 (as for all -inf)."""
    assert sx.logsumexp([], return_sign=True) == (-np.inf, 0.0)
    assert sx.logsumexp(np.ones((2, 0)), b=np.ones(0), return_sign=True)[1].tolist() == [0.0, 0.0]


def test_logsumexp_b_along_an_axis_with_random_signs():
    rng = np.random.default_rng(6)
    a = rng.standard_normal((6, 8)) * 5
    b = rng.standard_normal((6, 8))
    for axis in (0, 1, (0, 1)):
        lse, sign = sx.logsumexp(a, axis=axis, b=b, return_sign=True)
        lse_s, sign_s = special.logsumexp(a, axis=axis, b=b, return_sign=True)
        np.testing.assert_allclose(lse, lse_s, rtol=1e-13)
        np.testing.assert_array_equal(sign, sign_s)


def test_logsumexp_out():
    x = np.random.default_rng(7).standard_normal((4, 6))
    out = np.empty(4)
    assert sx.logsumexp(x, out=out) is out
    np.testing.assert_allclose(out, special.logsumexp(x, axis=-1), rtol=1e-15)
    kept = np.empty((4, 1))
    assert sx.logsumexp(x, keepdims=True, out=kept) is kept
    strided = np.empty((2, 6))[:, ::2].T  # (3, 2) of another stride
    sx.logsumexp(x.reshape(2, 3, 4).transpose(1, 0, 2), axis=2, out=strided)
    np.testing.assert_allclose(strided, special.logsumexp(x.reshape(2, 3, 4).transpose(1, 0, 2),
                                                          axis=2), rtol=1e-15)
    with pytest.raises(ValueError, match="shape"):
        sx.logsumexp(x, out=np.empty(6))
    with pytest.raises(TypeError, match="dtype"):
        sx.logsumexp(x, out=np.empty(4, np.float32))


@pytest.mark.parametrize("dtype, scipy_softmax_dtype", [
    (np.int8, np.float16), (np.uint8, np.float16), (np.int16, np.float32),
    (np.uint16, np.float32), (np.int32, np.float64), (np.int64, np.float64),
])
def test_scipy_dtype_differences_are_the_documented_ones(dtype, scipy_softmax_dtype):
    """README: scipy's softmax/log_softmax compute 8- and 16-bit integers in
    float16/float32 (numpy's exp promotion; unsigned ones wrap in x - max);
    softmax_ext computes every integer in float64, as scipy's logsumexp does."""
    x = np.array([0, 3, 1]).astype(dtype)
    with np.errstate(all="ignore"):
        assert special.softmax(x).dtype == scipy_softmax_dtype
        assert special.logsumexp(x).dtype == np.float64
    assert sx.softmax(x).dtype == sx.log_softmax(x).dtype == sx.logsumexp(x).dtype == np.float64
    np.testing.assert_allclose(sx.softmax(x), special.softmax(x.astype(np.int64)), rtol=1e-15)


# ---- arbitrary strided views ------------------------------------------------------------

@st.composite
def strided_views(draw):
    """A view of a random base with arbitrary strides, zero strides included,
    and an axis or tuple of axes."""
    ndim = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=ndim, max_size=ndim)))
    base = draw(hnp.arrays(np.float64, 64, elements=st.floats(-30, 30)))
    steps = [draw(st.integers(-3, 3)) for _ in shape]
    span = sum(abs(s) * (n - 1) for s, n in zip(steps, shape))
    if span >= base.size:
        steps = [0] * ndim
        span = 0
    start = sum(abs(s) * (n - 1) for s, n in zip(steps, shape) if s < 0)
    view = np.lib.stride_tricks.as_strided(base[start:], shape, [s * 8 for s in steps],
                                           writeable=False)
    axes = draw(st.sampled_from([None, -1, 0] + ([(0, ndim - 1)] if ndim > 1 else [])))
    return base, view, axes


@settings(max_examples=150, deadline=None)
@given(strided_views())
def test_arbitrary_strided_views(case):
    base, view, axis = case
    before = base.copy()
    for name in FORWARD:
        result = getattr(sx, name)(view, axis=axis)
        np.testing.assert_allclose(result, ref.merged(name, view.copy(), axis), rtol=1e-12,
                                   atol=1e-14)
    np.testing.assert_array_equal(base, before)


# ---- accuracy where one term dominates (scipy gh-18295) -------------------------------

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logsumexp_keeps_the_digits_a_dominant_term_would_swallow(dtype, exact_threads):
    """log(1 + e^-40) = 4.2e-18: summing 1 + e^-40 first would give 0.  Every
    route: rows, a strided axis, long rows split over threads, 16-bit input."""
    small = np.array([0.0, -40.0], dtype)
    exact = float(np.log1p(np.exp(np.float64(small[1]))))
    assert float(sx.logsumexp(small)) == pytest.approx(exact, rel=1e-6 if dtype == np.float32 else 1e-15)
    assert float(sx.logsumexp(small.reshape(2, 1), axis=0)[0]) == pytest.approx(exact, rel=1e-6)
    assert float(special.logsumexp(small.astype(np.float64))) == pytest.approx(exact, rel=1e-15)
    long_rows = np.full((2, 40000), -np.inf, dtype)   # split into pieces over 2 threads
    long_rows[:, 7] = 0.0
    long_rows[:, 39999] = -30.0
    for threads in (1, 2):
        np.testing.assert_allclose(sx.logsumexp(long_rows, num_threads=threads),
                                   np.log1p(np.exp(np.float64(-30.0))), rtol=1e-6)
    ties = np.array([3.0, 3.0, -37.0], dtype)  # two maxima: log(2 + e^-40) + 3
    assert float(sx.logsumexp(ties)) == pytest.approx(3 + np.log(2 + np.exp(-40.0)), rel=1e-7)
    assert sx.logsumexp(np.array([-np.inf, -np.inf], dtype)) == -np.inf
    assert float(sx.logsumexp(np.array([0.0, -8.0], np.float16))) == pytest.approx(
        np.log1p(np.exp(-8.0)), rel=1e-3)  # 3.4e-4, through the 16-bit kernels

