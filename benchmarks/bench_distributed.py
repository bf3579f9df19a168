"""Distributed aggregation cost: collectives per training step and overhead over no logging.

Spawns ``world`` gloo processes on CPU; each trains the same small MLP on its own batch and logs
(a) nothing, (b) a reduced scalar each step, (c) that plus histograms of every parameter every
20 steps, through ``SummaryWriter(distributed=True)``.  Rank 0 reports ms/step and collectives.
"""
from __future__ import annotations

import json
import os
import socket
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any, Dict, List


def _rank(rank: int, world: int, port: int, steps: int, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=120))
    import gpulog
    from benchmarks._model import mlp_trainer
    model, step = mlp_trainer(256, 64, 4)

    results: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        for mode in ("none", "scalar", "scalar+hist"):
            w = gpulog.SummaryWriter(os.path.join(d, mode), distributed=True) if mode != "none" else None
            dist.barrier()
            t = time.perf_counter()
            for i in range(steps):
                loss = step()
                if w is not None:
                    w.add_scalar("loss", loss, i)
                    if mode == "scalar+hist" and i % 20 == 0:
                        for name, p in model.named_parameters():
                            w.add_histogram(name, p.detach(), i)
            if w is not None:
                w.close()
            dist.barrier()
            elapsed = (time.perf_counter() - t) / steps
            results[mode] = {"ms_per_step": elapsed * 1e3,
                             "collectives_per_step": (w._dist.collectives / steps) if w else 0.0}
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)
    dist.destroy_process_group()


def run(world: int = 2, steps: int = 200) -> List[Dict[str, Any]]:
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tempfile.mktemp(suffix=".json")
    # Spawned ranks import this module by name, with the parent's sys.path: let them find the
    # checkout's benchmarks/ even when it was loaded by path (``gpulog bench`` from elsewhere).
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    added = root not in sys.path
    if added:
        sys.path.append(root)
    try:
        mp.spawn(_rank, args=(world, port, steps, out), nprocs=world, join=True)
    finally:
        if added:
            sys.path.remove(root)
    with open(out) as f:
        res = json.load(f)
    os.unlink(out)
    base = res["none"]["ms_per_step"]
    rows = []
    for mode, r in res.items():
        rows.append({"figure": f"distributed.{world}ranks.{mode}", "ms_per_step": r["ms_per_step"],
                     "overhead_pct": (r["ms_per_step"] / base - 1) * 100,
                     "collectives_per_step": r["collectives_per_step"]})
    return rows


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
