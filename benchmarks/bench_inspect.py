"""``gpulog inspect`` of a large log dir, as a user runs it (a fresh ``python -m gpulog.cli``).

    python -m benchmarks.bench_inspect [--gb 1.0] [--repeats 3]

Writes a run of about ``--gb`` gigabytes with gpulog (4 scalar tags a step, one new-style; a
histogram and a text every 10,000 steps, so both the native scan and the Python decoder work),
split over 4 event files, then times ``gpulog inspect`` on it ``--repeats`` times (min / median
/ max, the page cache warm: the files were just written), and checks the scalar count it prints.
Reported as seconds and MB/s.  The log dir is removed afterwards.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import List


def write_run(path: str, target_bytes: int) -> int:
    """Writes about ``target_bytes`` of events; returns the number of scalars written."""
    import numpy as np
    import gpulog
    n = 0
    step = 0
    part_bytes = target_bytes // 4
    for _ in range(4):
        with gpulog.SummaryWriter(path, max_queue=10_000) as w:
            start = _size(path)
            while _size(path) - start < part_bytes:
                for _ in range(50_000):
                    w.add_scalar("loss", 1.0 / (step + 1), step)
                    w.add_scalar("lr", 0.001, step)
                    w.add_scalar("grad_norm", float(step % 97), step)
                    w.add_scalar("acc", 0.5, step, new_style=True)
                    if step % 10_000 == 0:
                        w.add_histogram("weights", np.random.default_rng(step).standard_normal(1000), step)
                        w.add_text("note", f"step {step}", step)
                    step += 1
                n += 4 * 50_000
                w.flush()
    return n


def _size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        n = write_run(d, int(args.gb * 1e9))
        size = _size(d)
        print(f"wrote {n:,} scalars, {size / 1e6:,.0f} MB in 4 files ({time.perf_counter() - t:.1f} s)")
        times = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            r = subprocess.run([sys.executable, "-m", "gpulog.cli", "inspect", d], capture_output=True,
                               text=True, timeout=1800)
            times.append(time.perf_counter() - t)
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-2000:])
            counted = sum(int(line.split()[3]) for line in r.stdout.splitlines()
                          if line.split()[2:3] == ["scalar"])
            if counted != n:
                raise RuntimeError(f"inspect counted {counted} scalars, {n} were written:\n{r.stdout}")
        times.sort()
        print(f"gpulog inspect, {args.repeats} runs (a fresh interpreter each): "
              f"{times[0]:.2f} / {statistics.median(times):.2f} / {times[-1]:.2f} s; "
              f"{size / 1e6 / statistics.median(times):,.0f} MB/s at the median")
    return 0


if __name__ == "__main__":
    sys.exit(main())
