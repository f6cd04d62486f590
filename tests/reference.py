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
