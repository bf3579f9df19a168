"""The package type-checks (mypy, configured in pyproject.toml)."""
from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a separate tier: pytest -m 'not slow' skips it


def test_mypy_is_clean():
    pytest.importorskip("mypy")
    root = pathlib.Path(__file__).parents[1]
    r = subprocess.run([sys.executable, "-m", "mypy", "--config-file", str(root / "pyproject.toml")],
                       capture_output=True, text=True, cwd=root, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
