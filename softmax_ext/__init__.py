"""softmax_ext: fast, exact CPU softmax, log_softmax, logsumexp and their gradients.

Cython + OpenMP kernels with runtime SIMD dispatch behind a numpy-style API::

    import softmax_ext as sx
    p = sx.softmax(logits, axis=-1)
    dz = sx.softmax_backward(p, upstream_grad)
"""

import os as _os

try:
    from . import _kernels
except ImportError as _error:  # pragma: no cover - depends on how it is run
    raise ImportError(
        f"softmax_ext was imported from {_os.path.dirname(__file__)}, which has no compiled "
        "kernels: this is the source folder. Run from another folder or with `python -I` "
        "(which keeps the current folder off sys.path), or build in place with "
        "`python setup.py build_ext --inplace`."
    ) from _error
from ._config import show_config
from ._core import log_softmax, log_softmax_backward, logsumexp, softmax, softmax_backward
from ._gradients import (
    cross_entropy,
    linear_cross_entropy,
    softmax_jacobian,
    softmax_weight_jacobian,
    weight_grad,
)
from ._threads import get_num_threads, set_num_threads

__version__ = "0.1.0"

# SOFTMAX_EXT_ISA (any case) caps the kernel instruction set: portable, avx2 or
# avx512 on x86-64, portable or neon on AArch64 (for testing and for
# reproducing results across machines); an unknown name warns and keeps the
# best set rather than making the import fail.
if _os.environ.get("SOFTMAX_EXT_ISA"):
    try:
        _kernels.select_isa(_os.environ["SOFTMAX_EXT_ISA"].strip().lower())
    except ValueError as _bad_isa:
        import warnings as _warnings

        _warnings.warn(f"SOFTMAX_EXT_ISA ignored: {_bad_isa}", RuntimeWarning, stacklevel=2)

__all__ = [
    "softmax",
    "log_softmax",
    "logsumexp",
    "softmax_backward",
    "log_softmax_backward",
    "softmax_jacobian",
    "softmax_weight_jacobian",
    "cross_entropy",
    "weight_grad",
    "linear_cross_entropy",
    "get_num_threads",
    "set_num_threads",
    "show_config",
    "__version__",
]
