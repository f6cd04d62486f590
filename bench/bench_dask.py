"""softmax_ext.dask against the softmax a dask user writes today, on the same
LocalCluster, the same persisted array and the same chunks, in one run:

    e = da.exp(x - x.max(axis, keepdims=True)); e / e.sum(axis, keepdims=True)

and, as the floor of any graph that makes one new block per input block, a
graph whose tasks only allocate their block and write zeros to it (`fresh`):
dask's per-task cost plus the memory's first touch.

with the class axis whole in each chunk and split over chunks, on 1 and on
2 worker processes (one thread each).  Each result block is consumed by a
task that keeps one number of it, so the time is the softmax's, not a
transfer's; both contenders are checked against softmax_ext.softmax on a
slice of whole rows before they are timed.  Writes
bench/results/dask_<machine>.{json,md}.

    pip install 'softmax_ext[dask]'
    python bench/bench_dask.py            # 2 GiB float32
    python bench/bench_dask.py --quick    # 64 MiB, a smoke run
"""

from __future__ import annotations

import argparse
import logging
import os

import dask.array as da
import distributed
import numpy as np

import softmax_ext as sx
import softmax_ext.dask as sxd
from softmax_ext import _bench

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
# Timed rounds; each times every contender once (after an untimed call each),
# in rotating order, so that a slow spell of a shared machine lands on all.
ROUNDS = 5


def plain_dask_softmax(x, axis):
    e = da.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _fresh_block(block):
    fresh = np.empty_like(block)
    fresh.fill(0)
    return fresh


def _first_value(block):
    return block[:1, :1]


def consumed(y):
    """One task per block that keeps one value of it: the blocks are computed
    and dropped on the workers."""
    return y.map_blocks(_first_value, chunks=tuple((1,) * n for n in y.numblocks),
                        dtype=y.dtype).sum()


def run(shape, whole_chunks, split_chunks, workers_list):
    """Softmax over axis 1 of a float32 `shape`, in chunks holding whole rows
    and in chunks cutting the rows (the same bytes per chunk)."""
    rows = []
    print(f"{'workers':>7} {'class axis':<12}{'chunk MiB':>10}{'ours s':>9}{'dask s':>9}"
          f"{'ratio':>8}{'ours GB/s':>11}{'fresh s':>9}")
    for workers in workers_list:
        with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                      memory_limit=0, dashboard_address=":0",
                                      silence_logs=logging.ERROR) as cluster, \
                distributed.Client(cluster) as client:
            generated = da.random.default_rng(0).standard_normal(
                shape, chunks=whole_chunks, dtype=np.float32)
            for layout, chunks in (("whole", whole_chunks), ("split", split_chunks)):
                x = client.persist(generated.rechunk(chunks))
                distributed.wait(x, timeout=600)
                contenders = {"ours": sxd.softmax(x, axis=1),
                              "dask": plain_dask_softmax(x, axis=1)}
                reference = sx.softmax(x[:8].compute(scheduler=client), axis=1)
                for name, y in contenders.items():  # checked before timing
                    got = y[:8].compute(scheduler=client)
                    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-9,
                                               err_msg=name)
                contenders["fresh"] = x.map_blocks(_fresh_block)
                seconds = _bench.interleaved_median_seconds(
                    {name: lambda y=y: client.compute(consumed(y)).result()
                     for name, y in contenders.items()},
                    min_rounds=ROUNDS, min_seconds=0, max_rounds=ROUNDS, settle_seconds=0)
                row = {"workers": workers, "class_axis": layout, "shape": list(shape),
                       "chunks": list(chunks), "seconds": seconds,
                       "ratio": seconds["dask"] / seconds["ours"],
                       "ours_gb_per_s": x.nbytes / seconds["ours"] / 1e9}
                rows.append(row)
                chunk_mib = chunks[0] * chunks[1] * 4 / 2**20
                print(f"{workers:>7} {layout:<12}{chunk_mib:>10.0f}{seconds['ours']:>9.3f}"
                      f"{seconds['dask']:>9.3f}{row['ratio']:>7.2f}x{row['ours_gb_per_s']:>11.2f}"
                      f"{seconds['fresh']:>9.3f}",
                      flush=True)
                del x
    return rows


def markdown(rows, machine):
    lines = [f"# softmax_ext.dask vs the plain dask softmax ({machine['date']})", "",
             f"{machine['cpu']}, {machine['logical_cpus']} logical CPUs; LocalCluster, "
             "one thread per worker process; float32, array persisted in the workers; "
             f"medians of {ROUNDS} rounds timing all three in turn; ratio = plain dask time / ours; "
             "fresh = a graph whose tasks only allocate their block and zero it (the floor of "
             "any graph making one new block per block).", "",
             "| workers | class axis | shape | chunks | ours s | plain dask s | ratio | ours GB/s "
             "| fresh s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['workers']} | {r['class_axis']} | {tuple(r['shape'])} | "
                     f"{tuple(r['chunks'])} | {r['seconds']['ours']:.3f} | "
                     f"{r['seconds']['dask']:.3f} | {r['ratio']:.2f}x | {r['ours_gb_per_s']:.2f} "
                     f"| {r['seconds']['fresh']:.3f} |")
    scaling = {layout: [r for r in rows if r["class_axis"] == layout] for layout in ("whole", "split")}
    lines.append("")
    for layout, pair in scaling.items():
        if len(pair) == 2:
            lines.append(f"- class axis {layout}: 2 workers run ours "
                         f"{pair[0]['seconds']['ours'] / pair[1]['seconds']['ours']:.2f}x as fast "
                         f"as 1 worker (plain dask "
                         f"{pair[0]['seconds']['dask'] / pair[1]['seconds']['dask']:.2f}x, "
                         f"fresh blocks "
                         f"{pair[0]['seconds']['fresh'] / pair[1]['seconds']['fresh']:.2f}x).")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="64 MiB instead of 2 GiB")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results")
    args = parser.parse_args()
    if args.quick:
        rows = run((1024, 16384), (128, 16384), (512, 4096), [1, 2])
    else:  # 64 MiB chunks
        rows = run((16384, 32768), (512, 32768), (2048, 8192), [1, 2])
    machine = _bench.machine_description()
    if not args.no_save and not args.quick:
        stem = _bench.write_results(RESULTS, "dask", machine, {"rows": rows}, markdown(rows, machine))
        print(f"wrote {stem}.json and .md")
    print(markdown(rows, machine))


if __name__ == "__main__":
    main()
