from typing import Optional

import numpy as np

from enum import IntEnum

class Op(IntEnum):
    SOFTMAX = 0
    LOG_SOFTMAX = 1
    LOGSUMEXP = 2
    SOFTMAX_BACKWARD = 3
    LOG_SOFTMAX_BACKWARD = 4

class HalfFormat(IntEnum):
    FLOAT16 = 0
    BFLOAT16 = 1

STATS: int

def openmp_enabled() -> bool: ...
def omp_max_threads() -> int: ...
ISA_NAMES: tuple[str, ...]
STREAM_FOOTPRINT: int
STREAM_FOOTPRINT_RANGE: tuple[int, int]
def l3_cache_bytes() -> int: ...

def cpu_isa() -> str: ...
def runnable_isas() -> tuple[str, ...]: ...
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
    fresh_out: bool = ...,
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
def rows_half(
    *,
    op: int,
    fmt: int,
    x: np.ndarray,
    grad: Optional[np.ndarray] = ...,
    out: Optional[np.ndarray] = ...,
    lse: Optional[np.ndarray] = ...,
    fresh_out: bool = ...,
    num_threads: int,
) -> None: ...
def cols_half(
    *,
    op: int,
    fmt: int,
    x: np.ndarray,
    grad: Optional[np.ndarray] = ...,
    out: Optional[np.ndarray] = ...,
    lse: Optional[np.ndarray] = ...,
    num_threads: int,
) -> None: ...
def narrow_into(x: np.ndarray, out: np.ndarray, fmt: int) -> None: ...
def widen_into(x: np.ndarray, out: np.ndarray, fmt: int) -> None: ...
def cross_entropy(
    *,
    logits: np.ndarray,
    target: Optional[np.ndarray] = ...,
    probs: Optional[np.ndarray] = ...,
    weight: Optional[np.ndarray] = ...,
    ignore_index: int = ...,
    smoothing: float = ...,
    grad_scale: float = ...,
    loss: np.ndarray,
    grad: Optional[np.ndarray] = ...,
    num_threads: int,
) -> None: ...
def cross_entropy_half(
    *,
    fmt: int,
    logits: np.ndarray,
    target: Optional[np.ndarray] = ...,
    probs: Optional[np.ndarray] = ...,
    weight: Optional[np.ndarray] = ...,
    ignore_index: int = ...,
    smoothing: float = ...,
    grad_scale: float = ...,
    loss: np.ndarray,
    grad: Optional[np.ndarray] = ...,
    num_threads: int,
) -> None: ...
def cross_entropy_block_stats(
    *,
    logits: np.ndarray,
    first_class: int,
    target: Optional[np.ndarray] = ...,
    probs: Optional[np.ndarray] = ...,
    weight: Optional[np.ndarray] = ...,
    smoothing: float,
    classes: int,
    stats: np.ndarray,
    num_threads: int,
) -> None: ...
def cross_entropy_block_grad(
    *,
    logits: np.ndarray,
    first_class: int,
    target: Optional[np.ndarray] = ...,
    probs: Optional[np.ndarray] = ...,
    weight: Optional[np.ndarray] = ...,
    shift: np.ndarray,
    alpha: np.ndarray,
    one_hot: np.ndarray,
    beta: float,
    gamma: float,
    num_threads: int,
) -> None: ...
def softmax_jacobian(*, p: np.ndarray, out: np.ndarray, num_threads: int) -> None: ...
def softmax_weight_jacobian(*, p: np.ndarray, x: np.ndarray, out: np.ndarray, num_threads: int) -> None: ...
def split_stats(
    *, op: int, x: np.ndarray, grad: Optional[np.ndarray] = ..., stats: np.ndarray, num_threads: int
) -> None: ...
def split_finish(
    *,
    op: int,
    x: np.ndarray,
    grad: Optional[np.ndarray] = ...,
    params: np.ndarray,
    out: np.ndarray,
    num_threads: int,
) -> None: ...
