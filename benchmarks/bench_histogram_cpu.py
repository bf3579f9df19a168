"""``add_histogram`` of 4M float32 CPU values, end to end, writers alternated back to back.

    python -m benchmarks.bench_histogram_cpu [--rounds 5] [--calls 5] [--n 4194304]

Each round runs gpulog, torch's writer and tensorboardX one after the other with no pause in
between (so a writer that leaves worker threads spinning slows the next one, as in a real
process): ``calls`` histograms of the same tensor, then ``close()``; the figure is the wall time
per call until everything is on disk, and the process's CPU time over all threads per call.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List

import torch


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=5)
    ap.add_argument("--n", type=int, default=1 << 22)
    args = ap.parse_args(argv)
    import gpulog
    from torch.utils.tensorboard import SummaryWriter as TorchWriter
    makers: Dict[str, Callable[[str], Any]] = {"gpulog": gpulog.SummaryWriter, "torch": TorchWriter}
    try:
        from tensorboardX import SummaryWriter as TbxWriter
        makers["tensorboardX"] = TbxWriter
    except ImportError:
        pass
    x = torch.randn(args.n, generator=torch.Generator().manual_seed(0))
    rows: Dict[str, List[Dict[str, float]]] = {k: [] for k in makers}
    with tempfile.TemporaryDirectory() as d:
        for r in range(args.rounds + 1):
            for name, make in makers.items():
                w = make(f"{d}/{name}{r}")
                c0, t0 = cpu_s(), time.perf_counter()
                for i in range(args.calls):
                    w.add_histogram("h", x, i)
                w.close()
                if r:  # round 0 warms every writer up
                    rows[name].append({"wall_ms": (time.perf_counter() - t0) / args.calls * 1e3,
                                       "cpu_ms": (cpu_s() - c0) / args.calls * 1e3})
    print(f"add_histogram of {args.n} float32 values, {args.calls} calls + close() a round, "
          f"{args.rounds} rounds, writers alternated back to back, {torch.get_num_threads()} torch threads")
    med = {}
    for name, rs in rows.items():
        w = sorted(r["wall_ms"] for r in rs)
        c = sorted(r["cpu_ms"] for r in rs)
        med[name] = statistics.median(w)
        print(f"{name:<13} end to end ms/call min/median/max {w[0]:.2f} / {med[name]:.2f} / {w[-1]:.2f}"
              f"   CPU ms/call {c[0]:.2f} / {statistics.median(c):.2f} / {c[-1]:.2f}")
    for name in makers:
        if name != "gpulog":
            print(f"{name} / gpulog (medians): {med[name] / med['gpulog']:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
