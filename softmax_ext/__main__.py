"""``python -m softmax_ext``: configuration, a self-check and a short benchmark.

Exit status 0 when every self-check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from . import _bench, _core
from ._config import show_config
from ._threads import OPENMP, SERIAL_BUILD_MESSAGE, get_num_threads

# (shape, axis) pairs covering the kernel paths: short rows, long rows, rows
# split between threads, a strided (non-last) axis, a whole-array softmax.
SELF_CHECK_CASES = [((4096, 10), -1), ((256, 1000), -1), ((3, 70000), -1), ((300, 129), 0),
                    ((4, 5, 6), None)]
BENCH_CASES = [((65536, 10), -1), ((4096, 1000), -1), ((512, 32000), -1), ((1000, 4096), 0)]


def self_check() -> bool:
    print("\nSelf-check against the plain numpy formulas (float64 reference):")
    ok = True
    rng = np.random.default_rng(0)
    for dtype, tolerance in ((np.float32, 5e-6), (np.float64, 1e-12)):
        for shape, axis in SELF_CHECK_CASES:
            z = (rng.standard_normal(shape) * 4).astype(dtype)
            g = rng.standard_normal(shape).astype(dtype)
            z64, g64 = z.astype(np.float64), g.astype(np.float64)
            ref_axis = 0 if axis is None else axis
            whole = axis is None

            def flat(a: np.ndarray) -> np.ndarray:
                return a.reshape(-1) if whole else a

            p_ref = _bench.numpy_softmax(flat(z64), ref_axis).reshape(shape)
            logp_ref = _bench.numpy_log_softmax(flat(z64), ref_axis).reshape(shape)
            p, logp = _core.softmax(z, axis=axis), _core.log_softmax(z, axis=axis)
            checks = {
                "softmax": (p, p_ref),
                "log_softmax": (logp, logp_ref),
                "softmax_backward": (
                    _core.softmax_backward(p, g, axis=axis),
                    _bench.numpy_softmax_backward(flat(p.astype(np.float64)), flat(g64),
                                                  ref_axis).reshape(shape)),
                "log_softmax_backward": (
                    _core.log_softmax_backward(logp, g, axis=axis),
                    _bench.numpy_log_softmax_backward(flat(logp.astype(np.float64)), flat(g64),
                                                      ref_axis).reshape(shape)),
            }
            worst = max(float(np.max(np.abs(got - want)) / max(1.0, float(np.max(np.abs(want)))))
                        for got, want in checks.values())
            passed = worst <= tolerance
            ok &= passed
            print(f"  {np.dtype(dtype).name:<8} shape {str(shape):<13} axis {str(axis):<5} "
                  f"max error {worst:.1e}  {'ok' if passed else 'FAILED'}")
    return ok


def gradient_self_check() -> bool:
    """cross_entropy and linear_cross_entropy against the plain formulas."""
    from ._gradients import cross_entropy, linear_cross_entropy

    print("\nGradient self-check (loss and gradients against numpy formulas):")
    ok = True
    rng = np.random.default_rng(1)
    N, D, K = 300, 20, 37  # K >= 32: whole rows; the tests cover every path
    for dtype, tolerance in ((np.float32, 2e-5), (np.float64, 1e-12)):
        x = rng.standard_normal((N, D)).astype(dtype)
        W = (rng.standard_normal((K, D)) * 0.3).astype(dtype)
        y = rng.integers(0, K, N)
        z = x.astype(np.float64) @ W.T.astype(np.float64)
        logp = _bench.numpy_log_softmax(z, 1)
        want_loss = -logp[np.arange(N), y].mean()
        want_dz = np.exp(logp)
        want_dz[np.arange(N), y] -= 1
        want_dz /= N
        loss, dz = cross_entropy(z.astype(dtype), y, return_grad=True)
        lin_loss, (dx, dW, _) = linear_cross_entropy(x, W, y, chunk_size=64)
        errors = [abs(float(loss) - want_loss), abs(float(lin_loss) - want_loss),
                  float(np.max(np.abs(dz - want_dz))) * N,
                  float(np.max(np.abs(dx - want_dz @ W.astype(np.float64)))) * N,
                  float(np.max(np.abs(dW - want_dz.T @ x.astype(np.float64)))) * N]
        worst = max(errors) / max(1.0, abs(want_loss))
        passed = worst <= tolerance
        ok &= passed
        print(f"  {np.dtype(dtype).name:<8} cross_entropy, linear_cross_entropy ({N}x{D} -> {K})  "
              f"max error {worst:.1e}  {'ok' if passed else 'FAILED'}")
    return ok


def short_benchmark(repeat_seconds: float) -> None:
    threads = get_num_threads()
    _bench.set_peer_threads(threads)
    print(f"\nShort benchmark, float32, {threads} threads (medians; ratio = peer time / our time):")
    cases = [(op, shape, axis) for op in ("softmax", "softmax_backward") for shape, axis in BENCH_CASES]
    for done, (op, shape, axis) in enumerate(cases, 1):
        x, g = _bench.inputs_for(op, shape, np.float32, axis)
        calls = _bench.contenders(op, x, g, axis, threads)
        timed = {name: call for name, call in calls.items() if name in ("softmax_ext", "numpy", "torch")}
        ms = {name: 1e3 * seconds for name, seconds
              in _bench.interleaved_median_seconds(timed, min_seconds=repeat_seconds).items()}
        peers = "  ".join(f"{ms[p] / ms['softmax_ext']:5.1f}x vs {p}" for p in ("numpy", "torch")
                          if p in ms)
        print(f"  [{done}/{len(cases)}] {op:<17} {str(shape):<14} axis {axis:>2}  "
              f"{ms['softmax_ext']:7.2f} ms  {peers}", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m softmax_ext", description=__doc__)
    parser.add_argument("--no-bench", action="store_true", help="skip the short benchmark")
    args = parser.parse_args(argv)
    print("softmax_ext configuration:")
    show_config()
    ok = self_check()
    ok &= gradient_self_check()
    print("self-check:", "PASSED" if ok else "FAILED")
    if not OPENMP:
        print(f"WARNING: {SERIAL_BUILD_MESSAGE}")
    if not args.no_bench:
        short_benchmark(repeat_seconds=0.1)
        print("\nFull benchmark: python bench/bench_softmax.py (see README).")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
