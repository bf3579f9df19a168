"""A compiled training step with and without in-step logging, against logging moved out of the
compiled region (what users do today), all in one run.

Each variant trains the same MLP for ``--steps`` steps (forward and loss under
``torch.compile(fullgraph=True)``, backward and SGD eagerly) and logs the loss and one weight
histogram every step.  Reported per variant, over ``--repeats`` runs: the end-to-end time per step
(steps plus ``close()``, so work moved to gpulog's threads is counted) as min / median / max, and
the median overhead against the same loop without logging.

    python -m benchmarks.bench_compiled [--device cpu|cuda] [--steps 300] [--repeats 5] [--out F]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from typing import Any, Callable, Dict, List

import torch


def _model(device: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                               torch.nn.ReLU(), torch.nn.Linear(256, 1)).to(device)


def run(variant: str, device: str, steps: int, tmp: str) -> float:
    """Seconds per step, end to end, for one run of ``variant``."""
    import gpulog
    from torch.utils.tensorboard import SummaryWriter as TorchWriter
    torch._dynamo.reset()
    model = _model(device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    logdir = tempfile.mkdtemp(dir=tmp)
    writer: Any = None
    if variant in ("in-step gpulog", "outside gpulog"):
        writer = gpulog.SummaryWriter(logdir)
    elif variant == "outside torch":
        writer = TorchWriter(logdir)
    step_t = torch.zeros((), dtype=torch.int64, device=device)
    weight = model[0].weight

    def fwd(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(model(x), y)
        if variant == "in-step gpulog":
            writer.add_scalar("loss", loss, step_t)
            writer.add_histogram("layer0.weight", weight, step_t)
        return loss

    step = torch.compile(fwd, fullgraph=True)
    g = torch.Generator(device=device).manual_seed(1)
    batches = [(torch.randn(64, 256, device=device, generator=g), torch.randn(64, 1, device=device, generator=g))
               for _ in range(8)]

    def one(i: int) -> None:
        x, y = batches[i % len(batches)]
        loss = step(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_t.add_(1)
        if variant.startswith("outside"):
            writer.add_scalar("loss", loss, i)          # the tensor itself (gpulog: no sync)
            writer.add_histogram("layer0.weight", weight, i)

    for i in range(10):  # compile and warm up
        one(i)
    if writer is not None:
        writer.flush()
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for i in range(steps):
        one(i)
    if writer is not None:
        writer.close()
    if device == "cuda":
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    shutil.rmtree(logdir, ignore_errors=True)
    return elapsed / steps


VARIANTS = ("no logging", "in-step gpulog", "outside gpulog", "outside torch")


def main(argv: Any = None) -> Dict[str, Any]:
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cpu")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--out")
    a = p.parse_args(argv)
    tmp = tempfile.mkdtemp(prefix="gpulog-compiled-")
    times: Dict[str, List[float]] = {v: [] for v in VARIANTS}
    for _ in range(a.repeats):  # interleaved, so drift hits every variant alike
        for v in VARIANTS:
            times[v].append(run(v, a.device, a.steps, tmp))
    shutil.rmtree(tmp, ignore_errors=True)
    base = statistics.median(times["no logging"])
    out: Dict[str, Any] = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
                           "torch": torch.__version__, "device": a.device, "steps": a.steps,
                           "repeats": a.repeats, "variants": {}}
    print(f"{'variant':<16} {'min ms/step':>12} {'median':>8} {'max':>8} {'overhead (median)':>18}")
    for v, ts in times.items():
        row = {"min_ms": min(ts) * 1e3, "median_ms": statistics.median(ts) * 1e3, "max_ms": max(ts) * 1e3,
               "overhead_pct": (statistics.median(ts) / base - 1) * 100}
        out["variants"][v] = row
        print(f"{v:<16} {row['min_ms']:>12.3f} {row['median_ms']:>8.3f} {row['max_ms']:>8.3f} "
              f"{row['overhead_pct']:>+17.1f}%")
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
