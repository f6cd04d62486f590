"""Cross-entropy, the fused linear layer, the Jacobians and the weight gradient."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import softmax_ext as sx
import reference as ref
from conftest import bits


def central_difference(f, x, h):
    """4th-order central differences of the scalar f at every entry of x."""
    grad = np.zeros_like(x, dtype=np.float64)
    for index in np.ndindex(x.shape):
        def at(delta):
            moved = x.copy()
            moved[index] += delta
            return f(moved)
        grad[index] = (-at(2 * h) + 8 * at(h) - 8 * at(-h) + at(-2 * h)) / (12 * h)
    return grad


def _problem(rng, N=23, K=9, ignore=True):
    z = rng.standard_normal((N, K)) * 3
    y = rng.integers(0, K, N)
    if ignore:
        y[::4] = -100
    probs = rng.dirichlet(np.ones(K), N)
    w = rng.uniform(0.25, 2.0, K)
    return z, y, probs, w


TOLERANCE = {np.float32: dict(rtol=2e-5, atol=2e-6), np.float64: dict(rtol=1e-12, atol=1e-14)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.25, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
# short rows (transposed tiles), whole rows in groups (xent_tile), rows too
# long for a group one at a time
@pytest.mark.parametrize("K", [9, 50, 600])
def test_cross_entropy_matches_reference(rng, dtype, kind, weighted, smoothing, reduction, K):
    z, y, probs, w = _problem(rng, N=70, K=K)
    target = y if kind == "index" else probs.astype(dtype)
    weight = w.astype(dtype) if weighted else None
    z_in = z.astype(dtype)
    want, c = ref.cross_entropy(z_in, target, weight, -100, smoothing, reduction)
    loss, grad = sx.cross_entropy(z_in, target, weight=weight, label_smoothing=smoothing,
                                  reduction=reduction, return_grad=True)
    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype and grad.shape == z.shape
    np.testing.assert_allclose(loss, want, **TOLERANCE[dtype])
    # gradient of the reduced loss (of loss.sum() for "none"): C p - c, scaled for "mean"
    p = ref.softmax(z_in, axis=1)
    want_grad = c.sum(axis=1, keepdims=True) * p - c
    if reduction == "mean":
        class_weight = w if weighted else np.ones(K)
        want_grad /= class_weight[y[y != -100]].sum() if kind == "index" else len(z)
    np.testing.assert_allclose(grad, want_grad, **TOLERANCE[dtype])
    loss_only = sx.cross_entropy(z_in, target, weight=weight, label_smoothing=smoothing,
                                 reduction=reduction)
    np.testing.assert_array_equal(loss_only, loss)


def test_cross_entropy_against_torch_when_installed(rng):
    torch = pytest.importorskip("torch")
    F = torch.nn.functional
    z, y, probs, w = _problem(rng, N=31, K=12)
    for target in (y, probs):
        for weight in (None, w):
            for smoothing in (0.0, 0.1):
                for reduction in ("mean", "sum", "none"):
                    zt = torch.tensor(z, requires_grad=True)
                    loss_t = F.cross_entropy(zt, torch.tensor(target), label_smoothing=smoothing,
                                             weight=None if weight is None else torch.tensor(weight),
                                             reduction=reduction)
                    loss_t.sum().backward()
                    loss, grad = sx.cross_entropy(z, target, weight=weight, label_smoothing=smoothing,
                                                  reduction=reduction, return_grad=True)
                    np.testing.assert_allclose(loss, loss_t.detach().numpy(), rtol=1e-12, atol=1e-14)
                    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_gradient_by_finite_differences(rng, kind, reduction):
    z, y, probs, w = _problem(rng, N=5, K=4)
    target = y if kind == "index" else probs
    options = dict(weight=w, label_smoothing=0.2, reduction=reduction)

    def total(logits):
        return float(np.sum(sx.cross_entropy(logits, target, **options)))

    _, grad = sx.cross_entropy(z, target, return_grad=True, **options)
    np.testing.assert_allclose(grad, central_difference(total, z, 1e-3), rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                   np.uint32, np.uint64])
def test_every_integer_target_dtype(rng, dtype):
    z, y, _, _ = _problem(rng, ignore=False)
    expected = sx.cross_entropy(z, y.astype(np.int64), return_grad=True)
    got = sx.cross_entropy(z, y.astype(dtype), return_grad=True)
    assert got[0] == expected[0]
    np.testing.assert_array_equal(got[1], expected[1])


def test_ignored_rows_contribute_nothing(rng):
    z, y, _, w = _problem(rng, ignore=False)
    y[[2, 5]] = 7
    loss, grad = sx.cross_entropy(z, y, ignore_index=7, weight=w, reduction="none", return_grad=True)
    assert loss[2] == 0 and loss[5] == 0
    np.testing.assert_array_equal(grad[[2, 5]], 0.0)
    kept = y != 7  # rows 2 and 5, and any other row whose class is 7
    np.testing.assert_array_equal(loss[~kept], 0.0)
    mean = sx.cross_entropy(z, y, ignore_index=7, weight=w)
    np.testing.assert_allclose(mean, loss[kept].sum() / w[y[kept]].sum(), rtol=1e-13)


def test_empty_and_fully_ignored_batches():
    z = np.zeros((0, 5))
    assert np.isnan(sx.cross_entropy(z, np.zeros(0, int)))
    assert sx.cross_entropy(z, np.zeros(0, int), reduction="sum") == 0
    assert sx.cross_entropy(z, np.zeros(0, int), reduction="none").shape == (0,)
    z = np.ones((3, 5))
    loss, grad = sx.cross_entropy(z, [-100, -100, -100], return_grad=True)
    assert np.isnan(loss)
    np.testing.assert_array_equal(grad, 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_huge_logits_keep_their_loss(dtype):
    z = np.array([[1e8, 1e8 + 8.0, 1e8 - 16.0]], dtype)
    shifted = np.array([[0.0, 8.0, -16.0]])
    for smoothing in (0.0, 0.1):
        want, _ = ref.cross_entropy(shifted, np.array([0]), label_smoothing=smoothing)
        loss, grad = sx.cross_entropy(z, [0], label_smoothing=smoothing, return_grad=True)
        np.testing.assert_allclose(loss, want, rtol=1e-6)
        assert np.all(np.isfinite(grad))


def test_single_sample_logits():
    z = np.array([1.0, 2.0, 0.5])
    loss, grad = sx.cross_entropy(z, 1, return_grad=True)
    assert np.ndim(loss) == 0 and grad.shape == (3,)
    np.testing.assert_allclose(loss, -ref.log_softmax(z)[1], rtol=1e-14)
    np.testing.assert_allclose(grad, ref.softmax(z) - np.eye(3)[1], rtol=1e-14)


@pytest.mark.parametrize("K", [10, 257])
def test_cross_entropy_is_bitwise_identical_across_threads(rng, K):
    from softmax_ext import _threads

    N = 4 * 32768 // K + 1  # enough work for 4 threads
    assert _threads.resolve_num_threads(4, N * K) == 4
    z = rng.standard_normal((N, K)).astype(np.float32)
    y = rng.integers(0, K, N)
    first = sx.cross_entropy(z, y, label_smoothing=0.1, return_grad=True, num_threads=1)
    for threads in (2, 3, 4):
        loss, grad = sx.cross_entropy(z, y, label_smoothing=0.1, return_grad=True, num_threads=threads)
        assert bits(np.asarray(loss)).tobytes() == bits(np.asarray(first[0])).tobytes()
        assert np.array_equal(bits(grad), bits(first[1]))


@pytest.mark.parametrize(
    "call,error",
    [
        (lambda z: sx.cross_entropy(z, [0, 1, 9]), ValueError),  # index outside [0, K)
        (lambda z: sx.cross_entropy(z, [0, -1, 2]), ValueError),
        (lambda z: sx.cross_entropy(z, [0, 1]), ValueError),  # wrong length
        (lambda z: sx.cross_entropy(z, [[0], [1], [2]]), ValueError),
        (lambda z: sx.cross_entropy(z, np.ones((3, 4))), ValueError),  # probs of wrong width
        (lambda z: sx.cross_entropy(z, np.array([True, False, True])), TypeError),
        (lambda z: sx.cross_entropy(z, np.array([0.0, 1.0, 2.0])), ValueError),  # float 1-D
        (lambda z: sx.cross_entropy(z, ["a", "b", "c"]), TypeError),
        (lambda z: sx.cross_entropy(z, [0, 1, 2], weight=np.ones(4)), ValueError),
        (lambda z: sx.cross_entropy(z, [0, 1, 2], weight=np.ones(5, complex)), TypeError),
        (lambda z: sx.cross_entropy(z, [0, 1, 2], label_smoothing=-0.1), ValueError),
        (lambda z: sx.cross_entropy(z, [0, 1, 2], label_smoothing=1.5), ValueError),
        (lambda z: sx.cross_entropy(z, [0, 1, 2], label_smoothing=float("nan")), ValueError),
        (lambda z: sx.cross_entropy(z, [0, 1, 2], label_smoothing="x"), TypeError),
        (lambda z: sx.cross_entropy(z, [0, 1, 2], label_smoothing="0.1"), TypeError),
        (lambda z: sx.cross_entropy(z, [0, 1, 2], label_smoothing=True), TypeError),
        (lambda z: sx.cross_entropy(z, [0, 1, 2], ignore_index=True), TypeError),
        (lambda z: sx.cross_entropy(z, [0, 1, 2], ignore_index=1.0), TypeError),
        (lambda z: sx.cross_entropy(z, [0, 1, 2], reduction="avg"), ValueError),
        (lambda z: sx.cross_entropy(z[None], [0, 1, 2]), ValueError),  # 3-D logits
        (lambda z: sx.cross_entropy(z.astype(complex), [0, 1, 2]), TypeError),
        (lambda z: sx.cross_entropy(z, [0, 1, 2], num_threads=0), ValueError),
    ],
)
def test_cross_entropy_errors(call, error):
    with pytest.raises(error):
        call(np.zeros((3, 5)))


# ---- linear + cross-entropy --------------------------------------------------------


def _linear_problem(rng, N=13, D=6, K=9):
    x = rng.standard_normal((N, D))
    W = rng.standard_normal((K, D)) * 0.7
    b = rng.standard_normal(K)
    y = rng.integers(0, K, N)
    y[3] = -100
    return x, W, b, y


@pytest.mark.parametrize("with_bias", [False, True])
@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_linear_cross_entropy_matches_composition(rng, with_bias, kind, reduction):
    x, W, b, y = _linear_problem(rng)
    target = y if kind == "index" else rng.dirichlet(np.ones(9), 13)
    w = rng.uniform(0.5, 1.5, 9)
    bias = b if with_bias else None
    options = dict(weight=w, label_smoothing=0.1, reduction=reduction)
    logits = x @ W.T + (b if with_bias else 0)
    want_loss, want_dz = sx.cross_entropy(logits, target, return_grad=True, **options)
    loss, (dx, dW, db) = sx.linear_cross_entropy(x, W, target, bias, chunk_size=4, **options)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12)
    np.testing.assert_allclose(dx, want_dz @ W, rtol=1e-12, atol=1e-14)
    want_dW, want_db = sx.weight_grad(x, want_dz)
    np.testing.assert_allclose(dW, want_dW, rtol=1e-12, atol=1e-14)
    if with_bias:
        np.testing.assert_allclose(db, want_db, rtol=1e-12, atol=1e-14)
    else:
        assert db is None
    loss_only = sx.linear_cross_entropy(x, W, target, bias, return_grad=False, chunk_size=4, **options)
    np.testing.assert_array_equal(loss_only, loss)


def test_linear_cross_entropy_gradients_by_finite_differences(rng):
    x, W, b, y = _linear_problem(rng, N=4, D=3, K=5)
    options = dict(label_smoothing=0.15, weight=rng.uniform(0.5, 2, 5))
    _, (dx, dW, db) = sx.linear_cross_entropy(x, W, y, b, chunk_size=3, **options)

    def loss(x_=x, W_=W, b_=b):
        return float(sx.linear_cross_entropy(x_, W_, y, b_, return_grad=False, **options))

    np.testing.assert_allclose(dx, central_difference(lambda v: loss(x_=v), x, 1e-3), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(dW, central_difference(lambda v: loss(W_=v), W, 1e-3), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(db, central_difference(lambda v: loss(b_=v), b, 1e-3), rtol=1e-8, atol=1e-10)


def _poisoned_heap(shape):
    """Leave a freed block of NaN of `shape` float64 for numpy to hand out
    next (its cache of small blocks), as a stale buffer would be."""
    block = np.full(shape, np.nan)
    del block


@pytest.mark.parametrize("case", ["no rows", "no classes", "class blocks"])
def test_linear_cross_entropy_gradients_are_zero_where_no_chunk_writes_them(rng, case,
                                                                            monkeypatch):
    """dx and dW skip their zeros where the chunks' GEMMs overwrite them; with
    no rows or no classes nothing runs and they are 0, and with blocks of
    classes dx is accumulated: whatever stale memory numpy hands out."""
    from softmax_ext import _linear

    if case == "no rows":
        _poisoned_heap((3, 4))
        _, (dx, dW, db) = sx.linear_cross_entropy(np.zeros((0, 4)), np.ones((3, 4)),
                                                  np.zeros(0, int), np.ones(3))
        assert dx.shape == (0, 4)
        np.testing.assert_array_equal(dW, np.zeros((3, 4)))
        np.testing.assert_array_equal(db, np.zeros(3))
    elif case == "no classes":
        _poisoned_heap((2, 4))
        _, (dx, dW, _) = sx.linear_cross_entropy(np.ones((2, 4)), np.ones((0, 4)),
                                                 np.zeros((2, 0)))
        np.testing.assert_array_equal(dx, np.zeros((2, 4)))
        assert dW.shape == (0, 4)
    else:
        x, W, b, y = _linear_problem(rng, N=13, D=6, K=40)
        want = sx.linear_cross_entropy(x, W, y, b)
        monkeypatch.setattr(_linear, "CHUNK_BYTES", 256)  # blocks of classes
        _poisoned_heap(x.shape)
        loss, grads = sx.linear_cross_entropy(x, W, y, b)
        np.testing.assert_allclose(loss, want[0], rtol=1e-12)
        for got, expected in zip(grads, want[1]):
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_cross_entropy_does_not_depend_on_chunk_size(rng, dtype):
    x, W, b, y = (a.astype(dtype) if a.dtype.kind == "f" else a for a in _linear_problem(rng, N=50, D=16, K=40))
    results = [sx.linear_cross_entropy(x, W, y, b, chunk_size=c) for c in (1, 7, 16, 50, 1000)]
    tolerance = dict(rtol=2e-5, atol=1e-6) if dtype == np.float32 else dict(rtol=1e-12, atol=1e-14)
    for loss, grads in results[1:]:
        np.testing.assert_allclose(loss, results[0][0], **tolerance)
        for got, want in zip(grads, results[0][1]):
            np.testing.assert_allclose(got, want, **tolerance)


def test_linear_cross_entropy_chunks_and_kernel_threads(monkeypatch):
    """Default chunks hold about 4 MiB of logits for up to 32 input features
    and proportionally more for wider inputs (at least 512 rows, at most
    64 MiB); the kernel between the GEMMs gets one thread whenever BLAS is
    multi-threaded, even when more are asked, else the usual count."""
    from softmax_ext import _linear
    from softmax_ext._gradients import linear_layer
    assert _linear.default_chunk_rows(1000 * 4, 32) == 4 * 2**20 // 4000
    assert _linear.default_chunk_rows(1000 * 4, 3) == 4 * 2**20 // 4000
    assert _linear.default_chunk_rows(1000 * 4, 96) == 12 * 2**20 // 4000
    assert _linear.default_chunk_rows(2000 * 8, 128) == 16 * 2**20 // 16000
    assert _linear.default_chunk_rows(1000 * 4, 8192) == 64 * 2**20 // 4000
    assert _linear.default_chunk_rows(100 * 4, 0) == 4 * 2**20 // 400
    assert _linear.default_chunk_rows(32000 * 4, 256) == 512
    assert _linear.default_chunk_rows(100_000 * 4, 64) == 64 * 2**20 // 400_000
    assert _linear.default_chunk_rows(10**6 * 4, 64) == 64       # then classes are chunked too
    x, W, y = np.ones((5000, 3)), np.ones((20, 3)), np.zeros(5000, np.int64)

    def layer(num_threads):
        return linear_layer(x, W, None, y, None, -100, 0.0, "mean", True, None, num_threads)

    monkeypatch.setattr(_linear, "blas_threads", lambda: 4)
    assert layer(None).threads == 1 and layer(3).threads == 1
    monkeypatch.setattr(_linear, "blas_threads", lambda: 1)
    assert layer(3).threads == 3
    wide = linear_layer(np.ones((5000, 64), np.float32), np.ones((1000, 64), np.float32), None, y,
                        None, -100, 0.0, "mean", True, None, 1)
    assert wide.rows == wide.logits.shape[0] == 8 * 2**20 // 4000  # the layer passes D


def test_linear_cross_entropy_errors(rng):
    x, W, b, y = _linear_problem(rng)
    with pytest.raises(ValueError, match="D="):
        sx.linear_cross_entropy(x[:, :5], W, y)
    with pytest.raises(ValueError, match="b must"):
        sx.linear_cross_entropy(x, W, y, b[:4])
    with pytest.raises(ValueError, match="chunk_size"):
        sx.linear_cross_entropy(x, W, y, chunk_size=0)
    with pytest.raises(ValueError, match="outside"):
        sx.linear_cross_entropy(x, W, np.full(13, 9))
    with pytest.raises(ValueError):
        sx.linear_cross_entropy(x[0], W, y[:1])


@pytest.mark.skipif(bool(os.environ.get("SOFTMAX_EXT_SANITIZED")),
                    reason="AddressSanitizer's shadow memory inflates the resident size")
@pytest.mark.skipif(sys.platform != "linux", reason="reads VmHWM from /proc")
def test_linear_cross_entropy_memory_stays_within_one_chunk():
    """N=4096, D=256, K=65536 float32: the full logits alone would be 1 GiB."""
    code = textwrap.dedent("""
        import numpy as np
        import softmax_ext as sx
        rng = np.random.default_rng(0)
        N, D, K = 4096, 256, 65536
        x = rng.standard_normal((N, D), dtype=np.float32)
        W = rng.standard_normal((K, D), dtype=np.float32) * 0.05
        y = rng.integers(0, K, N)
        loss, (dx, dW, db) = sx.linear_cross_entropy(x, W, y)
        assert np.isfinite(loss) and dW.shape == (K, D) and db is None
        # VmHWM: this process image's own peak (ru_maxrss would carry over
        # the forking parent's peak across exec)
        with open("/proc/self/status") as status:
            print(next(int(line.split()[1]) for line in status if line.startswith("VmHWM")) // 1024)
    """)
    package_parent = os.path.dirname(os.path.dirname(sx.__file__))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                            env=dict(os.environ, PYTHONPATH=package_parent), cwd=os.path.dirname(__file__))
    peak_mib = int(result.stdout.strip())
    assert peak_mib < 500, f"peak RSS {peak_mib} MiB"


def test_linear_cross_entropy_float32_against_float64_reference(rng):
    x, W, b, y = _linear_problem(rng, N=300, D=32, K=500)
    want_loss, (want_dx, want_dW, want_db) = sx.linear_cross_entropy(x, W, y, b)
    loss, (dx, dW, db) = sx.linear_cross_entropy(x.astype(np.float32), W.astype(np.float32), y,
                                                  b.astype(np.float32), chunk_size=64)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    for got, want in ((dx, want_dx), (dW, want_dW), (db, want_db)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6 * np.abs(want).max())


# ---- Jacobians and the weight gradient -------------------------------------------


@pytest.mark.parametrize("shape,axis", [((6,), -1), ((4, 6), -1), ((6, 4), 0), ((2, 3, 5), 1)])
def test_softmax_jacobian_matches_closed_form(rng, shape, axis):
    z = rng.standard_normal(shape)
    J = sx.softmax_jacobian(z, axis=axis)
    p = np.moveaxis(ref.softmax(z, axis), axis, -1)
    K = shape[axis]
    assert J.shape == p.shape[:-1] + (K, K)
    for index in np.ndindex(p.shape[:-1]):
        np.testing.assert_allclose(J[index], ref.jacobian(p[index]), rtol=1e-13, atol=1e-16)


def test_softmax_jacobian_by_finite_differences(rng):
    z = rng.standard_normal(5)
    J = sx.softmax_jacobian(z)
    for j in range(5):
        column = central_difference(lambda v: sx.softmax(v)[j], z, 1e-3)  # d p_j / d z_i
        np.testing.assert_allclose(J[j], column, rtol=1e-8, atol=1e-11)


def test_backward_is_jacobian_transpose_times_gradient(rng):
    z = rng.standard_normal((7, 6)).astype(np.float32)
    g = rng.standard_normal((7, 6)).astype(np.float32)
    p = sx.softmax(z)
    J = sx.softmax_jacobian(z)
    np.testing.assert_allclose(sx.softmax_backward(p, g), np.einsum("nji,nj->ni", J, g), rtol=1e-5, atol=1e-7)


def test_weight_jacobian_closed_form_both_ways(rng):
    """sigma_j (delta_ij - sigma_i) x: against the formula, and against finite differences in W."""
    x = rng.standard_normal((3, 4))
    W = rng.standard_normal((5, 4))
    b = rng.standard_normal(5)
    G = sx.softmax_weight_jacobian(x, W, b)
    assert G.shape == (3, 5, 5, 4)
    sigma = ref.softmax(x @ W.T + b)
    formula = np.einsum("nji,nd->njid", np.stack([ref.jacobian(s) for s in sigma]), x)
    np.testing.assert_allclose(G, formula, rtol=1e-13, atol=1e-16)
    for n in range(3):
        for j in range(5):
            numeric = central_difference(lambda V: ref.softmax(x[n] @ V.T + b)[j], W, 1e-3)
            np.testing.assert_allclose(G[n, j], numeric, rtol=1e-8, atol=1e-11)
    single = sx.softmax_weight_jacobian(x[1], W, b)
    np.testing.assert_allclose(single, G[1], rtol=1e-15)


def test_weight_jacobian_contracted_equals_weight_grad_of_vjp(rng):
    x = rng.standard_normal((6, 3))
    W = rng.standard_normal((4, 3))
    g = rng.standard_normal((6, 4))  # dL/dsigma
    G = sx.softmax_weight_jacobian(x, W)
    dW_contracted = np.einsum("nj,njid->id", g, G)
    sigma = sx.softmax(x @ W.T)
    dW, db = sx.weight_grad(x, sx.softmax_backward(sigma, g))
    np.testing.assert_allclose(dW, dW_contracted, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(db, sx.softmax_backward(sigma, g).sum(axis=0), rtol=1e-15)


def test_weight_grad_shapes_and_errors(rng):
    x, d = rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    dW, db = sx.weight_grad(x, d)
    np.testing.assert_allclose(dW, d.T @ x, rtol=1e-15)
    np.testing.assert_allclose(db, d.sum(axis=0), rtol=1e-15)
    dW1, db1 = sx.weight_grad(x[0], d[0])
    np.testing.assert_allclose(dW1, np.outer(d[0], x[0]), rtol=1e-15)
    with pytest.raises(ValueError):
        sx.weight_grad(x, d[:4])
    with pytest.raises(ValueError):
        sx.softmax_weight_jacobian(x, np.ones((4, 2)))


@pytest.fixture
def tiny_chunk_budget(monkeypatch):
    """Make every problem 'very wide': classes are processed in blocks."""
    from softmax_ext import _linear

    monkeypatch.setattr(_linear, "CHUNK_BYTES", 4096)


@pytest.mark.parametrize("kind", ["index", "probs"])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("chunk_size", [None, 7, 20])
def test_class_blocks_online_logsumexp_match_whole_rows(rng, kind, weighted, smoothing, reduction,
                                                        chunk_size, monkeypatch):
    from softmax_ext import _linear

    x, W, b, y = _linear_problem(rng, N=50, D=8, K=40)
    target = y if kind == "index" else rng.dirichlet(np.ones(40), 50)
    options = dict(weight=rng.uniform(0.5, 1.5, 40) if weighted else None, label_smoothing=smoothing,
                   reduction=reduction)
    want_loss, want_grads = sx.linear_cross_entropy(x, W, target, b, **options)
    monkeypatch.setattr(_linear, "CHUNK_BYTES", 4096)  # 40 classes * 8 bytes * 20 rows > 4096
    loss, grads = sx.linear_cross_entropy(x, W, target, b, chunk_size=chunk_size, **options)
    np.testing.assert_allclose(loss, want_loss, rtol=1e-12, atol=1e-14)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-14)
    loss_only = sx.linear_cross_entropy(x, W, target, b, return_grad=False, chunk_size=chunk_size,
                                        **options)
    np.testing.assert_allclose(loss_only, loss, rtol=1e-13)


def test_class_blocks_keep_huge_logits_and_nan(rng, tiny_chunk_budget):
    x = np.array([[1.0], [1.0]], np.float32)
    W = np.linspace(1e8, 1e8 + 64, 40, dtype=np.float32)[:, None]  # logits 1e8-scale, 40 classes
    y = np.array([3, 39])
    z = (x @ W.T).astype(np.float64)
    want = sx.cross_entropy(z - z.max(axis=1, keepdims=True), y, label_smoothing=0.1, reduction="none")
    loss = sx.linear_cross_entropy(x, W, y, label_smoothing=0.1, reduction="none", return_grad=False)
    np.testing.assert_allclose(loss, want, rtol=1e-5)
    x_nan = np.array([[np.nan], [1.0]])
    loss = sx.linear_cross_entropy(x_nan, np.ones((40, 1)), [0, 1], reduction="none", return_grad=False)
    assert np.isnan(loss[0]) and np.isfinite(loss[1])


@pytest.mark.parametrize("wide", [False, True])
def test_linear_cross_entropy_does_not_depend_on_threads(rng, wide, monkeypatch):
    from softmax_ext import _linear, _threads

    if wide:
        monkeypatch.setattr(_linear, "CHUNK_BYTES", 64 * 1024)  # blocks of classes too
    N, D, K, rows = 400, 8, 300, 400
    assert _threads.resolve_num_threads(3, rows * K) == 3  # enough work for 3 workers
    x, W, b, y = (a.astype(np.float32) if a.dtype.kind == "f" else a
                  for a in _linear_problem(rng, N=N, D=D, K=K))
    first_loss, first_grads = sx.linear_cross_entropy(x, W, y, b, chunk_size=rows, num_threads=1)
    for threads in (2, 3):
        loss, grads = sx.linear_cross_entropy(x, W, y, b, chunk_size=rows, num_threads=threads)
        np.testing.assert_allclose(loss, first_loss, rtol=1e-6)
        for got, want in zip(grads, first_grads):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("K", [9, 50])
def test_cross_entropy_accepts_every_layout(rng, K):
    from layouts import LAYOUTS, in_layout

    z, y, _, w = _problem(rng, N=40, K=K)
    want_loss, want_grad = sx.cross_entropy(z, y, weight=w, return_grad=True)
    for layout in LAYOUTS:
        loss, grad = sx.cross_entropy(in_layout(z, layout), y, weight=w, return_grad=True)
        assert loss == want_loss, layout
        np.testing.assert_array_equal(grad, want_grad)
