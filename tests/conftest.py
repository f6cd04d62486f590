import contextlib
import os
import subprocess
import sys

import numpy as np
import pytest

import softmax_ext as sx
from softmax_ext import _kernels

# Every kernel instruction set this build has and this CPU can run (the
# portable one always), lowest first.
ISAS = list(_kernels.runnable_isas())


@pytest.fixture(params=ISAS)
def isa(request):
    """Run a test once per available instruction set, restoring the best after."""
    chosen = _kernels.select_isa(request.param)
    if chosen != request.param:  # conftest asserts are not rewritten under python -O
        raise AssertionError(f"select_isa({request.param!r}) chose {chosen!r}")
    yield chosen
    _kernels.select_isa(ISAS[-1])


@pytest.fixture
def exact_threads(monkeypatch):
    """num_threads=n really runs n threads, even on inputs small enough that
    the library would otherwise use fewer."""
    from softmax_ext import _threads

    monkeypatch.setattr(_threads, "MIN_ELEMENTS_PER_THREAD", 1)


@contextlib.contextmanager
def environ_kept():
    """Restore os.environ on exit: dask.distributed's nanny writes
    OMP_NUM_THREADS=1 (and others) into the environment of the process that
    starts a LocalCluster, which would reach every later subprocess."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture
def kept_environ():
    with environ_kept():
        yield


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def tolerances(dtype):
    """(rtol, atol) for comparing a result in `dtype` with a float64 reference."""
    if np.dtype(dtype) == np.float32:
        return 4e-6, 2e-7
    return 1e-13, 1e-15


def assert_close(actual, expected, dtype, scale=1.0):
    rtol, atol = tolerances(dtype)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol * scale)


def bits(a):
    """The raw bytes of an array, for bitwise comparisons (NaN == NaN)."""
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.dtype.itemsize])


def run_python(args, cwd, **env):
    """stdout of a new interpreter run with `args` that imports the same
    softmax_ext as this test (from outside the source tree when testing an
    installed wheel); a failing run fails the test with its stderr."""
    package_parent = os.path.dirname(os.path.dirname(sx.__file__))
    environment = dict(os.environ, PYTHONPATH=package_parent, **env)
    result = subprocess.run([sys.executable, *args], env=environment, cwd=cwd, capture_output=True,
                            text=True, timeout=120)
    if result.returncode != 0:
        raise AssertionError(f"python {' '.join(args)} exited {result.returncode}:\n{result.stderr}")
    return result.stdout.strip()


__all__ = ["sx", "run_python", "ISAS", "assert_close", "bits", "tolerances", "environ_kept"]


def pytest_report_header(config):
    return f"softmax_ext {sx.__version__} from {sx.__file__}; kernels {ISAS[-1]}"
