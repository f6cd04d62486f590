"""The fused linear + cross-entropy layer, chunked so that the N x K logits never exist.

Design
------
Rows are taken a chunk at a time.  A chunk's logits come from one GEMM
(``x W^T + b``), the fused cross-entropy kernel overwrites them in place with
their gradient, and two more GEMMs turn that into the chunk's rows of dx and
its share of dW; db is the gradient's column sum.  When even MIN_CHUNK_ROWS
rows of logits exceed the budget (very wide K), each chunk is also taken a
block of classes at a time: a first pass merges an online logsumexp per row
over the blocks, the loss follows from those statistics, and a second pass
recomputes each block's logits and turns them into its gradient.

Chunk size weighs the cache against the GEMMs' per-call work: a chunk's
logits are written by one GEMM and read by the kernel and two more GEMMs, so
logits that stay in cache between them are cheaper than the unchunked GEMMs'
trip through memory, but each chunk repacks W and passes over dW again.  The
wider the inputs, the more flops each logit costs the GEMMs and the less its
trip through memory matters, so chunks grow with D (see CACHE_BYTES).

Threads: the GEMMs are numpy matmuls from the calling thread, on whatever
threads BLAS is set to use; nothing here changes that setting (it is
process-wide, and other threads' matmuls would see it).  The cross-entropy
kernel between the GEMMs runs on the calling thread alone while BLAS is
multi-threaded, whatever num_threads asks: OpenBLAS's idle workers spin for a
while after each GEMM, and a second pool of threads beside them starves.
Measured at N=16384, D=32, K=1000 float32 on 2 cores with 2 BLAS threads: a
2-thread kernel made the layer 1.3x (4096-row chunks) to 11x (512-row
chunks) slower than a 1-thread one (as fast with one 64 MiB chunk).  With
single-threaded BLAS the kernel uses the usual thread count.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from . import _kernels
from ._threads import resolve_num_threads

if TYPE_CHECKING:
    from ._gradients import _Targets

# Default chunk (chunk_rows): CACHE_BYTES of logits for inputs of up to
# CACHE_FEATURES features, proportionally more for wider inputs, but at
# least GEMM_ROWS rows.  Two costs pull apart.  Each chunk repacks W in two
# GEMMs and passes over dW once more: a share of the GEMMs' time that falls
# as 1/rows whatever D is.  The chunk's logits, written by one GEMM and read
# by the kernel and two more GEMMs, cost a trip through memory unless they
# stay in cache: a share that falls as 1/D, since each GEMM does 2 D flops
# per logit.  Hence chunks grow with D.  Measured on 2 cores, float32, time
# over the three unchunked GEMMs: on a Zen 3 (512 KiB L2, 32 MiB L3)
# N=16384, D=32, K=1000 with 256 / 512 / 1024 / 4096 / 16384 rows 0.87 /
# 0.94 / 0.88 / 1.46 / 1.29; on a Xeon (2 MiB L2) with chunks of 4 MiB
# whatever D / grown with D: N=4096, D=2048, K=1000 1.16-1.18 / 1.01-1.04
# (one chunk), N=8192, D=512, K=4000 1.21-1.23 / 1.07-1.12, N=16384, D=128,
# K=2000 1.05-1.08 / 0.95-1.00, N=32768, D=96, K=1000 1.02-1.05 / 0.98-0.99
# (float64: 0.93-1.08 of the time before, the 1.08 at N=16384, D=128,
# K=2000, where 512 to 2048 rows ran within this VM's noise); N=2048, D=256,
# K=32000 with 256 / 512 / 1024 rows 1.22-1.23 / 1.13-1.25 / 1.12-1.16 (1024
# only with a 128 MiB budget).
CACHE_BYTES = 4 * 2**20
CACHE_FEATURES = 32
GEMM_ROWS = 512
# Logits held at once at most: the only sizeable memory the layer adds beyond
# x, W and the gradients.  Rows whose GEMM_ROWS logits exceed it get fewer
# rows per chunk, at least MIN_CHUNK_ROWS; when even those exceed it, classes
# are chunked too.
CHUNK_BYTES = 64 * 2**20
MIN_CHUNK_ROWS = 64
# After the first chunk, dW is accumulated a block of classes at a time
# through a temporary of at most this size (numpy's matmul cannot accumulate
# into its output); 1 MiB ran as fast as 4 MiB at N=2048, D=256, K=32000.
DW_BLOCK_BYTES = 1 * 2**20


@functools.lru_cache(maxsize=1)
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController  # type: ignore[import-untyped]

    return ThreadpoolController().select(user_api="blas")


def blas_threads() -> int:
    """The most threads a loaded BLAS library is set to use (read, never set)."""
    return max((int(lib.get_num_threads()) for lib in _blas_controller().lib_controllers),
               default=1)


def default_chunk_rows(row_bytes: int, features: int) -> int:
    """Rows per chunk for logits rows of `row_bytes` and inputs of
    `features` columns (see CACHE_BYTES)."""
    row_bytes = max(1, row_bytes)
    cache_bytes = CACHE_BYTES * max(CACHE_FEATURES, features) // CACHE_FEATURES
    rows = max(GEMM_ROWS, cache_bytes // row_bytes)
    if rows * row_bytes > CHUNK_BYTES:
        rows = max(MIN_CHUNK_ROWS, CHUNK_BYTES // row_bytes)
    return rows


@dataclasses.dataclass
class Gradients:
    """dx (N, D) or None (not asked for), dW (K, D), db (K,) or None, and
    dW_block, the temporary through which later chunks add to dW."""

    dx: Optional[np.ndarray]
    dW: np.ndarray
    db: Optional[np.ndarray]
    dW_block: np.ndarray


class ChunkedLinearCrossEntropy:
    """One call of linear_cross_entropy on validated operands.

    x (N, D), W (K, D) and b (K,) or None share one float dtype; `targets`
    and `weight` are as prepared by _gradients.  `run()` fills `loss_rows`
    (float64, one per row) and, with `return_grad`, `grads` (without dx and
    its GEMM when `input_grad` is false).
    """

    def __init__(self, x: np.ndarray, W: np.ndarray, b: Optional[np.ndarray], targets: _Targets,
                 weight: Optional[np.ndarray], smoothing: float, reduction: str,
                 return_grad: bool, chunk_rows: Optional[int],
                 num_threads: Optional[int], input_grad: bool = True):
        self.x, self.W, self.b = x, W, b
        self.targets, self.weight, self.smoothing = targets, weight, smoothing
        self.scale = targets.grad_scale(reduction)
        (N, D), K, dtype = x.shape, W.shape[0], x.dtype
        self.K = K
        rows = chunk_rows if chunk_rows is not None else default_chunk_rows(K * dtype.itemsize, D)
        self.rows = min(rows, max(N, 1))
        self.class_width = K if self.rows * K * dtype.itemsize <= CHUNK_BYTES else \
            max(1, CHUNK_BYTES // (self.rows * dtype.itemsize))
        if blas_threads() > 1:
            self.threads = 1
        else:
            self.threads = resolve_num_threads(num_threads, self.rows * self.class_width)
        self.loss_rows = np.zeros(N, np.float64)
        self.logits = np.empty((self.rows, self.class_width), dtype)
        dW_block_classes = max(1, min(K, DW_BLOCK_BYTES // max(1, D * dtype.itemsize)))
        # The first chunk's GEMMs write all of dW, and with every class at once
        # each chunk's GEMM writes its rows of dx: those need no zeros first
        # (numpy's zeros of a reused heap block clear it: (64, 8192, 1000)
        # took 1.18 of its GEMMs' time with dW's 31 MiB cleared per call, 1.00
        # without).  With no rows or no classes no chunk runs, and the
        # gradients are 0.
        written = N > 0 and K > 0
        dx_written = written and self.class_width == K
        self.grads = Gradients(
            dx=(np.empty if dx_written else np.zeros)((N, D), dtype) if input_grad else None,
            dW=(np.empty if written else np.zeros)((K, D), dtype),
            db=np.zeros(K, dtype) if b is not None else None,
            dW_block=np.empty((dW_block_classes, D), dtype)) if return_grad else None

    def run(self) -> None:
        N = self.x.shape[0]
        if self.K == 0:  # no classes: every loss and gradient is 0 (already so)
            return
        for start in range(0, N, self.rows):
            stop = min(N, start + self.rows)
            if self.class_width < self.K:
                self._class_blocks(start, stop)
            else:
                self._whole_classes(start, stop)

    # ---- one chunk of rows, every class at once --------------------------------

    def _whole_classes(self, start: int, stop: int) -> None:
        z = self._logits(start, stop, 0, self.K)
        _kernels.cross_entropy(
            logits=z, target=self._index(start, stop), probs=self._probs(start, stop, 0, self.K),
            weight=self.weight, ignore_index=self.targets.ignore_index, smoothing=self.smoothing,
            grad_scale=self.scale, loss=self.loss_rows[start:stop],
            grad=z if self.grads is not None else None, num_threads=self.threads)
        if self.grads is not None:
            if self.grads.dx is not None:
                np.matmul(z, self.W, out=self.grads.dx[start:stop])
            self._add_weight_grad(self.grads, z, start, stop, 0)

    # ---- one chunk of rows, a block of classes at a time -------------------------

    def _class_blocks(self, start: int, stop: int) -> None:
        stats = np.zeros((stop - start, _kernels.STATS))
        stats[:, 0] = -np.inf
        blocks = [(first, min(self.K, first + self.class_width))
                  for first in range(0, self.K, self.class_width)]
        for first, last in blocks:
            _kernels.cross_entropy_block_stats(
                logits=self._logits(start, stop, first, last), first_class=first,
                target=self._index(start, stop), probs=self._probs(start, stop, first, last),
                weight=self._weight(first, last), smoothing=self.smoothing, classes=self.K,
                stats=stats, num_threads=self.threads)
        alpha, one_hot = self._loss_from_stats(stats, start, stop)
        grads = self.grads
        if grads is None:
            return
        index = self._index(start, stop)
        ignored = None if index is None else index == self.targets.ignore_index
        row_max = np.ascontiguousarray(stats[:, 0])
        for first, last in blocks:
            z = self._logits(start, stop, first, last)
            _kernels.cross_entropy_block_grad(
                logits=z, first_class=first, target=index,
                probs=self._probs(start, stop, first, last), weight=self._weight(first, last),
                shift=row_max, alpha=alpha, one_hot=one_hot,
                beta=self.scale * (1.0 - self.smoothing), gamma=self.scale * self.smoothing / self.K,
                num_threads=self.threads)
            if ignored is not None:
                z[ignored] = 0
            if grads.dx is not None:
                grads.dx[start:stop] += z @ self.W[first:last]
            self._add_weight_grad(grads, z, start, stop, first)

    def _loss_from_stats(self, stats: np.ndarray, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Per-row losses of rows [start, stop) from merged block statistics,
        and the per-row gradient factors alpha = scale * C / s and
        one_hot = scale (1 - e) w_y.

        With m the row max, s = sum exp(z - m), C = sum_k c_k:
        loss = C log s + sum_k c_k (m - z_k), each term formed from
        differences with m so that huge logits cancel exactly.
        """
        K, w, smoothing, scale = self.K, self.weight, self.smoothing, self.scale
        m, s = stats[:, 0], stats[:, 1]
        weight_sum = float(K) if w is None else float(np.sum(w, dtype=np.float64))
        loss_out = self.loss_rows[start:stop]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            log_s = np.log(s)
            index = self._index(start, stop)
            if index is not None:
                smooth_term = smoothing / K * (m * weight_sum - stats[:, 3]) if smoothing else 0.0
                kept = index != self.targets.ignore_index
                w_y = np.where(kept, 1.0 if w is None else
                               w[np.where(kept, index, 0)].astype(np.float64), 0.0)
                total_c = (1.0 - smoothing) * w_y + smoothing / K * weight_sum
                loss = total_c * log_s + (1.0 - smoothing) * w_y * (m - stats[:, 2]) + smooth_term
                loss_out[...] = np.where(kept, loss, 0.0)
                one_hot = scale * (1.0 - smoothing) * w_y
            else:  # the kernel merged c_k = ((1 - e) t_k + e/K) w_k with smoothing in
                total_c = stats[:, 4]
                loss_out[...] = total_c * log_s + (m * total_c - stats[:, 2])
                one_hot = np.zeros(len(m))
            alpha = scale * total_c / s
        return alpha, one_hot

    # ---- pieces ------------------------------------------------------------------

    def _logits(self, start: int, stop: int, first: int, last: int) -> np.ndarray:
        """Logits of rows [start, stop) and classes [first, last), in the chunk buffer."""
        z = self.logits[: stop - start, : last - first]
        np.matmul(self.x[start:stop], self.W[first:last].T, out=z)
        if self.b is not None:
            z += self.b[first:last]
        return z

    def _add_weight_grad(self, grads: Gradients, dlogits: np.ndarray, start: int, stop: int,
                         first: int) -> None:
        """dW[first:first + width] += dlogits^T x[start:stop], db likewise.

        The first chunk of rows writes its GEMM straight into dW; later ones
        go through the small dW_block temporary."""
        x_rows = self.x[start:stop]
        width = dlogits.shape[1]
        if grads.db is not None:
            grads.db[first:first + width] += dlogits.sum(axis=0)
        if start == 0:
            np.matmul(dlogits.T, x_rows, out=grads.dW[first:first + width])
            return
        block_classes = grads.dW_block.shape[0]
        for offset in range(0, width, block_classes):
            n = min(block_classes, width - offset)
            block = grads.dW_block[:n]
            np.matmul(dlogits[:, offset:offset + n].T, x_rows, out=block)
            grads.dW[first + offset:first + offset + n] += block

    def _index(self, start: int, stop: int) -> Optional[np.ndarray]:
        index = self.targets.index
        return None if index is None else index[start:stop]

    def _probs(self, start: int, stop: int, first: int, last: int) -> Optional[np.ndarray]:
        probs = self.targets.probs
        return None if probs is None else probs[start:stop, first:last]

    def _weight(self, first: int, last: int) -> Optional[np.ndarray]:
        return None if self.weight is None else self.weight[first:last]

