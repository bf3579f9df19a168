"""Real frameworks on tiny CPU models, logging through torch's writer and through gpulog
(``gpulog.patch()``): the logs read back the same in TensorBoard, graphs included."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tbcompare import accumulate, assert_same, run_snapshots

pytestmark = pytest.mark.slow  # a separate tier: pytest -m 'not slow' skips it

HERE = os.path.dirname(os.path.abspath(__file__))
# Values that measure the run's own speed differ between any two runs.
TIMING = ("train_runtime", "samples_per_second", "steps_per_second")


def _run(tmp_path, framework: str, gpulog: bool, *extra: str) -> str:
    cwd = tmp_path / ("gpulog" if gpulog else "torch")
    cwd.mkdir()
    cmd = [sys.executable, os.path.join(HERE, "framework_run.py"), framework, "logs", *extra]
    env = dict(os.environ, PYTHONPATH=HERE, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    env.pop("GPULOG_PATCH", None)
    r = subprocess.run(cmd + (["--gpulog"] if gpulog else []), cwd=cwd, capture_output=True, text=True,
                       timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    writer = [line for line in r.stdout.splitlines() if line.startswith("writer:")][-1]
    assert ("gpulog" in writer) == gpulog, writer
    return str(cwd / "logs")


def _runs(logdir: str):
    """Run snapshots, with add_hparams' time-stamped sub-run names made comparable."""
    import re
    return {re.sub(r"\d{9,}\.\d+$", "<time>", run): snap for run, snap in run_snapshots(logdir).items()}


def _same_logs(want: str, got: str) -> None:
    a, b = _runs(want), _runs(got)
    assert a.keys() == b.keys() and a
    for run in a:
        x = {k: v for k, v in a[run].items() if not k.endswith(TIMING)}
        y = {k: v for k, v in b[run].items() if not k.endswith(TIMING)}
        assert_same(x, y)
        assert a[run].keys() == b[run].keys()


def _installed(name: str) -> None:
    pytest.importorskip(name)


def test_lightning_with_log_graph(tmp_path):
    _installed("lightning")
    want, got = _run(tmp_path, "lightning", False), _run(tmp_path, "lightning", True)
    _same_logs(want, got)
    ga, gb = accumulate(os.path.join(want, "run")).Graph(), accumulate(os.path.join(got, "run")).Graph()
    assert len(ga.node) > 5 and ga == gb  # Lightning's log_graph=True: torch's graph, node for node


def test_hf_trainer_report_to_tensorboard(tmp_path):
    _installed("transformers")
    _installed("accelerate")
    _same_logs(_run(tmp_path, "hf", False), _run(tmp_path, "hf", True))


def test_ignite_with_tensorboardx_installed(tmp_path):
    """ignite's TensorboardLogger prefers tensorboardX when it is installed: patch() covers it."""
    _installed("ignite")
    _installed("tensorboardX")
    _same_logs(_run(tmp_path, "ignite", False), _run(tmp_path, "ignite", True))


def test_accelerate_log_with_tensorboard(tmp_path):
    _installed("accelerate")
    _same_logs(_run(tmp_path, "accelerate", False), _run(tmp_path, "accelerate", True))


@pytest.mark.parametrize("framework", ["lightning", "hf", "accelerate"])
def test_watch_under_a_framework_logs_every_other_optimizer_step(tmp_path, framework):
    """Issue #20: ``watch(model)`` with the framework's loop unchanged: the global optimizer
    hook finds the framework's optimizer (Lightning's, the HF Trainer's accelerate-wrapped one),
    and the gradient norms equal numpy's, taken in a step pre-hook of the test's own."""
    import json
    _installed({"hf": "transformers"}.get(framework, framework))
    logs = _run(tmp_path, framework, True, "--watch")
    cwd = os.path.dirname(logs)
    oracle = json.load(open(os.path.join(cwd, "watch_oracle.json")))
    assert len(oracle) >= 6
    acc = accumulate(os.path.join(cwd, "watch"))
    for name in oracle[0]:
        events = acc.Scalars(f"grad_norm/{name}")
        assert [e.step for e in events] == list(range(0, len(oracle), 2))
        for e in events:
            assert e.value == pytest.approx(oracle[e.step][name], rel=1e-6), (name, e.step)
