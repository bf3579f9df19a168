"""Issue #21, the host fast paths: a CPU tensor read with one .item() at the call, and queued scalar
items the cyclic GC stops tracking — with every semantic of the general path kept."""
from __future__ import annotations

import gc
import math
import threading
import time

import numpy as np
import pytest
import torch

import gpulog
from gpulog import _item, _worker
from tbcompare import accumulate


def test_cpu_tensor_scalars_log_what_torchs_writer_logs(tmp_path):
    from torch.utils.tensorboard import SummaryWriter as TorchWriter
    values = [torch.tensor(1.25), torch.tensor(3), torch.tensor(True), torch.tensor([2.5]),
              torch.tensor(7.5, requires_grad=True) * 1, torch.tensor(1e39, dtype=torch.float64),
              torch.tensor(-0.0), torch.tensor(float("nan")), torch.tensor(5, dtype=torch.uint8),
              torch.nn.Parameter(torch.tensor(4.0)), torch.tensor(2.0).half(), torch.tensor(3.0).bfloat16()]
    for name, W in (("g", gpulog.SummaryWriter), ("t", TorchWriter)):
        w = W(str(tmp_path / name))
        for i, v in enumerate(values):
            w.add_scalar("v", v, i)
        w.close()
    a = [e.value for e in accumulate(str(tmp_path / "g")).Scalars("v")]
    b = [e.value for e in accumulate(str(tmp_path / "t")).Scalars("v")]
    assert len(a) == len(b) == len(values)
    assert all((x == y) or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b)), (a, b)


@pytest.mark.parametrize("value,exc,needle", [
    (torch.tensor([1.0, 2.0]), ValueError, "exactly one element"),
    (torch.tensor(1 + 2j), TypeError, "must be real"),
    (torch.empty((), device="meta"), ValueError, "meta"),
])
def test_cpu_tensor_fast_path_keeps_the_errors_at_the_call(tmp_path, value, exc, needle):
    w = gpulog.SummaryWriter(str(tmp_path))
    with pytest.raises(exc, match=needle):
        w.add_scalar("bad", value, 0)
    w.add_scalar("ok", torch.tensor(1.0), 0)
    w.close()
    assert [e.value for e in accumulate(str(tmp_path)).Scalars("ok")] == [1.0]


def test_the_value_is_taken_at_the_call(tmp_path):
    w = gpulog.SummaryWriter(str(tmp_path))
    t = torch.tensor(1.0)
    for i in range(5):
        w.add_scalar("x", t, i)
        t.add_(1)  # mutated right after every call
    w.close()
    assert [e.value for e in accumulate(str(tmp_path)).Scalars("x")] == [1.0, 2.0, 3.0, 4.0, 5.0]


def test_queued_scalar_items_are_not_tracked_by_the_cyclic_gc(tmp_path):
    """The compact item names its sink by number, so the GC untracks it at its first collection
    and the older generations never scan a backlog (they took ~40% of a call with the sink object
    in the tuple: benchmarks/RESULTS.md)."""
    w = gpulog.SummaryWriter(str(tmp_path), max_queue=1000)
    w.flush()
    h = w.file_writer._engine.handoff
    release = threading.Event()
    # hold the writer thread inside an item so the scalars stay queued
    h.put_urgent(_item.Item("files", "test", None, None, 0.0, w.file_writer._sink,
                            lambda: release.wait(10) and None, (), out=_item.FILES))
    time.sleep(0.05)
    for i in range(500):
        w.add_scalar("loss", float(i), i)
    queued = [it for it in list(h.items) if it.__class__ is tuple]
    gc.collect()
    assert queued and not any(gc.is_tracked(it) for it in queued)
    release.set()
    w.close()
    assert [e.step for e in accumulate(str(tmp_path)).Scalars("loss")] == list(range(500))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64,
                                   torch.bool])
def test_add_scalar_batch_logs_what_add_scalar_logs(tmp_path, dtype):
    g = torch.Generator().manual_seed(2)
    values = (torch.randn(7, generator=g) * 100).to(dtype)
    tags = [f"m/{i}" for i in range(7)]
    one, batch = str(tmp_path / "one"), str(tmp_path / "batch")
    w = gpulog.SummaryWriter(one)
    for t, v in zip(tags, values):
        w.add_scalar(t, v, 3)
    w.close()
    w = gpulog.SummaryWriter(batch)
    w.add_scalar_batch(tags, values, 3)
    values.fill_(0)  # the values at the call were taken
    w.close()
    a, b = accumulate(one), accumulate(batch)
    for t in tags:
        assert [(e.step, e.value) for e in a.Scalars(t)] == [(e.step, e.value) for e in b.Scalars(t)]


@pytest.mark.parametrize("tags,values,exc,needle", [
    ("loss", torch.ones(1), TypeError, "tags must be a list"),
    (["a", "b"], torch.ones(3), ValueError, "one element per tag"),
    (["a"], torch.ones(1, 1), ValueError, "1-D"),
    (["a"], torch.ones(1, dtype=torch.complex64), TypeError, "real"),
    (["a", 5], torch.ones(2), TypeError, r"tags\[1\]"),
])
def test_add_scalar_batch_bad_input_at_the_call(tmp_path, tags, values, exc, needle):
    w = gpulog.SummaryWriter(str(tmp_path))
    with pytest.raises(exc, match=needle):
        w.add_scalar_batch(tags, values, 0)
    w.add_scalar_batch(["ok"], [1.5], 0)
    w.close()
    assert [e.value for e in accumulate(str(tmp_path)).Scalars("ok")] == [1.5]
