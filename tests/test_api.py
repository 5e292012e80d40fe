"""The Python API: ``from mnist_cnn import Predictor`` and the examples of docs/python-api.md.

    PYTHONPATH=. .venv/bin/python -m pytest -q tests/test_api.py
"""

from __future__ import annotations

import ast
import doctest
import importlib
import re
import subprocess
import sys

import pytest

import mnist_cnn
from conftest import ROOT

PAGE = ROOT / "docs" / "python-api.md"


def test_the_pages_examples_give_the_output_shown(monkeypatch, capsys):
    """Every ``>>>`` line of docs/python-api.md runs, from the checkout's root, and prints what the page shows."""
    monkeypatch.chdir(ROOT)
    result = doctest.testfile(str(PAGE), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10  # the page's examples were found, not skipped
    assert result.failed == 0, capsys.readouterr().out


def test_the_pages_code_blocks_name_what_exists():
    """The code the page shows without running it (training) compiles, and what it imports exists."""
    blocks = re.findall(r"^```python\n(.*?)^```", PAGE.read_text(), re.S | re.M)
    assert blocks
    for code in blocks:
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom):
                module = importlib.import_module(node.module)
                missing = [a.name for a in node.names if not hasattr(module, a.name)]
                assert not missing, f"{node.module} has no {missing}"


def test_import_mnist_cnn_loads_no_submodule_numpy_or_torch():
    probe = ("import sys, mnist_cnn; print(sorted(m for m in sys.modules "
             "if m.startswith(('mnist_cnn.', 'numpy', 'torch', 'onnxruntime'))))")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr


def test_lazy_names_are_their_modules_own_and_typed_alike():
    for name, module in mnist_cnn.LAZY.items():
        assert getattr(mnist_cnn, name) is getattr(importlib.import_module(module), name)
        assert name in mnist_cnn.__all__ and name in dir(mnist_cnn)
    tree = ast.parse((ROOT / "mnist_cnn" / "__init__.py").read_text())
    typed = {}
    for node in tree.body:
        if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
            typed.update({a.name: imp.module for imp in node.body for a in imp.names})
    assert typed == mnist_cnn.LAZY  # what type checkers see is what __getattr__ gives
    with pytest.raises(ImportError):
        exec("from mnist_cnn import Nothing", {})
