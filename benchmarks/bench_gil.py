"""How long gpulog's writer thread can keep another Python thread waiting for the GIL.

    python -m benchmarks.bench_gil [--calls 300000] [--repeats 3]

The main thread logs ``add_scalar(float)`` as fast as it can while a *ticker* thread loops on
``time.perf_counter()`` with ``sys.setswitchinterval`` at 50 µs; the longest gap between two of
the ticker's readings is the longest stretch some other thread (the training thread, the writer,
or C code holding the GIL) kept it from running.  A run with no writer at all (the ticker beside
a plain Python loop) gives the floor of this machine.  Reported per writer: median and max of the
ticker's gaps, and the 99.9th percentile, over the repeats (each in a fresh interpreter).
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from typing import Dict, List

CHILD = textwrap.dedent("""
    import json, sys, threading, time
    writer, calls, logdir = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    sys.setswitchinterval(50e-6)
    if writer == "gpulog":
        from gpulog import SummaryWriter
    elif writer == "gpulog-python":
        from gpulog import SummaryWriter, _worker
        _worker._native_framer = lambda: None
    elif writer == "torch":
        from torch.utils.tensorboard import SummaryWriter
    gaps, stop = [], threading.Event()
    def tick():
        last = time.perf_counter()
        while not stop.is_set():
            now = time.perf_counter()
            gaps.append(now - last)
            last = now
    t = threading.Thread(target=tick); t.start()
    if writer == "none":
        x = 0.0
        for i in range(calls):
            x += i * 0.5
    else:
        w = SummaryWriter(logdir, max_queue=1000, flush_secs=3600)
        for i in range(calls):
            w.add_scalar("loss", float(i), i)
        w.close()
    stop.set(); t.join()
    gaps.sort()
    print(json.dumps({"max_us": gaps[-1] * 1e6, "p999_us": gaps[int(len(gaps) * 0.999)] * 1e6}))
""")


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    writers = ("none", "gpulog", "gpulog-python", "torch")
    rows: Dict[str, List[Dict[str, float]]] = {w: [] for w in writers}
    for _ in range(args.repeats):
        for writer in writers:
            calls = args.calls if writer != "torch" else args.calls // 10  # torch: ~40 us a call
            with tempfile.TemporaryDirectory() as d:
                r = subprocess.run([sys.executable, "-c", CHILD, writer, str(calls), d],
                                   capture_output=True, text=True, timeout=600)
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-2000:])
            rows[writer].append(json.loads(r.stdout.strip().splitlines()[-1]))
    print(f"longest wait of a ticking thread for the GIL, µs ({args.repeats} runs; torch logs 1/10 as many calls)")
    print("| writer | longest gap: median / max of runs | 99.9th percentile gap (median) |")
    print("|---|---|---|")
    for writer, rs in rows.items():
        mx = sorted(r["max_us"] for r in rs)
        print(f"| {writer} | {statistics.median(mx):.0f} / {mx[-1]:.0f} | "
              f"{statistics.median(r['p999_us'] for r in rs):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
