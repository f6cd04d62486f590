"""Timing helpers and the peers softmax_ext is compared with.

Used by ``python -m softmax_ext`` (a short run) and ``bench/bench_softmax.py``
(the full table).  Peers are what a user would pick instead: the plain numpy
formula, scipy.special and PyTorch on the CPU, each only when installed, and
``np.copyto`` of the same array as a memory-bandwidth roofline.
"""

from __future__ import annotations

import importlib
import os
import platform
import time
from types import ModuleType
from typing import Callable, Optional

import numpy as np
from numpy.typing import DTypeLike

from . import _core, _kernels
from ._config import show_config

Timing = Callable[[], object]


def median_seconds(func: Timing, min_repeats: int = 5, min_seconds: float = 0.2,
                   max_repeats: int = 60) -> float:
    """Median wall time of `func()` after one warm-up call."""
    func()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_repeats and (len(times) < min_repeats or time.perf_counter() - start < min_seconds):
        t0 = time.perf_counter()
        func()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def interleaved_median_seconds(calls: dict[str, Timing], min_rounds: int = 15,
                               min_seconds: float = 0.2, max_rounds: int = 60,
                               settle_seconds: float = 0.012) -> dict[str, float]:
    """Median wall time of each call, measured in rounds that time every
    call once, in a rotating order.

    On a shared, noisy machine a slow spell then lands on every contender of
    a round alike, instead of on whichever contender was being timed: the
    ratios between contenders stay meaningful.  Before its timed call each
    contender runs untimed for `settle_seconds` (at least once), so that the
    thread pool of the one before (OpenMP, OpenBLAS, a peer's own) has
    stopped spinning and does not take a core from it: libgomp's pools
    (ours and PyTorch's) spin 8-9 ms after a call on this machine, so the
    default is 12 ms (with 2 ms, softmax_backward float32 (16384, 128) at 2
    threads measured 0.91-1.12 of PyTorch's time, with 12 ms 1.02-1.05).
    The longer settle leaves fewer rounds in the same time, hence at least 15
    (with 5, slow spells decided whole rows).  `min_seconds` is per call.
    """
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    budget = min_seconds * len(names)
    start = time.perf_counter()
    rounds = 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget):
        for name in names[rounds % len(names):] + names[:rounds % len(names)]:
            settle = time.perf_counter()
            calls[name]()
            while time.perf_counter() - settle < settle_seconds:
                calls[name]()
            t0 = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - t0)
        rounds += 1
    return {name: float(np.median(t)) for name, t in times.items()}


# ---- the plain numpy formulas a user would write --------------------------------


def numpy_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    p: np.ndarray = e / e.sum(axis=axis, keepdims=True)
    return p


def numpy_log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    shifted = x - x.max(axis=axis, keepdims=True)
    logp: np.ndarray = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
    return logp


def numpy_softmax_backward(p: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
    dz: np.ndarray = p * (g - (g * p).sum(axis=axis, keepdims=True))
    return dz


def numpy_log_softmax_backward(logp: np.ndarray, g: np.ndarray, axis: int) -> np.ndarray:
    dz: np.ndarray = g - np.exp(logp) * g.sum(axis=axis, keepdims=True)
    return dz


OPS = ("softmax", "softmax_backward", "log_softmax", "log_softmax_backward")


def _optional_module(name: str) -> Optional[ModuleType]:
    """A peer's module, or None when it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None


def contenders(op: str, x: np.ndarray, g: np.ndarray, axis: int, threads: int) -> dict[str, Timing]:
    """Zero-argument callables computing `op` on the same data, by implementation.

    For the backward ops `x` holds the forward output (p or log p) and `g` the
    upstream gradient.  "softmax_ext" allocates its result like every peer;
    "softmax_ext_out" writes into a preallocated array, as "copyto" does, for
    the bandwidth comparison.
    """
    out = np.empty_like(x)
    sx_func = getattr(_core, op)
    numpy_func = globals()["numpy_" + op]
    if op.endswith("_backward"):
        calls: dict[str, Timing] = {
            "softmax_ext": lambda: sx_func(x, g, axis=axis, num_threads=threads),
            "softmax_ext_out": lambda: sx_func(x, g, axis=axis, out=out, num_threads=threads),
            "numpy": lambda: numpy_func(x, g, axis),
        }
    else:
        calls = {
            "softmax_ext": lambda: sx_func(x, axis=axis, num_threads=threads),
            "softmax_ext_out": lambda: sx_func(x, axis=axis, out=out, num_threads=threads),
            "numpy": lambda: numpy_func(x, axis),
        }
        special = _optional_module("scipy.special")
        if special is not None:
            scipy_func = getattr(special, op)
            calls["scipy"] = lambda: scipy_func(x, axis=axis)
    torch = _optional_module("torch")
    if torch is not None:
        tx, tg = torch.from_numpy(x), torch.from_numpy(g)
        torch_calls = {
            "softmax": lambda: torch.softmax(tx, dim=axis),
            "log_softmax": lambda: torch.log_softmax(tx, dim=axis),
            "softmax_backward": lambda: torch._softmax_backward_data(tg, tx, axis, tx.dtype),
            "log_softmax_backward": lambda: torch._log_softmax_backward_data(tg, tx, axis, tx.dtype),
        }
        calls["torch"] = torch_calls[op]
    for name, make in (("onnxruntime", _onnxruntime_call), ("jax", _jax_call)):
        call = make(op, x, g, axis, threads)
        if call is not None:
            calls[name] = call
    calls["copyto"] = lambda: np.copyto(out, x)
    return calls


def _onnxruntime_call(op: str, x: np.ndarray, g: np.ndarray, axis: int,
                      threads: int) -> Optional[Timing]:
    """onnxruntime's CPU kernels on a one-node Softmax / LogSoftmax model
    (opset 13), writing through io_binding into a preallocated output; it has
    no standard backward op, so forward only."""
    ort, onnx = _optional_module("onnxruntime"), _optional_module("onnx")
    if ort is None or onnx is None or op not in ("softmax", "log_softmax"):
        return None
    helper = onnx.helper
    element = onnx.TensorProto.FLOAT if x.dtype == np.float32 else onnx.TensorProto.DOUBLE
    node = helper.make_node("Softmax" if op == "softmax" else "LogSoftmax", ["x"], ["y"], axis=axis)
    graph = helper.make_graph([node], op, [helper.make_tensor_value_info("x", element, x.shape)],
                              [helper.make_tensor_value_info("y", element, x.shape)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8  # what opset 13 needs; onnx's newest IR may be past the runtime's
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    # Its worker threads otherwise spin between runs and keep a core busy long
    # after the call: on 2 cores they slowed the next contender 1.6-2.4x for
    # as long as it ran, while onnxruntime's own time is the same either way
    # (measured: softmax (8, 1000000) 2.68 / 2.68 ms, (16384, 128) 0.364 / 0.360).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(model.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    out = np.empty_like(x)
    binding = session.io_binding()
    binding.bind_cpu_input("x", x)
    binding.bind_output("y", "cpu", 0, x.dtype, x.shape, out.ctypes.data)

    def call() -> np.ndarray:
        session.run_with_iobinding(binding)
        return out

    return call


def _jax_call(op: str, x: np.ndarray, g: np.ndarray, axis: int, threads: int) -> Optional[Timing]:
    """A jitted JAX call, data moved in with device_put and waited for.  JAX
    sizes its CPU thread pool once, from PJRT_NPROC: it is a peer only at that
    thread count (bench_softmax.py sets it to the largest one it measures)."""
    if os.environ.get("PJRT_NPROC") != str(threads):
        return None
    jax = _optional_module("jax")
    if jax is None:
        return None
    if x.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    formulas = {
        "softmax": lambda a: jax.nn.softmax(a, axis=axis),
        "log_softmax": lambda a: jax.nn.log_softmax(a, axis=axis),
        "softmax_backward": lambda p, u: p * (u - jnp.sum(u * p, axis=axis, keepdims=True)),
        "log_softmax_backward": lambda lp, u: u - jnp.exp(lp) * jnp.sum(u, axis=axis, keepdims=True),
    }
    func = jax.jit(formulas[op])
    args = (x, g) if op.endswith("_backward") else (x,)
    return lambda: func(*(jax.device_put(a) for a in args)).block_until_ready()


def set_peer_threads(threads: int) -> None:
    torch = _optional_module("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def inputs_for(op: str, shape: tuple[int, ...], dtype: DTypeLike, axis: int,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, g) for `op`: logits, or for a backward op the forward output and a gradient."""
    rng = np.random.default_rng(seed)
    logits = (rng.standard_normal(shape) * 3).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    if op == "softmax_backward":
        return _core.softmax(logits, axis=axis), g
    if op == "log_softmax_backward":
        return _core.log_softmax(logits, axis=axis), g
    return logits, g


def machine_description() -> dict[str, object]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = show_config(print_=False)
    torch = _optional_module("torch")
    scipy = _optional_module("scipy")
    scipy_version: Optional[str] = None if scipy is None else scipy.__version__
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "system": f"{platform.system()} {platform.release()}",
        "softmax_ext": info["version"],
        "simd": info["simd"],
        "openmp": info["openmp"],
        # the OS's L3 size, which sets when outputs are streamed (_kernels.pyx)
        "l3_mib": _kernels.l3_cache_bytes() / 2**20,
        "stream_footprint_mib": _kernels.STREAM_FOOTPRINT / 2**20,
        "numpy": np.__version__,
        "scipy": scipy_version,
        "torch": torch.__version__ if torch is not None else None,
        "date": time.strftime("%Y-%m-%d"),
    }


def write_results(results_dir: str, prefix: str, machine: dict[str, object],
                  data: dict[str, object], markdown: str) -> str:
    """Write <results_dir>/<prefix>_<machine>.json and .md, <machine> naming the
    logical CPUs, the CPU model and the kernels' instruction set (one model
    name can cover CPUs with and without AVX-512); returns the path stem."""
    import json
    import re

    os.makedirs(results_dir, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", f"{machine['logical_cpus']}cpu-{machine['cpu']}-{machine['simd']}").strip("-")
    stem = os.path.join(results_dir, f"{prefix}_{slug}")
    with open(f"{stem}.json", "w") as f:
        json.dump({"machine": machine, **data}, f, indent=1)
    with open(f"{stem}.md", "w") as f:
        f.write(markdown)
    return stem
