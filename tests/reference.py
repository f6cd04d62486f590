"""Plain-numpy references, written for clarity rather than speed.

Everything is computed in float64 from the values given, along `axis` (None:
the whole array as one distribution).
"""

import numpy as np


def _along(x, axis):
    """x in float64 and the axis to reduce over (flattened for axis=None)."""
    x = np.asarray(x, dtype=np.float64)
    if axis is None:
        return x.reshape(-1), 0
    return x, axis


def softmax(x, axis=-1):
    shape = np.shape(x)
    x, axis = _along(x, axis)
    shifted = x - x.max(axis=axis, keepdims=True)
    e = np.exp(shifted)
    return (e / e.sum(axis=axis, keepdims=True)).reshape(shape)


def log_softmax(x, axis=-1):
    shape = np.shape(x)
    x, axis = _along(x, axis)
    shifted = x - x.max(axis=axis, keepdims=True)
    return (shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))).reshape(shape)


def logsumexp(x, axis=-1):
    x, axis = _along(x, axis)
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def jacobian(p):
    """J[j, i] = d p_j / d z_i = p_j (delta_ij - p_i) for one distribution p."""
    p = np.asarray(p, dtype=np.float64)
    return np.diag(p) - np.outer(p, p)


def softmax_backward(p, g, axis=-1):
    """J^T g along axis, from the explicit Jacobian of every slice."""
    shape = np.shape(p)
    p, axis = _along(p, axis)
    g = np.asarray(g, dtype=np.float64).reshape(p.shape)
    p_moved, g_moved = np.moveaxis(p, axis, -1), np.moveaxis(g, axis, -1)
    result = np.empty_like(p_moved)
    for index in np.ndindex(p_moved.shape[:-1]):
        result[index] = jacobian(p_moved[index]).T @ g_moved[index]
    return np.moveaxis(result, -1, axis).reshape(shape)


def log_softmax_backward(logp, g, axis=-1):
    """d/dz of sum(g * log_softmax(z)): g_i - p_i sum_j g_j."""
    shape = np.shape(logp)
    logp, axis = _along(logp, axis)
    g = np.asarray(g, dtype=np.float64).reshape(logp.shape)
    return (g - np.exp(logp) * g.sum(axis=axis, keepdims=True)).reshape(shape)


BY_NAME = {f.__name__: f for f in (softmax, log_softmax, logsumexp, softmax_backward,
                                    log_softmax_backward)}


def merged(func_name, x, axes, *extra):
    """The reference `func_name` over `axes` of x taken as one axis: move
    them last, flatten them into one, apply along -1, and undo the move."""
    x = np.asarray(x, np.float64)
    axes = tuple(range(x.ndim)) if axes is None else axes
    axes = tuple(sorted(a % x.ndim for a in ((axes,) if isinstance(axes, int) else axes)))
    kept = [a for a in range(x.ndim) if a not in axes]
    moved = [np.moveaxis(v, axes, range(x.ndim - len(axes), x.ndim)) for v in (x,) + extra]
    flat = [v.reshape(v.shape[: len(kept)] + (-1,)) for v in moved]
    result = BY_NAME[func_name](*flat, axis=-1)
    if func_name == "logsumexp":
        return result.reshape([x.shape[a] for a in kept])
    return np.moveaxis(result.reshape(moved[0].shape), range(x.ndim - len(axes), x.ndim), axes)


def cross_entropy(logits, target, weight=None, ignore_index=-100, label_smoothing=0.0,
                  reduction="mean"):
    """torch.nn.functional.cross_entropy, spelled out in float64 numpy.

    Returns (loss, per-row coefficient matrix c) where loss_n = -sum_k c[n, k] log p[n, k].
    """
    z = np.asarray(logits, dtype=np.float64)
    N, K = z.shape
    logp = log_softmax(z, axis=1)
    w = np.ones(K) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = label_smoothing
    t = np.asarray(target)
    c = np.zeros((N, K))
    if t.dtype.kind in "iu":
        kept = t != ignore_index
        for n in range(N):
            if kept[n]:
                c[n] = eps / K * w
                c[n, t[n]] += (1 - eps) * w[t[n]]
        denominator = sum(w[t[n]] for n in range(N) if kept[n])
    else:
        smoothed = (1 - eps) * t.astype(np.float64) + eps / K
        c = smoothed * w
        denominator = N
    rows = -(c * logp).sum(axis=1)
    if reduction == "none":
        return rows, c
    if reduction == "sum":
        return rows.sum(), c
    return (rows.sum() / denominator if denominator else np.nan), c
