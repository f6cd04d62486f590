"""Build and runtime configuration report."""

from __future__ import annotations

import platform
import sys
from typing import Any

import numpy as np

from . import _kernels
from ._threads import SERIAL_BUILD_MESSAGE, forked_after_parallel, get_num_threads


def show_config(print_: bool = True) -> dict[str, Any]:
    """Describe the build and what runs on this machine.

    Parameters
    ----------
    print_ : bool, optional
        Print the report (default True).

    Returns
    -------
    dict
        ``version``, ``openmp`` (compiled with OpenMP; when False the report
        also prints a warning that every call runs on one thread), ``num_threads``
        (what a call with ``num_threads=None`` may use from this thread),
        ``single_threaded_after_fork`` (this is a forked child of a process
        that had run threaded kernels, so every call uses one thread),
        ``simd`` (kernel instruction set in use), ``cpu_simd`` (widest the
        CPU supports; MSVC builds compile only the portable set),
        ``machine``, ``python``, ``numpy``.
    """
    from . import __version__

    info = {
        "version": __version__,
        "openmp": _kernels.openmp_enabled(),
        "num_threads": get_num_threads(),
        "single_threaded_after_fork": forked_after_parallel(),
        "simd": _kernels.selected_isa(),
        "cpu_simd": _kernels.cpu_isa(),
        "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
        "python": sys.version.split()[0],
        "numpy": np.__version__,
    }
    if print_:
        width = max(map(len, info))
        for key, value in info.items():
            print(f"{key:>{width}} : {value}")
        if not info["openmp"]:
            print(f"WARNING: {SERIAL_BUILD_MESSAGE}")
    return info
