"""Benchmark the gradient paths: cross-entropy with its gradient, and the
fused linear + softmax + cross-entropy layer.

cross_entropy(loss + dlogits) against PyTorch F.cross_entropy forward+backward,
the plain numpy formula and scikit-learn's HalfMultinomialLoss.loss_gradient
(each when installed); linear_cross_entropy against PyTorch F.linear +
F.cross_entropy forward+backward, against the bare time of its three GEMMs
at full size, and against its previous threading design (BLAS limited to one
thread process-wide inside Python workers; it changed global state and is
kept here only to measure the current design against).  Extra peak memory: peak resident memory above the inputs
during one call, in a fresh process per contender (Linux).  Writes bench/results/gradients_<machine>.{json,md}.

    python bench/bench_gradients.py
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

import softmax_ext as sx
from softmax_ext import _bench

CE_SHAPES = [(65536, 10), (8192, 1000), (1024, 32000)]
# N, D, K: the headline layer, a tall-D layer, a small-D one, and a small call
LINEAR_SHAPES = [(2048, 256, 32000), (8192, 512, 4000), (64, 8192, 1000), (16384, 32, 1000), (256, 64, 100)]


def ce_contenders(z, y, threads):
    calls = {"softmax_ext": lambda: sx.cross_entropy(z, y, return_grad=True, num_threads=threads)}
    N = len(y)

    def numpy_formula():
        logp = _bench.numpy_log_softmax(z, 1)
        loss = -logp[np.arange(N), y].mean()
        grad = np.exp(logp)
        grad[np.arange(N), y] -= 1
        return loss, grad / N

    calls["numpy"] = numpy_formula
    try:
        from sklearn._loss.loss import HalfMultinomialLoss

        loss_object = HalfMultinomialLoss(n_classes=z.shape[1])
        y_float = y.astype(z.dtype)
        calls["sklearn"] = lambda: loss_object.loss_gradient(y_true=y_float, raw_prediction=z,
                                                             n_threads=threads)
    except ImportError:
        pass
    try:
        import torch
        import torch.nn.functional as F

        zt, yt = torch.from_numpy(z), torch.from_numpy(y)

        def torch_forward_backward():
            leaf = zt.detach().requires_grad_()
            loss = F.cross_entropy(leaf, yt)
            return torch.autograd.grad(loss, leaf)

        calls["torch"] = torch_forward_backward
    except ImportError:
        pass
    return calls


def linear_contenders(x, W, y, threads):
    N, K = x.shape[0], W.shape[0]
    calls = {"softmax_ext": lambda: sx.linear_cross_entropy(x, W, y, num_threads=threads)}
    logits = np.empty((N, K), x.dtype)
    dx = np.empty_like(x)
    dW = np.empty_like(W)

    def three_gemms():
        np.matmul(x, W.T, out=logits)
        np.matmul(logits, W, out=dx)
        np.matmul(logits.T, x, out=dW)

    calls["3 GEMMs"] = three_gemms
    calls["previous design"] = lambda: previous_design(x, W, y, threads)
    try:
        import torch
        import torch.nn.functional as F

        xt, Wt, yt = torch.from_numpy(x), torch.from_numpy(W), torch.from_numpy(y)

        def torch_forward_backward():
            x_leaf, W_leaf = xt.detach().requires_grad_(), Wt.detach().requires_grad_()
            loss = F.cross_entropy(F.linear(x_leaf, W_leaf), yt)
            return torch.autograd.grad(loss, (x_leaf, W_leaf))

        calls["torch"] = torch_forward_backward
    except ImportError:
        pass
    return calls


def previous_design(x, W, y, threads):
    """Loss, dx and dW as linear_cross_entropy computed them up to 0.1.0:
    threadpool_limits(1, "blas") around `threads` Python workers, each
    running its rows' GEMMs and the kernel on one thread, then dW split by
    classes over the workers."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    from softmax_ext import _kernels

    N, K = x.shape[0], W.shape[0]
    rows = min(N, max(64, 64 * 2**20 // (K * x.itemsize)))
    loss_rows, dx, dW = np.empty(N), np.empty_like(x), np.zeros_like(W)
    logits = np.empty((rows, K), x.dtype)

    def split(start, stop):
        bounds = np.linspace(start, stop, threads + 1).astype(int)
        return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if a < b]

    def rows_part(a, b, start):
        z = logits[a - start:b - start]
        np.matmul(x[a:b], W.T, out=z)
        _kernels.cross_entropy(logits=z, target=y[a:b], ignore_index=-100, smoothing=0.0,
                               grad_scale=1.0 / N, loss=loss_rows[a:b], grad=z, num_threads=1)
        np.matmul(z, W, out=dx[a:b])

    def classes_part(first, last, start, stop):
        dW[first:last] += logits[:stop - start, first:last].T @ x[start:stop]

    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
        for start in range(0, N, rows):
            stop = min(N, start + rows)
            list(pool.map(lambda ab: rows_part(*ab, start), split(start, stop)))
            list(pool.map(lambda ab: classes_part(*ab, start, stop), split(0, K)))
    return loss_rows.sum() / N, (dx, dW, None)


def _inputs(kind, shape, seed=0):
    rng = np.random.default_rng(seed)
    if kind == "ce":
        N, K = shape
        z = rng.standard_normal((N, K), dtype=np.float32)
        z *= 3
        return (z, rng.integers(0, K, N))
    N, D, K = shape
    x = rng.standard_normal((N, D), dtype=np.float32)
    W = rng.standard_normal((K, D), dtype=np.float32)
    W *= 0.05
    return (x, W, rng.integers(0, K, N))


def _memory_kib(field):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def measure_extra_peak(call):
    """Peak resident memory above the current one during call(), in MiB.

    Resets the kernel's high-water mark first (Linux: clear_refs 5), so that
    earlier peaks (importing torch, making the inputs) do not hide this one.
    """
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _memory_kib("VmRSS")
    call()
    return (_memory_kib("VmHWM") - before) / 1024


def _extra_peak_mib(kind, shape, name, threads):
    """Extra peak memory of one call of `name`, in a fresh process (None if unavailable)."""
    code = (f"import sys; sys.path[:0] = {sys.path!r}\n"
            "import bench_gradients as b\n"
            f"args = b._inputs({kind!r}, {shape!r})\n"
            f"calls = (b.ce_contenders if {kind!r} == 'ce' else b.linear_contenders)(*args, {threads})\n"
            f"if 'torch' in calls: import torch; torch.set_num_threads({threads})\n"
            f"print(b.measure_extra_peak(calls[{name!r}]))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            cwd=Path(__file__).parent)
    return float(result.stdout.strip()) if result.returncode == 0 else None


def _check_contenders(calls):
    """Every contender's loss must agree with softmax_ext's before it is timed."""
    def loss_of(result):
        loss = result[0] if isinstance(result, tuple) else result
        return float(loss.item() if hasattr(loss, "item") else loss)

    ours = loss_of(calls["softmax_ext"]())
    for name, call in calls.items():
        if name in ("3 GEMMs", "sklearn", "torch"):
            continue  # no loss returned to compare (sklearn: per-row halves; torch: gradients)
        other = loss_of(call())
        if not np.isclose(other, ours, rtol=1e-4):
            raise SystemExit(f"{name} disagrees with softmax_ext: loss {other} vs {ours}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    threads = sx.get_num_threads()
    _bench.set_peer_threads(threads)
    machine = _bench.machine_description()
    print("machine:", machine)
    rows = []
    for kind, shapes, factory in (("ce", CE_SHAPES, ce_contenders), ("linear", LINEAR_SHAPES, linear_contenders)):
        for shape in shapes:
            inputs = _inputs(kind, shape)
            calls = factory(*inputs, threads)
            _check_contenders(calls)
            ms = {name: 1e3 * seconds for name, seconds
                  in _bench.interleaved_median_seconds(calls, min_seconds=0.5).items()}
            peak = {name: _extra_peak_mib(kind, shape, name, threads) for name in calls}
            row = {"kind": kind, "shape": list(shape), "threads": threads, "ms": ms, "extra_peak_mib": peak}
            rows.append(row)
            print(kind, shape, "  ".join(f"{n} {t:.1f} ms ({peak[n]:.0f} MiB)" if peak[n] is not None
                                         else f"{n} {t:.1f} ms" for n, t in ms.items()), flush=True)
    summary = {}
    for row in rows:
        ours = row["ms"]["softmax_ext"]
        label = f"{row['kind']} {tuple(row['shape'])}"
        summary[label] = {f"vs {n}": row["ms"][n] / ours for n in row["ms"] if n != "softmax_ext"}
        if "3 GEMMs" in row["ms"]:
            summary[label]["time over 3 GEMMs"] = ours / row["ms"]["3 GEMMs"]
    print(json.dumps(summary, indent=1))
    lines = ["# softmax_ext gradient benchmark", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), "",
             f"float32, {threads} threads, medians in one process; ratios are peer time / softmax_ext time.",
             "Extra peak: peak resident memory above the inputs during one call, each in a fresh process.", "",
             "| case | contender | ms | ratio | extra peak MiB |", "|---|---|---|---|---|"]
    for row in rows:
        ours = row["ms"]["softmax_ext"]
        for name, t in row["ms"].items():
            peak = row["extra_peak_mib"][name]
            lines.append(f"| {row['kind']} {tuple(row['shape'])} | {name} | {t:.1f} | {t / ours:.2f}x | "
                         f"{'-' if peak is None else f'{peak:.0f}'} |")
    stem = _bench.write_results(args.results, "gradients", machine, {"rows": rows, "summary": summary},
                                "\n".join(lines) + "\n")
    print(f"wrote {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
