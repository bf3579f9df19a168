"""``watch`` inside ``torch.compile``: its hooks become gpulog's ordered ops, so the watch adds no
graph break and no recompile, and logs what the eager run logs (read back by TensorBoard)."""
from __future__ import annotations

import pytest
import torch

import gpulog
from tbcompare import accumulate

pytestmark = pytest.mark.slow  # compiles (~20 s on 2 cores)


def _run(tmp_path, name: str, watch: bool, mode: str):
    from torch._dynamo.utils import counters
    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    d = str(tmp_path / name)
    w = gpulog.SummaryWriter(d)
    if watch:
        w.watch(model, every=2, log="all", activations=["1"], update_ratio=True, histograms=True)

    def step(x):
        loss = model(x).pow(2).sum()
        loss.backward()
        if mode != "fwd-bwd":
            opt.step()
            opt.zero_grad()
        return loss.detach()

    if mode == "eager":
        run = step
    elif mode == "fwd-bwd":  # forward and backward in one graph (fullgraph), the step eager
        compiled = torch.compile(step, fullgraph=True)

        def run(x):
            out = compiled(x)
            opt.step()
            opt.zero_grad()
            return out
    else:  # forward, backward and the optimizer step compiled (torch itself breaks the graph in step())
        run = torch.compile(step)
    g = torch.Generator().manual_seed(1)
    graphs = []
    for _ in range(6):
        run(torch.randn(16, 4, generator=g))
        graphs.append(counters["stats"]["unique_graphs"])
    w.close()
    return d, sum(counters["graph_break"].values()), graphs


@pytest.mark.parametrize("mode", ["fwd-bwd", "whole-step"])
def test_watch_adds_no_graph_break_nor_recompile_and_logs_the_eager_values(tmp_path, mode):
    torch._dynamo.config.trace_autograd_ops = True
    try:
        ref, _, _ = _run(tmp_path, "eager", True, "eager")
        _, breaks_without, _ = _run(tmp_path, "plain", False, mode)
        got, breaks_with, graphs = _run(tmp_path, "watched", True, mode)
    finally:
        torch._dynamo.config.trace_autograd_ops = False
    assert breaks_with == breaks_without  # fwd-bwd: fullgraph=True would have raised on any
    assert graphs[1] == graphs[-1], graphs  # nothing compiled after the second step: no recompile
    a, b = accumulate(ref), accumulate(got)
    tags = a.Tags()["scalars"]
    assert set(tags) == set(b.Tags()["scalars"]) and any(t.startswith("act_") for t in tags)
    assert any(t.startswith("update_ratio/") for t in tags)
    for tag in tags:
        want = [(e.step, e.value) for e in a.Scalars(tag)]
        have = [(e.step, e.value) for e in b.Scalars(tag)]
        assert [s for s, _ in want] == [s for s, _ in have] == [0, 2, 4], tag
        assert [v for _, v in have] == pytest.approx([v for _, v in want], rel=1e-5, abs=1e-6), tag
    assert b.Tags()["histograms"] == a.Tags()["histograms"]
