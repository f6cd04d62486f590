"""Thread-count control, resolved at call time in the calling thread.

Precedence: an explicit ``num_threads=`` argument, then `set_num_threads`,
then what OpenMP would use in this thread (``OMP_NUM_THREADS`` and
threadpoolctl's ``threadpool_limits`` both act on that).
"""

from __future__ import annotations

import operator

from . import _kernels

# Below this many elements per thread, starting another thread costs more than
# it saves (measured: a 64x128 float32 softmax is ~10 us on one thread).
MIN_ELEMENTS_PER_THREAD = 32768

_library_num_threads: int | None = None


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
        A positive count, or None to go back to OpenMP's default
        (``OMP_NUM_THREADS``, threadpoolctl limits, else all cores).
    """
    global _library_num_threads
    _library_num_threads = None if n is None else _check_count(n, "n")


def get_num_threads() -> int:
    """Number of threads a call with ``num_threads=None`` may use from this thread."""
    if _library_num_threads is not None:
        return _library_num_threads
    return _kernels.omp_max_threads()


def resolve_num_threads(num_threads: int | None, work: int) -> int:
    """Threads to give a kernel that touches ``work`` elements.

    Small inputs run on one thread so they pay no thread start-up; since every
    kernel gives the same bits for any thread count, this is invisible.
    """
    limit = get_num_threads() if num_threads is None else _check_count(num_threads, "num_threads")
    return max(1, min(limit, work // MIN_ELEMENTS_PER_THREAD))
