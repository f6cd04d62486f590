"""Smoke tests of the examples: softmax_regression.py (needs scikit-learn's bundled digits) and dask_training.py (needs dask)."""

import importlib.util
from pathlib import Path

import numpy as np
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


DASK_EXAMPLE = EXAMPLE.parent / "dask_training.py"


def test_dask_training_learns_on_a_local_cluster(kept_environ):
    pytest.importorskip("distributed")
    spec = importlib.util.spec_from_file_location("dask_training", DASK_EXAMPLE)
    example = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(example)
    result = example.train(rows=20_000, features=16, chunk_rows=2_000, epochs=8, verbose=False)
    losses = result["losses"]
    assert abs(losses[0] - np.log(10)) < 1e-6  # W = 0: uniform predictions
    assert all(later < earlier for earlier, later in zip(losses, losses[1:]))
    # close to the hidden model's own accuracy on the held-out rows, far above chance
    assert result["accuracy"] > max(0.3, result["hidden_model_accuracy"] - 0.05)
