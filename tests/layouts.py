"""The same values in every memory layout the API must accept."""

import numpy as np

LAYOUTS = ["C", "F", "strided", "sliced_rows", "negative", "readonly", "unaligned"]


def in_layout(values, layout):
    """An array equal to `values` (C-contiguous) laid out as `layout`."""
    values = np.ascontiguousarray(values)
    if layout == "C":
        return values.copy()
    if layout == "F":
        return np.asfortranarray(values)
    if layout == "strided":  # every axis strided: no contiguous axis at all
        big = np.zeros(tuple(2 * n for n in values.shape), values.dtype)
        view = big[tuple(slice(None, None, 2) for _ in values.shape)]
        view[...] = values
        return view
    if layout == "sliced_rows":  # only the first axis strided
        big = np.zeros((2 * values.shape[0],) + values.shape[1:], values.dtype)
        view = big[::2]
        view[...] = values
        return view
    if layout == "negative":
        flipped = np.flip(values).copy()
        return np.flip(flipped)
    if layout == "readonly":
        ro = values.copy()
        ro.setflags(write=False)
        return ro
    if layout == "unaligned":
        raw = np.zeros(values.nbytes + 1, np.uint8)
        view = np.frombuffer(raw.data, values.dtype, values.size, offset=1).reshape(values.shape)
        view[...] = values
        assert not view.flags.aligned or values.itemsize == 1
        return view
    raise ValueError(layout)
