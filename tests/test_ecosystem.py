"""Ecosystem: gpulog.patch() for code written against torch's writer; the CLI; the README guide."""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

import gpulog
from gpulog._reduce._backend import native
from tbcompare import accumulate


def _run(code: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=180, cwd=cwd)


def test_patch_makes_torch_writer_resolve_to_gpulog_lightning_path(tmp_path):
    r = _run(f"""
        import gpulog
        gpulog.patch()
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams
        assert SummaryWriter is gpulog.SummaryWriter
        w = SummaryWriter({str(tmp_path)!r})
        w.add_scalar("loss", 0.5, 1)
        exp, ssi, sei = hparams({{"lr": 0.1}}, {{"hp/metric": 0}})
        fw = w._get_file_writer()           # PyTorch Lightning's path
        fw.add_summary(exp); fw.add_summary(ssi); fw.add_summary(sei)
        w.close()
        gpulog.unpatch()
        import torch.utils.tensorboard as tb
        assert tb.SummaryWriter is not gpulog.SummaryWriter
        print("ok")
    """)
    assert r.stdout.strip() == "ok", r.stderr
    acc = accumulate(tmp_path)
    assert acc.Scalars("loss")[0].value == 0.5
    assert set(acc.PluginTagToContent("hparams")) == {"_hparams_/experiment", "_hparams_/session_start_info",
                                                      "_hparams_/session_end_info"}


def test_patch_without_tensorboard_installed():
    r = _run("""
        import sys
        for name in ("tensorboard", "torch.utils.tensorboard"):
            sys.modules[name] = None      # simulate a missing package
        import gpulog
        sys.modules.pop("torch.utils.tensorboard")
        gpulog.patch()
        from torch.utils.tensorboard import SummaryWriter
        print(SummaryWriter is gpulog.SummaryWriter)
    """)
    assert r.stdout.strip() == "True", r.stderr


def test_inspect_cli(tmp_path):
    with gpulog.SummaryWriter(tmp_path) as w:
        for i in range(3):
            w.add_scalar("loss", 1.0 / (i + 1), i)
        w.add_histogram("h", [1.0, 2.0], 2)
        w.add_scalars("grp", {"a": 1.0}, 0)
    r = subprocess.run(["gpulog", "inspect", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:3] == ["run", "tag", "kind"]
    row = next(line.split() for line in lines if " loss " in f" {line} ")
    assert row == [".", "loss", "scalar", "3", "2", "0.333333"]
    assert any(line.split()[:3] == [".", "h", "histogram"] for line in lines)
    assert any(line.startswith("grp_a") for line in lines)
    bad = subprocess.run(["gpulog", "inspect", str(tmp_path / "missing")], capture_output=True, text=True)
    assert bad.returncode == 2 and "not a directory" in bad.stderr


def test_demo_runs_and_logs_every_kind(tmp_path):
    r = subprocess.run(["gpulog", "demo", "--logdir", str(tmp_path / "demo"), "--steps", "30"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "tensorboard --logdir" in r.stdout
    acc = accumulate(tmp_path / "demo")
    tags = acc.Tags()
    assert {"loss", "accuracy"} <= set(tags["scalars"])
    assert tags["histograms"] and tags["images"] and tags["audio"]
    assert any(t.endswith("_VERTEX") for t in tags["tensors"]) and "pr" in tags["tensors"]
    assert (tmp_path / "demo" / "projector_config.pbtxt").exists()
    assert any(t.startswith("system/host/") for t in tags["scalars"])


@pytest.mark.slow
def test_bench_cli_runs_quick_scalars(tmp_path):
    out = tmp_path / "bench.json"
    r = subprocess.run(["gpulog", "bench", "--quick", "--only", "scalars", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "| scalar.float.caller_us |" in r.stdout
    import json
    rows = json.loads(out.read_text())["rows"]
    assert {row["writer"] for row in rows} >= {"gpulog", "torch"}


@pytest.mark.slow
def test_bench_work_compares_each_reduction_path_with_one_read(tmp_path):
    out = tmp_path / "work.json"
    r = subprocess.run(["gpulog", "bench", "--quick", "--only", "work", "--device", "cpu", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    import json
    rows = {row["figure"]: row["value"] for row in json.loads(out.read_text())["rows"]}
    assert rows["histogram.2M.one_read"] > 0
    for path in ("torch_ops",) + (("native",) if native() is not None else ()):
        # every timed path computed numpy's histogram of the benchmark data, exactly
        assert rows[f"histogram.2M.work.{path}.exact"] == 1.0, path
        assert rows[f"histogram.2M.work.{path}"] > 0


def test_inspect_new_style_graph_only_json_csv_and_closed_pipe(tmp_path):
    import csv
    import io
    import json
    import torch
    with gpulog.SummaryWriter(tmp_path / "a") as w:
        w.add_scalar("ns", 0.25, 7, new_style=True)
    from torch.utils.tensorboard import SummaryWriter as TorchWriter
    tw = TorchWriter(str(tmp_path / "graph_only"))
    tw.add_graph(torch.nn.Linear(3, 2), torch.randn(1, 3))
    tw.close()
    r = subprocess.run(["gpulog", "inspect", "--json", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    rows = {(x["run"], x["tag"]): x for x in json.loads(r.stdout)}
    assert rows[("a", "ns")]["kind"] == "scalar" and rows[("a", "ns")]["last_value"] == "0.25"
    assert rows[("graph_only", "(graph)")]["kind"] == "graph"
    r = subprocess.run(["gpulog", "inspect", "--csv", str(tmp_path)], capture_output=True, text=True, timeout=60)
    table = list(csv.DictReader(io.StringIO(r.stdout)))
    assert {"run", "tag", "kind", "count", "last_step", "last_value"} == set(table[0])
    with gpulog.SummaryWriter(tmp_path / "many") as w:
        for i in range(300):
            w.add_scalar(f"t{i}", 1.0, 0)
    r = subprocess.run(f"gpulog inspect {tmp_path} | head -2", shell=True, capture_output=True, text=True,
                       timeout=60)
    assert len(r.stdout.splitlines()) == 2 and "Traceback" not in r.stderr and "BrokenPipe" not in r.stderr


@pytest.mark.slow
def test_patch_covers_tensorboardx_and_spawned_children(tmp_path):
    r = _run(f"""
        import multiprocessing as mp, sys
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        import gpulog
        gpulog.patch()
        import tensorboardX
        assert tensorboardX.SummaryWriter is gpulog.SummaryWriter
        import spawn_child
        if __name__ == "__main__":
            p = mp.get_context("spawn").Process(target=spawn_child.child, args=({str(tmp_path)!r},))
            p.start(); p.join(120)
            print("exit", p.exitcode)
    """)
    assert "exit 0" in r.stdout, r.stderr[-3000:]
    from gpulog.reader import read_scalars
    assert read_scalars(tmp_path)["from_child"] == [(0, 1.0)]
