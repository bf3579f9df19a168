"""Packaging: kernels ship as gpulog.kernels only; the host side never imports torch."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

import pytest

import gpulog

PKG = pathlib.Path(gpulog.__file__).parent
HOST_SIDE = ["_proto", "_encode", "_record.py", "_crc32c.py", "_handoff.py", "_worker.py", "reader.py",
             "_item.py", "_nonfinite.py", "_registry.py", "_lifecycle.py", "cli.py"]


def test_gpulog_kernels_imports_and_top_level_kernels_does_not():
    import gpulog.kernels
    assert gpulog.kernels.__name__ == "gpulog.kernels"
    r = subprocess.run([sys.executable, "-c", "import kernels"], capture_output=True, text=True,
                       cwd="/")
    assert r.returncode != 0 and ("ModuleNotFoundError" in r.stderr or "ImportError" in r.stderr)


def _imports(path: pathlib.Path) -> set:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("part", HOST_SIDE)
def test_host_side_never_imports_torch(part):
    p = PKG / part
    files = sorted(p.rglob("*.py")) if p.is_dir() else [p]
    for f in files:
        assert not _imports(f) & {"torch", "triton"}, f"{f} imports torch/triton"


def test_host_side_runs_without_torch():
    code = ("import sys; sys.modules['torch'] = None\n"
            "import gpulog._worker, gpulog.reader, gpulog._encode.histogram, gpulog._encode.image\n"
            "print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.stdout.strip() == "ok", r.stderr
