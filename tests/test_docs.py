"""The examples in the public docstrings run and print what they show."""

import doctest

from softmax_ext import _core


def test_docstring_examples():
    result = doctest.testmod(_core, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted >= 3
    assert result.failed == 0
