"""A launch-bound training step: what logging costs the training thread when every microsecond of
host time is a microsecond the next kernel waits for.

    python -m benchmarks.bench_launch_bound [--rounds 5] [--steps 2000]

The step is 60 tiny torch ops on a 64-element tensor (~300 us of host time on this VM: the
shape of a small model whose GPU step is bound by kernel launches); each step logs 20 of its
0-d results with ``add_scalar`` (tensor values, as a loop logs its losses and metrics).  Writers
(none, gpulog, torch's, tensorboardX) are alternated round by round in one process; the figure is
the step time's overhead over the no-logging step, median over rounds, with min and max.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import torch


def step(x: torch.Tensor, out: List[torch.Tensor]) -> torch.Tensor:
    out.clear()
    for i in range(60):
        x = x * 1.0001 + 0.001
        if i % 3 == 0:
            out.append(x[0])  # a 0-d view: the "metric" of this op
    return x


def run(writer: Optional[Any], steps: int) -> float:
    torch.manual_seed(0)
    x = torch.randn(64)
    vals: List[torch.Tensor] = []
    tags = [f"m/{k}" for k in range(20)]
    for i in range(50):  # warm-up
        x = step(x, vals)
    t0 = time.perf_counter()
    for i in range(steps):
        x = step(x, vals)
        if writer is not None:
            for tag, v in zip(tags, vals):
                writer.add_scalar(tag, v, i)
    dt = (time.perf_counter() - t0) / steps
    return dt


def measure(rounds: int, steps: int) -> Dict[str, List[float]]:
    """Seconds per step of each writer ("none": no logging), one entry per round."""
    torch.set_num_threads(1)
    import gc
    import gpulog
    from torch.utils.tensorboard import SummaryWriter as TorchWriter
    makers: Dict[str, Callable[[str], Any]] = {"gpulog": lambda d: gpulog.SummaryWriter(d, max_queue=1000),
                                               "torch": lambda d: TorchWriter(d, max_queue=1000)}
    try:
        from tensorboardX import SummaryWriter as TbxWriter
        makers["tensorboardX"] = lambda d: TbxWriter(d, max_queue=1000)
    except ImportError:
        pass
    times: Dict[str, List[float]] = {"none": []}
    gc.collect()
    with tempfile.TemporaryDirectory() as d:
        for r in range(rounds):
            times["none"].append(run(None, steps))
            for name, make in makers.items():
                w = make(f"{d}/{name}{r}")
                times.setdefault(name, []).append(run(w, steps))
                w.close()
    return times


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--json", action="store_true", help="print the raw times as JSON")
    args = ap.parse_args(argv)
    times = measure(args.rounds, args.steps)
    if args.json:
        import json
        print(json.dumps(times))
        return 0
    makers = [k for k in times if k != "none"]
    base = statistics.median(times["none"])
    print(f"launch-bound step: 60 ops on 64 floats, 20 tensor scalars logged a step, {args.steps} steps x "
          f"{args.rounds} rounds, torch {torch.__version__}")
    print(f"no logging: {base * 1e6:.0f} us/step (min {min(times['none']) * 1e6:.0f}, max {max(times['none']) * 1e6:.0f})")
    for name in makers:
        over = sorted((t / base - 1) * 100 for t in times[name])
        print(f"{name:<13} overhead min / median / max: {over[0]:+.1f} / {statistics.median(over):+.1f} / {over[-1]:+.1f} %"
              f"   ({statistics.median(times[name]) * 1e6:.0f} us/step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
