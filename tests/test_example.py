"""Smoke test of examples/softmax_regression.py (needs scikit-learn's bundled digits)."""

import importlib.util
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "softmax_regression.py"


def test_softmax_regression_learns_digits():
    pytest.importorskip("sklearn")
    spec = importlib.util.spec_from_file_location("softmax_regression", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    losses, accuracy = example.train(epochs=6, verbose=False)
    assert losses[-1] < losses[0] < 2.31  # below log(10) from the first epoch on, and falling
    assert accuracy > 0.9
