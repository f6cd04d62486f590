"""Types: the package passes ``mypy --strict``, its stubs agree with the
compiled module (``mypy.stubtest``), and user code that unpacks the results as
the docstrings describe passes ``mypy --strict`` (mypy is in the test extra)."""

import os
import subprocess
import sys

import pytest

import softmax_ext as sx

pytest.importorskip("mypy")

HERE = os.path.dirname(__file__)
PACKAGE_PARENT = os.path.dirname(os.path.dirname(sx.__file__))


def run_mypy(module, args, tmp_path):
    """`python -m <module> <args>` from outside the source tree, seeing the
    softmax_ext this test imports; a non-zero exit fails with mypy's report."""
    env = dict(os.environ, PYTHONPATH=PACKAGE_PARENT)
    if os.path.basename(PACKAGE_PARENT) not in ("site-packages", "dist-packages"):
        env["MYPYPATH"] = PACKAGE_PARENT  # an in-place build; mypy finds installed ones itself
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True,
                            env=env, cwd=str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


def test_user_code_passes_mypy_strict(tmp_path):
    run_mypy("mypy", ["--strict", "--follow-imports=silent", "--cache-dir", str(tmp_path),
                      os.path.join(HERE, "typing", "user_code.py")], tmp_path)


def test_package_passes_mypy_strict(tmp_path):
    run_mypy("mypy", ["--strict", "--cache-dir", str(tmp_path), "-p", "softmax_ext"], tmp_path)


def test_stubs_agree_with_the_runtime(tmp_path):
    run_mypy("mypy.stubtest", ["softmax_ext", "--allowlist",
                               os.path.join(HERE, "stubtest_allowlist.txt")], tmp_path)


def test_signatures_show_no_private_aliases():
    import inspect

    for name in sx.__all__:
        func = getattr(sx, name)
        if callable(func):
            text = str(inspect.signature(func))
            for alias in ("Axis", "Loss", "Grads", "Reduced"):
                assert f"'{alias}" not in text, (name, text)
