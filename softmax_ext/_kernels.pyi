from typing import Optional

import numpy as np

from enum import IntEnum

class Op(IntEnum):
    SOFTMAX = 0
    LOG_SOFTMAX = 1
    LOGSUMEXP = 2
    SOFTMAX_BACKWARD = 3
    LOG_SOFTMAX_BACKWARD = 4

def openmp_enabled() -> bool: ...
def omp_max_threads() -> int: ...
def cpu_isa() -> str: ...
def selected_isa() -> str: ...
def select_isa(name: str) -> str: ...
def exp_into(x: np.ndarray, out: np.ndarray) -> None: ...
def rows(
    *,
    op: int,
    x: np.ndarray,
    grad: Optional[np.ndarray] = ...,
    out: Optional[np.ndarray] = ...,
    lse: Optional[np.ndarray] = ...,
    num_threads: int,
) -> None: ...
def cols(
    *,
    op: int,
    x: np.ndarray,
    grad: Optional[np.ndarray] = ...,
    out: Optional[np.ndarray] = ...,
    lse: Optional[np.ndarray] = ...,
    num_threads: int,
) -> None: ...
