"""Memory bandwidth of this machine against the bytes softmax_ext's kernels move.

An out-of-cache softmax must read its input once and write its output once:
8 bytes per float32 element (12 where the write first reads the line it
fills, "write-allocate").  This script measures what the machine sustains
for the same array sizes in one process, on 1 and on 2 threads (halves of
the array in two Python threads; numpy releases the GIL):

- read: ``np.max`` (reads every byte once, almost no arithmetic);
- write: ``ndarray.fill`` (glibc's memset);
- copy: ``np.copyto`` (glibc's memcpy, read + write);

and reports each kernel's effective bandwidth (8 bytes per element over its
time) as a fraction of the copy's.  Writes bench/results/bandwidth_<machine>.{json,md}.

    python bench/bench_bandwidth.py
"""

from __future__ import annotations

import argparse
import os
import threading

import numpy as np

import softmax_ext as sx
from softmax_ext import _bench

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
SHAPE = (2048, 32768)  # 256 MiB of float32: eight times this machine's L3


def _in_threads(threads, work):
    """Run work(part) for `threads` equal row ranges of the array, in parallel."""
    parts = np.array_split(np.arange(SHAPE[0]), threads)
    if threads == 1:
        return lambda: work(slice(None))
    slices = [slice(p[0], p[-1] + 1) for p in parts]

    def run():
        workers = [threading.Thread(target=work, args=(s,)) for s in slices]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    return run


def measure(threads):
    x = np.random.default_rng(0).standard_normal(SHAPE, dtype=np.float32)
    out = np.empty_like(x)
    n = x.size
    rows = {}
    baselines = {
        "read (np.max)": (_in_threads(threads, lambda s: x[s].max()), 4),
        "write (fill)": (_in_threads(threads, lambda s: out[s].fill(1.0)), 4),
        "copy (np.copyto)": (_in_threads(threads, lambda s: np.copyto(out[s], x[s])), 8),
    }
    for name, (call, bytes_per_element) in baselines.items():
        seconds = _bench.median_seconds(call, min_repeats=7)
        rows[name] = {"ms": 1e3 * seconds, "gb_per_s": bytes_per_element * n / seconds / 1e9}
    kernels = {
        "softmax": lambda: sx.softmax(x, out=out, num_threads=threads),
        "log_softmax": lambda: sx.log_softmax(x, out=out, num_threads=threads),
        "softmax axis 0": lambda: sx.softmax(x, axis=0, out=out, num_threads=threads),
    }
    copy = rows["copy (np.copyto)"]["gb_per_s"]
    for name, call in kernels.items():
        seconds = _bench.median_seconds(call, min_repeats=7)
        gbs = 8 * n / seconds / 1e9
        rows[name] = {"ms": 1e3 * seconds, "gb_per_s": gbs, "of_copy": gbs / copy}
    return rows


def markdown(results, machine):
    lines = [f"# Memory bandwidth and the kernels' share of it ({machine['date']})", "",
             f"{machine['cpu']}, {machine['logical_cpus']} logical CPUs, kernels {machine['simd']}; "
             f"float32 {SHAPE} (256 MiB); medians; GB/s = bytes the operation must move / time "
             "(kernels: 8 bytes per element, read + write).", "",
             "| threads | operation | ms | GB/s | of copy |", "|---|---|---|---|---|"]
    for threads, rows in results.items():
        for name, row in rows.items():
            share = f"{row['of_copy']:.2f}" if "of_copy" in row else ""
            lines.append(f"| {threads} | {name} | {row['ms']:.1f} | {row['gb_per_s']:.1f} | {share} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    args = parser.parse_args()
    threads_list = sorted({1, min(2, os.cpu_count() or 1)})
    results = {}
    for threads in threads_list:
        results[threads] = measure(threads)
    machine = _bench.machine_description()
    text = markdown(results, machine)
    if not args.no_save:
        stem = _bench.write_results(RESULTS, "bandwidth", machine,
                                    {"shape": list(SHAPE), "results": results}, text)
        print(f"wrote {stem}.json and .md")
    print(text)


if __name__ == "__main__":
    main()
