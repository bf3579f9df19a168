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
    red._DEVICE_TABLES.clear()
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
    assert len(red._DEVICE_TABLES) == 2


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


# -- what set_sync_debug_mode cannot see: a busy stream proves the calls did not wait ------------
def _sleep_cycles_per_second() -> float:
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    torch.cuda._sleep(10_000_000)
    end.record()
    end.synchronize()
    return 10_000_000 / (start.elapsed_time(end) / 1000)


def test_every_call_returns_while_the_stream_is_busy(tmp_path):
    """Queue about a second of GPU work, then make every add_* call of the CPU sync-probe matrix
    on CUDA tensors: the calls must return long before the GPU is done (any wait - event sync,
    pinned allocation, .item(), a compile - would have to outlast the sleep)."""
    from test_sync_probe import CASES
    from gpulog._reduce import _backend
    cases = [(name, case) for name, case in CASES if "embedding" not in name]
    cuda = lambda t: t.cuda()  # noqa: E731
    w = gpulog.SummaryWriter(str(tmp_path / "warm"))
    for _, case in cases:  # first calls: caches, pinned pools, kernel compilation
        case(w, cuda)
    w.close()
    _backend.wait_compiled()
    inputs_ready = torch.cuda.Event()
    cycles = int(_sleep_cycles_per_second())
    w = gpulog.SummaryWriter(str(tmp_path / "busy"))
    torch.cuda.synchronize()
    inputs_ready.record()
    torch.cuda._sleep(cycles)  # ~1 s
    import time
    t0 = time.perf_counter()
    for _, case in cases:
        case(w, cuda)
    elapsed = time.perf_counter() - t0
    still_busy = not torch.cuda.current_stream().query()
    w.close()
    assert still_busy, f"the stream drained during the calls ({elapsed:.3f} s): something waited"
    assert elapsed < 0.5, f"{len(cases)} calls took {elapsed:.3f} s with a 1 s kernel queued"


def test_tensor_from_another_stream_freed_after_the_call(tmp_path):
    """Allocated on a producer stream, logged on the default stream, freed at once: record_stream
    keeps its memory until gpulog's reads finished, so the histogram is the data's."""
    producer = torch.cuda.Stream()
    cycles = int(_sleep_cycles_per_second() * 0.3)
    with torch.cuda.stream(producer):
        x = torch.full((1 << 22,), 3.0, device="cuda")
    torch.cuda.current_stream().wait_stream(producer)
    w = gpulog.SummaryWriter(str(tmp_path))
    torch.cuda._sleep(cycles)  # gpulog's kernels on this stream start late
    w.add_histogram("h", x, 1)
    w.add_scalar("s", x.sum(), 1)
    del x
    with torch.cuda.stream(producer):  # reuses the freed block at once unless it was recorded
        y = torch.full((1 << 22,), -7.0, device="cuda")
    torch.cuda.synchronize()
    w.close()
    del y
    acc = accumulate(tmp_path)
    h = acc.Histograms("h")[0].histogram_value
    assert (h.min, h.max, h.num) == (3.0, 3.0, float(1 << 22))
    assert acc.Scalars("s")[0].value == 3.0 * (1 << 22)


def test_graph_capture_while_the_writer_is_busy(tmp_path):
    """A CUDA graph captured (global error mode) on the training thread while the writer thread
    has staged work in flight: the capture succeeds, the replays run, the logged values arrive."""
    w = gpulog.SummaryWriter(str(tmp_path))
    x = torch.randn(1 << 22, device="cuda")
    static_in = torch.randn(1024, device="cuda")
    cycles = int(_sleep_cycles_per_second() * 0.2)
    for i in range(20):
        torch.cuda._sleep(cycles // 20)
        w.add_histogram("h", x, i)
        w.add_scalar("s", x[i], i)
    g = torch.cuda.CUDAGraph()
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        static_out = static_in * 2  # warm-up outside the capture
        with torch.cuda.graph(g, stream=s):
            static_out = static_in * 2
    torch.cuda.current_stream().wait_stream(s)
    for _ in range(3):
        g.replay()
    torch.cuda.synchronize()
    assert torch.equal(static_out, static_in * 2)
    w.close()
    acc = accumulate(tmp_path)
    assert len(acc.Histograms("h")) == 20 and len(acc.Scalars("s")) == 20


def test_logging_during_capture_is_a_clear_error(tmp_path):
    w = gpulog.SummaryWriter(str(tmp_path))
    w.add_scalar("warm", torch.ones((), device="cuda"), 0)  # installs the capture gate
    g = torch.cuda.CUDAGraph()
    x = torch.ones(16, device="cuda")
    with pytest.raises(RuntimeError, match="captured into a CUDA graph"):
        with torch.cuda.graph(g):
            w.add_histogram("h", x, 1)
    w.add_scalar("after", torch.ones((), device="cuda"), 1)
    w.close()
    assert accumulate(tmp_path).Scalars("after")[0].value == 1.0


def test_first_call_compile_stall_is_small(tmp_path, capsys):
    """A fresh process: the first add_histogram of a CUDA tensor (Triton compiles in the
    background) against the second; both timed and printed for RESULTS.md."""
    import subprocess
    import sys
    import textwrap
    code = textwrap.dedent(f"""
        import time, torch, gpulog
        from gpulog._reduce import _backend
        w = gpulog.SummaryWriter({str(tmp_path)!r})
        x = torch.randn(1 << 24, device="cuda"); torch.cuda.synchronize()
        t0 = time.perf_counter(); w.add_histogram("h", x, 0); first = time.perf_counter() - t0
        _backend.wait_compiled()
        t0 = time.perf_counter(); w.add_histogram("h", x, 1); second = time.perf_counter() - t0
        w.close()
        print(f"first_call_s={{first:.4f}} second_call_s={{second:.6f}}")
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    line = r.stdout.strip().splitlines()[-1]
    with capsys.disabled():
        print("\n[compile stall] " + line)
    first = float(line.split()[0].split("=")[1])
    assert first < 0.5, line


# -- logging inside compiled steps and CUDA graphs (issue #14) ------------------------------------
def _cuda_step_model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.ReLU(), torch.nn.Linear(64, 1)).cuda()


def test_reduce_overhead_compiled_step_logs_every_replay(tmp_path):
    """mode="reduce-overhead" (CUDA graphs): every execution's loss and weight histogram, with a
    device step tensor, and one compile."""
    import numpy as np
    from tbcompare import run_snapshots
    torch._dynamo.reset()
    model = _cuda_step_model()
    w = gpulog.SummaryWriter(str(tmp_path))
    step_t = torch.zeros((), dtype=torch.int64, device="cuda")

    def step(x):
        loss = model(x).square().mean()
        w.add_scalar("loss", loss, step_t)
        w.add_histogram("w", model[0].weight, step_t)
        step_t.add_(1)
        return loss

    fn = torch.compile(step, fullgraph=True, mode="reduce-overhead")
    losses = []
    for i in range(20):
        x = torch.randn(128, 64, device="cuda")
        losses.append(float(fn(x).clone()))
    w.close()
    snap = run_snapshots(str(tmp_path))["."]
    assert snap["scalar/loss"] == [(i, float(np.float32(v))) for i, v in enumerate(losses)]
    assert [s for s, _ in snap["histo/w"]] == list(range(20))


def test_manual_cuda_graph_capture_logs_at_every_replay(tmp_path):
    from tbcompare import run_snapshots
    w = gpulog.SummaryWriter(str(tmp_path))
    static_x = torch.randn(1024, device="cuda")
    step_t = torch.zeros((), dtype=torch.int64, device="cuda")
    w.add_histogram("warm-up", static_x, 0)  # the device's cell table, before any capture
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    g = torch.cuda.CUDAGraph()
    with torch.cuda.stream(s):
        for _ in range(2):  # warm-up on the side stream, as torch's docs ask
            w.add_scalar("warm", static_x.mean(), step_t)
        torch.cuda.synchronize()
        w.flush()
        with torch.cuda.graph(g, stream=s):
            w.add_scalar("mean", static_x.mean(), step_t)
            w.add_histogram("x", static_x, step_t)
            step_t.add_(1)
    torch.cuda.current_stream().wait_stream(s)
    means = []
    for i in range(10):
        static_x.copy_(torch.randn(1024, device="cuda") + i)
        g.replay()
        means.append(float(static_x.mean()))
    w.close()
    snap = run_snapshots(str(tmp_path))["."]
    import numpy as np
    assert [step for step, _ in snap["scalar/mean"]] == list(range(10))  # one per replay, in order
    np.testing.assert_allclose([v for _, v in snap["scalar/mean"]], means, rtol=1e-6)
    assert [step for step, _ in snap["histo/x"]] == list(range(10))
    assert all(h.num == 1024 for _, h in snap["histo/x"])


@pytest.mark.parametrize("backend", ["auto", "torch"])
def test_watch_pass_does_not_synchronise_and_matches_the_cpu_pass(tmp_path, monkeypatch, backend):
    """Issue #20 on a device: 1000+ tensors, the fused pass (kernel, or the torch reference) under
    sync_debug_mode='error', statistics equal to the same model's on the CPU."""
    monkeypatch.setenv("GPULOG_BACKEND", backend)
    monkeypatch.setenv("GPULOG_COMPILE", "inline")  # the kernel itself, not the reference meanwhile

    def run(device: str, d: str):
        torch.manual_seed(0)
        model = torch.nn.Sequential(*[torch.nn.Linear(32, 32) for _ in range(520)]).to(device)
        model(torch.randn(4, 32, device=device)).sum().backward()
        w = gpulog.SummaryWriter(d)
        h = w.watch(model, log="all", histograms=True)
        if device == "cuda":
            torch.cuda.set_sync_debug_mode("error")
        try:
            h.log(0)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        w.close()
        return accumulate(d)
    cpu, cuda = run("cpu", str(tmp_path / "cpu")), run("cuda", str(tmp_path / "cuda"))
    tags = cpu.Tags()["scalars"]
    assert len(tags) > 8 * 2080 - 10 and set(tags) == set(cuda.Tags()["scalars"])
    for tag in tags[::97]:
        assert cuda.Scalars(tag)[0].value == pytest.approx(cpu.Scalars(tag)[0].value, rel=1e-5, abs=1e-6), tag
