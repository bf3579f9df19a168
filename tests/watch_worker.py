"""Rank processes for tests/test_watch_distributed.py (a plain module so spawned children import it).

Every rank builds the same model and the same "global" gradients from fixed seeds; the test
process rebuilds them to compute the oracle (numpy, one process, unsharded)."""
from __future__ import annotations

import json
import os
from datetime import timedelta
from typing import Dict

import torch


def model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 3))


def global_grads(step: int) -> Dict[str, torch.Tensor]:
    m = model()
    g = torch.Generator().manual_seed(100 + step)
    out = {n: torch.randn(p.shape, generator=g) for n, p in m.named_parameters()}
    out["0.weight"][1, 2] = 0.0
    if step == 1:
        out["2.weight"][2, 4] = float("nan")  # on the shard of the last rank
    return out


def run(rank: int, world: int, port: int, logdir: str, scenario: str, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    import torch.distributed as dist
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=60))
    import gpulog
    result: Dict[str, object] = {"rank": rank}
    try:
        m = model()
        if scenario == "dtensor":
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.tensor import Replicate, Shard, distribute_tensor
            mesh = init_device_mesh("cpu", (world,))
            # weights sharded by rows (5 rows over 2 ranks: 3 + 2, uneven), biases replicated
            placements = {n: [Shard(0)] if n.endswith("weight") else [Replicate()]
                          for n, _ in m.named_parameters()}
            for mod in m:
                for name, p in list(mod._parameters.items()):
                    full = next(fn for fn, fp in m.named_parameters() if fp is p)
                    mod._parameters[name] = torch.nn.Parameter(
                        distribute_tensor(p.detach(), mesh, placements[full]))
        w = gpulog.SummaryWriter(logdir, distributed=True)
        if scenario == "dtensor":
            try:  # not built yet for shards: a clear error at the call, on every rank
                w.watch(m, update_ratio=True)
            except ValueError as err:
                result["update_ratio_error"] = str(err)
        h = w.watch(m, log="all", every=1, histograms=True, on_nonfinite=None)
        collectives = []
        for step in range(2):
            grads = global_grads(step)
            for name, p in m.named_parameters():
                if scenario == "dtensor":
                    from torch.distributed.tensor import distribute_tensor
                    p.grad = distribute_tensor(grads[name], p.device_mesh, p.placements)
                else:
                    p.grad = grads[name].clone()
            before = w._stage.collectives
            h.log(step)
            w.flush()
            collectives.append(w._stage.collectives - before)
        result["collectives"] = collectives
        result["first_nonfinite"] = h.first_nonfinite and {k: h.first_nonfinite[k] for k in ("what", "name", "count", "step")}
        w.close()
    except BaseException as err:  # noqa: BLE001 - reported to the test
        import traceback
        result["error"] = f"{type(err).__name__}: {err}\n{traceback.format_exc()}"
    finally:
        with open(f"{out}.{rank}", "w") as fh:
            json.dump(result, fh)
        dist.destroy_process_group()
    # Everything is written and reported: leave without the interpreter's finalization, where
    # torch's C++ teardown (gloo / DeviceMesh threads) aborted a rank once under a loaded CI run
    # ("terminate called without an active exception"), after its results were written.
    os._exit(0)
