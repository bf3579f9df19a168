"""CUDA-only checks (skipped without a GPU): no device synchronisation inside add_*, and the
value at call time is logged even when the tensor is mutated right after the call."""
from __future__ import annotations

import pytest
import torch

import gpulog
from tbcompare import accumulate

pytestmark = pytest.mark.cuda


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_add_calls_do_not_synchronise(tmp_path, monkeypatch, backend):
    monkeypatch.setenv("GPULOG_BACKEND", backend)  # Triton kernels, then the torch fallback
    d = "cuda"
    x = torch.randn(1 << 20, device=d)
    w = gpulog.SummaryWriter(tmp_path)
    torch.cuda.set_sync_debug_mode("error")
    try:
        w.add_scalar("s", x[0], 1)
        w.add_scalar("s2", x.sum(), 1, new_style=True)
        w.add_histogram("h", x, 1)
        w.add_pr_curve("pr", (x > 0).int(), torch.rand(1 << 20, device=d), 1)
        w.add_image("img", torch.rand(3, 64, 64, device=d), 1)
        w.add_images("imgs", torch.rand(9, 3, 16, 16, device=d), 1)
        w.add_mesh("m", torch.rand(1, 100, 3, device=d), global_step=1)
        w.add_audio("a", torch.rand(1000, device=d) * 2 - 1, 1)
        w.add_video("v", torch.rand(2, 3, 3, 8, 8, device=d), 1)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    w.close()
    acc = accumulate(tmp_path)
    assert acc.Histograms("h")[0].histogram_value.num == 1 << 20


def test_value_at_call_time_on_cuda(tmp_path):
    x = torch.zeros(1 << 16, device="cuda")
    s = torch.zeros((), device="cuda")
    with gpulog.SummaryWriter(tmp_path) as w:
        w.add_histogram("h", x, 1)
        w.add_scalar("s", s, 1)
        x.add_(5.0)
        s.add_(7.0)
    acc = accumulate(tmp_path)
    assert acc.Histograms("h")[0].histogram_value.max == 0.0
    assert acc.Scalars("s")[0].value == 0.0


def test_many_cuda_scalars_share_few_copies(tmp_path):
    from torch.profiler import ProfilerActivity, profile
    xs = torch.arange(100, device="cuda", dtype=torch.float32)
    w = gpulog.SummaryWriter(tmp_path)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(100):
            w.add_scalar(f"s{i % 10}", xs[i], i)
        w.flush()
    w.close()
    copies = [e for e in prof.events() if "Memcpy DtoH" in e.name]
    assert len(copies) <= 2, [e.name for e in copies]
    acc = accumulate(tmp_path)
    assert [e.value for e in acc.Scalars("s3")] == [float(i) for i in range(3, 100, 10)]


def test_side_stream_values_are_right(tmp_path):
    side = torch.cuda.Stream()
    w = gpulog.SummaryWriter(tmp_path)
    with torch.cuda.stream(side):
        x = torch.full((1 << 20,), 2.0, device="cuda")
        w.add_scalar("side", x.sum(), 1)
        w.add_histogram("h", x, 1)
    w.add_scalar("main", torch.ones((), device="cuda"), 1)
    w.close()
    acc = accumulate(tmp_path)
    assert acc.Scalars("side")[0].value == 2.0 * (1 << 20)
    assert acc.Histograms("h")[0].histogram_value.min == 2.0
    assert acc.Scalars("main")[0].value == 1.0


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_histograms_right_on_two_streams_from_the_first_call(tmp_path, monkeypatch, backend):
    """Each stream reads a cell table whose upload was queued on that stream."""
    from gpulog._reduce import histogram as red
    monkeypatch.setenv("GPULOG_BACKEND", backend)
    red._device_cell_table.cache_clear()
    side = torch.cuda.Stream()
    x = torch.randn(1 << 22, device="cuda")
    torch.cuda.synchronize()
    w = gpulog.SummaryWriter(tmp_path)
    with torch.cuda.stream(side):
        w.add_histogram("side", x, 1)
    w.add_histogram("main", x, 1)
    w.add_histogram("cpu", x.cpu(), 1)  # the CPU path, checked against numpy elsewhere
    w.close()
    acc = accumulate(tmp_path)
    want = acc.Histograms("cpu")[0].histogram_value
    assert sum(want.bucket) == x.numel()
    for tag in ("side", "main"):
        h = acc.Histograms(tag)[0].histogram_value
        assert list(h.bucket) == list(want.bucket) and list(h.bucket_limit) == list(want.bucket_limit)
        assert (h.min, h.max) == (want.min, want.max)
    assert red._device_cell_table.cache_info().currsize == 2


def test_first_calls_in_a_fresh_process_do_not_synchronise(tmp_path):
    """Caches (cell tables, kernels, pinned pools) are cold in a new process: no sync there either."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent(f"""
        import torch, gpulog
        w = gpulog.SummaryWriter({str(tmp_path)!r})
        x = torch.randn(1 << 16, device="cuda")
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        w.add_scalar("s", x[0], 1)
        w.add_histogram("h", x, 1)
        w.add_histogram("hi", (x * 10).int(), 1)
        w.add_pr_curve("pr", (x > 0).int(), torch.rand(1 << 16, device="cuda"), 1, weights=torch.ones(1 << 16))
        w.add_image("i", torch.rand(3, 8, 8, device="cuda"), 1)
        torch.cuda.set_sync_debug_mode("default")
        w.close()
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.stdout.strip().endswith("ok"), r.stderr[-3000:]
