"""``watch`` across ranks (gloo, 2 spawned processes on CPU): sharded DTensor parameters give the
statistics and histograms of the unsharded tensors, computed here by numpy in one process, with
replicated shards counted once and one packed SUM and one packed MAX collective per log step;
plain (DDP-replicated) tensors are logged by rank 0 alone, with no collective."""
from __future__ import annotations

import json
import math
import socket

import numpy as np
import pytest
import torch.multiprocessing as mp

import watch_worker
from tbcompare import accumulate
from test_watch import _oracle

pytestmark = pytest.mark.distributed


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(tmp_path, scenario: str, world: int = 2):
    logdir, out = tmp_path / "logs", tmp_path / "out"
    out.mkdir()
    mp.spawn(watch_worker.run, args=(world, _port(), str(logdir), scenario, str(out / "r")), nprocs=world,
             join=True)
    results = [json.loads((out / f"r.{r}").read_text()) for r in range(world)]
    for r in results:
        assert "error" not in r, r["error"]
    return logdir, results


@pytest.mark.parametrize("scenario", ["dtensor", "replicated"])
def test_watch_across_ranks_equals_the_unsharded_computation(tmp_path, scenario):
    from gpulog._reduce.histogram import tensorflow_edges
    logdir, results = _spawn(tmp_path, scenario)
    acc = accumulate(str(logdir))
    params = {n: p.detach().numpy() for n, p in watch_worker.model().named_parameters()}
    edges = tensorflow_edges()
    for step in range(2):
        grads = {n: g.numpy() for n, g in watch_worker.global_grads(step).items()}
        for what, tensors in (("param", params), ("grad", grads)):
            for name, x in tensors.items():
                want = _oracle(x)
                for stat, v in want.items():
                    got = [e.value for e in acc.Scalars(f"{what}_{stat}/{name}") if e.step == step]
                    assert len(got) == 1, (what, stat, name, step)
                    if math.isnan(v):
                        assert math.isnan(got[0]), (what, stat, name, step, got)
                    else:
                        assert got[0] == pytest.approx(v, rel=1e-6, abs=1e-7), (what, stat, name, step)
                h = [e.histogram_value for e in acc.Histograms(f"{what}_hist/{name}") if e.step == step][0]
                f = x.astype(np.float64).ravel()
                counts = np.histogram(f[np.isfinite(f)], bins=edges)[0]
                assert h.num == np.isfinite(f).sum() and sum(h.bucket) == counts.sum()
    if scenario == "dtensor":
        # per log step: the header, one packed SUM and one packed MAX, on every rank
        assert all(r["collectives"] == [3, 3] for r in results), [r["collectives"] for r in results]
        assert all("update_ratio=True is not supported for sharded" in r["update_ratio_error"] for r in results)
    else:
        assert all(r["collectives"] == [0, 0] for r in results), [r["collectives"] for r in results]
    first = results[0]["first_nonfinite"]
    assert first == {"what": "grad", "name": "2.weight", "count": 1, "step": 1}
