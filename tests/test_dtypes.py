"""The dtype rule (softmax_ext/_dtypes.py): the table, byte orders, mixed
operands, 0-d inputs, and float16 / bfloat16 computed in float32 tile by tile
inside the kernels."""

import numpy as np
import pytest

import softmax_ext as sx
from softmax_ext import _kernels
from softmax_ext._core import HALF_MAX_STRIDED_K

import reference as ref

try:
    import ml_dtypes
except ImportError:  # bfloat16 cases are skipped without ml_dtypes
    ml_dtypes = None

HALVES = [np.dtype(np.float16)] + ([np.dtype(ml_dtypes.bfloat16)] if ml_dtypes else [])
HALF_IDS = [d.name for d in HALVES]
FORMAT = {"float16": _kernels.HalfFormat.FLOAT16, "bfloat16": _kernels.HalfFormat.BFLOAT16}
FORWARD = [sx.softmax, sx.log_softmax, sx.logsumexp]


# ---- the table ---------------------------------------------------------------------

TABLE = [
    (np.float64, np.float64), (np.float32, np.float32), (np.float16, np.float16),
    (np.bool_, np.float64), (np.int8, np.float64), (np.int64, np.float64),
    (np.uint8, np.float64), (np.uint64, np.float64),
] + ([(ml_dtypes.bfloat16, ml_dtypes.bfloat16)] if ml_dtypes else [])


@pytest.mark.parametrize("given, expected", TABLE, ids=[np.dtype(g).name for g, _ in TABLE])
@pytest.mark.parametrize("func", FORWARD)
def test_result_dtype_follows_the_table(func, given, expected):
    x = np.array([[0, 1, 1], [1, 0, 0]]).astype(given)
    result = np.asarray(func(x))
    assert result.dtype == np.dtype(expected)
    expected_values = getattr(ref, func.__name__)(x.astype(np.float64), -1)
    atol = 1e-2 if np.dtype(expected).itemsize == 2 else 1e-6
    np.testing.assert_allclose(result.astype(np.float64), expected_values, atol=atol)


UNSUPPORTED = [np.complex128, np.object_, np.str_, np.bytes_, "datetime64[s]", "timedelta64[s]",
               [("a", np.float64)]]
if np.dtype(np.longdouble) != np.dtype(np.float64):
    UNSUPPORTED.append(np.longdouble)


@pytest.mark.parametrize("dtype", UNSUPPORTED, ids=str)
@pytest.mark.parametrize("func", [sx.softmax, sx.logsumexp, sx.cross_entropy])
def test_unsupported_dtypes_name_what_is_supported(func, dtype):
    x = np.zeros((2, 3), dtype=dtype)
    args = (np.zeros(2, np.intp),) if func is sx.cross_entropy else ()
    with pytest.raises(TypeError, match="float16 and ml_dtypes.bfloat16"):
        func(x, *args)


@pytest.mark.parametrize("a, b, expected", [
    (np.float32, np.float64, np.float64), (np.float16, np.float32, np.float32),
    (np.float16, np.float64, np.float64), (np.int32, np.float32, np.float64),
    (np.float16, np.float16, np.float16), (np.bool_, np.float16, np.float64),
] + ([(np.float16, ml_dtypes.bfloat16, np.float32)] if ml_dtypes else []))
@pytest.mark.parametrize("func", [sx.softmax_backward, sx.log_softmax_backward])
def test_mixed_operands_promote_to_the_widest(func, a, b, expected):
    p = np.array([[0.0, 1.0], [1.0, 0.0]])  # values every dtype here holds exactly
    g = np.array([[1.0, 0.0], [1.0, 1.0]])
    result = func(p.astype(a), g.astype(b))
    assert result.dtype == np.dtype(expected)
    np.testing.assert_allclose(result.astype(np.float64), func(p, g), atol=2e-2)


# ---- byte order ----------------------------------------------------------------------

NON_NATIVE = [np.dtype(">f8" if np.little_endian else "<f8"),
              np.dtype(">f4" if np.little_endian else "<f4"),
              np.dtype(">f2" if np.little_endian else "<f2")]


@pytest.mark.parametrize("swapped", NON_NATIVE, ids=str)
def test_every_byte_order_gives_native_results(swapped):
    x = np.random.default_rng(3).standard_normal((5, 9)).astype(swapped)
    native = x.astype(swapped.newbyteorder("="))
    for func in FORWARD:
        result = func(x, axis=0)
        assert result.dtype == native.dtype and result.dtype.isnative
        np.testing.assert_array_equal(result, func(native, axis=0))
    p = sx.softmax(native)
    for func in (sx.softmax_backward, sx.log_softmax_backward):
        np.testing.assert_array_equal(func(p.astype(swapped), x), func(p, native))


def test_cross_entropy_accepts_every_byte_order():
    rng = np.random.default_rng(4)
    z = rng.standard_normal((6, 4))
    t = rng.dirichlet(np.ones(4), size=6)
    w = rng.uniform(0.5, 2.0, 4)
    y = np.array([0, 1, 2, 3, 1, 0])
    big = lambda a: a.astype(a.dtype.newbyteorder(">" if np.little_endian else "<"))  # noqa: E731
    loss, grad = sx.cross_entropy(big(z), big(y), weight=big(w), return_grad=True)
    loss_n, grad_n = sx.cross_entropy(z, y, weight=w, return_grad=True)
    assert loss == loss_n and grad.dtype.isnative
    np.testing.assert_array_equal(grad, grad_n)
    assert sx.cross_entropy(big(z), big(t)) == sx.cross_entropy(z, t)


# ---- 0-d ---------------------------------------------------------------------------------

def test_zero_d_input_is_one_distribution_as_in_scipy():
    assert sx.softmax(2.5) == 1.0
    assert sx.log_softmax(2.5) == 0.0
    assert sx.logsumexp(2.5) == 2.5
    assert sx.logsumexp(np.float32(-np.inf)) == -np.inf
    assert sx.softmax(np.float64(3.0), axis=None).shape == ()
    assert sx.softmax_backward(1.0, 4.0) == 0.0
    assert sx.log_softmax_backward(0.0, 4.0) == 0.0
    out = np.empty(())
    assert sx.softmax(7.0, out=out) is out and out == 1.0
    with pytest.raises(np.exceptions.AxisError):
        sx.softmax(2.5, axis=1)


# ---- float16 and bfloat16 -------------------------------------------------------------

@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_widening_is_exact_for_every_16_bit_pattern(dtype, isa):
    bits = np.arange(1 << 16, dtype=np.uint16)
    out = np.empty(bits.size, np.float32)
    _kernels.widen_into(bits, out, FORMAT[dtype.name])
    np.testing.assert_array_equal(out, bits.view(dtype).astype(np.float32))


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_narrowing_rounds_as_numpy_and_ml_dtypes(dtype, isa):
    rng = np.random.default_rng(5)
    edges = np.concatenate([
        np.arange(0x33000000 - 4096, 0x38800000 + 4096, 61, dtype=np.uint32),  # float16 subnormals
        np.arange(0x477fe000 - 4096, 0x47800000 + 4096, dtype=np.uint32),     # float16 overflow
        np.arange(0x7f7f0000, 0x7f800000 + 4096, dtype=np.uint32),            # bf16 overflow, NaN
        np.arange(0, 1 << 16, dtype=np.uint32) << 16 | 0x8000,                # every bf16 tie
        np.arange(0, 1 << 16, dtype=np.uint32) << 13 | 0x1000,                # float16 ties
    ])
    bits = np.concatenate([rng.integers(0, 1 << 32, 1 << 20, dtype=np.uint64).astype(np.uint32),
                           edges])
    x = np.concatenate([bits, bits | 0x80000000]).view(np.float32)
    out = np.empty(x.size, np.uint16)
    _kernels.narrow_into(x, out, FORMAT[dtype.name])
    with np.errstate(all="ignore"):
        expected = x.astype(dtype)
    got = out.view(dtype)
    nan = np.isnan(expected.astype(np.float32))
    np.testing.assert_array_equal(np.isnan(got.astype(np.float32)), nan)
    np.testing.assert_array_equal(out[~nan], expected.view(np.uint16)[~nan])
    # a NaN keeps its sign
    np.testing.assert_array_equal(np.signbit(got[nan].astype(np.float32)), np.signbit(x[nan]))


HALF_CASES = [  # (shape, axis): short rows, rows in groups of 4 (the last group short), long
    # ones (whole, and streamed past 2^20), strided
    ((64, 7), -1), ((40, 100), -1), ((30, 300), -1), ((5, 5000), -1), ((3, 40000), -1),
    ((2, 1_100_000), -1),
    ((300, 9), 0),
    ((7, 300, 5), 1),
    ((2, 20000, 3), 1),
]


def _as_float32_route(x, axis):
    """x in float32 with the memory layout the 16-bit kernels will see."""
    if x.ndim == 3 and x.shape[axis] > HALF_MAX_STRIDED_K:  # then copied contiguous
        return np.moveaxis(np.ascontiguousarray(np.moveaxis(x, axis, -1)), -1, axis).astype(
            np.float32)
    return x.astype(np.float32)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("shape, axis", HALF_CASES)
def test_16_bit_results_are_the_float32_results_rounded_once(dtype, shape, axis, exact_threads):
    rng = np.random.default_rng(6)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    wide = _as_float32_route(x, axis)
    for func in FORWARD:
        results = [func(x, axis=axis, num_threads=n) for n in (1, 2)]
        expected = np.asarray(func(wide, axis=axis)).astype(dtype)
        for result in results:
            assert result.dtype == dtype
            np.testing.assert_array_equal(result.view(np.uint16), expected.view(np.uint16))
        # and close to the float64 truth
        truth = getattr(ref, func.__name__)(x.astype(np.float64), axis)
        np.testing.assert_allclose(results[0].astype(np.float64), truth,
                                   rtol=2 ** -7, atol=2 ** -7 if func is sx.softmax else 0.05)
    for func, y in ((sx.softmax_backward, sx.softmax(x, axis=axis)),
                    (sx.log_softmax_backward, sx.log_softmax(x, axis=axis))):
        result = func(y, g, axis=axis, num_threads=2)
        expected = func(_as_float32_route(y, axis), _as_float32_route(g, axis), axis=axis)
        np.testing.assert_array_equal(result.view(np.uint16), expected.astype(dtype).view(np.uint16))


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("K", [4097, 20000])  # rows swept in 16 bits: within one chunk, and two
def test_16_bit_row_sweeps_on_gapped_reversed_rows_and_edge_rows(dtype, K, isa):
    rng = np.random.default_rng(9)
    base = (rng.standard_normal((12, K + 50)) * 8).astype(dtype)
    base[1, 7] = np.inf
    base[2, :] = -np.inf
    base[3, K // 2] = np.nan
    base[4, 3] = 60000.0 if dtype == np.float16 else 1e30
    base[5, :] = base[5, 0]                      # every term ties with the max
    base[6, :] = np.nan
    base[6, 11] = -np.nan                        # NaN of either sign, nothing else
    base[7, :] = -np.abs(base[7, :]) - 3         # the max is negative
    base[8, :] = -5
    base[8, K + 9] = 2                           # the max is the row's last value
    base[9, :] = -1
    base[9, 20:30], base[9, 40:45] = -0.0, 0.0   # the max is 0 of both signs
    base[10, :] = -1
    base[10, 100] = np.finfo(dtype).smallest_subnormal
    base[11, :] = -np.abs(base[11, :])
    base[11, 50] = np.nan                        # NaN beside a negative max
    x = base[::-1, 10:K + 10]                    # rows reversed and gapped
    wide = np.ascontiguousarray(x).astype(np.float32)
    out = np.full((12, 2 * K), 7.0, dtype)[::-1, ::2]
    for func in (sx.softmax, sx.log_softmax):
        for threads in (1, 2, 3):
            func(x, out=out, num_threads=threads)
            expected = func(wide).astype(dtype)
            np.testing.assert_array_equal(out.view(np.uint16), expected.view(np.uint16))
    for threads in (1, 3):
        got = sx.logsumexp(x, num_threads=threads)
        np.testing.assert_array_equal(got.view(np.uint16),
                                      sx.logsumexp(wide).astype(dtype).view(np.uint16))
    np.testing.assert_array_equal(base[::-1, 10:K + 10].view(np.uint16), x.view(np.uint16))


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("func", [sx.softmax, sx.log_softmax])
def test_16_bit_streamed_outputs_are_the_float32_results_rounded_once(dtype, func, isa):
    """Rows swept in 16 bits write by streaming stores when input and output
    come to STREAM_FOOTPRINT bytes or more: still the float32 result rounded
    once, into a C array and into rows 2 bytes off 64-byte alignment (an odd
    length: every row starts at another offset), for 1 and 2 threads."""
    K = 4099
    rows = _kernels.STREAM_FOOTPRINT // (2 * K * dtype.itemsize) + 3
    x = (np.random.default_rng(12).standard_normal((rows, K)) * 4).astype(dtype)
    expected = func(x.astype(np.float32)).astype(dtype).view(np.uint16)
    storage = np.full(rows * K + 32, 7.0, dtype)
    skew = (-storage.ctypes.data % 64) // dtype.itemsize + 1
    out = storage[skew:skew + rows * K].reshape(rows, K)
    for threads in (1, 2):
        np.testing.assert_array_equal(func(x, num_threads=threads).view(np.uint16), expected)
        func(x, out=out, num_threads=threads)
        np.testing.assert_array_equal(out.view(np.uint16), expected)
        assert (storage[:skew] == 7).all() and (storage[skew + rows * K:] == 7).all()


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
def test_16_bit_out_layouts_and_edge_values(dtype):
    x = np.array([[0.0, -np.inf, 1.0, 2.0], [np.nan, 0.0, 1.0, 2.0], [-np.inf] * 4,
                  [60000.0, 60000.0, 0.0, 0.0]]).astype(dtype)
    out = np.full((4, 8), 7.0, dtype)[:, ::2]      # strided out
    sx.softmax(x, out=out)
    expected = sx.softmax(x.astype(np.float32)).astype(dtype)
    np.testing.assert_array_equal(out.astype(np.float32), expected.astype(np.float32))
    assert np.isnan(out[1]).all() and np.isnan(out[2]).all()
    f_out = np.empty((4, 4), dtype, order="F")
    sx.log_softmax(x, axis=0, out=f_out)
    np.testing.assert_array_equal(f_out.astype(np.float32),
                                  sx.log_softmax(x.astype(np.float32), axis=0).astype(dtype)
                                  .astype(np.float32))
    with pytest.raises(TypeError, match="dtype"):
        sx.softmax(x, out=np.empty((4, 4), np.float32))


def test_16_bit_kernels_refuse_bad_calls():
    x = np.zeros((2, 3), np.uint16)
    with pytest.raises(ValueError, match="format"):
        _kernels.rows_half(op=_kernels.Op.SOFTMAX, fmt=7, x=x, out=x.copy(), num_threads=1)
    with pytest.raises(ValueError, match="shape"):
        _kernels.rows_half(op=_kernels.Op.SOFTMAX, fmt=0, x=x, out=np.zeros((3, 2), np.uint16),
                           num_threads=1)
    with pytest.raises(ValueError, match="lse"):
        _kernels.rows_half(op=_kernels.Op.LOGSUMEXP, fmt=0, x=x, out=x.copy(), num_threads=1)


@pytest.mark.parametrize("dtype", HALVES, ids=HALF_IDS)
@pytest.mark.parametrize("K", [5, 31, 32, 100, 20000])  # transposed tiles, whole rows, > SX_CHUNK
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("layout", ["C", "strided rows", "big-endian"])
def test_16_bit_cross_entropy_is_the_float32_result_rounded_once(dtype, K, kind, layout,
                                                                   exact_threads):
    """16-bit logits run the float32 kernel on tiles widened in a float32
    scratch: the gradient is the float32 gradient (on the widened logits)
    rounded once, in the logits' dtype; the loss is accumulated in float64
    and returned in the logits' dtype, as PyTorch does."""
    rng = np.random.default_rng(K)
    N = 67  # not a multiple of the 64-row tiles
    z = (rng.standard_normal((N, K)) * 4).astype(dtype)
    z[5, 0] = -np.inf
    if layout == "strided rows":
        z = np.repeat(z, 2, axis=0)[::2]
    elif layout == "big-endian" and dtype == np.float16:
        z = z.astype(">f2")
    wide = np.asarray(z, np.float32)
    options = {"weight": rng.uniform(0.5, 2.0, K), "label_smoothing": 0.1}
    if kind == "index":
        target = rng.integers(0, K, N)
        target[::7] = -100
    else:
        target = rng.dirichlet(np.ones(K), N).astype(dtype)
    for reduction in ("mean", "none"):
        want_loss, want_grad = sx.cross_entropy(wide, np.asarray(target, np.float32)
                                                if kind == "probs" else target,
                                                reduction=reduction, return_grad=True, **options)
        for threads in (1, 2):
            loss, grad = sx.cross_entropy(z, target, reduction=reduction, return_grad=True,
                                          num_threads=threads, **options)
            assert grad.dtype == dtype and np.asarray(loss).dtype == dtype
            np.testing.assert_array_equal(grad.view(np.uint16),
                                          want_grad.astype(dtype).view(np.uint16))
            np.testing.assert_allclose(np.asarray(loss, np.float64),
                                       np.asarray(want_loss, np.float64), rtol=2 ** -7)
    assert np.isfinite(grad).all()


def test_16_bit_cross_entropy_kernel_refuses_bad_calls():
    z = np.zeros((2, 3), np.uint16)
    loss = np.zeros(2)
    with pytest.raises(ValueError, match="format"):
        _kernels.cross_entropy_half(fmt=7, logits=z, target=np.zeros(2, np.intp), loss=loss,
                                    num_threads=1)
    with pytest.raises(ValueError, match="outside"):
        _kernels.cross_entropy_half(fmt=0, logits=z, target=np.array([0, 3], np.intp), loss=loss,
                                    num_threads=1)
    with pytest.raises(ValueError, match="shape"):
        _kernels.cross_entropy_half(fmt=0, logits=z, target=np.zeros(2, np.intp), loss=loss,
                                    grad=np.zeros((3, 2), np.uint16), num_threads=1)
    with pytest.raises(ValueError, match="exactly one"):
        _kernels.cross_entropy_half(fmt=0, logits=z, loss=loss, num_threads=1)
