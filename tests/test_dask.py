"""softmax_ext.dask against the numpy API on the same data.

Every function runs on dask's threaded scheduler and on a two-process
`distributed.LocalCluster` (one thread per worker), with the reduced axis in
one chunk (bitwise the numpy result) and split into uneven chunks (within a
stated tolerance: the sums are merged in another order).
"""

import logging
import os
import sys
import textwrap

import numpy as np
import pytest

from conftest import bits, environ_kept, run_python, sx

da = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
import dask  # noqa: E402

import softmax_ext.dask as sxd  # noqa: E402

FLOATS = [np.float32, np.float64]


def split_tolerance(dtype, log=False):
    """(rtol, atol) between a split-axis result and the numpy one: both round
    the same exact values, merged in another order (a few ulp).  Log results
    (x - m) - log(S) carry the rounding of log(S) (a few units): absolute."""
    if np.dtype(dtype) == np.float32:
        return 2e-6, (1e-6 if log else 1e-7)
    return 1e-14, (4e-15 if log else 1e-15)


def assert_split_close(actual, expected, dtype, log=False):
    rtol, atol = split_tolerance(dtype, log)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=atol)


@pytest.fixture(scope="module")
def cluster():
    with environ_kept():  # the nanny's variables stay out of this process
        local = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                         dashboard_address=":0", silence_logs=logging.ERROR)
    with local, distributed.Client(local, set_as_default=False) as client:
        yield client


@pytest.fixture(params=["threads", "cluster"])
def compute(request):
    """dask.compute on the threaded scheduler, or on the LocalCluster."""
    scheduler = "threads" if request.param == "threads" else request.getfixturevalue("cluster")

    def run(*collections):
        results = dask.compute(*collections, scheduler=scheduler)
        return results[0] if len(results) == 1 else results

    return run


def logits(rng, shape, dtype, scale=4.0):
    return (rng.standard_normal(shape) * scale).astype(dtype)


# ---- the softmax family ---------------------------------------------------------------

# (shape, whole chunks, split chunks, axis): the split chunks cut the reduced
# axis unevenly; the whole ones cut only the other axes.
CASES = [
    ((30, 50), (7, 50), (7, (13, 20, 17)), -1),
    ((30, 50), (30, 9), ((11, 4, 15), 9), 0),
    ((6, 40, 5), (2, 40, 5), (2, (9, 31), 5), 1),
    ((6, 40, 5), (6, 7, 5), ((1, 5), 40, 2), (0, 2)),
    ((12, 18), (12, 18), (5, 7), None),
    ((70,), (70,), (30,), -1),
]


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape, whole, split, axis", CASES)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_forward_matches_numpy(compute, rng, name, shape, whole, split, axis, dtype):
    x = logits(rng, shape, dtype)
    expected = getattr(sx, name)(x, axis=axis)
    whole_result = compute(getattr(sxd, name)(da.from_array(x, chunks=whole), axis=axis))
    split_array = getattr(sxd, name)(da.from_array(x, chunks=split), axis=axis)
    assert split_array.chunks == da.from_array(x, chunks=split).chunks
    assert whole_result.dtype == expected.dtype == dtype
    np.testing.assert_array_equal(bits(whole_result), bits(expected))
    assert_split_close(compute(split_array), expected, dtype, log=name == "log_softmax")


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("shape, whole, split, axis", CASES)
@pytest.mark.parametrize("name", ["softmax_backward", "log_softmax_backward"])
def test_backward_matches_numpy(compute, rng, name, shape, whole, split, axis, dtype):
    p = sx.softmax(logits(rng, shape, dtype), axis=axis)
    y = p if name == "softmax_backward" else np.log(p)
    g = logits(rng, shape, dtype, scale=1.0)
    expected = getattr(sx, name)(y, g, axis=axis)
    whole_result = compute(getattr(sxd, name)(da.from_array(y, chunks=whole),
                                              da.from_array(g, chunks=whole), axis=axis))
    np.testing.assert_array_equal(bits(whole_result), bits(expected))
    split_result = compute(getattr(sxd, name)(da.from_array(y, chunks=split),
                                              da.from_array(g, chunks=split), axis=axis))
    rtol, atol = split_tolerance(dtype)
    np.testing.assert_allclose(split_result, expected, rtol=rtol, atol=atol * 10)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("keepdims", [False, True])
@pytest.mark.parametrize("shape, whole, split, axis", CASES)
def test_logsumexp_matches_numpy(compute, rng, shape, whole, split, axis, keepdims, dtype):
    x = logits(rng, shape, dtype)
    expected = sx.logsumexp(x, axis=axis, keepdims=keepdims)
    whole_result = compute(sxd.logsumexp(da.from_array(x, chunks=whole), axis=axis,
                                         keepdims=keepdims))
    split_result = compute(sxd.logsumexp(da.from_array(x, chunks=split), axis=axis,
                                         keepdims=keepdims))
    assert np.shape(whole_result) == np.shape(split_result) == np.shape(expected)
    np.testing.assert_array_equal(bits(whole_result), bits(expected))
    assert_split_close(split_result, expected, dtype, log=True)


@pytest.mark.parametrize("return_sign", [False, True])
@pytest.mark.parametrize("chunks", [(4, 40), (4, (15, 25))], ids=["whole", "split"])
def test_logsumexp_weights_and_sign_match_numpy(compute, rng, chunks, return_sign):
    a = logits(rng, (9, 40), np.float64)
    b = rng.choice([0.0, 1.0, -2.0, 0.5], size=(9, 40))
    b[0] = 0.0                      # an all-zero slice: sign 0, log -inf
    b[1] = -1.0                     # a negative sum: NaN without return_sign
    expected = sx.logsumexp(a, axis=1, b=b, return_sign=return_sign)
    result = sxd.logsumexp(da.from_array(a, chunks=chunks), axis=1,
                           b=da.from_array(b, chunks=chunks), return_sign=return_sign)
    if return_sign:
        lse, sign = compute(*result)
        np.testing.assert_array_equal(sign, expected[1])
        lse_expected = expected[0]
    else:
        lse, lse_expected = compute(result), expected
    finite = np.isfinite(lse_expected)
    np.testing.assert_array_equal(np.isfinite(lse), finite)
    np.testing.assert_array_equal(np.isnan(lse), np.isnan(lse_expected))
    np.testing.assert_allclose(lse[finite], lse_expected[finite], rtol=1e-13)
    # b given as numpy broadcasts against a and is chunked like it
    broadcast = sxd.logsumexp(da.from_array(a, chunks=chunks), axis=1, b=np.ones(40))
    np.testing.assert_allclose(compute(broadcast), sx.logsumexp(a, axis=1), rtol=1e-14)


@pytest.mark.parametrize("name", ["softmax", "log_softmax", "logsumexp"])
def test_special_slices_split_over_chunks_match_numpy(compute, name):
    x = np.zeros((6, 12))
    x[0, 1] = np.nan                # NaN in the first chunk
    x[1, 10] = np.inf               # +inf in the last chunk
    x[2] = -np.inf                  # only -inf
    x[3, :6] = -np.inf              # a whole chunk of -inf
    x[4] = [1e30] + [0.0] * 11      # a huge logit
    x[5] = [0.0] + [-40.0] * 11     # a dominant term (scipy gh-18295)
    expected = getattr(sx, name)(x, axis=1)
    result = compute(getattr(sxd, name)(da.from_array(x, chunks=(2, (5, 4, 3))), axis=1))
    np.testing.assert_array_equal(np.isnan(result), np.isnan(expected))
    np.testing.assert_allclose(result, expected, rtol=1e-15, atol=0)
    if name == "logsumexp":
        assert result[5] > 0.0  # log1p keeps 11 e^-40 (log of the sum: 0)


def test_float16_split_axis_is_computed_in_float32(compute, rng):
    x = logits(rng, (8, 64), np.float16)
    expected = sx.softmax(x)
    result = compute(sxd.softmax(da.from_array(x, chunks=(3, (40, 24)))))
    assert result.dtype == np.float16
    np.testing.assert_allclose(result.astype(np.float64), expected.astype(np.float64),
                               rtol=1e-3, atol=1e-4)


# ---- cross-entropy and the linear layer -----------------------------------------------

CE_OPTIONS = [
    {},
    {"weight": True},
    {"label_smoothing": 0.2},
    {"weight": True, "label_smoothing": 0.1, "ignore_index": 3},
    {"probabilities": True},
    {"probabilities": True, "weight": True, "label_smoothing": 0.3},
]


def ce_inputs(rng, options, N, K, dtype):
    z = logits(rng, (N, K), dtype)
    if options.get("probabilities"):
        target = rng.dirichlet(np.ones(K), size=N).astype(dtype)
    else:
        target = rng.integers(0, K, N)
        target[::5] = options.get("ignore_index", -100)
    kwargs = {key: value for key, value in options.items() if key != "probabilities"}
    if options.get("weight"):
        kwargs["weight"] = rng.uniform(0.5, 2.0, K)
    return z, target, kwargs


def row_chunked(a, rows):
    return da.from_array(a, chunks=(rows,) + a.shape[1:])


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", CE_OPTIONS, ids=lambda o: "-".join(o) or "plain")
def test_cross_entropy_matches_numpy(compute, rng, options, reduction, dtype):
    z, target, kwargs = ce_inputs(rng, options, 45, 12, dtype)
    loss, grad = sx.cross_entropy(z, target, reduction=reduction, return_grad=True, **kwargs)
    lazy_loss, lazy_grad = sxd.cross_entropy(row_chunked(z, 10), row_chunked(target, 10),
                                             reduction=reduction, return_grad=True, **kwargs)
    assert lazy_grad.chunks == row_chunked(z, 10).chunks
    got_loss, got_grad = compute(lazy_loss, lazy_grad)
    assert got_loss.dtype == loss.dtype and got_grad.dtype == grad.dtype
    rtol, atol = split_tolerance(dtype)
    np.testing.assert_allclose(got_grad, grad, rtol=rtol, atol=atol)
    if reduction == "none":  # per-row losses: the same kernel on the same rows
        np.testing.assert_array_equal(got_loss, loss)
    else:
        np.testing.assert_allclose(got_loss, loss, rtol=rtol)
    only_loss = compute(sxd.cross_entropy(row_chunked(z, 10), row_chunked(target, 10),
                                          reduction=reduction, **kwargs))
    np.testing.assert_array_equal(only_loss, got_loss)


def test_cross_entropy_mean_of_only_ignored_rows_is_nan(compute, rng):
    z = logits(rng, (6, 4), np.float64)
    target = np.full(6, -100)
    loss, grad = compute(*sxd.cross_entropy(row_chunked(z, 4), row_chunked(target, 4),
                                            return_grad=True))
    assert np.isnan(loss) and np.isnan(sx.cross_entropy(z, target))
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("options", CE_OPTIONS[::2] + CE_OPTIONS[3:4],
                         ids=lambda o: "-".join(o) or "plain")
@pytest.mark.parametrize("bias", [True, False])
def test_linear_cross_entropy_matches_numpy(compute, rng, options, reduction, dtype, bias):
    N, D, K = 50, 7, 9
    x = logits(rng, (N, D), dtype, scale=1.0)
    W = logits(rng, (K, D), dtype, scale=0.5)
    b = logits(rng, (K,), dtype, scale=0.5) if bias else None
    _, target, kwargs = ce_inputs(rng, options, N, K, dtype)
    loss, (dx, dW, db) = sx.linear_cross_entropy(x, W, target, b, reduction=reduction, **kwargs)
    lazy = sxd.linear_cross_entropy(row_chunked(x, 12), W, row_chunked(target, 12), b,
                                    reduction=reduction, chunk_size=5, **kwargs)
    lazy_loss, (lazy_dx, lazy_dW, lazy_db) = lazy
    assert (lazy_db is None) == (b is None)
    got = compute(lazy_loss, lazy_dx, lazy_dW, *([lazy_db] if bias else []))
    rtol, atol = split_tolerance(dtype)
    for actual, expected in zip(got, (loss, dx, dW, db)):
        assert actual.dtype == expected.dtype
        np.testing.assert_allclose(actual, expected, rtol=rtol * 10, atol=atol * 10)
    no_grad = sxd.linear_cross_entropy(row_chunked(x, 12), W, row_chunked(target, 12), b,
                                       reduction=reduction, return_grad=False, **kwargs)
    np.testing.assert_allclose(compute(no_grad), loss, rtol=rtol * 10)
    no_dx = sxd.linear_cross_entropy(row_chunked(x, 12), W, row_chunked(target, 12), b,
                                     reduction=reduction, return_dx=False, **kwargs)
    assert no_dx[1][0] is None
    np.testing.assert_allclose(compute(no_dx[1][1]), got[2], rtol=rtol * 10, atol=atol * 10)


def test_linear_cross_entropy_sends_W_once(rng):
    """W is one key of the graph that every block's task depends on."""
    x = row_chunked(logits(rng, (40, 6), np.float64), 5)
    W = logits(rng, (3, 6), np.float64)
    loss, (dx, dW, db) = sxd.linear_cross_entropy(x, W, row_chunked(rng.integers(0, 3, 40), 5))
    graph = dict(dW.__dask_graph__())
    holding_W = [key for key, task in graph.items() if _holds(task, W)]
    assert len(holding_W) == 1, holding_W
    assert sum(1 for key in graph if key[0].startswith("linear_block")) == x.npartitions


@pytest.mark.parametrize("name", ["cross_entropy", "linear_cross_entropy"])
def test_block_tasks_never_wait_for_all_targets(rng, name):
    """The mean's denominator reduces every target block; a block task that
    needed it would hold its data until all targets are computed (measured:
    the whole data set per worker in examples/dask_training.py, whose labels
    come from the data).  Only the final scaling may depend on it."""
    x = row_chunked(logits(rng, (40, 6), np.float64), 5)
    target = row_chunked(rng.integers(0, 6, 40), 5)
    if name == "cross_entropy":
        loss, grad = sxd.cross_entropy(x, target, return_grad=True)
        grads = [grad]
    else:
        loss, grads = sxd.linear_cross_entropy(x, logits(rng, (6, 6), np.float64), target,
                                               np.zeros(6))
    graph = {}
    for collection in (loss, *grads):
        graph.update(collection.__dask_graph__())
    reduced = {key for key in graph if key[0].startswith(("block_denominator", "_sum_terms"))}
    assert reduced
    layer = {"cross_entropy": "cross_entropy_block-", "linear_cross_entropy": "linear_block-"}
    blocks = [key for key in graph if key[0].startswith(layer[name])]
    assert len(blocks) == x.npartitions
    for key in blocks:
        assert not graph[key].dependencies & reduced, key


def _holds(task, array):
    """True if the task is, or has among its literal arguments, a copy of `array`."""
    from dask._task_spec import DataNode, Task

    if isinstance(task, DataNode):
        task = task.value
    if isinstance(task, Task):
        return any(_holds(arg, array) for arg in task.args)
    return isinstance(task, np.ndarray) and task.shape == array.shape and \
        np.array_equal(task, array)


# ---- laziness, graph size, errors before computing -------------------------------------

CALLS = {"blocks": 0}


def _counted(block):
    CALLS["blocks"] += 1
    return block


def test_building_computes_nothing_and_graphs_grow_with_chunks(rng):
    x = da.from_array(logits(rng, (64, 96), np.float64), chunks=(8, 12)).map_blocks(_counted)
    g = da.ones_like(x)
    CALLS["blocks"] = 0
    lazy = [sxd.softmax(x), sxd.log_softmax(x, axis=None), sxd.logsumexp(x, axis=0),
            sxd.softmax_backward(x, g), sxd.log_softmax_backward(x, g, axis=0)]
    assert CALLS["blocks"] == 0
    chunks = x.npartitions  # 64
    inputs = len(dict(x.__dask_graph__())) + len(dict(g.__dask_graph__()))
    for result in lazy:
        tasks = len(dict(result.__dask_graph__()))
        assert tasks <= inputs + 5 * chunks, tasks
    y = da.from_array(rng.integers(0, 96, 64), chunks=8)
    z = x.rechunk((8, 96))
    ce = sxd.cross_entropy(z, y, return_grad=True)
    assert CALLS["blocks"] == 0
    assert len(dict(ce[1].__dask_graph__())) <= inputs + 5 * z.npartitions
    dask.compute(lazy[0], scheduler="sync")
    assert CALLS["blocks"] == chunks


def test_the_reduced_axis_is_never_rechunked(rng):
    x = da.from_array(logits(rng, (16, 64), np.float64), chunks=(4, 16))
    for result in (sxd.softmax(x), sxd.logsumexp(x, keepdims=True),
                   sxd.softmax_backward(x, x)):
        layers = result.__dask_graph__().layers
        assert not [name for name in layers if "rechunk" in name], list(layers)


def test_errors_are_raised_before_anything_runs(rng):
    x = da.from_array(logits(rng, (20, 6), np.float64), chunks=(5, 6))
    y = da.from_array(rng.integers(0, 6, 20), chunks=5)
    with pytest.raises(TypeError, match=r"dask array.*softmax_ext\.softmax"):
        sxd.softmax(np.zeros((3, 4)))
    unknown = x[da.from_array(np.arange(20) % 2 == 0, chunks=5)]
    with pytest.raises(ValueError, match=r"unknown chunk sizes.*compute_chunk_sizes"):
        sxd.softmax(unknown)
    with pytest.raises(ValueError, match=r"chunked over rows like logits.*rechunk"):
        sxd.cross_entropy(x, y.rechunk(4))
    with pytest.raises(ValueError, match=r"chunked over rows only.*rechunk"):
        sxd.cross_entropy(x.rechunk((5, 3)), y)
    with pytest.raises(ValueError, match=r"must have 20 rows"):
        sxd.cross_entropy(x, y[:10])
    with pytest.raises(ValueError, match="chunked like p"):
        sxd.softmax_backward(x, x.rechunk((4, 6)))
    with pytest.raises(TypeError, match="class indices"):
        sxd.cross_entropy(x, y.astype(bool))
    with pytest.raises(ValueError, match="weight must have shape"):
        sxd.cross_entropy(x, y, weight=np.ones(5))
    with pytest.raises(ValueError, match="reduction"):
        sxd.cross_entropy(x, y, reduction="max")
    with pytest.raises(ValueError, match="features"):
        sxd.linear_cross_entropy(x, np.ones((3, 5)), y)
    with pytest.raises(ValueError, match="num_threads"):
        sxd.softmax(x, num_threads=0)
    with pytest.raises(TypeError, match="complex"):
        sxd.softmax(x.astype(complex))
    # a bad class index is found where the data is: at compute time, as in numpy
    with pytest.raises(ValueError, match="outside"):
        sxd.cross_entropy(x, y + 6).compute(scheduler="sync")


def test_import_without_dask_names_the_extra(tmp_path):
    script = textwrap.dedent("""
        import sys
        sys.modules["dask"] = None
        sys.modules["dask.array"] = None
        try:
            import softmax_ext.dask
        except ImportError as error:
            print(error)
    """)
    assert "softmax_ext[dask]" in run_python(["-c", script], cwd=str(tmp_path))


# ---- threads: counted, not timed --------------------------------------------------------

COUNT_THREADS = textwrap.dedent("""
    import os, threading
    import dask, dask.array as da, numpy as np
    import softmax_ext.dask as sxd

    def native_threads():
        # OS threads that are not Python threads: the OpenMP pool's, BLAS's
        return len(os.listdir("/proc/self/task")) - threading.active_count()

    x = da.from_array(np.random.default_rng(0).standard_normal((4096, 512)), chunks=(512, 512))
    split = x.rechunk((512, 128))
    dask.compute(sxd.softmax(x), scheduler=SCHEDULER)  # starts the scheduler's own threads
    before = native_threads()
    dask.compute(sxd.softmax(x), sxd.log_softmax(split), sxd.logsumexp(split),
                 sxd.softmax_backward(x, x), scheduler=SCHEDULER)
    by_default = native_threads()
    dask.compute(sxd.softmax(x, num_threads=2), scheduler=SCHEDULER)
    print(before, by_default, native_threads())
""")


def _thread_counts(output):
    before, by_default, with_two = map(int, output.split())
    return before, by_default, with_two


needs_proc = pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="needs Linux /proc")
needs_openmp = pytest.mark.skipif(not sx._kernels.openmp_enabled(),
                                  reason="a serial build has no threads to count")


@needs_proc
@needs_openmp
def test_threaded_scheduler_tasks_use_one_kernel_thread(tmp_path):
    """No OpenMP thread starts under the threaded scheduler unless asked for;
    num_threads=2 starts them (so the count can see them)."""
    output = run_python(["-c", COUNT_THREADS.replace("SCHEDULER", '"threads"')],
                        cwd=str(tmp_path), OMP_NUM_THREADS="4")
    before, by_default, with_two = _thread_counts(output)
    assert by_default == before
    assert with_two > before


@needs_proc
@needs_openmp
def test_cluster_worker_tasks_use_one_kernel_thread(kept_environ):
    """The same count inside a LocalCluster's worker process (whose OpenMP
    would allow 4 threads per task here)."""
    def native_threads():
        import os
        import threading

        return len(os.listdir("/proc/self/task")) - threading.active_count()

    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                                  dashboard_address=":0", silence_logs=logging.ERROR,
                                  env={"OMP_NUM_THREADS": "4"}) as lc, \
            distributed.Client(lc, set_as_default=False) as client:
        x = da.random.default_rng(0).standard_normal((4096, 512), chunks=(512, 512))

        def run_and_count(num_threads):
            dask.compute(sxd.softmax(x, num_threads=num_threads),
                         sxd.softmax(x.rechunk((512, 128)), num_threads=num_threads),
                         scheduler=client)
            (count,) = client.run(native_threads).values()
            return count

        run_and_count(None)  # the worker's task threads exist from here on
        before = run_and_count(None)
        by_default = run_and_count(None)
        with_two = run_and_count(2)
    assert by_default == before
    assert with_two > before


# ---- memory: a split axis never holds more than a few chunks per worker -----------------


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss units differ")
def test_split_axis_softmax_keeps_worker_memory_near_a_few_chunks(kept_environ):
    """1 GiB softmax over a class axis in 4 chunks of 16 MiB, generated on
    the workers and reduced to a sum: each worker's peak RSS rises by far
    less than its half of the array (measured: 98 MiB; the same softmax
    after rechunking the class axis whole: 193-240 MiB)."""
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0", silence_logs=logging.ERROR,
                                  memory_limit=0) as lc, \
            distributed.Client(lc, set_as_default=False) as client:
        def peak_mib():
            import resource

            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        x = da.random.default_rng(0).standard_normal((128, 2**20), chunks=(8, 2**18))
        chunk_mib = 8 * 2**18 * 8 / 2**20
        dask.compute(sxd.softmax(x[:8, :2**18]).sum(), scheduler=client)  # warm up
        before = client.run(peak_mib)
        total = dask.compute(sxd.softmax(x, axis=1).sum(), scheduler=client)[0]
        after = client.run(peak_mib)
    np.testing.assert_allclose(total, 128.0, rtol=1e-10)
    growth = {worker: after[worker] - before[worker] for worker in after}
    half_of_the_array = x.nbytes / 2**20 / 2
    for worker, mib in growth.items():
        assert mib < 10 * chunk_mib < half_of_the_array, (worker, growth)
