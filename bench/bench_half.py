"""float16 and bfloat16: softmax_ext's 16-bit kernels against its own float32
kernels and PyTorch's half-precision CPU softmax and cross-entropy (with its
gradient), in one process.

16-bit storage halves the bytes moved, so on shapes that do not fit in cache
a 16-bit call should take close to half the float32 time.  Every contender's
result is checked against softmax_ext's float32 result (rounded to the
16-bit dtype) before it is timed.  Writes bench/results/half_<machine>.{json,md}.

    python bench/bench_half.py
"""

from __future__ import annotations

import argparse

import numpy as np

import softmax_ext as sx
from softmax_ext import _bench

try:
    import ml_dtypes
except ImportError:  # bfloat16 rows are left out
    ml_dtypes = None

SHAPES = [(16384, 128), (4096, 1000), (512, 32000), (8, 1_000_000)]
OPS = ["softmax", "log_softmax"]
CROSS_ENTROPY_SHAPES = [(65536, 10), (8192, 1000), (1024, 32000)]


def _torch_call(op, x16, torch_dtype, threads):
    torch = _bench._optional_module("torch")
    if torch is None:
        return None
    torch.set_num_threads(threads)
    t = torch.from_numpy(x16.view(np.uint16).astype(np.int16)).view(torch_dtype)
    func = torch.softmax if op == "softmax" else torch.log_softmax
    return lambda: func(t, dim=-1), lambda r: r.view(torch.int16).numpy().view(np.uint16)


def _torch_dtype(dtype):
    torch = _bench._optional_module("torch")
    if torch is None:
        return None
    return torch.float16 if dtype == np.float16 else torch.bfloat16


def _row(rows, op, dtype, shape, threads, ms, accuracy=None):
    """Record and print one row; `accuracy`: per contender, the gradient's
    max |error| / max |float32 gradient| and the loss."""
    ms = {k: 1e3 * v for k, v in ms.items()}
    row = {"op": op, "dtype": dtype.name, "shape": list(shape), "threads": threads, "ms": ms}
    if accuracy:
        row["accuracy"] = accuracy
    rows.append(row)
    ratio = f"{ms['torch16'] / ms['sx16']:>9.2f}x" if "torch16" in ms else f"{'-':>10}"
    notes = "" if not accuracy else "  grad error {sx16:.1e} vs torch {torch16:.1e}".format(
        **accuracy["grad_error"]) + "; loss {sx16:.4g} vs torch {torch16:.4g}".format(
        **accuracy["loss"])
    print(f"{op:<19}{dtype.name:<10}{str(shape):<16}{ms['sx16']:>9.3f}{ms['sx32']:>9.3f}"
          f"{ms['sx16'] / ms['sx32']:>7.2f}{ratio}{notes}", flush=True)


def run(threads):
    rows = []
    dtypes = [np.dtype(np.float16)] + ([np.dtype(ml_dtypes.bfloat16)] if ml_dtypes else [])
    print(f"{'op':<19}{'dtype':<10}{'shape':<16}{'sx16 ms':>9}{'sx32 ms':>9}{'16/32':>7}{'x torch16':>10}")
    for dtype in dtypes:
        _softmax_family(rows, dtype, threads)
        _cross_entropy(rows, dtype, threads)
    return rows


def _softmax_family(rows, dtype, threads):
    torch_dtype = _torch_dtype(dtype)
    for op in OPS:
        func = getattr(sx, op)
        for shape in SHAPES:
            x32 = np.random.default_rng(0).standard_normal(shape, dtype=np.float32) * 3
            x16 = x32.astype(dtype)
            wide = x16.astype(np.float32)
            out16, out32 = np.empty_like(x16), np.empty_like(wide)
            expected = func(wide).astype(dtype).astype(np.float32)
            got = func(x16, out=out16, num_threads=threads).astype(np.float32)
            np.testing.assert_array_equal(got, expected)
            calls = {"sx16": lambda: func(x16, out=out16, num_threads=threads),
                     "sx32": lambda: func(wide, out=out32, num_threads=threads)}
            peer = _torch_call(op, x16, torch_dtype, threads) if torch_dtype else None
            if peer is not None:
                call, as_bits = peer
                # the peer is timed only if it computes the same thing (to 16-bit rounding)
                theirs = as_bits(call()).view(dtype).astype(np.float32)
                np.testing.assert_allclose(theirs, expected, rtol=2e-2, atol=2e-2)
                calls["torch16"] = call
            _row(rows, op, dtype, shape, threads, _bench.interleaved_median_seconds(calls))


def _cross_entropy(rows, dtype, threads):
    """cross_entropy with its gradient (mean over index targets), against
    torch.nn.functional.cross_entropy + autograd on the same 16-bit logits."""
    torch_dtype = _torch_dtype(dtype)
    for shape in CROSS_ENTROPY_SHAPES:
        rng = np.random.default_rng(0)
        x16 = (rng.standard_normal(shape, dtype=np.float32) * 3).astype(dtype)
        wide = x16.astype(np.float32)
        y = rng.integers(0, shape[1], shape[0])
        loss, grad = sx.cross_entropy(x16, y, return_grad=True, num_threads=threads)
        want_loss, want_grad = sx.cross_entropy(wide, y, return_grad=True)
        np.testing.assert_array_equal(grad.view(np.uint16), want_grad.astype(dtype).view(np.uint16))
        calls = {"sx16": lambda: sx.cross_entropy(x16, y, return_grad=True, num_threads=threads),
                 "sx32": lambda: sx.cross_entropy(wide, y, return_grad=True, num_threads=threads)}
        if torch_dtype is not None:
            torch = _bench._optional_module("torch")
            torch.set_num_threads(threads)
            tz = torch.from_numpy(x16.view(np.uint16).astype(np.int16)).view(torch_dtype)
            tz.requires_grad_(True)
            ty = torch.from_numpy(y)

            def call():
                their_loss = torch.nn.functional.cross_entropy(tz, ty)
                return their_loss, torch.autograd.grad(their_loss, tz)[0]

            their_loss, their_grad = call()
            # timed only if it computes the same thing: the gradient where it is
            # a normal 16-bit number, and the loss where torch's is finite (its
            # half gradient loses subnormal values, and its mean over more than
            # 65504 rows is NaN: both are recorded, not hidden)
            theirs = their_grad.detach().view(torch.int16).numpy().view(np.uint16).view(dtype)
            theirs = theirs.astype(np.float32)
            normal = np.abs(want_grad) >= float(np.finfo(np.float16).tiny)
            np.testing.assert_allclose(theirs[normal], want_grad[normal], rtol=2e-2)
            their_loss = float(their_loss.detach())
            if np.isfinite(their_loss):
                np.testing.assert_allclose(their_loss, float(want_loss), rtol=2e-2)
            scale = float(np.max(np.abs(want_grad)))
            accuracy = {"grad_error": {
                "sx16": float(np.max(np.abs(grad.astype(np.float32) - want_grad))) / scale,
                "torch16": float(np.max(np.abs(theirs - want_grad))) / scale},
                "loss": {"float32": float(want_loss), "sx16": float(loss), "torch16": their_loss}}
            calls["torch16"] = call
        ms = _bench.interleaved_median_seconds(calls)
        _row(rows, "cross_entropy+grad", dtype, shape, threads, ms,
             accuracy if torch_dtype is not None else None)


def markdown(machine, rows):
    lines = ["# softmax_ext float16 / bfloat16 benchmark", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in machine.items()), "",
             "Medians in one process. `16/32`: softmax_ext 16-bit time / softmax_ext float32 time "
             "(0.5 would be the byte ratio); `vs torch`: torch 16-bit time / softmax_ext 16-bit time "
             "(higher is better for us).", "",
             "| op | dtype | shape | threads | sx 16-bit ms | sx float32 ms | 16/32 | vs torch |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ms = r["ms"]
        vs = f"{ms['torch16'] / ms['sx16']:.2f}x" if "torch16" in ms else "-"
        lines.append(f"| {r['op']} | {r['dtype']} | {tuple(r['shape'])} | {r['threads']} | "
                     f"{ms['sx16']:.3f} | {ms['sx32']:.3f} | {ms['sx16'] / ms['sx32']:.2f} | {vs} |")
    checked = [r for r in rows if "accuracy" in r]
    if checked:
        lines += ["", "Accuracy of the cross-entropy rows (mean over index targets). Gradient "
                  "error: max |gradient - softmax_ext's float32 gradient on the same 16-bit "
                  "logits| / max |that gradient| (16-bit rounding alone gives up to about "
                  "2^-11 = 4.9e-4 for float16, 2^-8 = 3.9e-3 for bfloat16).", "",
                  "| dtype | shape | grad error ours | grad error torch | loss float32 | "
                  "loss ours | loss torch |", "|---|---|---|---|---|---|---|"]
        for r in checked:
            e, loss = r["accuracy"]["grad_error"], r["accuracy"]["loss"]
            lines.append(f"| {r['dtype']} | {tuple(r['shape'])} | {e['sx16']:.1e} | "
                         f"{e['torch16']:.1e} | {loss['float32']:.5g} | {loss['sx16']:.5g} | "
                         f"{loss['torch16']:.5g} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=sx.get_num_threads())
    parser.add_argument("--results", default="bench/results")
    args = parser.parse_args(argv)
    machine = _bench.machine_description()
    print("machine:", machine)
    rows = run(args.threads)
    stem = _bench.write_results(args.results, "half", machine, {"rows": rows}, markdown(machine, rows))
    print(f"wrote {stem}.json, {stem}.md")


if __name__ == "__main__":
    main()
