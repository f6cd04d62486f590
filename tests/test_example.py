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


def test_without_scikit_learn_the_example_says_what_to_install(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_sklearn(name, *args, **kwargs):
        if name == "sklearn" or name.startswith("sklearn."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    spec = importlib.util.spec_from_file_location("softmax_regression", EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    monkeypatch.setattr(builtins, "__import__", no_sklearn)
    with pytest.raises(ImportError, match=r"softmax_ext\[examples\]"):
        example.train(epochs=1, verbose=False)
