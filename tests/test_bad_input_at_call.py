"""Inputs that used to pass the call and fail on the writer thread (costing a later, unrelated call
its value) now fail at the call, naming the argument; numpy numbers work wherever Python's do."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import gpulog
from gpulog.reader import read_scalars
from tbcompare import accumulate

IMG = torch.rand(3, 32, 32)
BOX = torch.tensor([[1.0, 1.0, 10.0, 10.0]])

BAD = [
    ("rescale", lambda w: w.add_image_with_boxes("b", IMG, BOX, 0, rescale=0.01)),
    ("labels", lambda w: w.add_image_with_boxes("b", IMG, BOX, 0, labels=[7])),
    ("fps", lambda w: w.add_video("v", torch.rand(1, 2, 3, 8, 8), 0, fps=1e-9)),
    ("sample_rate", lambda w: w.add_audio("a", torch.rand(100), 0, sample_rate=5e9)),
    ("tag", lambda w: w.add_embedding(torch.rand(4, 3), tag="t" * 300)),
    ("text_string", lambda w: w.add_text("t", "bad \ud800 surrogate", 0)),
    ("tag", lambda w: w.add_scalar("bad\udc80tag", 1.0, 0)),
    ("scalar_value", lambda w: w.add_scalar("big", 10**400, 0)),
    ("scalar_value", lambda w: w.add_scalar("meta", torch.empty((), device="meta"), 0)),
    ("global_step", lambda w: w.add_scalar("s", 1.0, "five")),
]


@pytest.mark.parametrize("name,call", BAD, ids=[f"{i}-{n}" for i, (n, _) in enumerate(BAD)])
def test_rejected_at_the_call_and_nothing_else_lost(tmp_path, name, call):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing may go wrong later on the writer thread
        with gpulog.SummaryWriter(tmp_path) as w:
            w.add_scalar("before", 1.0, 0)
            with pytest.raises((ValueError, TypeError), match=name):
                call(w)
            w.add_scalar("after", 2.0, 1)
    s = read_scalars(tmp_path)
    assert s["before"] == [(0, 1.0)] and s["after"] == [(1, 2.0)]


def test_big_endian_arrays_are_logged(tmp_path):
    x = np.linspace(-1, 1, 100).astype(">f4")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with gpulog.SummaryWriter(tmp_path) as w:
            w.add_histogram("h", x, 0)
            w.add_image("i", np.ones((3, 4, 4), dtype=">f8"), 0)
            w.add_scalar("s", np.array(2.5, dtype=">f8"), 0)
    acc = accumulate(tmp_path)
    assert acc.Histograms("h")[0].histogram_value.num == 100
    assert acc.Scalars("s")[0].value == 2.5


def test_numpy_numbers_where_python_numbers_work(tmp_path):
    with gpulog.SummaryWriter(tmp_path, max_queue=np.int64(5), flush_secs=np.float32(30)) as w:
        w.add_video("v", torch.rand(1, 2, 3, 8, 8), 0, fps=np.int64(4))
        w.add_audio("a", torch.rand(100) - 0.5, 0, sample_rate=np.int32(8000))
        w.add_image_with_boxes("b", IMG, BOX, 0, rescale=np.float64(2.0))
        w.add_scalar("s", 1.0, "5")                              # torch takes int(global_step)
        w.add_pr_curve("pr", np.array([0, 1, 1, 0]), np.array([0, 1, 1, 1]), 0)  # integer predictions
    acc = accumulate(tmp_path)
    assert acc.Scalars("s")[0].step == 5
    assert len(acc.Tensors("pr")) == 1 and len(acc.Audio("a")) == 1 and len(acc.Images("v")) == 1


@pytest.mark.parametrize("bad", ["empty-file", "fd-number", "not-onnx"])
def test_add_onnx_graph_rejects_what_is_not_an_onnx_model(tmp_path, bad):
    """Issue #18.12: an empty .onnx file was accepted (an empty graph written), and
    add_onnx_graph(5) opened file descriptor 5."""
    pytest.importorskip("onnx")
    path = tmp_path / "model.onnx"
    path.write_bytes(b"" if bad == "empty-file" else b"\x08\x07garbage that is no model")
    arg = 5 if bad == "fd-number" else str(path)
    with gpulog.SummaryWriter(tmp_path / "run") as w:
        w.add_scalar("before", 1.0, 0)
        with pytest.raises((ValueError, TypeError), match="prototxt"):
            w.add_onnx_graph(arg)
        w.add_scalar("after", 2.0, 1)
    assert read_scalars(tmp_path / "run") == {"before": [(0, 1.0)], "after": [(1, 2.0)]}
    assert not any(e.has_graph for e in gpulog.read_events(tmp_path / "run"))


@pytest.mark.parametrize("call", [
    lambda w: w.add_scalar("s", 1.0, 0, reduce="median"),
    lambda w: w.add_scalar("s", torch.tensor(1.0), 0, reduce="avg"),
    lambda w: w.add_scalars("m", {"a": 1.0}, 0, reduce="median"),
])
def test_reduce_is_validated_without_distributed(tmp_path, call):
    """Issue #18.7: reduce= was checked only on a multi-rank job, so a typo passed silently
    until the job ran on several ranks."""
    with gpulog.SummaryWriter(tmp_path) as w:
        with pytest.raises(ValueError, match="reduce"):
            call(w)
        w.add_scalar("after", 2.0, 1)
    assert read_scalars(tmp_path) == {"after": [(1, 2.0)]}
