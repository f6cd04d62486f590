"""Validation, thread control, configuration."""

import threading

import numpy as np
import pytest

import softmax_ext as sx
import reference as ref
from conftest import run_python

ALL_FUNCS = [sx.softmax, sx.log_softmax, sx.logsumexp]
BACKWARD = [sx.softmax_backward, sx.log_softmax_backward]


@pytest.mark.parametrize("func", ALL_FUNCS)
@pytest.mark.parametrize(
    "bad",
    [np.ones(3, np.complex128), np.array(["a", "b"]), np.array([object(), 1.0], dtype=object),
     np.ones(3, np.longdouble) if np.dtype(np.longdouble) != np.float64 else np.array(["x"]),
     None, "abc"],
    ids=["complex", "str", "object", "longdouble", "None", "string"],
)
def test_unsupported_dtypes_raise_type_error(func, bad):
    with pytest.raises(TypeError, match="dtype"):
        func(bad)


@pytest.mark.parametrize("func", ALL_FUNCS)
def test_bad_axis(func):
    x = np.ones((2, 3))
    with pytest.raises(np.exceptions.AxisError):
        func(x, axis=2)
    with pytest.raises(ValueError):  # AxisError is a ValueError
        func(x, axis=-3)
    with pytest.raises(TypeError, match="axis"):
        func(x, axis=1.0)
    with pytest.raises(TypeError, match="axis"):
        func(x, axis=True)
    with pytest.raises(np.exceptions.AxisError):
        func(np.float64(1.0), axis=0)


@pytest.mark.parametrize("func", [sx.softmax, sx.log_softmax])
def test_bad_out(func):
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match="shape"):
        func(x, out=np.empty((3, 2)))
    with pytest.raises(TypeError, match="dtype"):
        func(x, out=np.empty((2, 3), np.float32))
    with pytest.raises(TypeError, match="ndarray"):
        func(x, out=[[0.0] * 3] * 2)
    ro = np.empty((2, 3))
    ro.setflags(write=False)
    with pytest.raises(ValueError, match="read-only"):
        func(x, out=ro)


@pytest.mark.parametrize("func", ALL_FUNCS + BACKWARD)
@pytest.mark.parametrize("bad", [0, -1, 1.5, 2.0, "2", True])
def test_bad_num_threads(func, bad):
    x = np.full((2, 3), 1 / 3)
    args = (x, x) if func in BACKWARD else (x,)
    with pytest.raises(ValueError, match="num_threads"):
        func(*args, num_threads=bad)


@pytest.mark.parametrize("func", BACKWARD)
def test_backward_shape_mismatch(func):
    with pytest.raises(ValueError, match="same shape"):
        func(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(TypeError, match="dtype"):
        func(np.ones((2, 3)), np.ones((2, 3), np.complex64))


def test_kernel_entry_points_reject_bad_views():
    from softmax_ext import _kernels

    x = np.ones((4, 6))
    with pytest.raises(ValueError, match="contiguous"):
        _kernels.rows(op=_kernels.Op.SOFTMAX, x=x[:, ::2], out=np.empty((4, 3)), num_threads=1)
    with pytest.raises(ValueError):  # mismatched dtypes between operands
        _kernels.rows(op=_kernels.Op.SOFTMAX, x=x, out=np.empty((4, 6), np.float32), num_threads=1)
    with pytest.raises(ValueError):
        _kernels.select_isa("sse9")


def test_set_and_get_num_threads():
    before = sx.get_num_threads()
    try:
        sx.set_num_threads(1)
        assert sx.get_num_threads() == 1
        sx.set_num_threads(3)
        assert sx.get_num_threads() == 3
        with pytest.raises(ValueError):
            sx.set_num_threads(0)
        assert sx.get_num_threads() == 3
    finally:
        sx.set_num_threads(None)
    assert sx.get_num_threads() == before


def test_threadpoolctl_limits_are_honoured():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    openmp = [info for info in threadpoolctl.threadpool_info() if info["user_api"] == "openmp"]
    assert openmp, "threadpoolctl does not see the OpenMP runtime softmax_ext uses"
    with threadpoolctl.threadpool_limits(limits=1, user_api="openmp"):
        assert sx.get_num_threads() == 1
        x = np.random.default_rng(0).standard_normal((256, 1000))
        np.testing.assert_allclose(sx.softmax(x), ref.softmax(x), rtol=1e-13)
    with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
        assert sx.get_num_threads() == 2


def test_omp_num_threads_environment_variable(tmp_path):
    code = "import softmax_ext as sx; print(sx.get_num_threads())"
    assert run_python(["-c", code], tmp_path, OMP_NUM_THREADS="1") == "1"


def test_isa_environment_variable_caps_the_kernels(tmp_path):
    code = "import softmax_ext as sx; print(sx.show_config(print_=False)['simd'])"
    assert run_python(["-c", code], tmp_path, SOFTMAX_EXT_ISA="portable") == "portable"


def test_openmp_is_enabled():
    """The build must not silently lose OpenMP (scikit-learn #29665)."""
    assert sx.show_config(print_=False)["openmp"] is True


def test_show_config_reports(capsys):
    info = sx.show_config()
    printed = capsys.readouterr().out
    assert info["version"] == sx.__version__
    assert info["simd"] in ("portable", "avx2", "avx512")
    assert info["num_threads"] == sx.get_num_threads()
    for key in info:
        assert key in printed


def test_concurrent_calls_from_python_threads():
    rng = np.random.default_rng(9)
    # each large enough (> 2 x 32768 elements) for two OpenMP threads per call
    inputs = [rng.standard_normal((256 + i, 500 + 37 * i)).astype(np.float32) for i in range(4)]
    expected = [sx.softmax(x, num_threads=1) for x in inputs]
    failures = []

    def worker(i):
        for _ in range(25):
            got = sx.softmax(inputs[i], num_threads=2)
            if not np.array_equal(got, expected[i]):
                failures.append(i)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures


def test_public_api_is_typed():
    import importlib.resources

    assert importlib.resources.files("softmax_ext").joinpath("py.typed").is_file()
    assert sx.softmax.__annotations__["return"] in ("np.ndarray", np.ndarray)
