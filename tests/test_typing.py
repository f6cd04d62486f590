"""The public API's types: user code that unpacks the results as the
docstrings describe passes ``mypy --strict`` (mypy is in the test extra)."""

import os
import subprocess
import sys

import pytest

import softmax_ext as sx

pytest.importorskip("mypy")

HERE = os.path.dirname(__file__)


def test_user_code_passes_mypy_strict(tmp_path):
    package_parent = os.path.dirname(os.path.dirname(sx.__file__))
    env = dict(os.environ)
    if os.path.basename(package_parent) not in ("site-packages", "dist-packages"):
        env["MYPYPATH"] = package_parent  # an in-place build; mypy finds installed ones itself
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--follow-imports=silent",
         "--cache-dir", str(tmp_path), os.path.join(HERE, "typing", "user_code.py")],
        capture_output=True, text=True, env=env,
        cwd=str(tmp_path),
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_signatures_show_no_private_aliases():
    import inspect

    for name in sx.__all__:
        func = getattr(sx, name)
        if callable(func):
            text = str(inspect.signature(func))
            for alias in ("Axis", "Loss", "Grads", "Reduced"):
                assert f"'{alias}" not in text, (name, text)
