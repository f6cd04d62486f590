"""Thread-count control, resolved at call time in the calling thread.

Precedence: an explicit ``num_threads=`` argument, then `set_num_threads`,
then what OpenMP would use in this thread (``OMP_NUM_THREADS`` and
threadpoolctl's ``threadpool_limits`` both act on that).  Every count is
capped at `max_threads` (4 per logical CPU: more only adds switching).

Forked children: GNU libgomp keeps the parent's thread pool bookkeeping
across ``fork`` but not its threads, so a child whose parent had run a
parallel region hangs in its first one.  A child forked after this process
ran kernels on more than one thread therefore runs every kernel on one
thread (as PyTorch does); processes started with "spawn" or "forkserver"
are fresh and unaffected.

Serial builds: an extension compiled without OpenMP runs every call on one
thread.  The build says so (loudly, but pip hides build output), and so do
`show_config`, ``python -m softmax_ext`` and a one-time RuntimeWarning on the
first call that would have used more than one thread.
"""

from __future__ import annotations

import operator
import os
import sys
import warnings
from types import FrameType

from . import _kernels

# The extension was compiled with OpenMP (else every kernel runs serially).
OPENMP = _kernels.openmp_enabled()
SERIAL_BUILD_MESSAGE = (
    "softmax_ext was built without OpenMP: every call runs on one thread. Rebuild it with a "
    "compiler that has OpenMP (gcc; clang with libomp; MSVC) to use several cores."
)

# Below this many elements per thread, starting another thread costs more than
# it saves (measured: a 64x128 float32 softmax is ~10 us on one thread).
MIN_ELEMENTS_PER_THREAD = 32768

# The most threads any call uses (a fixed fact of this machine, read once).
_THREAD_CAP = 4 * (os.cpu_count() or 1)

_library_num_threads: int | None = None
# This process has run a kernel on more than one OpenMP thread.
_ran_parallel = False
# This process is a fork of one that had: threaded regions would hang.
_forked_after_parallel = False
# A serial build has said so once (RuntimeWarning).
_warned_serial = False


def _after_fork_in_child() -> None:
    global _forked_after_parallel
    _forked_after_parallel = _forked_after_parallel or _ran_parallel


os.register_at_fork(after_in_child=_after_fork_in_child)


def max_threads() -> int:
    """The most threads any call uses: 4 per logical CPU (1 in a forked child
    of a process that had run threaded kernels)."""
    return 1 if _forked_after_parallel else _THREAD_CAP


def forked_after_parallel() -> bool:
    """True in a forked child of a process that had run threaded kernels."""
    return _forked_after_parallel


def _check_count(n: object, name: str) -> int:
    if isinstance(n, bool):
        raise ValueError(f"{name} must be a positive integer, got {n!r}")
    try:
        count = operator.index(n)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {n!r}") from None
    if count < 1:
        raise ValueError(f"{name} must be a positive integer, got {count}")
    return count


def set_num_threads(n: int | None) -> None:
    """Set the default number of threads used by softmax_ext.

    Parameters
    ----------
    n : int or None
        A positive count (capped at 4 per logical CPU), or None to go back to
        OpenMP's default (``OMP_NUM_THREADS``, threadpoolctl limits, else all
        cores). In a forked child of a process that had run threaded kernels
        every call uses one thread whatever is set here.
    """
    global _library_num_threads
    _library_num_threads = None if n is None else _check_count(n, "n")


def get_num_threads() -> int:
    """Number of threads a call with ``num_threads=None`` may use from this thread
    (1 in a build without OpenMP)."""
    return min(_requested_threads(), max_threads()) if OPENMP else 1


def _requested_threads() -> int:
    """What ``num_threads=None`` asks for: set_num_threads's count, else what
    OpenMP would use in this thread (the usable CPUs, in a serial build)."""
    if _library_num_threads is not None:
        return _library_num_threads
    if OPENMP:
        return _kernels.omp_max_threads()
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _caller_stacklevel() -> int:
    """warnings.warn's stacklevel of the first caller outside this package."""
    package = os.path.dirname(__file__) + os.sep
    level = 2  # 1 is our caller, which is in the package
    frame: FrameType | None = sys._getframe(level)
    while frame is not None and frame.f_code.co_filename.startswith(package):
        level, frame = level + 1, frame.f_back
    return level


def resolve_num_threads(num_threads: int | None, work: int) -> int:
    """Threads to give a kernel that touches ``work`` elements.

    Small inputs run on one thread so they pay no thread start-up; since every
    kernel gives the same bits for any thread count, this is invisible.
    """
    global _ran_parallel, _warned_serial
    limit = _requested_threads() if num_threads is None else _check_count(num_threads, "num_threads")
    threads = max(1, min(limit, max_threads(), work // MIN_ELEMENTS_PER_THREAD))
    if threads > 1 and not OPENMP:
        if not _warned_serial:
            _warned_serial = True
            warnings.warn(SERIAL_BUILD_MESSAGE, RuntimeWarning, stacklevel=_caller_stacklevel())
        return 1
    if threads > 1:
        _ran_parallel = True
    return threads
