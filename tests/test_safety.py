"""Regression tests of the memory-safety audit: every legal numpy view, kernel
entry points that refuse what they cannot index, forked children, threads,
no process-wide side effects, empty inputs and option validation."""

import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided, sliding_window_view

import reference as ref
from conftest import run_python
import softmax_ext as sx
from softmax_ext import _kernels, _threads

# ---- short rows whose out= or grad has another stride (heap overflow before) ----------


@pytest.mark.parametrize("rows", [8, 1000])
def test_out_with_other_strides_than_x_on_short_rows(rows):
    buf = np.full((rows, 2), 7.0)
    result = sx.softmax(np.zeros((rows, 1)), out=buf[::-1, :1])
    assert result.base is buf or np.shares_memory(result, buf)
    np.testing.assert_array_equal(buf[:, 0], 1.0)
    np.testing.assert_array_equal(buf[:, 1], 7.0)  # the column beside out is untouched
    buf = np.full((rows, 2), 7.0)
    sx.softmax(np.zeros((rows, 1)), out=buf[:, :1])
    np.testing.assert_array_equal(buf, np.column_stack([np.ones(rows), np.full(rows, 7.0)]))


def test_grad_with_other_strides_than_logp_on_short_rows():
    grad = np.arange(2000.0).reshape(1000, 2)[::-1, :1]
    result = sx.log_softmax_backward(np.zeros((1000, 1)), grad)
    np.testing.assert_array_equal(result, 0.0)  # g - exp(0) * g
    p = np.full((1000, 3), 1 / 3)
    g = np.arange(12000.0).reshape(2000, 6)[::-2, 1::2] / 1000
    np.testing.assert_allclose(sx.softmax_backward(p, g), ref.softmax_backward(p, g), rtol=1e-12,
                               atol=1e-12)


def test_overlapping_rows():
    x = sliding_window_view(np.arange(20.0), 5)
    np.testing.assert_allclose(sx.softmax(x), ref.softmax(x), rtol=1e-14)
    np.testing.assert_allclose(sx.log_softmax(x), ref.log_softmax(x), rtol=1e-14)
    g = sliding_window_view(np.linspace(-1, 1, 20), 5)
    np.testing.assert_allclose(sx.log_softmax_backward(x - 20, g), ref.log_softmax_backward(x - 20, g),
                               rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(sx.softmax_backward(x, g), ref.softmax_backward(x, g), rtol=1e-12)


def test_out_that_overlaps_itself_is_written_as_numpy_would():
    storage = np.zeros(6)
    out = as_strided(storage, (4, 3), (8, 8))  # writable, rows overlap
    x = np.zeros((4, 3))
    result = sx.softmax(x, out=out)
    assert result is out
    np.testing.assert_allclose(storage, 1 / 3)  # every element written with a correct value


@pytest.mark.parametrize("K", [4, 100])  # transposed tiles, whole rows
@pytest.mark.parametrize("shift", [1, 37])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmax_backward",
                                  "log_softmax_backward"])
def test_out_partly_overlapping_an_input(K, shift, name):
    """An `out` a few elements past the input it overlaps (both C-contiguous,
    the layout the kernels take directly) is computed into a buffer first."""
    rows = 6
    rng = np.random.default_rng(5)
    storage = rng.standard_normal(rows * K + shift)
    shared, out = storage[:rows * K].reshape(rows, K), storage[shift:].reshape(rows, K)
    if name.endswith("_backward"):
        forward = sx.softmax if name == "softmax_backward" else sx.log_softmax
        args = (forward(rng.standard_normal((rows, K))), shared)  # out overlaps grad
    else:
        args = (shared,)
    want = getattr(ref, name)(*(a.copy() for a in args))
    getattr(sx, name)(*args, out=out)
    np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-15)


# ---- zero strides and overlapping read-only views (assert-based before) ----------------


def _broadcast_and_window_cases():
    return [
        (np.broadcast_to(np.arange(5.0), (4, 5)), -1),
        (np.broadcast_to(np.arange(8.0), (7, 60, 8)), 1),
        (np.broadcast_to(np.arange(60.0)[:, None], (7, 60, 8)), 1),
        (sliding_window_view(np.arange(300.0), 32), 0),
        (sliding_window_view(np.arange(300.0), 32), 1),
    ]


@pytest.mark.parametrize("func", [sx.softmax, sx.log_softmax, sx.logsumexp])
@pytest.mark.parametrize("case", range(5))
def test_broadcast_and_window_inputs(func, case):
    x, axis = _broadcast_and_window_cases()[case]
    reference = {sx.softmax: ref.softmax, sx.log_softmax: ref.log_softmax, sx.logsumexp: ref.logsumexp}
    np.testing.assert_allclose(func(x, axis=axis), reference[func](np.array(x), axis), rtol=1e-13)
    g = np.broadcast_to(np.linspace(0, 1, x.shape[-1]), x.shape)
    if func is not sx.logsumexp:
        y = np.array(func(x, axis=axis))
        want = (ref.softmax_backward(y, np.array(g), axis) if func is sx.softmax
                else ref.log_softmax_backward(y, np.array(g), axis))
        backward = sx.softmax_backward if func is sx.softmax else sx.log_softmax_backward
        np.testing.assert_allclose(backward(y, g, axis=axis), want, rtol=1e-12, atol=1e-15)


def test_views_under_python_optimize(tmp_path):
    """The same views with assert statements gone (python -O)."""
    code = (
        "import numpy as np, softmax_ext as sx\n"
        "from numpy.lib.stride_tricks import sliding_window_view as w\n"
        "def check(x, axis):\n"
        "    e = np.exp(x - x.max(axis, keepdims=True)); want = e / e.sum(axis, keepdims=True)\n"
        "    if not np.allclose(sx.softmax(x, axis=axis), want, rtol=1e-12): raise SystemExit(3)\n"
        "check(np.broadcast_to(np.arange(5.), (4, 5)), -1)\n"
        "check(np.broadcast_to(np.arange(8.), (7, 60, 8)), 1)\n"
        "check(w(np.arange(300.), 32), 0)\n"
        "print('ok')\n"
    )
    assert run_python(["-O", "-c", code], tmp_path) == "ok"


# ---- kernel entry points refuse what they cannot index -------------------------------


def test_kernels_refuse_missing_and_mismatched_operands():
    op = _kernels.Op
    x = np.zeros((3, 4))
    with pytest.raises(TypeError):
        _kernels.rows(op=op.SOFTMAX, x=None, num_threads=1)
    bad_calls = [
        dict(op=op.SOFTMAX, x=x, out=np.zeros((2, 4)), num_threads=1),
        dict(op=op.SOFTMAX, x=x, num_threads=1),  # no out
        dict(op=op.LOGSUMEXP, x=x, out=np.zeros((3, 4)), num_threads=1),  # no lse
        dict(op=op.LOGSUMEXP, x=x, lse=np.zeros(2), num_threads=1),
        dict(op=op.SOFTMAX_BACKWARD, x=x, out=np.zeros((3, 4)), num_threads=1),  # no grad
        dict(op=op.SOFTMAX_BACKWARD, x=x, grad=np.zeros((3, 5)), out=np.zeros((3, 4)), num_threads=1),
        dict(op=op.SOFTMAX, x=x, out=np.zeros((3, 4)), num_threads=0),
        dict(op=7, x=x, out=np.zeros((3, 4)), num_threads=1),
        dict(op=op.SOFTMAX, x=as_strided(np.zeros(20), (3, 4), (12, 4)), out=np.zeros((3, 4)),
             num_threads=1),  # strides of half an element
    ]
    for call in bad_calls:
        with pytest.raises(ValueError):
            _kernels.rows(**call)
    raw = np.zeros(8 * 12 + 1, np.uint8)
    unaligned = np.frombuffer(raw.data, np.float64, 12, offset=1).reshape(3, 4)
    with pytest.raises(ValueError, match="aligned"):
        _kernels.rows(op=op.SOFTMAX, x=unaligned, out=np.zeros((3, 4)), num_threads=1)
    with pytest.raises(ValueError, match="shape"):
        _kernels.cols(op=op.SOFTMAX_BACKWARD, x=np.zeros((3, 4, 5)), grad=np.zeros((3, 4, 4)),
                      out=np.zeros((3, 4, 5)), num_threads=1)
    with pytest.raises(ValueError, match="outside"):
        _kernels.cross_entropy(logits=x, target=np.array([0, 1, 9]), loss=np.zeros(3), num_threads=1)
    with pytest.raises(ValueError, match="shape"):
        _kernels.cross_entropy(logits=x, target=np.array([0, 1]), loss=np.zeros(3), num_threads=1)
    with pytest.raises(ValueError, match="shape"):
        _kernels.cross_entropy(logits=x, target=np.array([0, 1, 2]), loss=np.zeros(3),
                               grad=np.zeros((3, 5)), num_threads=1)


def test_kernels_on_empty_views():
    op = _kernels.Op
    out = np.full((3, 0), 5.0)
    _kernels.rows(op=op.SOFTMAX, x=np.zeros((3, 0)), out=out, num_threads=1)
    lse = np.zeros(3)
    _kernels.rows(op=op.LOGSUMEXP, x=np.zeros((3, 0)), lse=lse, num_threads=2)
    np.testing.assert_array_equal(lse, -np.inf)
    lse = np.zeros((2, 3))
    _kernels.cols(op=op.LOGSUMEXP, x=np.zeros((2, 0, 3)), lse=lse, num_threads=2)
    np.testing.assert_array_equal(lse, -np.inf)
    loss = np.full(4, np.nan)
    _kernels.cross_entropy(logits=np.zeros((4, 0)), target=np.full(4, -100), loss=loss, num_threads=1)
    np.testing.assert_array_equal(loss, 0.0)


# ---- K = 0 and other empty results (uninitialised before) ------------------------------


def test_zero_classes():
    z, y = np.empty((4, 0)), np.full(4, -100)
    assert sx.cross_entropy(z, y, reduction="sum") == 0.0
    np.testing.assert_array_equal(sx.cross_entropy(z, y, reduction="none"), np.zeros(4))
    assert np.isnan(sx.cross_entropy(z, y))  # mean over no kept rows, as PyTorch
    loss, grad = sx.cross_entropy(z, np.empty((4, 0)), reduction="sum", return_grad=True)
    assert loss == 0.0 and grad.shape == (4, 0)
    loss, (dx, dW, db) = sx.linear_cross_entropy(np.ones((3, 2)), np.empty((0, 2)), np.full(3, -100),
                                                 np.empty(0), reduction="sum")
    assert loss == 0.0
    np.testing.assert_array_equal(dx, np.zeros((3, 2)))
    assert dW.shape == (0, 2) and db.shape == (0,)
    assert sx.softmax_jacobian(np.empty((3, 0))).shape == (3, 0, 0)
    assert sx.softmax_jacobian(np.empty((0, 4))).shape == (0, 4, 4)


# ---- validation -------------------------------------------------------------------------


def test_option_validation():
    z, y = np.zeros((2, 3)), np.array([0, 1])
    for bad in ("0.1", True, None):
        with pytest.raises(TypeError, match="label_smoothing"):
            sx.cross_entropy(z, y, label_smoothing=bad)
    with pytest.raises(ValueError, match="chunk_size"):
        sx.linear_cross_entropy(np.ones((2, 3)), np.ones((4, 3)), y, chunk_size=True)
    # an ignore_index no target dtype can hold ignores nothing (as PyTorch, without the overflow)
    np.testing.assert_allclose(sx.cross_entropy(z, y, ignore_index=2**70), np.log(3.0), rtol=1e-15)
    np.testing.assert_allclose(sx.cross_entropy(z, np.array([0, -2**62]), ignore_index=-2**62),
                               np.log(3.0), rtol=1e-15)
    with pytest.raises(TypeError, match="int axis"):
        sx.softmax_jacobian(z, axis=None)
    for bad in [(1.0, 2.0), (np.ones(3), 2.0), (1.0, np.ones(3))]:
        with pytest.raises(ValueError, match="dlogits"):
            sx.weight_grad(*bad)
    dW, db = sx.weight_grad(np.ones(3), np.ones(2))  # one sample
    assert dW.shape == (2, 3) and db.shape == (2,)


def test_thread_requests_are_capped():
    cap = 4 * (os.cpu_count() or 1)
    assert _threads.max_threads() == cap
    assert _threads.resolve_num_threads(10**9, 10**12) == cap
    sx.set_num_threads(10**9)
    try:
        assert sx.get_num_threads() == cap
    finally:
        sx.set_num_threads(None)
    np.testing.assert_allclose(sx.softmax(np.zeros(3), num_threads=10**9), 1 / 3)


def test_probability_targets_with_smoothing_and_minus_inf_logit():
    z = np.array([[0.0, -np.inf, 1.0]])
    t = np.array([[0.5, 0.0, 0.5]])
    assert np.isnan(sx.cross_entropy(z, t))  # 0 * -inf, as PyTorch
    for smoothing in (0.5, 1.0):  # every class gets e/K > 0: +inf, as PyTorch
        assert sx.cross_entropy(z, t, label_smoothing=smoothing) == np.inf
        assert sx.cross_entropy(np.tile(z, (40, 12)), np.tile(t, (40, 12)) / 12,
                                label_smoothing=smoothing) == np.inf
    torch = pytest.importorskip("torch")
    for smoothing in (0.0, 0.3, 1.0):
        want = torch.nn.functional.cross_entropy(torch.tensor(z), torch.tensor(t),
                                                 label_smoothing=smoothing).item()
        np.testing.assert_equal(float(sx.cross_entropy(z, t, label_smoothing=smoothing)), want)


@pytest.mark.parametrize("value, expected", [("AVX2", None), (" Portable ", "portable"), ("sse9", None)])
def test_isa_environment_variable_in_any_case(tmp_path, value, expected):
    code = ("import warnings, softmax_ext as sx\n"
            "print(sx.show_config(print_=False)['simd'])")
    chosen = run_python(["-W", "ignore", "-c", code], tmp_path, SOFTMAX_EXT_ISA=value)
    best = _kernels.runnable_isas()[-1]
    if value == "AVX2":
        expected = "avx2" if "avx2" in _kernels.runnable_isas() else best
    elif expected is None:  # unknown: a warning, and the best set stays
        expected = best
    assert chosen == expected


# ---- fork, threads and process-wide state -------------------------------------------------


def test_forked_child_after_threaded_parent(tmp_path):
    """libgomp hangs in a child whose parent ran a parallel region; the child
    must run its kernels single-threaded instead, and finish."""
    code = (
        "import os, numpy as np, softmax_ext as sx\n"
        "from softmax_ext import _threads\n"
        "_threads.MIN_ELEMENTS_PER_THREAD = 1\n"
        "x = np.random.default_rng(0).standard_normal((512, 300))\n"
        "p = sx.softmax(x, num_threads=2)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    ok = sx.get_num_threads() == 1 and np.array_equal(sx.softmax(x, num_threads=2), p)\n"
        "    ok = ok and sx.show_config(print_=False)['single_threaded_after_fork']\n"
        "    os._exit(0 if ok else 3)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print(os.waitstatus_to_exitcode(status), sx.get_num_threads() > 1 or os.cpu_count() == 1)\n"
    )
    assert run_python(["-c", code], tmp_path) == "0 True"


def _logsumexp_total(seed):
    x = np.random.default_rng(seed).standard_normal((1024, 256))
    return float(sx.logsumexp(x, num_threads=2).sum()), float(ref.logsumexp(x).sum())


def test_process_pool_with_fork_after_threaded_use():
    from softmax_ext import _threads

    saved = _threads.MIN_ELEMENTS_PER_THREAD
    _threads.MIN_ELEMENTS_PER_THREAD = 1
    try:
        sx.softmax(np.zeros((64, 64)), num_threads=2)  # a parallel region in this process
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(2, mp_context=context) as pool:
            results = list(pool.map(_logsumexp_total, range(4), timeout=120))
    finally:
        _threads.MIN_ELEMENTS_PER_THREAD = saved
    for got, want in results:
        np.testing.assert_allclose(got, want, rtol=1e-12)


def _blas_state():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    return [(info["filepath"], info["num_threads"]) for info in threadpoolctl.threadpool_info()
            if info["user_api"] == "blas"]


def _run_beside(background, targets, stop):
    """Run `targets` (callables) in threads to completion while `background`
    runs in another thread until `stop` is set."""
    side = threading.Thread(target=background)
    workers = [threading.Thread(target=target) for target in targets]
    side.start()
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    stop.set()
    side.join()


def test_linear_cross_entropy_leaves_blas_limits_alone():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((700, 64))
    W = rng.standard_normal((300, 64)) * 0.1
    y = rng.integers(0, 300, 700)
    want = sx.linear_cross_entropy(x, W, y, chunk_size=100)
    before = _blas_state()
    seen, failures, stop = set(), [], threading.Event()

    def layer():
        for _ in range(6):
            loss, grads = sx.linear_cross_entropy(x, W, y, chunk_size=100)
            if not np.allclose(loss, want[0], rtol=1e-13) or \
                    any(not np.allclose(a, b, rtol=1e-12, atol=1e-15) for a, b in zip(grads[:2], want[1][:2])):
                failures.append("result")

    def matmuls():
        a = rng.standard_normal((300, 300))
        while not stop.is_set():
            seen.update(n for _, n in _blas_state())
            a @ a

    _run_beside(matmuls, [layer, layer], stop)
    assert not failures
    assert _blas_state() == before
    assert seen <= {n for _, n in before}, "another thread saw BLAS limits change"


def test_eight_threads_mixing_functions_while_thread_counts_change():
    rng = np.random.default_rng(5)
    z = rng.standard_normal((300, 257)).astype(np.float32)
    y = rng.integers(0, 257, 300)
    g = rng.standard_normal(z.shape).astype(np.float32)
    calls = [
        lambda t: sx.softmax(z, num_threads=t),
        lambda t: sx.log_softmax(z, axis=0, num_threads=t),
        lambda t: sx.logsumexp(z, num_threads=t),
        lambda t: sx.softmax_backward(z, g, num_threads=t),
        lambda t: sx.log_softmax_backward(z, g, axis=0, num_threads=t),
        lambda t: sx.cross_entropy(z, y, return_grad=True, num_threads=t)[1],
        lambda t: sx.linear_cross_entropy(z[:, :16], z[:40, :16], y % 40, num_threads=t)[1][1],
        lambda t: sx.softmax_jacobian(z[:20, :30]),
    ]
    expected = [call(1) for call in calls]
    failures, stop = [], threading.Event()
    saved = _threads.MIN_ELEMENTS_PER_THREAD
    _threads.MIN_ELEMENTS_PER_THREAD = 1

    def worker(i):
        local = np.random.default_rng(i)
        for _ in range(15):
            threads = None if local.random() < 0.3 else int(local.integers(1, 5))
            if not np.array_equal(calls[i](threads), expected[i]):
                failures.append(i)

    def churn():
        counts = [1, 2, 3, None]
        k = 0
        while not stop.is_set():
            sx.set_num_threads(counts[k % 4])
            k += 1

    try:
        _run_beside(churn, [lambda i=i: worker(i) for i in range(8)], stop)
    finally:
        sx.set_num_threads(None)
        _threads.MIN_ELEMENTS_PER_THREAD = saved
    assert not failures, failures


@pytest.mark.parametrize("shape, axes", [((6, 5), (1,)), ((2, 3, 4), (1, 2)), ((4, 1), (0,)),
                                         ((3, 4), (0, 1)), ((1, 7), (1,)), ((5, 1, 3), (2,))])
def test_rows_view_of_contiguous_and_gapped_arrays(shape, axes):
    """The rows view the kernels get: by reshape when the rows are back to
    back (always there for a C-contiguous array), by strides when they are
    not; the same elements either way, on the same memory."""
    from softmax_ext._layout import plan_for

    K = int(np.prod([shape[ax] for ax in axes]))
    whole = np.arange(2 * int(np.prod(shape)), dtype=np.float32).reshape(shape[:-1] + (2 * shape[-1],))
    for gapped, a in enumerate((np.ascontiguousarray(whole[..., :shape[-1]]), whole[..., :shape[-1]])):
        plan = plan_for(a, axes)
        view = plan.view(a)
        if gapped and view is None:
            continue  # rows that do not merge: the caller copies
        assert plan.kind == "rows" and view is not None
        assert view.shape == (a.size // K, K) and np.shares_memory(view, a)
        np.testing.assert_array_equal(view, np.moveaxis(a, axes, range(a.ndim - len(axes), a.ndim)).reshape(-1, K))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(50, 7), (40, 100), (3, 5, 1000), (9,)])
@pytest.mark.parametrize("name", ["softmax", "log_softmax", "softmax_backward",
                                  "log_softmax_backward"])
def test_last_axis_rows_skip_planning_with_the_same_bits(monkeypatch, dtype, shape, name):
    """C-contiguous calls over the last axis skip the layout planning
    (_layout.last_axis_rows): the same bits as the planned route, into a new
    array, a separate `out`, and `out` that is the input itself."""
    from softmax_ext import _core, _layout

    rng = np.random.default_rng(9)
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    args = (sx.softmax(x) if name == "softmax_backward" else sx.log_softmax(x), g) \
        if name.endswith("_backward") else (x,)
    assert _layout.last_axis_rows(args[0], args[1] if len(args) > 1 else None, None,
                                  (len(shape) - 1,)) is not None
    func = getattr(sx, name)

    def each_way():
        into = np.empty(shape, dtype)
        aliased = [a.copy() for a in args]
        return [func(*args), func(*args, out=into), func(*aliased, out=aliased[0])]

    skipped = each_way()
    monkeypatch.setattr(_core, "last_axis_rows", lambda *operands: None)
    planned = each_way()
    for got, want in zip(skipped, planned):
        assert got.dtype == want.dtype and got.flags.c_contiguous
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
@pytest.mark.parametrize("shape", [(50, 7), (40, 100), (3, 5, 1000), (9,), (6, 1), (4, 1, 30)])
@pytest.mark.parametrize("keepdims", [False, True])
def test_logsumexp_last_axis_skips_planning_with_the_same_bits(monkeypatch, dtype, shape, keepdims):
    """logsumexp over the last axis of a C-contiguous array skips the layout
    planning (_layout.last_axis_view): the same bits, dtype and shape as the
    planned route, a numpy scalar for a 1-d input."""
    from softmax_ext import _core, _layout

    x = (np.random.default_rng(10).standard_normal(shape) * 4).astype(dtype)
    assert _layout.last_axis_view(x, (len(shape) - 1,)) is not None
    skipped = sx.logsumexp(x, axis=-1, keepdims=keepdims)
    monkeypatch.setattr(_core, "last_axis_view", lambda *operands: None)
    planned = sx.logsumexp(x, axis=-1, keepdims=keepdims)
    assert type(skipped) is type(planned) and skipped.dtype == planned.dtype == dtype
    assert np.shape(skipped) == np.shape(planned)
    np.testing.assert_array_equal(np.atleast_1d(skipped).view(np.uint8),
                                  np.atleast_1d(planned).view(np.uint8))
