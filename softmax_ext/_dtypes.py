"""The dtype rule of softmax_ext, written once.

=====================================  ===============================  ============
input dtype                            computed in                      result dtype
=====================================  ===============================  ============
float64                                float64                          float64
float32                                float32                          float32
float16                                float32, tile by tile in the     float16
                                       kernels (no float32 copy)
ml_dtypes.bfloat16                     float32, likewise                bfloat16
bool, signed and unsigned integers     float64                          float64
complex, object, str, bytes, datetime, TypeError
timedelta, long double, structured
=====================================  ===============================  ============

Any byte order is accepted (a non-native array is read through a native
copy); results are always in native byte order, as numpy's ufuncs give them.
Several operands (``softmax_backward(p, grad)``): each is mapped by the table,
then the widest wins, float64 > float32 > {float16, bfloat16}; float16 with
bfloat16 gives float32.
"""

from __future__ import annotations

from typing import Optional, overload

import numpy as np

from . import _kernels
from ._layout import memoised

FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
FLOAT16 = np.dtype(np.float16)
STORAGE_16 = np.dtype(np.uint16)  # how the kernels see 16-bit floats


def is_bfloat16(dtype: np.dtype) -> bool:
    """ml_dtypes.bfloat16, recognised without importing ml_dtypes."""
    return dtype.name == "bfloat16" and getattr(dtype.type, "__module__", "").startswith("ml_dtypes")


@memoised
def half_format(dtype: np.dtype) -> Optional[int]:
    """The kernels' 16-bit format code of `dtype`, or None for other dtypes.

    Memoised (a call asks it several times, and ``dtype.name`` costs about a
    microsecond); numpy dtypes hash and compare by what they describe."""
    if dtype.itemsize != 2:
        return None
    if dtype == FLOAT16:
        return int(_kernels.HalfFormat.FLOAT16)
    if is_bfloat16(dtype):
        return int(_kernels.HalfFormat.BFLOAT16)
    return None


def result_dtype(dtype: np.dtype, name: str) -> np.dtype:
    """The (native) dtype softmax_ext returns for an operand of `dtype`."""
    native = dtype.newbyteorder("=") if dtype.byteorder not in "=|" else dtype
    if native in (FLOAT32, FLOAT64) or half_format(native) is not None:
        return native
    if native.kind in "biu":
        return FLOAT64
    raise TypeError(
        f"{name} has dtype {dtype}; softmax_ext computes float64 and float32 natively, "
        "float16 and ml_dtypes.bfloat16 in float32, and promotes bool and integers to "
        "float64 (complex, object, string, datetime and long double are not supported)"
    )


def _rank(dtype: np.dtype) -> int:
    return 2 if dtype == FLOAT64 else 1 if dtype == FLOAT32 else 0


def common_dtype(dtypes: tuple[np.dtype, ...]) -> np.dtype:
    """The widest of result dtypes (float16 with bfloat16 meet at float32)."""
    widest = max(dtypes, key=_rank)
    if _rank(widest) == 0 and any(d != widest for d in dtypes):
        return FLOAT32
    return widest


def as_float_array(x: object, name: str, dtype: Optional[np.dtype] = None) -> np.ndarray:
    """``np.asarray(x)`` in its result dtype (or `dtype`), native byte order;
    no copy when it already is."""
    arr = np.asarray(x)
    target = result_dtype(arr.dtype, name) if dtype is None else dtype
    return arr if arr.dtype == target else arr.astype(target)


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype a result of `dtype` is computed in: float32 for the 16-bit
    formats, else `dtype` itself."""
    return FLOAT32 if half_format(dtype) is not None else dtype


def as_native_array(x: object, name: str) -> np.ndarray:
    """`as_float_array` for the functions without 16-bit kernels yet (the
    Jacobians, weight_grad and the losses): 16-bit floats become float32."""
    arr = np.asarray(x)
    return as_float_array(arr, name, compute_dtype(result_dtype(arr.dtype, name)))


def common_float_arrays(a: object, b: object, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Both operands as float arrays of their common dtype and one shape."""
    a_arr, b_arr = np.asarray(a), np.asarray(b)
    if a_arr.shape != b_arr.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got {a_arr.shape} and {b_arr.shape}"
        )
    dtype = common_dtype((result_dtype(a_arr.dtype, names[0]), result_dtype(b_arr.dtype, names[1])))
    return as_float_array(a_arr, names[0], dtype), as_float_array(b_arr, names[1], dtype)


@overload
def kernel_storage(a: np.ndarray) -> np.ndarray: ...


@overload
def kernel_storage(a: None) -> None: ...


def kernel_storage(a: Optional[np.ndarray]) -> Optional[np.ndarray]:
    """`a` as the kernels take it: 16-bit floats as their uint16 bits."""
    if a is None or half_format(a.dtype) is None:
        return a
    return a.view(STORAGE_16)
