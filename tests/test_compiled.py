"""Logging inside torch.compile(fullgraph=True) steps: no graph break, one compile across steps,
every execution's values with the right step (CPU here; CUDA graphs in test_cuda.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch._dynamo.testing

import gpulog
from tbcompare import run_snapshots


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))


def _data(n):
    g = torch.Generator().manual_seed(1)
    return [(torch.randn(32, 8, generator=g), torch.randn(32, 1, generator=g)) for _ in range(n)]


def _train(w, step_fn_wrapper, steps, step_kind):
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)

    def step(x, y, i):
        loss = torch.nn.functional.mse_loss(model(x), y)
        w.add_scalar("loss", loss, i)
        w.add_histogram("fc0.weight", model[0].weight, i)
        w.add_histogram("hidden", model[1](model[0](x)), i)
        return loss, model[0].weight.detach().clone(), model[1](model[0](x)).detach()

    fn = step_fn_wrapper(step)
    seen = []
    for i, (x, y) in enumerate(_data(steps)):
        s = torch.tensor(i) if step_kind == "tensor" else i
        loss, weight, hidden = fn(x, y, s)
        seen.append((i, float(loss), weight, hidden))
        loss.backward()
        opt.step()
        opt.zero_grad()
    return seen


def test_no_graph_break_for_a_step_that_logs(tmp_path):
    w = gpulog.SummaryWriter(str(tmp_path))
    model = _model()

    def step(x, y, i):
        loss = torch.nn.functional.mse_loss(model(x), y)
        w.add_scalar("loss", loss, i)
        w.add_histogram("w", model[0].weight, i)
        return loss

    x, y = _data(1)[0]
    ex = torch._dynamo.explain(step)(x, y, torch.tensor(0))
    w.close()
    assert ex.graph_break_count == 0 and ex.graph_count == 1, ex.break_reasons


@pytest.mark.parametrize("step_kind", ["tensor", "int"])
def test_compiled_step_logs_every_execution_exactly(tmp_path, step_kind):
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    w = gpulog.SummaryWriter(str(tmp_path / "compiled"))
    seen = _train(w, lambda f: torch.compile(f, fullgraph=True, backend=counter), 12, step_kind)
    w.close()
    # A tensor step never recompiles; a Python int is made dynamic by dynamo at its first change.
    assert counter.frame_count == (1 if step_kind == "tensor" else 2)
    snap = run_snapshots(str(tmp_path / "compiled"))["."]
    assert snap["scalar/loss"] == [(i, float(np.float32(loss))) for i, loss, _, _ in seen]
    # The histograms of what the compiled step computed, as eager add_histogram writes them.
    e = gpulog.SummaryWriter(str(tmp_path / "eager"))
    for i, _, weight, hidden in seen:
        e.add_histogram("fc0.weight", weight, i)
        e.add_histogram("hidden", hidden, i)
    e.close()
    want = run_snapshots(str(tmp_path / "eager"))["."]
    for tag in ("histo/fc0.weight", "histo/hidden"):
        assert len(snap[tag]) == len(want[tag]) == 12
        for (s1, h1), (s2, h2) in zip(snap[tag], want[tag]):
            assert s1 == s2 and list(h1.bucket) == list(h2.bucket)
            assert list(h1.bucket_limit) == list(h2.bucket_limit)
            assert (h1.min, h1.max, h1.num) == (h2.min, h2.max, h2.num)
            np.testing.assert_allclose([h1.sum, h1.sum_squares], [h2.sum, h2.sum_squares], rtol=1e-12)


def test_same_values_as_the_eager_run(tmp_path):
    """The same training loop eager and compiled: the same steps, losses within float32 rounding
    (inductor may fuse the loss differently), the first weight histogram exactly."""
    torch._dynamo.reset()
    w = gpulog.SummaryWriter(str(tmp_path / "c"))
    compiled = _train(w, lambda f: torch.compile(f, fullgraph=True), 6, "tensor")
    w.close()
    w = gpulog.SummaryWriter(str(tmp_path / "e"))
    eager = _train(w, lambda f: f, 6, "tensor")
    w.close()
    c, e = run_snapshots(str(tmp_path / "c"))["."], run_snapshots(str(tmp_path / "e"))["."]
    assert [s for s, _ in c["scalar/loss"]] == [s for s, _ in e["scalar/loss"]] == list(range(6))
    np.testing.assert_allclose([v for _, v in c["scalar/loss"]], [v for _, v in e["scalar/loss"]], rtol=1e-5)
    assert c["histo/fc0.weight"][0] == e["histo/fc0.weight"][0]
    assert len(compiled) == len(eager)


def test_step_none_counts_executions_and_flush_drains(tmp_path):
    torch._dynamo.reset()
    w = gpulog.SummaryWriter(str(tmp_path))

    @torch.compile(fullgraph=True)
    def f(x):
        w.add_scalar("x", x.sum())
        return x * 2

    for i in range(5):
        f(torch.full((3,), float(i)))
    w.flush()  # the rings are drained before the barrier
    snap = run_snapshots(str(tmp_path))["."]
    assert snap["scalar/x"] == [(i, 3.0 * i) for i in range(5)]
    w.close()


def test_unsupported_options_fail_at_compile_time(tmp_path):
    torch._dynamo.reset()
    w = gpulog.SummaryWriter(str(tmp_path))

    @torch.compile(fullgraph=True)
    def f(x):
        w.add_histogram("h", x, 1, bins=10)
        return x

    with pytest.raises(Exception, match="bins='tensorflow'"):
        f(torch.randn(10))
    w.add_scalar("after", 1.0, 1)
    w.close()
    assert run_snapshots(str(tmp_path))["."]["scalar/after"] == [(1, 1.0)]


def test_overwritten_slots_are_reported_not_silently_lost(tmp_path, monkeypatch):
    """CUDA rings (stand-ins from syncprobe): more executions than slots between two pick-ups."""
    import syncprobe
    from gpulog import _compiled
    monkeypatch.setattr(_compiled, "RING_SLOTS", 4)
    monkeypatch.setattr(_compiled, "POLL_S", 3600.0)  # no pick-up until flush
    with syncprobe.installed(monkeypatch, strict=False):
        w = gpulog.SummaryWriter(str(tmp_path))
        for i in range(10):
            _compiled.log_scalar(syncprobe.fake(torch.tensor(float(i))),
                                          syncprobe.fake(torch.tensor(i)), "y", w._writer_id, False, False)
        with pytest.warns(RuntimeWarning, match="6 executions of scalar 'y' were overwritten"):
            w.flush()
        w.close()
    snap = run_snapshots(str(tmp_path))["."]
    assert snap["scalar/y"] == [(i, float(i)) for i in range(6, 10)]


def test_ring_pick_up_across_the_wrap(tmp_path, monkeypatch):
    """Slots picked up in pieces, across the end of the ring: every execution once, in order."""
    import warnings

    import syncprobe
    from gpulog import _compiled
    monkeypatch.setattr(_compiled, "RING_SLOTS", 4)
    monkeypatch.setattr(_compiled, "POLL_S", 3600.0)
    with syncprobe.installed(monkeypatch, strict=False):
        w = gpulog.SummaryWriter(str(tmp_path))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # nothing overwritten
            for batch in (range(0, 3), range(3, 6), range(6, 10), range(10, 11)):
                for i in batch:
                    _compiled.log_scalar(syncprobe.fake(torch.tensor(float(i) * 10)), None, "z",
                                         w._writer_id, False, False)
                w.flush()
        w.close()
    assert run_snapshots(str(tmp_path))["."]["scalar/z"] == [(i, i * 10.0) for i in range(11)]


def test_bad_max_bins_raise_where_the_step_is_traced(tmp_path, monkeypatch):
    """On CUDA the op's body only writes a ring, so max_bins is checked when the call is traced."""
    import syncprobe
    from gpulog import _compiled
    with syncprobe.installed(monkeypatch, strict=False):
        w = gpulog.SummaryWriter(str(tmp_path))
        with pytest.raises(ValueError, match="max_bins"):
            _compiled.add_histogram(w, "h", syncprobe.fake(torch.randn(10)), None, "tensorflow", None, 0)
        w.add_scalar("after", 1.0, 1)
        w.close()
    assert sorted(run_snapshots(str(tmp_path))["."]) == ["scalar/after"]


@pytest.mark.parametrize("step_kind", ["tensor", "int", "none"])
def test_python_numbers_log_inside_a_fullgraph_step(tmp_path, step_kind):
    """Issue #18.8: logging the learning rate (a Python float) inside a fullgraph step failed to
    compile (the Python-number fast path called time.time() and int(step))."""
    torch._dynamo.reset()
    counter = torch._dynamo.testing.CompileCounterWithBackend("inductor")
    w = gpulog.SummaryWriter(str(tmp_path))
    model = _model()

    @torch.compile(fullgraph=True, backend=counter)
    def step(x, y, lr, i):
        loss = torch.nn.functional.mse_loss(model(x), y)
        w.add_scalar("loss", loss, i)
        w.add_scalar("lr", lr, i)
        w.add_scalar("const", 7, i)
        return loss

    lrs = [0.1, 0.05, 0.025, 0.0125, 0.00625]
    for i, ((x, y), lr) in enumerate(zip(_data(5), lrs)):
        step(x, y, lr, {"tensor": torch.tensor(i), "int": i, "none": None}[step_kind])
    w.close()
    snap = run_snapshots(str(tmp_path))["."]
    assert snap["scalar/lr"] == [(i, float(np.float32(lr))) for i, lr in enumerate(lrs)]
    assert snap["scalar/const"] == [(i, 7.0) for i in range(5)]
    assert counter.frame_count <= 2


def test_out_of_range_step_inside_a_compiled_step_is_a_clear_error(tmp_path):
    """Issue #18.12: a step of 2**70 inside a compiled step gave an unreadable fake-tensor error."""
    torch._dynamo.reset()
    w = gpulog.SummaryWriter(str(tmp_path))

    @torch.compile(fullgraph=True, backend="eager")
    def step(x):
        w.add_scalar("loss", x.sum(), 2**70)
        return x

    with pytest.raises(Exception, match="global_step must fit in int64") as info:
        step(torch.ones(3))
    assert "FakeTensor" not in str(info.value)
    w.add_scalar("after", 1.0, 1)
    w.close()
    assert run_snapshots(str(tmp_path))["."]["scalar/after"] == [(1, 1.0)]
