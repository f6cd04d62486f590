"""Validation, thread control, configuration."""

import itertools
import os
import platform
import threading
import types
import warnings

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


@pytest.fixture
def serial_build(monkeypatch):
    """The Python layer as it behaves on an extension built without OpenMP
    (.ci/run also builds a real one and checks the same messages)."""
    from softmax_ext import _kernels, _threads

    monkeypatch.setattr(_threads, "OPENMP", False)
    monkeypatch.setattr(_threads, "_warned_serial", False)
    monkeypatch.setattr(_kernels, "openmp_enabled", lambda: False)
    return _threads


def test_serial_build_warns_once_on_the_first_threaded_request(serial_build):
    x = np.random.default_rng(0).standard_normal((256, 1000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        np.testing.assert_allclose(sx.softmax(x[:2], num_threads=4), ref.softmax(x[:2]), rtol=1e-13)
        assert not caught  # too small to have used a second thread: nothing to say
        np.testing.assert_allclose(sx.softmax(x, num_threads=4), ref.softmax(x), rtol=1e-13)
        assert len(caught) == 1
        assert caught[0].category is RuntimeWarning
        assert "without OpenMP" in str(caught[0].message)
        assert caught[0].filename == __file__  # points at the caller, not the library
        sx.log_softmax(x, num_threads=4)
        sx.softmax(x)  # the default asks for every usable CPU
        assert len(caught) == 1
    assert sx.get_num_threads() == 1


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2 if hasattr(os, "sched_getaffinity") else True,
                    reason="needs two usable CPUs")
def test_serial_build_warns_on_a_default_call(serial_build):
    x = np.random.default_rng(0).standard_normal((256, 1000))
    with pytest.warns(RuntimeWarning, match="without OpenMP"):
        sx.softmax(x)


def test_serial_build_is_reported_by_show_config_and_the_main_job(serial_build, capsys,
                                                                 monkeypatch):
    from softmax_ext import __main__ as main_job

    assert sx.show_config()["openmp"] is False
    assert "WARNING: softmax_ext was built without OpenMP" in capsys.readouterr().out
    monkeypatch.setattr(main_job, "OPENMP", False)
    with pytest.warns(RuntimeWarning, match="without OpenMP"):  # the self-check's long rows
        assert main_job.main(["--no-bench"]) == 0
    printed = capsys.readouterr().out
    assert "self-check: PASSED" in printed
    assert "WARNING: softmax_ext was built without OpenMP" in printed.split("self-check")[-1]


def test_version_is_the_distribution_version():
    from importlib import metadata

    try:
        installed = metadata.version("softmax_ext")
    except metadata.PackageNotFoundError:
        pytest.skip("an in-place build has no distribution metadata")
    assert installed == sx.__version__


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo") or platform.machine() != "x86_64",
                    reason="compares with Linux's x86 CPU flags")
def test_cpu_isa_agrees_with_the_kernels_cpu_flags():
    """The CPUID/XGETBV probe (the one MSVC builds use too) against the
    flags Linux reports, which also drop what the OS does not save."""
    from softmax_ext import _kernels

    with open("/proc/cpuinfo") as info:
        flags = set(next(line for line in info if line.startswith("flags")).split(":")[1].split())
    expected = "portable"
    if {"avx2", "fma", "f16c"} <= flags:
        expected = "avx2"
        if {"avx512f", "avx512vl", "avx512dq", "avx512bw"} <= flags:
            expected = "avx512"
    assert _kernels.cpu_isa() == expected
    assert _kernels.runnable_isas() == _kernels.ISA_NAMES[: _kernels.ISA_NAMES.index(expected) + 1]


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


def test_interleaved_median_seconds_times_every_call_in_each_round(monkeypatch):
    """The benchmarks' timer: rounds that time every call once, in a
    rotating order, each after untimed calls that let other pools settle;
    the result is each call's median.  A fake clock that only the calls
    advance (in exact binary fractions of a second) makes it deterministic."""
    from softmax_ext import _bench

    unit = 2.0**-10
    clock = {"now": 0.0}
    monkeypatch.setattr(_bench, "time", types.SimpleNamespace(perf_counter=lambda: clock["now"]))
    order = []

    def make(name, units):
        def call():
            order.append(name)
            clock["now"] += units * unit
        return call

    calls = {"fast": make("fast", 1), "slow": make("slow", 4)}
    result = _bench.interleaved_median_seconds(calls, min_rounds=6, min_seconds=0.0,
                                               settle_seconds=3 * unit)
    # rounds alternate fast-slow and slow-fast, so runs of a name join up
    # across rounds: six rounds give F, S, F, S, F, S, F
    runs = [(name, len(list(group))) for name, group in itertools.groupby(order)]
    assert [name for name, _ in runs] == ["fast", "slow"] * 3 + ["fast"]
    # per round, fast: three settling calls (3 units) and one timed call;
    # slow: one settling call (4 units > 3) and one timed call
    assert [n for _, n in runs] == [4, 4, 8, 4, 8, 4, 4]
    assert result == {"fast": unit, "slow": 4 * unit}
