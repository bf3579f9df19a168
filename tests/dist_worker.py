"""Rank processes for tests/test_distributed.py (a plain module so spawned children import it)."""
from __future__ import annotations

import json
import os
from datetime import timedelta

import torch


def data(rank: int, step: int, n: int = 500) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * rank + step)
    return torch.randn(n + 37 * rank, generator=g)


def pr_inputs(rank: int, step: int):
    g = torch.Generator().manual_seed(7000 + 10 * rank + step)
    n = 300 + 11 * rank
    return torch.randint(0, 2, (n,), generator=g), torch.rand(n, generator=g)


def scalar(rank: int, step: int) -> float:
    return 0.5 * rank + step + 0.25


def log_all(w, rank: int, steps: int = 3, distributed: bool = True) -> None:
    for step in range(steps):
        kw = {} if not distributed else {"reduce": "mean"}
        w.add_scalar("loss", scalar(rank, step), step, **kw)
        if distributed:
            w.add_scalar("sum", scalar(rank, step), step, reduce="sum")
            w.add_scalar("min", torch.tensor(scalar(rank, step)), step, reduce="min")
            w.add_scalar("max", scalar(rank, step), step, reduce="max")
            w.add_scalar("rank0", scalar(rank, step), step, reduce=None)
            w.add_scalars("grp", {"a": scalar(rank, step), "b": -scalar(rank, step)}, step)
        w.add_histogram("h", data(rank, step), step)
        w.add_histogram("h_int_bins", data(rank, step), step, bins=7)
        if distributed:
            w.add_histogram("h_auto", data(rank, step), step, bins="auto")
        labels, preds = pr_inputs(rank, step)
        w.add_pr_curve("pr", labels, preds, step)
        w.add_text("note", f"written by rank {rank}", step)


JITTER_STEPS = 400


def jitter_loop(w, rank: int, collective: bool) -> None:
    """A training loop as users run it: ~5 ms steps with rank-local jitter, one scalar a step,
    a histogram every 40 steps, optionally one all_reduce a step (as DDP's gradient sync)."""
    import random
    import time
    import torch.distributed as dist
    rng = random.Random(rank)
    grad = torch.ones(8)
    for step in range(JITTER_STEPS):
        time.sleep(0.003 + rng.random() * 0.004)
        if collective:
            dist.all_reduce(grad)
        w.add_scalar("loss", scalar(rank, step), step)
        if step % 40 == 0:
            w.add_histogram("h", data(rank, step, 200), step)


def run(rank: int, world: int, port: int, logdir: str, scenario: str, out: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    import torch.distributed as dist
    timeout = timedelta(seconds=10 if scenario == "dead" else 60)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=timeout)
    import gpulog
    result = {"rank": rank}
    try:
        if scenario == "sysmetrics":
            import time
            from gpulog import system_metrics
            system_metrics.default_sources = lambda: [lambda: {"gpu0/power_w": 100.0 + rank}]
            w = gpulog.SummaryWriter(logdir, distributed=True, system_metrics=True,
                                     system_metrics_interval=0.3)
            time.sleep(1.5)
            w.close()
            scenario = "done"
        if scenario == "rank0-only":
            # Lightning's TensorBoardLogger, HF's TensorBoardCallback: the writer exists on rank 0
            # only, and the other ranks go on training.
            import time
            store = dist.distributed_c10d._get_default_store()
            t = time.monotonic()
            try:
                if rank == 0:
                    w = gpulog.SummaryWriter(logdir, distributed=True, distributed_timeout=4)
                    w.add_scalar("loss", 1.0, 0)
                    w.flush()
                    w.close()
            except Exception as err:
                result["error"] = f"{type(err).__name__}: {err}"
            result["seconds"] = time.monotonic() - t
            if rank == 0:
                store.set("test/done", "1")
            else:
                store.wait(["test/done"])
            with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
                json.dump(result, f)
            dist.destroy_process_group()
            return
        kw = {"distributed_timeout": 4} if scenario == "stops" else {}
        w = gpulog.SummaryWriter(logdir, distributed=True,
                                 distributed_sync_secs=0 if scenario.endswith("every-step") else 1.0, **kw)
        if scenario.startswith("basic"):
            log_all(w, rank)
        elif scenario == "dead":
            w.add_scalar("loss", 1.0, 0)
            if rank == 1:
                os._exit(0)          # dies without a word; rank 0 must not wait forever
            w.add_scalar("loss", 2.0, 1)
        elif scenario in ("no-close", "no-close-destroy"):
            w.add_scalar("loss", float(rank), 0)
            w.add_scalar("loss", float(rank) + 1, 1)
            with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
                json.dump(result, f)
            if scenario == "no-close-destroy":
                dist.destroy_process_group()  # the usual end of a DDP script, without w.close()
            return  # otherwise interpreter exit must still sync and write
        elif scenario.startswith("jitter"):
            jitter_loop(w, rank, scenario.endswith("-collective"))
        elif scenario == "stops":
            # rank 1 stops logging after 5 steps (a data-dependent early exit); rank 0 goes on
            import time
            t = time.monotonic()
            try:
                for step in range(5 if rank == 1 else 200):
                    w.add_scalar("loss", 1.0, step)
                    time.sleep(0.002)
                if rank == 0:
                    w.flush()
            finally:
                result["seconds"] = time.monotonic() - t
                store = dist.distributed_c10d._get_default_store()
                if rank == 0:
                    store.set("test/rank0-done", "1")
                else:  # busy elsewhere (no logging) until rank 0 has given up on it
                    store.wait(["test/rank0-done"])
        elif scenario == "compiled-reduce":
            # add_scalar with reduce= inside a fullgraph compiled step, on every rank
            @torch.compile(fullgraph=True, backend="eager")
            def step(x, i):
                w.add_scalar("sum", x, i, reduce="sum")
                w.add_scalar("max", x, i, reduce="max")
                w.add_scalar("min", x, i, reduce="min")
                w.add_scalar("rank0", x, i, reduce=None)
                w.add_scalar("mean", x, i)
                return x * 2
            for i in range(3):
                step(torch.tensor(float(rank + 1 + i)), torch.tensor(i))
        elif scenario in ("diverge-late", "raise-late"):
            # ten identical steps, then rank 1 logs an extra tag, or raises and exits
            for step in range(10):
                w.add_scalar("loss", scalar(rank, step), step)
                if scenario == "raise-late" and rank == 1 and step == 5:
                    raise RuntimeError("rank 1 failed in its training step")
            if rank == 1:
                w.add_scalar("acc", 1.0, 10)
            w.add_scalar("loss", scalar(rank, 10), 10)
        elif scenario == "bad-input":
            # every rank must refuse the same bad input at the call (not rank 0 alone)
            bad = {
                "add_image": lambda: w.add_image("i", torch.rand(5, 4, 4), 0),
                "add_images": lambda: w.add_images("i", torch.rand(2, 5, 4, 4), 0),
                "add_image_with_boxes": lambda: w.add_image_with_boxes("b", torch.rand(3, 8, 8),
                                                                       torch.rand(3), 0),
                "add_figure": lambda: w.add_figure("f", "not a figure", 0),
                "add_video": lambda: w.add_video("v", torch.rand(2, 3, 8, 8), 0),
                "add_audio": lambda: w.add_audio("a", torch.rand(2, 100), 0),
                "add_mesh": lambda: w.add_mesh("m", torch.rand(1, 10, 2), global_step=0),
            }
            raised = {}
            for name, call in bad.items():
                try:
                    call()
                    raised[name] = None
                except (ValueError, TypeError) as err:
                    raised[name] = type(err).__name__
            result["raised"] = raised
            w.add_scalar("after", 1.0, 0)
        elif scenario == "mismatch":
            w.add_scalar("loss", 1.0, 0)
            w.add_scalar("acc" if rank == world - 1 else "loss2", 1.0, 0)
            w.add_scalar("loss", 1.0, 1)  # the step change is a sync point
        w.close()
        result["collectives"] = w._stage.collectives
        result["sync_points"] = getattr(w._stage, "sync_points", 0)
    except Exception as err:  # reported to the test through the result file
        result["error"] = f"{type(err).__name__}: {err}"
    with open(os.path.join(out, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)
    dist.destroy_process_group()
    if scenario == "compiled-reduce":
        # Ranks that ran torch.compile sometimes abort in C++ during interpreter finalization
        # ("terminate called without an active exception"; 2 of 3 full-suite runs, never alone):
        # the writer is closed and the result written, so end without finalization.
        os._exit(0)
