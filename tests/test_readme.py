"""Every code block of README.md runs as written, in order, in one fresh folder.

Python blocks run in fresh interpreters; bash blocks run in bash, except their `pip install ...`
part (that is what CI itself runs: `.ci/run` calls the README's test command verbatim) and the
test command itself (this test is part of it).  Text blocks (no language) are diagrams."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow  # a separate tier: pytest -m 'not slow' skips it

README = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "README.md")


def blocks():
    text = open(README, encoding="utf-8").read()
    return [(m.group(1), m.group(2)) for m in re.finditer(r"```(\w*)\n(.*?)```", text, re.S)]


def test_readme_has_the_two_first_commands():
    (lang0, demo), (lang1, tests) = blocks()[:2]
    assert lang0 == lang1 == "bash"
    assert "gpulog demo" in demo and tests.strip() == "pip install torch==2.13.0 -e '.[test]' && pytest"


def test_every_block_runs_as_written(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    ran = 0
    for i, (lang, code) in enumerate(blocks()):
        if lang == "python":
            cmd = [sys.executable, "-c", code]
        elif lang == "bash":
            code = re.sub(r"pip install [^&\n]*&&\s*", "", code)
            if code.strip() in ("pytest", ""):
                continue
            cmd = ["bash", "-euo", "pipefail", "-c", code.replace("gpulog ", f"{sys.executable} -m gpulog.cli ")]
        else:
            continue
        r = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
        assert r.returncode == 0, f"README block {i} ({lang}) failed:\n{code}\n--- stderr ---\n{r.stderr[-3000:]}"
        ran += 1
    assert ran >= 8
