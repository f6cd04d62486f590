"""Multinomial logistic regression on a dask cluster with softmax_ext.dask.

The data set is synthetic and lazy: each chunk of rows (features drawn from a
normal distribution, labels sampled from a softmax model with hidden
weights) is generated on a worker when a task needs it, so the default
4,000,000 x 256 float32 features (3.8 GiB) are never held whole, by the
workers or here.  Each epoch is one full-batch gradient step: the workers
run `softmax_ext.dask.linear_cross_entropy` on their chunks (loss, dW, db
summed over chunks by dask), this process updates W and b.  The last chunks
are held out; the script prints the loss per epoch, the held-out accuracy
(against the hidden model's own), and the peak memory of the workers and
of this process.

    pip install 'softmax_ext[dask]'
    python examples/dask_training.py            # 3.8 GiB of features, about 2.5 minutes on 2 cores
    python examples/dask_training.py --small    # a quick check
"""

from __future__ import annotations

import argparse
import logging
import resource
import sys
import time
from typing import Any, Optional

import numpy as np

try:
    import dask
    import dask.array as da
    import distributed
except ImportError as error:
    raise ImportError("this example needs dask: pip install 'softmax_ext[dask]'") from error

import softmax_ext.dask as sxd


def peak_rss_mib() -> float:
    """This process's peak resident memory so far (Linux reports KiB)."""
    scale = 1 if sys.platform == "linux" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / scale


def _features(block_info: Optional[dict] = None, *, features: int, seed: int) -> np.ndarray:
    """One chunk of features, from a generator seeded by the chunk's position:
    the same values every epoch, made by a task that depends on nothing (so
    dask schedules it only when a worker is ready to consume it)."""
    rows, position = block_info[None]["chunk-shape"][0], block_info[None]["chunk-location"][0]
    rng = np.random.default_rng([seed, position])
    return rng.standard_normal((rows, features), dtype=np.float32)


def _labels(x: np.ndarray, W: np.ndarray, seed: int, block_info: Optional[dict] = None
            ) -> np.ndarray:
    """Classes sampled from softmax(x W^T) by the Gumbel-max trick."""
    position = block_info[0]["chunk-location"][0] if block_info else 0
    noise = np.random.default_rng([seed, position, 1]).gumbel(size=(x.shape[0], W.shape[0]))
    return np.argmax(x @ W.T + noise, axis=1)


def synthetic_data(rows: int, features: int, classes: int, chunk_rows: int, seed: int = 0
                   ) -> tuple[da.Array, da.Array, np.ndarray]:
    """Lazy (x, y) and the hidden weights; logits of the hidden model have
    standard deviation 3."""
    hidden = np.random.default_rng(seed).normal(0, 3 / np.sqrt(features), (classes, features))
    hidden = hidden.astype(np.float32)
    row_chunks = (chunk_rows,) * (rows // chunk_rows) + ((rows % chunk_rows,) if rows % chunk_rows else ())
    x = da.map_blocks(_features, chunks=(row_chunks, (features,)), dtype=np.float32,
                      features=features, seed=seed, meta=np.empty((0, 0), np.float32))
    y = x.map_blocks(_labels, hidden, seed, drop_axis=1, dtype=np.int64)
    return x, y, hidden


def accuracy(x: da.Array, y: da.Array, W: np.ndarray, b: Optional[np.ndarray]) -> da.Array:
    logits = x @ W.T + (0 if b is None else b)
    return (da.argmax(logits, axis=1) == y).mean()


def train(rows: int = 4_000_000, features: int = 256, classes: int = 10,
          chunk_rows: int = 100_000, epochs: int = 12, learning_rate: float = 4.0,
          workers: int = 2, memory_limit: str = "1GiB", verbose: bool = True) -> dict[str, Any]:
    """Train on a LocalCluster; returns losses, accuracies and peak memory."""
    x, y, hidden = synthetic_data(rows, features, classes, chunk_rows)
    held_out = max(chunk_rows, (rows // 10) // chunk_rows * chunk_rows)
    W = np.zeros((classes, features), np.float32)
    b = np.zeros(classes, np.float32)
    losses = []
    # memory_limit: after several epochs dask's scheduler was seen to run every
    # chunk-generating task of an epoch ahead of the tasks that consume them
    # (peak: each worker's whole share of the data, 2 GiB here); a limit
    # makes the workers pause such tasks instead.
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  memory_limit=memory_limit, dashboard_address=":0",
                                  silence_logs=logging.ERROR) as cluster, \
            distributed.Client(cluster) as client:
        # The labels (8 bytes a row) are computed once and kept on the workers;
        # the features are made again, chunk by chunk, every epoch.
        y = client.persist(y)
        train_x, train_y = x[:-held_out], y[:-held_out]
        test_x, test_y = x[-held_out:], y[-held_out:]
        started = time.perf_counter()
        for epoch in range(epochs):
            # the inputs are data: no dx (a third less work)
            loss, (_, dW, db) = sxd.linear_cross_entropy(train_x, W, train_y, b, return_dx=False)
            futures = client.compute([loss, dW, db])
            if verbose:
                distributed.progress(futures, notebook=False)
            loss_value, dW_value, db_value = client.gather(futures)
            W -= learning_rate * dW_value
            b -= learning_rate * db_value
            losses.append(float(loss_value))
            if verbose:
                print(f"\repoch {epoch + 1:2d}: loss {losses[-1]:.4f}"
                      f"  ({time.perf_counter() - started:.1f} s)")
        ours, best = dask.compute(accuracy(test_x, test_y, W, b),
                                  accuracy(test_x, test_y, hidden, None), scheduler=client)
        worker_peaks = list(client.run(peak_rss_mib).values())
    result = {"losses": losses, "accuracy": float(ours), "hidden_model_accuracy": float(best),
              "worker_peak_mib": worker_peaks, "client_peak_mib": peak_rss_mib(),
              "data_mib": x.nbytes / 2**20}
    if verbose:
        print(f"held-out accuracy {result['accuracy']:.4f} (the hidden model's own: "
              f"{result['hidden_model_accuracy']:.4f})")
        print(f"features {result['data_mib']:.0f} MiB if held whole; peak memory: workers "
              + ", ".join(f"{m:.0f}" for m in worker_peaks)
              + f" MiB, this process {result['client_peak_mib']:.0f} MiB")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", action="store_true", help="40,000 rows: a quick check")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    size = dict(rows=40_000, features=32, chunk_rows=4_000) if args.small else {}
    train(epochs=args.epochs, workers=args.workers, **size)


if __name__ == "__main__":
    main()
