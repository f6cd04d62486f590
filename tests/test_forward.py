"""softmax, log_softmax and logsumexp against plain-numpy references."""

import mpmath
import numpy as np
import pytest

import softmax_ext as sx
import reference as ref
from conftest import ISAS, assert_close, bits
from layouts import LAYOUTS, in_layout

SHAPES_AXES = [
    ((17,), 0),
    ((17,), None),
    ((13, 40), 0),
    ((13, 40), 1),
    ((13, 40), -1),
    ((13, 40), None),
    ((40, 300), 0),  # a strided axis long enough to be swept in place (tiles_kernel)
    ((70, 5), -1),  # short rows: transposed tiles
    ((37, 19), -1),  # short rows, transposed in vector blocks with edges both ways
    ((4, 5, 33), 0),
    ((4, 5, 33), 1),
    ((4, 5, 33), -1),
    ((2, 3, 4, 37), 1),
    ((2, 3, 4, 37), 2),
    ((2, 3, 4, 37), -1),
    ((2, 3, 4, 37), None),
]
FORWARD = [
    (sx.softmax, ref.softmax),
    (sx.log_softmax, ref.log_softmax),
]


def _values(rng, shape, dtype, scale=4.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("shape,axis", SHAPES_AXES)
@pytest.mark.parametrize("num_threads", [1, 2])
def test_forward_matches_reference(rng, exact_threads, dtype, layout, shape, axis, num_threads):
    values = _values(rng, shape, dtype)
    x = in_layout(values, layout)
    for func, reference in FORWARD:
        expected = reference(values, axis)
        result = func(x, axis=axis, num_threads=num_threads)
        assert result.dtype == dtype and result.shape == shape
        assert_close(result, expected, dtype, scale=np.abs(expected).max())
        out = in_layout(np.zeros(shape, dtype), "C" if layout in ("readonly", "unaligned") else layout)
        returned = func(x, axis=axis, out=out, num_threads=num_threads)
        assert returned is out
        assert_close(out, expected, dtype, scale=np.abs(expected).max())
    lse = sx.logsumexp(x, axis=axis, num_threads=num_threads)
    expected = ref.logsumexp(values, axis)
    assert np.shape(lse) == np.shape(expected) and lse.dtype == dtype
    assert_close(lse, expected, dtype, scale=np.abs(expected).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(3, 100), (5, 7), (2, 70000), (300, 70)])
def test_every_instruction_set(isa, rng, dtype, shape):
    values = _values(rng, shape, dtype)
    for axis in (0, 1):
        for func, reference in FORWARD:
            expected = reference(values, axis)
            assert_close(func(values, axis=axis), expected, dtype, scale=np.abs(expected).max())
        assert_close(sx.logsumexp(values, axis=axis), ref.logsumexp(values, axis), dtype, scale=10)


def test_out_may_be_the_input():
    x = np.random.default_rng(0).standard_normal((6, 50))
    expected = ref.softmax(x)
    assert sx.softmax(x, out=x) is x
    np.testing.assert_allclose(x, expected, rtol=1e-14)
    y = np.random.default_rng(1).standard_normal((40, 6))
    expected = ref.log_softmax(y, axis=0)
    sx.log_softmax(y, axis=0, out=y)
    np.testing.assert_allclose(y, expected, rtol=1e-13)


def test_out_overlapping_the_input_partially():
    base = np.random.default_rng(0).standard_normal(101)
    x = base[:100].reshape(10, 10)
    expected = ref.softmax(x.copy())
    out = base[1:].reshape(10, 10)  # shifted by one element
    sx.softmax(x, out=out)
    np.testing.assert_allclose(out, expected, rtol=1e-14)


def test_out_none_result_owns_memory():
    x = np.ones((3, 4), np.float32)
    result = sx.softmax(x)
    assert not np.shares_memory(result, x)
    np.testing.assert_array_equal(result, np.full((3, 4), 0.25, np.float32))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keepdims(dtype):
    x = np.arange(24, dtype=dtype).reshape(2, 3, 4)
    for axis in (0, 1, 2):
        result = sx.logsumexp(x, axis=axis, keepdims=True)
        assert result.shape == tuple(1 if i == axis else n for i, n in enumerate(x.shape))
        np.testing.assert_allclose(result.squeeze(axis), ref.logsumexp(x, axis), rtol=1e-6)
    whole = sx.logsumexp(x, axis=None, keepdims=True)
    assert whole.shape == (1, 1, 1)
    np.testing.assert_allclose(whole.ravel()[0], ref.logsumexp(x, None), rtol=1e-6)


def test_scalar_result_for_axis_none():
    result = sx.logsumexp([1.0, 2.0, 3.0], axis=None)
    assert isinstance(result, np.float64)
    assert result == pytest.approx(np.log(np.exp(1) + np.exp(2) + np.exp(3)), rel=1e-15)


@pytest.mark.parametrize(
    "x",
    [[True, False, True], np.arange(5, dtype=np.int8), np.arange(5, dtype=np.uint64)],
    ids=["bool", "int8", "uint64"],
)
def test_promoted_dtypes_compute_in_float64(x):
    result = sx.softmax(x)
    assert result.dtype == np.float64
    np.testing.assert_allclose(result, ref.softmax(np.asarray(x, dtype=np.float64)), rtol=1e-14)


def test_lists_are_accepted():
    np.testing.assert_allclose(sx.softmax([[1, 2], [3, 5]]), ref.softmax([[1, 2], [3, 5]]), rtol=1e-15)


# ---- edge cases: what scipy.special and torch give -----------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1])
def test_edge_values(dtype, axis):
    inf, nan = np.inf, np.nan
    rows = [
        [1.0, 2.0, 3.0],  # ordinary
        [1.0, nan, 3.0],  # NaN poisons its slice
        [1.0, inf, 3.0],  # +inf: inf - inf in the shift gives NaN (torch, scipy)
        [-inf, -inf, -inf],  # all -inf: NaN
        [-inf, 0.0, -inf],  # -inf entries get probability 0
        [1e30, 0.0, -1e30],  # huge magnitudes: exact one-hot
    ]
    x = np.array(rows, dtype=dtype)
    if axis == 0:
        x = np.ascontiguousarray(x.T)
    p = sx.softmax(x, axis=axis)
    lp = sx.log_softmax(x, axis=axis)
    lse = sx.logsumexp(x, axis=axis)
    if axis == 0:
        p, lp = p.T, lp.T
    e = np.exp([1.0, 2.0, 3.0])
    np.testing.assert_allclose(p[0], e / e.sum(), rtol=1e-6)
    assert np.isnan(p[1]).all() and np.isnan(lp[1]).all() and np.isnan(lse[1])
    assert np.isnan(p[2]).all() and np.isnan(lp[2]).all() and lse[2] == inf
    assert np.isnan(p[3]).all() and np.isnan(lp[3]).all() and lse[3] == -inf
    np.testing.assert_array_equal(p[4], [0.0, 1.0, 0.0])
    np.testing.assert_array_equal(lp[4], [-inf, 0.0, -inf])
    assert lse[4] == 0.0
    np.testing.assert_array_equal(p[5], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(lp[5], [0.0, -1e30, -2e30] if dtype == np.float64 else
                                  np.array([0.0, -1e30, -2e30], dtype))
    assert lse[5] == dtype(1e30)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_single_class(dtype):
    x = np.array([[3.0], [-7.5], [np.inf], [-np.inf], [np.nan]], dtype)
    p, lp, lse = sx.softmax(x), sx.log_softmax(x), sx.logsumexp(x)
    np.testing.assert_array_equal(p[:2], 1.0)
    np.testing.assert_array_equal(lp[:2], 0.0)
    assert np.isnan(p[2:]).all() and np.isnan(lp[2:]).all()
    np.testing.assert_array_equal(lse[:2], [3.0, -7.5])
    assert lse[2] == np.inf and lse[3] == -np.inf and np.isnan(lse[4])


@pytest.mark.parametrize("shape,axis", [((0,), 0), ((0, 5), 1), ((5, 0), 1), ((5, 0), 0), ((2, 0, 3), None)])
def test_empty(shape, axis):
    x = np.zeros(shape, np.float32)
    assert sx.softmax(x, axis=axis).shape == shape
    assert sx.log_softmax(x, axis=axis).shape == shape
    lse = np.asarray(sx.logsumexp(x, axis=axis))
    reduced_shape = () if axis is None else shape[:axis] + shape[axis + 1:]
    assert lse.shape == reduced_shape and lse.dtype == np.float32
    # every slice that exists is empty (log of an empty sum) or there are no slices
    np.testing.assert_array_equal(lse, np.full(reduced_shape, -np.inf, np.float32))


def test_log_softmax_keeps_differences_of_huge_logits():
    x = np.array([1e8, 1e8 + 1.0, 1e8 - 2.0])
    expected = np.array([0.0, 1.0, -2.0]) - np.log(np.exp([0.0, 1.0, -2.0]).sum())
    np.testing.assert_allclose(sx.log_softmax(x), expected, rtol=1e-12)


def test_float32_sum_of_four_million_classes_is_one():
    x = np.random.default_rng(3).standard_normal(4_000_000).astype(np.float32)
    p = sx.softmax(x)
    assert abs(p.astype(np.float64).sum() - 1.0) < 1e-6


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_logsumexp_against_mpmath(dtype):
    mpmath.mp.dps = 50
    rng = np.random.default_rng(7)
    for values in (rng.standard_normal(1000) * 30, np.array([-745.0, -700.0, -800.0]),
                   np.array([700.0, 709.0, 1.0]), np.linspace(-50, 50, 333)):
        x = values.astype(dtype)
        exact = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(float(v))) for v in x))
        got = sx.logsumexp(x)
        # the sum is accumulated in double: float32 input gives the
        # correctly-rounded float32 result or its neighbour
        ulp = np.spacing(dtype(abs(float(exact))))
        assert abs(float(got) - float(exact)) <= 2 * ulp


def test_logsumexp_of_two_terms_keeps_every_digit_of_the_smaller():
    """logsumexp([0, a]) = log1p(e^a) for a < 0 and a + log1p(e^-a) above,
    against mpmath within 2 ulp, for e^a from 1e-300 to 1e300 and between 0
    and 2: the kernels' log(1 + y) must keep a tiny y's digits (a plain
    log of the rounded 1 + y loses them all below 1e-16)."""
    mpmath.mp.dps = 60
    a = np.log(np.concatenate([np.geomspace(1e-300, 1e300, 601),
                               np.random.default_rng(3).uniform(0.0, 2.0, 400)]))
    got = sx.logsumexp(np.stack([np.zeros_like(a), a], axis=1), axis=1)
    for value, result in zip(a, got):
        big, small = max(value, 0.0), min(value, 0.0) - max(value, 0.0)
        exact = mpmath.mpf(big) + mpmath.log1p(mpmath.exp(mpmath.mpf(small)))
        assert abs(mpmath.mpf(float(result)) - exact) <= 2 * np.spacing(abs(float(exact))), value


def test_softmax_tiny_probabilities_against_mpmath():
    mpmath.mp.dps = 50
    x = np.array([0.0, -20.0, -700.0, -740.0, 3.0])
    total = mpmath.fsum(mpmath.exp(mpmath.mpf(v)) for v in x)
    expected = [float(mpmath.exp(mpmath.mpf(v)) / total) for v in x]
    got = sx.softmax(x)
    for g, e in zip(got, expected):
        assert abs(g - e) <= 4 * np.spacing(e)  # relative accuracy even for subnormal-scale results


def test_exp_accuracy_float32_within_two_ulp(isa):
    """The kernels' float32 exp over the range softmax uses, against libm in float64."""
    from softmax_ext import _kernels

    rng = np.random.default_rng(11)
    x = np.concatenate([
        rng.uniform(-104.0, 88.7, 400_000),
        rng.uniform(-1.0, 1.0, 100_000),
        np.array([-103.9, -87.3, -1e-8, 0.0, 1e-8, 88.0, 88.72]),
    ]).astype(np.float32)
    out = np.empty_like(x)
    _kernels.exp_into(x, out)
    exact = np.exp(x.astype(np.float64))
    # ulp of the float32 result (subnormal results have a fixed ulp of 2**-149)
    ulp = np.spacing(exact.astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(out - exact) / ulp) <= 2.0


def test_exp_accuracy_float64(isa):
    from softmax_ext import _kernels

    rng = np.random.default_rng(12)
    x = np.concatenate([rng.uniform(-745.0, 709.7, 200_000), rng.uniform(-1, 1, 50_000)])
    out = np.empty_like(x)
    _kernels.exp_into(x, out)
    mpmath.mp.dps = 40
    sample = x[::997]
    exact = np.array([float(mpmath.exp(mpmath.mpf(float(v)))) for v in sample])
    ulp = np.spacing(exact)
    assert np.max(np.abs(out[::997] - exact) / ulp) <= 2.0


@pytest.mark.skipif(not {"avx2", "avx512"} <= set(ISAS), reason="needs a CPU with AVX2 and AVX-512")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_avx512_vector_exp_is_bitwise_the_fma_scalar_exp(dtype):
    """AVX-512 computes exp a vector at a time with VSCALEF in place of the
    integer construction of 2^n; the AVX2+FMA instantiation runs the scalar
    form.  Same reduction and polynomial: the same bits on every input,
    subnormal results, overflow, +-inf and NaN included."""
    from softmax_ext import _kernels

    rng = np.random.default_rng(21)
    width = np.dtype(dtype).itemsize * 8
    random_bits = rng.integers(0, 2**63, 1_000_000, dtype=np.uint64, endpoint=True)
    anything = random_bits.astype(f"u{width // 8}").view(dtype)  # every exponent and NaN payloads
    low, high = (-750.0, 712.0) if dtype is np.float64 else (-110.0, 95.0)
    x = np.concatenate([anything, np.linspace(low, high, 1_000_003, dtype=dtype),
                        np.array([np.inf, -np.inf, np.nan, -0.0, 0.0], dtype)])
    results = {}
    for isa_name in ("avx2", "avx512"):
        _kernels.select_isa(isa_name)
        try:
            results[isa_name] = np.empty_like(x)
            _kernels.exp_into(x, results[isa_name])
        finally:
            _kernels.select_isa(ISAS[-1])
    scalar, vector = results["avx2"], results["avx512"]
    np.testing.assert_array_equal(np.isnan(vector), np.isnan(x))
    numbers = ~np.isnan(x)
    np.testing.assert_array_equal(bits(vector[numbers]), bits(scalar[numbers]))
    assert np.count_nonzero((vector > 0) & (vector < np.finfo(dtype).tiny)) > 1000  # subnormals met


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_special_values(dtype):
    from softmax_ext import _kernels

    x = np.array([-np.inf, np.inf, np.nan, -1e4, 1e4, -0.0, 0.0], dtype)
    out = np.empty_like(x)
    _kernels.exp_into(x, out)
    np.testing.assert_array_equal(out[[0, 1, 3, 4, 5, 6]], [0.0, np.inf, 0.0, np.inf, 1.0, 1.0])
    assert np.isnan(out[2])


def test_results_are_bitwise_identical_across_threads_shapes():
    """Also covers rows split between threads (few long rows) and short rows."""
    from softmax_ext import _threads

    rng = np.random.default_rng(5)
    # each at least 8 x 32768 elements, so that every thread count asked for is used;
    # (60, 5000) along axis 0 is swept in strips of 1024, 512 and 256 columns
    # at 1, 2 and 3 or more threads (tiles_kernel's TILES_PER_THREAD)
    cases = [((16, 40000), -1), ((3, 100_000), -1), ((30000, 10), -1), ((4000, 70), 0),
             ((2100, 129), -1), ((60, 64, 70), 1), ((60, 5000), 0)]
    for shape, axis in cases:
        assert _threads.resolve_num_threads(8, int(np.prod(shape))) == 8
        x = (rng.standard_normal(shape) * 3).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        for func in (sx.softmax, sx.log_softmax, sx.logsumexp):
            first = bits(func(x, axis=axis, num_threads=1))
            for n in (2, 3, 4, 8):
                assert np.array_equal(first, bits(func(x, axis=axis, num_threads=n))), (func, shape, n)
        p = sx.softmax(x, axis=axis)
        for func in (sx.softmax_backward, sx.log_softmax_backward):
            first = bits(func(p, g, axis=axis, num_threads=1))
            for n in (2, 3, 8):
                assert np.array_equal(first, bits(func(p, g, axis=axis, num_threads=n)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K", [32, 128, 255, 1000])
def test_rows_swept_in_groups_get_the_bits_of_rows_done_alone(rng, K, dtype):
    """Short rows go through the sweeps four at a time; every row of a block
    (groups and a partial last group, any thread count) gets the bits it
    gets as a one-row call, and the values a plain-numpy reference gives."""
    x = (rng.standard_normal((11, K)) * 5).astype(dtype)
    x[3, :] = -np.inf
    x[6, 7] = np.nan
    g = rng.standard_normal((11, K)).astype(dtype)
    p = sx.softmax(x)
    for func, args in ((sx.softmax, (x,)), (sx.log_softmax, (x,)), (sx.logsumexp, (x,)),
                       (sx.softmax_backward, (p, g)), (sx.log_softmax_backward, (np.log(p), g))):
        alone = np.stack([func(*(a[i:i + 1] for a in args))[0] for i in range(len(x))])
        for threads in (1, 2, 3):
            together = func(*args, num_threads=threads)
            np.testing.assert_array_equal(bits(together), bits(alone), err_msg=f"{func.__name__} {threads}")
    finite = np.isfinite(x).all(axis=1)
    assert_close(sx.softmax(x)[finite], ref.softmax(x[finite].astype(np.float64), axis=-1), dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("K,axis", [(10, -1), (100, -1), (128, -1), (1000, -1), (40000, -1),
                                    (10, 0), (300, 0)])
def test_tame_rows_get_the_bits_of_the_full_exp(isa, rng, dtype, K, axis):
    """A row (or column strip) whose values span at most 86 (float32) / 707
    (float64) takes an exp without clamps that builds 2^n in one step
    (row_kernels_impl.h's tame exps).  A -inf appended to every row adds an
    exact 0 to its sums but sends it through the full exp: both must give
    the same bits, for rows at the bound, beyond it, with a NaN, with huge
    values, and wide ones; short rows go through transposed tiles, axis 0
    through column strips."""
    span = 86.0 if dtype == np.float32 else 707.0
    x = (rng.standard_normal((6, K)) * 3).astype(dtype)
    x[1, 0], x[1, 5] = 10.0, 10.0 - span  # exactly at the bound: tame
    x[2, 0], x[2, 5] = 10.0, 10.0 - 1.01 * span  # beyond it: full
    x[3, 9] = np.nan
    x[4] += dtype(1e4)
    x[5] *= dtype(span / 8)  # spans about 8 span: full
    # a strip of columns is tame only when all its columns are: these are
    tame = (rng.standard_normal((40, K)) * 3).astype(dtype)
    tame[:, 0] = 10.0
    tame[:, 1] = 10.0 - span
    for rows in (x, tame):
        padded = np.concatenate([rows, np.full((len(rows), 1), -np.inf, dtype)], axis=1)
        if axis == 0:
            rows, padded = rows.T.copy(), padded.T.copy()
        drop = (slice(None, -1), slice(None)) if axis == 0 else (slice(None), slice(None, -1))
        for func in (sx.softmax, sx.log_softmax):
            for threads in (1, 2):
                np.testing.assert_array_equal(
                    bits(func(rows, axis=axis, num_threads=threads)),
                    bits(func(padded, axis=axis, num_threads=threads)[drop]),
                    err_msg=f"{func.__name__} {threads}")
        np.testing.assert_array_equal(bits(sx.logsumexp(rows, axis=axis)),
                                      bits(sx.logsumexp(padded, axis=axis)))
        if axis == -1:
            target = np.arange(len(rows)) % K
            loss, grad = sx.cross_entropy(rows, target, reduction="none", return_grad=True)
            padded_loss, padded_grad = sx.cross_entropy(padded, target, reduction="none",
                                                        return_grad=True)
            np.testing.assert_array_equal(bits(loss), bits(padded_loss))
            np.testing.assert_array_equal(bits(grad), bits(padded_grad[:, :-1]))
    operand = x.T.copy() if axis == 0 else x
    p = sx.softmax(operand, axis=axis)
    p = p.T if axis == 0 else p
    assert np.isnan(p[3]).all()
    kept = [0, 1, 2, 4, 5]
    wide = x[kept].astype(np.float64)
    assert_close(p[kept], ref.softmax(wide, axis=-1), dtype)
    assert_close(sx.logsumexp(operand, axis=axis)[kept], ref.logsumexp(wide, -1), dtype,
                 scale=np.abs(wide).max())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_misaligned_input_gives_the_aligned_bits(rng, name, axis, dtype):
    """Unpickled buffers (dask workers) are often misaligned: the copy the
    kernels need keeps the array's layout, hence its route and its bits."""
    x = (rng.standard_normal((30, 50)) * 4).astype(dtype)
    misaligned = in_layout(x, "unaligned")
    assert not misaligned.flags.aligned
    func = getattr(sx, name)
    np.testing.assert_array_equal(bits(func(misaligned, axis=axis)), bits(func(x, axis=axis)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("axis", [0, 1])
def test_cached_layouts_still_check_alignment(rng, axis, dtype):
    """Layout plans are cached on (shape, strides, itemsize), which an
    unaligned array shares with an aligned one: each call must still route
    an unaligned out= through a copy, and write an aligned one directly."""
    x = _values(rng, (9, 40), dtype)
    expected = sx.softmax(x, axis=axis)
    assert_close(expected, ref.softmax(x.astype(np.float64), axis=axis), dtype)
    for layout in ("C", "unaligned", "C", "unaligned"):
        out = in_layout(np.full_like(x, np.nan), layout)
        assert sx.softmax(x, axis=axis, out=out) is out
        np.testing.assert_array_equal(bits(np.ascontiguousarray(out)), bits(expected), err_msg=layout)
