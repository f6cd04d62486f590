"""Cycles per element of each row primitive, in cache, against the bound the
exp's instruction count sets.

Compiles bench/primitives.c with the flags setup.py gives the kernels (a C
compiler with OpenMP is needed; no Python extension is involved), runs it, and
writes bench/results/primitives_<machine>.{json,md}.  The clock is measured (a
chain of dependent additions), so cycles are this machine's own.

The bound, for the exp sweeps: the vector instructions of the loop per
vector of exps that compete for the same pipes, counted in its assembly, over
how many of them a core issues per cycle.
- AVX-512 (Zen 4: two 512-bit vector instructions per cycle, four 256-bit
  pipes, two per instruction): every floating-point instruction.  float32:
  subtract the shift, clamp low and high, n = round(x / ln2) in two, r in
  two, the degree-6 polynomial in six, VSCALEF, add to the sum: 15 per 16
  lanes, 13 for tame exps (no clamps); float64: 22 and 20 per 8 lanes, its
  polynomial having degree 13.
- AVX2 (Zen 3: two FMA pipes, 2 fused multiply-adds per cycle measured with
  12 independent chains; additions, integer and conversion instructions
  issue on other pipes): the multiply-adds and multiplies.  float32: n, r in
  two and the polynomial in six, plus the two multiplies by 2^n's halves:
  11 per 8 lanes, 9 for tame exps (2^n added to the exponent field);
  float64: 18 and 16 per 4 lanes.
Loads, stores and loop control issue elsewhere.

    python bench/bench_primitives.py
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import tempfile
from pathlib import Path
from typing import Optional

from softmax_ext import _bench

ROOT = Path(__file__).resolve().parent.parent
# as setup.py builds the kernels with gcc/clang
FLAGS = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-falign-loops=64", "-fopenmp"]
# (isa, dtype, tame exps) -> (lanes per vector, instructions per vector on the
# bounding pipes, such instructions per cycle); see the module docstring
EXP_MODEL = {
    ("avx512", "float32", False): (16, 15, 2.0),
    ("avx512", "float32", True): (16, 13, 2.0),
    ("avx512", "float64", False): (8, 22, 2.0),
    ("avx512", "float64", True): (8, 20, 2.0),
    ("avx2", "float32", False): (8, 11, 2.0),
    ("avx2", "float32", True): (8, 9, 2.0),
    ("avx2", "float64", False): (4, 18, 2.0),
    ("avx2", "float64", True): (4, 16, 2.0),
}


def exp_bound(isa: str, dtype: str, tame: bool) -> Optional[float]:
    """Cycles per element the bounding pipes need for the exp sweep, or None."""
    if (isa, dtype, tame) not in EXP_MODEL:
        return None
    lanes, instructions, per_cycle = EXP_MODEL[(isa, dtype, tame)]
    return instructions / per_cycle / lanes


def measure() -> tuple[dict, list[dict]]:
    compiler = shlex.split(os.environ.get("CC", "cc"))
    with tempfile.TemporaryDirectory() as tmp:
        binary = Path(tmp) / "primitives"
        subprocess.run(compiler + FLAGS + ["-I", str(ROOT / "src"), str(ROOT / "bench" / "primitives.c"),
                                           "-o", str(binary), "-lm"], check=True)
        lines = subprocess.run([str(binary)], check=True, capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"}).stdout.splitlines()
    header, rows = json.loads(lines[0]), [json.loads(line) for line in lines[1:]]
    for row in rows:
        if row["primitive"].startswith("row_exp_sum"):
            row["exp_bound_cycles_per_element"] = exp_bound(row["isa"], row["dtype"],
                                                            "tame" in row["primitive"])
    return header, rows


def markdown(machine: dict, header: dict, rows: list[dict]) -> str:
    lines = ["# softmax_ext row primitives, in cache", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), "",
             f"One thread, {header['rows']} rows of {header['elements']} elements (L1/L2-resident), "
             f"median of 301 sweeps; clock measured at {header['clock_ghz']:.2f} GHz. "
             "`bound`: the exp sweep's vector instructions on its busiest pipes over how many "
             "of them issue per cycle (AVX-512: all floating-point ones, two 512-bit per cycle "
             "on Zen 4; AVX2: the multiply-adds and multiplies, two per cycle on Zen 3; see "
             "bench/bench_primitives.py); `of bound`: bound / measured.", "",
             "| isa | dtype | primitive | ns / element | cycles / element | bound | of bound |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        bound = r.get("exp_bound_cycles_per_element")
        lines.append(f"| {r['isa']} | {r['dtype']} | {r['primitive']} | {r['ns_per_element']:.3f} | "
                     f"{r['cycles_per_element']:.2f} | "
                     + (f"{bound:.2f} | {bound / r['cycles_per_element']:.0%} |" if bound else "- | - |"))
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args(argv)
    machine = _bench.machine_description()
    header, rows = measure()
    text = markdown(machine, header, rows)
    print(text)
    stem = _bench.write_results(args.results, "primitives", machine, {**header, "rows": rows}, text)
    print(f"wrote {stem}.json, {stem}.md")

if __name__ == "__main__":
    main()
