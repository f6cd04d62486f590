"""Benchmark softmax_ext against what users would pick instead.

Times softmax, log_softmax and their backward passes against the plain numpy
formula, scipy.special, PyTorch, onnxruntime (forward; a one-node model through
io_binding) and JAX (jit; at the thread count PJRT_NPROC gives it, the
largest measured), each when installed, and np.copyto of the same array (the
memory-bandwidth roofline), at 1 thread and at all threads, all in one
process.  Every contender's result is checked against a float64 numpy
reference before it is timed (a peer that fails is reported, not timed), and
its error is recorded.  The contenders of a row are timed in interleaved
rounds (_bench.interleaved_median_seconds), so that a noisy spell of a shared
machine hits all of them alike.  Prints a table of medians and ratios and writes
bench/results/softmax_<machine>.{json,md} (and .png with matplotlib).

    python bench/bench_softmax.py            # the full table (a few minutes)
    python bench/bench_softmax.py --quick    # float32 forward+backward, fewer shapes
"""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np

import softmax_ext as sx
from softmax_ext import _bench

CASES = [
    ((65536, 10), -1),
    ((16384, 128), -1),
    ((4096, 1000), -1),
    ((512, 32000), -1),
    ((8, 1_000_000), -1),
    ((1000, 4096), 0),  # a non-last axis; compare with (4096, 1000) over the last
]
QUICK_CASES = [CASES[0], CASES[2], CASES[3], CASES[5]]
OUT_OF_CACHE = [(512, 32000), (8, 1_000_000)]
PEERS = ["numpy", "scipy", "torch", "onnxruntime", "jax"]
FAST_PEERS = ["torch", "onnxruntime", "jax"]  # the issue-10 scoreboard
# Peers timed writing into a preallocated output (onnxruntime through
# io_binding) are compared with softmax_ext's out= call; the others allocate
# their result, as softmax_ext does without out=.
PREALLOCATED_PEERS = {"onnxruntime"}
# |result - float64 reference| <= ATOL + RTOL |reference|, per result dtype
TOLERANCE = {"float32": (1e-3, 1e-3), "float64": (1e-9, 1e-9)}


def checked(op, x, g, axis, calls):
    """Each contender's max abs error against a float64 numpy reference; a
    peer outside the tolerance is dropped (and said), softmax_ext must pass."""
    wide = [a.astype(np.float64) for a in ((x, g) if op.endswith("_backward") else (x,))]
    want = getattr(_bench, "numpy_" + op)(*wide, axis)
    rtol, atol = TOLERANCE[x.dtype.name]
    errors = {}
    for name in [n for n in calls if n != "copyto"]:
        got = np.asarray(calls[name](), np.float64)
        errors[name] = float(np.max(np.abs(got - want)))
        if not np.all(np.abs(got - want) <= atol + rtol * np.abs(want)):
            if name.startswith("softmax_ext"):
                raise AssertionError(f"{name} {op} is wrong: max error {errors[name]:.2e}")
            print(f"  ! {name} {op} {x.dtype.name} {x.shape}: max error {errors[name]:.2e}, not timed")
            del calls[name]
    return errors


def speedup(ms, peer):
    """The peer's time over ours, like for like: our out= call against a peer
    that writes into a preallocated output, our allocating call otherwise."""
    ours = ms["softmax_ext_out" if peer in PREALLOCATED_PEERS else "softmax_ext"]
    return ms[peer] / ours


def fastest_peer(ms):
    """(name, its time / ours) of the FAST_PEERS peer with the lowest such ratio."""
    timed = [p for p in FAST_PEERS if p in ms]
    if not timed:
        return None, None
    best = min(timed, key=lambda p: speedup(ms, p))
    return best, speedup(ms, best)


def run(ops, dtypes, cases, thread_counts):
    rows = []
    header = f"{'op':<21}{'dtype':<8}{'shape':<16}{'axis':>4}{'thr':>4}  {'sx ms':>8}"
    header += "".join(f"{'x ' + p[:6]:>9}" for p in PEERS) + f"{'copyto%':>9}  fastest peer"
    print(header)
    for threads in thread_counts:
        _bench.set_peer_threads(threads)
        for dtype in dtypes:
            for op in ops:
                for shape, axis in cases:
                    x, g = _bench.inputs_for(op, shape, dtype, axis)
                    calls = _bench.contenders(op, x, g, axis, threads)
                    errors = checked(op, x, g, axis, calls)
                    ms = {name: 1e3 * seconds
                          for name, seconds in _bench.interleaved_median_seconds(calls).items()}
                    row = {"op": op, "dtype": np.dtype(dtype).name, "shape": list(shape), "axis": axis,
                           "threads": threads, "ms": ms, "max_abs_error": errors}
                    rows.append(row)
                    line = f"{op:<21}{row['dtype']:<8}{str(shape):<16}{axis:>4}{threads:>4}  {ms['softmax_ext']:>8.3f}"
                    for peer in PEERS:
                        line += f"{speedup(ms, peer):>8.2f}x" if peer in ms else f"{'-':>9}"
                    line += f"{100 * ms['copyto'] / ms['softmax_ext_out']:>8.0f}%"
                    best, ratio = fastest_peer(ms)
                    line += f"  {best} {ratio:.2f}x" if best else ""
                    print(line, flush=True)
    return rows


def summarize(rows):
    """The issue's targets, at the largest thread count measured."""
    top = max(r["threads"] for r in rows)
    at_top = [r for r in rows if r["threads"] == top]
    summary = {"threads": top}
    for peer in PEERS:
        ratios = [speedup(r["ms"], peer) for r in at_top if peer in r["ms"]]
        if ratios:
            summary[f"min_speedup_vs_{peer}"] = min(ratios)
            summary[f"geomean_speedup_vs_{peer}"] = math.exp(sum(map(math.log, ratios)) / len(ratios))
    bandwidth = [r["ms"]["copyto"] / r["ms"]["softmax_ext_out"] for r in at_top
                 if r["op"] == "softmax" and tuple(r["shape"]) in OUT_OF_CACHE]
    if bandwidth:
        summary["out_of_cache_softmax_fraction_of_copyto"] = min(bandwidth)
    axis_ratios = {}
    for r in at_top:
        if tuple(r["shape"]) == (1000, 4096) and r["axis"] == 0:
            for twin in at_top:
                if (tuple(twin["shape"]) == (4096, 1000) and twin["op"] == r["op"]
                        and twin["dtype"] == r["dtype"]):
                    axis_ratios[f"{r['op']} {r['dtype']}"] = (
                        r["ms"]["softmax_ext"] / twin["ms"]["softmax_ext"])
    if axis_ratios:
        summary["axis0_over_last_axis_time"] = axis_ratios
    verdicts = [ratio for _, ratio in map(fastest_peer, (r["ms"] for r in at_top)) if ratio]
    if verdicts:
        summary["rows_vs_fastest_peer"] = len(verdicts)
        summary["rows_fastest_peer_wins"] = sum(v < 1.0 for v in verdicts)
        summary["geomean_fastest_peer_time_over_ours"] = math.exp(
            sum(map(math.log, verdicts)) / len(verdicts))
        summary["min_fastest_peer_time_over_ours"] = min(verdicts)
    return summary


def markdown(machine, rows, summary):
    lines = ["# softmax_ext benchmark", "", "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), "",
             "Medians in one process; ratios are peer time / softmax_ext time (higher is better for us), "
             "like for like: onnxruntime writes into a preallocated output (io_binding) and is "
             "compared with softmax_ext's `out=` call; the other peers allocate their result and "
             "are compared with softmax_ext's allocating call (`softmax_ext ms`).",
             "`copyto %`: np.copyto time / softmax_ext-with-out= time (memory-bandwidth roofline).", "",
             "`fastest peer`: the fastest of " + ", ".join(FAST_PEERS) + " in the row, its time / ours "
             "(below 1: the peer wins).  `-`: not installed, not timed at this thread count (JAX), "
             "no such op (onnxruntime backward), or failed its check.", "",
             "| op | dtype | shape | axis | threads | softmax_ext ms | out= ms | "
             + " | ".join(f"vs {p}" for p in PEERS) + " | copyto % | fastest peer |",
             "|" + "---|" * (9 + len(PEERS))]
    for r in rows:
        ms = r["ms"]
        ratios = [f"{speedup(ms, p):.2f}x" if p in ms else "-" for p in PEERS]
        best, ratio = fastest_peer(ms)
        lines.append(f"| {r['op']} | {r['dtype']} | {tuple(r['shape'])} | {r['axis']} | {r['threads']} | "
                     f"{ms['softmax_ext']:.3f} | {ms['softmax_ext_out']:.3f} | " + " | ".join(ratios)
                     + f" | {100 * ms['copyto'] / ms['softmax_ext_out']:.0f}% | "
                     + (f"{best} {ratio:.2f}x |" if best else "- |"))
    lines += ["", "## Summary at %d threads" % summary["threads"], ""]
    for key, value in summary.items():
        if isinstance(value, dict):
            lines.append(f"- {key}: " + ", ".join(f"{k} {v:.2f}" for k, v in value.items()))
        elif key != "threads":
            lines.append(f"- {key}: {value:.2f}" if isinstance(value, float) else f"- {key}: {value}")
    return "\n".join(lines) + "\n"


def plot(rows, path):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    top = max(r["threads"] for r in rows)
    at_top = [r for r in rows if r["threads"] == top]
    labels = [f"{r['op'].replace('_backward', ' bwd')}\n{r['dtype']} {tuple(r['shape'])} ax{r['axis']}"
              for r in at_top]
    fig, ax = plt.subplots(figsize=(max(8, 0.5 * len(at_top)), 5))
    width = 0.8 / len(PEERS)
    for i, peer in enumerate(PEERS):
        values = [speedup(r["ms"], peer) if peer in r["ms"] else np.nan for r in at_top]
        ax.bar(np.arange(len(at_top)) + i * width, values, width, label=f"vs {peer}")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.set_yscale("log")
    ax.set_ylabel("speedup of softmax_ext (peer time / our time)")
    ax.set_xticks(np.arange(len(at_top)) + width, labels, rotation=90, fontsize=6)
    ax.set_title(f"softmax_ext speedups at {top} threads")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return True


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="float32, fewer shapes")
    parser.add_argument("--threads", type=int, nargs="*", help="thread counts (default: 1 and all)")
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"),
                        help="folder for the results files")
    args = parser.parse_args(argv)
    all_threads = sx.get_num_threads()
    thread_counts = args.threads or sorted({1, all_threads})
    # JAX sizes its thread pool once, at import: it is timed at this count only
    os.environ.setdefault("PJRT_NPROC", str(max(thread_counts)))
    dtypes = [np.float32] if args.quick else [np.float32, np.float64]
    cases = QUICK_CASES if args.quick else CASES
    ops = ["softmax", "softmax_backward"] if args.quick else list(_bench.OPS)
    machine = _bench.machine_description()
    print("machine:", machine)
    rows = run(ops, dtypes, cases, thread_counts)
    summary = summarize(rows)
    print(json.dumps(summary, indent=2))
    stem = _bench.write_results(args.results, "softmax_quick" if args.quick else "softmax", machine,
                                {"summary": summary, "rows": rows}, markdown(machine, rows, summary))
    plotted = plot(rows, f"{stem}.png")
    print(f"wrote {stem}.json, {stem}.md" + (f", {stem}.png" if plotted else ""))


if __name__ == "__main__":
    main()
