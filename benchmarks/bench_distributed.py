"""Distributed aggregation in steady state, and a correctness run on many ranks.

``run``: ``world`` gloo processes on CPU train the same small MLP, each on its own batch, for
``steps`` steps per repeat, in three modes interleaved per repeat: (a) no logging, (b) a reduced
scalar each step, (c) that plus histograms of every parameter every 20 steps, through
``SummaryWriter(distributed=True, distributed_sync_secs=sync_secs)``.  Enough steps for at least
20 sync points.  Rank 0 reports ms/step (min/median/max over repeats), overhead against (a),
collectives per step, sync points and bytes per sync point.

``correctness``: ``world`` ranks (8 by default) run a jittered loop logging scalars of every
reduce op, histograms ('tensorflow' and int bins) and PR curves; rank 0 reads the run back and
checks every value against the same data reduced in one process.
"""
from __future__ import annotations

import json
import os
import socket
import statistics
import sys
import tempfile
import time
from datetime import timedelta
from typing import Any, Dict, List

MODES = ("none", "scalar", "scalar+hist")


def _rank(rank: int, world: int, port: int, steps: int, repeats: int, sync_secs: float, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=120))
    import gpulog
    from benchmarks._model import mlp_trainer
    model, step = mlp_trainer(256, 64, 4)

    results: Dict[str, Any] = {m: {"ms_per_step": [], "collectives": [], "sync_points": [], "bytes": []}
                               for m in MODES}
    with tempfile.TemporaryDirectory() as d:
        for rep in range(repeats):
            for mode in MODES:
                w = None if mode == "none" else gpulog.SummaryWriter(
                    os.path.join(d, f"{mode}{rep}"), distributed=True, distributed_sync_secs=sync_secs)
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
                r = results[mode]
                r["ms_per_step"].append((time.perf_counter() - t) / steps * 1e3)
                if w is not None:
                    r["collectives"].append(w._stage.collectives)
                    r["sync_points"].append(w._stage.sync_points)
                    r["bytes"].append(w._stage.bytes_synced)
    if rank == 0:
        with open(out, "w") as f:
            json.dump(results, f)
    dist.destroy_process_group()


def _spawn(fn: Any, world: int, *args: Any) -> Any:
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    fd, out = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    # Spawned ranks import this module by name, with the parent's sys.path: let them find the
    # checkout's benchmarks/ even when it was loaded by path (``gpulog bench`` from elsewhere).
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    added = root not in sys.path
    if added:
        sys.path.append(root)
    try:
        mp.spawn(fn, args=(world, port, *args, out), nprocs=world, join=True)
    finally:
        if added:
            sys.path.remove(root)
    with open(out) as f:
        res = json.load(f)
    os.unlink(out)
    return res


def spread(values: List[float]) -> Dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run(world: int = 2, steps: int = 1500, repeats: int = 3, sync_secs: float = 0.1) -> List[Dict[str, Any]]:
    res = _spawn(_rank, world, steps, repeats, sync_secs)
    base = res["none"]["ms_per_step"]
    rows = []
    for mode in MODES:
        r = res[mode]
        overhead = [(ms / b - 1) * 100 for ms, b in zip(r["ms_per_step"], base)]  # paired per repeat
        row: Dict[str, Any] = {"figure": f"distributed.{world}ranks.{mode}", "steps": steps,
                               "sync_secs": sync_secs, "ms_per_step": spread(r["ms_per_step"]),
                               "overhead_pct": spread(overhead)}
        if mode != "none":
            row["collectives_per_step"] = spread([c / steps for c in r["collectives"]])
            row["sync_points"] = spread(r["sync_points"])
            row["bytes_per_sync_point"] = spread([b / max(1, s) for b, s in zip(r["bytes"], r["sync_points"])])
        rows.append(row)
    return rows


def _check_rank(rank: int, world: int, port: int, steps: int, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    import random
    import numpy as np
    import torch
    import torch.distributed as dist
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timedelta(seconds=300))
    import gpulog
    rng = random.Random(rank)
    data = lambda r, s: torch.randn(300 + 17 * r, generator=torch.Generator().manual_seed(97 * r + s))  # noqa: E731
    value = lambda r, s: 0.5 * r - s / 7  # noqa: E731
    d = tempfile.mkdtemp() if rank == 0 else ""
    obj = [d]
    dist.broadcast_object_list(obj)
    d = obj[0]
    t = time.perf_counter()
    with gpulog.SummaryWriter(d, distributed=True) as w:
        for s in range(steps):
            time.sleep(rng.random() * 0.004)
            for op in ("mean", "sum", "min", "max", None):
                w.add_scalar(f"s/{op}", value(rank, s), s, reduce=op)
            if s % 10 == 0:
                w.add_histogram("h", data(rank, s), s)
                w.add_histogram("h7", data(rank, s), s, bins=7)
                w.add_pr_curve("pr", (data(rank, s) > 0).int(), torch.sigmoid(data(rank, s + 1)), s)
    elapsed = time.perf_counter() - t
    errors: List[str] = []
    if rank == 0:
        from gpulog.reader import read_scalars
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        sc = read_scalars(d)
        for s in range(steps):
            vals = [value(r, s) for r in range(world)]
            want = {"mean": np.mean(vals), "sum": sum(vals), "min": min(vals), "max": max(vals), "None": vals[0]}
            for op, v in want.items():
                got = dict(sc[f"s/{op}"]).get(s)
                if got is None or abs(got - np.float32(v)) > 1e-6 * max(1, abs(v)):
                    errors.append(f"s/{op} step {s}: {got} != {v}")
        acc = EventAccumulator(d, size_guidance={"histograms": 0, "tensors": 0})
        acc.Reload()
        with tempfile.TemporaryDirectory() as ref:
            with gpulog.SummaryWriter(ref) as one:
                for s in range(0, steps, 10):
                    x = torch.cat([data(r, s) for r in range(world)])
                    one.add_histogram("h", x, s)
                    one.add_histogram("h7", x, s, bins=7)
                    lab = torch.cat([(data(r, s) > 0).int() for r in range(world)])
                    pred = torch.cat([torch.sigmoid(data(r, s + 1)) for r in range(world)])
                    one.add_pr_curve("pr", lab, pred, s)
            ra = EventAccumulator(ref, size_guidance={"histograms": 0, "tensors": 0})
            ra.Reload()
            for tag in ("h", "h7"):
                got, want = acc.Histograms(tag), ra.Histograms(tag)
                if len(got) != len(want):
                    errors.append(f"histogram {tag}: {len(got)} events, {len(want)} expected")
                for g, e in zip(got, want):
                    g, e = g.histogram_value, e.histogram_value
                    # counts, limits and extremes exact; sums agree to float64 rounding (other order)
                    if (list(g.bucket), list(g.bucket_limit), g.min, g.max, g.num) != \
                            (list(e.bucket), list(e.bucket_limit), e.min, e.max, e.num) or \
                            abs(g.sum - e.sum) > 1e-9 * max(1.0, abs(e.sum)) or \
                            abs(g.sum_squares - e.sum_squares) > 1e-9 * e.sum_squares:
                        errors.append(f"histogram {tag} differs from one process on all the data")
            if [str(e.tensor_proto) for e in acc.Tensors("pr")] != [str(e.tensor_proto) for e in ra.Tensors("pr")]:
                errors.append("pr curve differs from one process on all the data")
        with open(out, "w") as f:
            json.dump({"world": world, "steps": steps, "seconds": elapsed, "errors": errors[:20]}, f)
    dist.destroy_process_group()


def correctness(world: int = 8, steps: int = 100) -> Dict[str, Any]:
    return _spawn(_check_rank, world, steps)


if __name__ == "__main__":
    for row in run():
        print(json.dumps(row))
    print(json.dumps(correctness()))
