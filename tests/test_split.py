"""The split-axis kernels (the engine of softmax_ext.dask), without dask:
blocks of an array cut along its reduced axes, in every layout, against the
whole-array functions; the kernels' operand checks; thread-count invariance."""

import numpy as np
import pytest

from conftest import bits, sx
from layouts import LAYOUTS, in_layout
from softmax_ext import _kernels, _split

Op = _kernels.Op
FORWARD = {"softmax": Op.SOFTMAX, "log_softmax": Op.LOG_SOFTMAX}
BACKWARD = {"softmax_backward": Op.SOFTMAX_BACKWARD,
            "log_softmax_backward": Op.LOG_SOFTMAX_BACKWARD}


def blockwise(op, x, g, axis, cuts, layout, threads=None):
    """(merged statistics, per-block results concatenated) for x cut at `cuts` along `axis`."""
    pieces = [in_layout(p, layout) for p in np.split(x, cuts, axis)]
    grads = [None] * len(pieces) if g is None else \
        [in_layout(p, layout) for p in np.split(g, cuts, axis)]
    stats = np.concatenate([_split.block_statistics(p, q, op=op, axes=(axis,), num_threads=threads)
                            for p, q in zip(pieces, grads)], axis=axis)
    merged = _split.merge_statistics(stats, (axis,))
    if op == Op.LOGSUMEXP:
        return merged, None
    out = np.concatenate([_split.normalize(p, merged, q, op=op, axes=(axis,), num_threads=threads)
                          for p, q in zip(pieces, grads)], axis=axis)
    return merged, out


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, axis, cuts", [((7, 90), 1, [31, 64]), ((90, 7), 0, [2, 50]),
                                               ((4, 40, 6), 1, [20]), ((3, 10), 1, [1, 9])])
@pytest.mark.parametrize("name", list(FORWARD) + list(BACKWARD) + ["logsumexp"])
def test_blocks_match_the_whole_array(rng, name, shape, axis, cuts, dtype, layout):
    x = (rng.standard_normal(shape) * 4).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype) if name in BACKWARD else None
    if name in BACKWARD:
        x = sx.softmax(x, axis=axis)
        x = x if name == "softmax_backward" else np.log(x)
    op = {**FORWARD, **BACKWARD, "logsumexp": Op.LOGSUMEXP}[name]
    merged, out = blockwise(op, x, g, axis, cuts, layout)
    rtol, atol = (2e-6, 1e-6) if dtype == np.float32 else (1e-14, 4e-15)
    if name == "logsumexp":
        lse = np.squeeze(_split.log_sum(merged)[0], axis=axis)
        np.testing.assert_allclose(lse, sx.logsumexp(x, axis=axis), rtol=rtol, atol=atol)
        return
    expected = getattr(sx, name)(*((x, g) if g is not None else (x,)), axis=axis)
    assert out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=rtol, atol=atol * 10)


def test_one_block_is_the_logsumexp_kernel_to_one_ulp(rng):
    """One block: the whole-row logsumexp's max, excess and ties; only the
    final log1p is numpy's instead of libm's."""
    x = rng.standard_normal((50, 300))
    merged, _ = blockwise(Op.LOGSUMEXP, x, None, 1, [], "C")
    np.testing.assert_array_max_ulp(np.squeeze(_split.log_sum(merged)[0], 1),
                                    sx.logsumexp(x, axis=1), maxulp=1)


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_any_thread_count_gives_the_same_bits(rng, exact_threads, threads):
    x = (rng.standard_normal((64, 700)) * 3).astype(np.float32)
    for axis, cuts in ((1, [300]), (0, [10, 40])):
        for op in (Op.SOFTMAX, Op.LOG_SOFTMAX):
            merged_1, out_1 = blockwise(op, x, None, axis, cuts, "C", threads=1)
            merged_n, out_n = blockwise(op, x, None, axis, cuts, "C", threads=threads)
            np.testing.assert_array_equal(merged_1.view(np.uint64), merged_n.view(np.uint64))
            np.testing.assert_array_equal(bits(out_1), bits(out_n))


def test_empty_blocks():
    merged, out = blockwise(Op.SOFTMAX, np.zeros((0, 8)), None, 1, [3], "C")
    assert merged.shape == (0, 1) and out.shape == (0, 8)
    stats = _split.block_statistics(np.zeros((4, 0)), op=Op.LOGSUMEXP, axes=(1,), num_threads=1)
    assert np.all(stats["max"] == -np.inf) and np.all(stats["excess"] == 0)


def test_kernels_refuse_mismatched_operands():
    x = np.zeros((2, 5, 3))
    good_stats, good_params = np.zeros((2, 3, 3)), np.ones((2, 3, 2))
    with pytest.raises(ValueError, match="stats has shape"):
        _kernels.split_stats(op=Op.SOFTMAX, x=x, stats=np.zeros((2, 3, 1)), num_threads=1)
    with pytest.raises(ValueError, match="stats has shape"):
        _kernels.split_stats(op=Op.SOFTMAX_BACKWARD, x=x, grad=x, stats=good_stats,
                             num_threads=1)
    with pytest.raises(ValueError, match="grad is required"):
        _kernels.split_stats(op=Op.SOFTMAX_BACKWARD, x=x, stats=good_stats, num_threads=1)
    with pytest.raises(ValueError, match="grad has shape"):
        _kernels.split_finish(op=Op.SOFTMAX_BACKWARD, x=x, grad=np.zeros((2, 4, 3)),
                              params=good_params, out=np.zeros_like(x), num_threads=1)
    with pytest.raises(ValueError, match="params has shape"):
        _kernels.split_finish(op=Op.SOFTMAX, x=x, params=np.ones((2, 2, 2)),
                              out=np.zeros_like(x), num_threads=1)
    with pytest.raises(ValueError, match="out has shape"):
        _kernels.split_finish(op=Op.SOFTMAX, x=x, params=good_params, out=np.zeros((2, 5, 2)),
                              num_threads=1)
    with pytest.raises(ValueError, match="unknown op"):
        _kernels.split_finish(op=Op.LOGSUMEXP, x=x, params=good_params, out=np.zeros_like(x),
                              num_threads=1)
    with pytest.raises(ValueError, match="contiguous along its last axis"):
        _kernels.split_stats(op=Op.SOFTMAX, x=np.zeros((2, 5, 6))[:, :, ::2], stats=good_stats,
                             num_threads=1)
    with pytest.raises(ValueError, match="num_threads"):
        _kernels.split_stats(op=Op.SOFTMAX, x=x, stats=good_stats, num_threads=0)
    with pytest.raises(ValueError, match="read-only"):
        _kernels.split_finish(op=Op.SOFTMAX, x=x, params=good_params,
                              out=np.broadcast_to(np.zeros(3), x.shape), num_threads=1)
