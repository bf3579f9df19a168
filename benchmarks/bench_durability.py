"""What ``kill -9`` costs under sustained load: values whose ``add_scalar`` returned but that are
not on disk, for gpulog and torch's writer in one run.

A child logs scalars as fast as it can and publishes, in an 8-byte mmap, how many calls have
returned; after ~1 s of logging the parent sends SIGKILL and reads the event file back.  The loss
is reported as values and as milliseconds of logging at the child's measured rate.

    python -m benchmarks.bench_durability [--rounds 5]
"""
from __future__ import annotations

import argparse
import mmap
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
from typing import Dict, List

CHILD = textwrap.dedent("""
    import mmap, struct, sys
    f = open(sys.argv[1], "r+b"); m = mmap.mmap(f.fileno(), 8)
    if sys.argv[3] == "torch":
        from torch.utils.tensorboard import SummaryWriter
    else:
        from gpulog import SummaryWriter
    if float(sys.argv[4]) > 0 and sys.argv[3] != "torch":  # a slow disk: the writer falls behind
        import time
        from gpulog import _worker
        write = _worker.Sink.write_pending
        def slow(self, force=False, _d=float(sys.argv[4]) / 1000):
            time.sleep(_d); write(self, force)
        _worker.Sink.write_pending = slow
    w = SummaryWriter(sys.argv[2], max_queue=int(sys.argv[5]), flush_secs=120)
    i = 0
    while True:
        w.add_scalar("x", float(i), i)
        i += 1
        m[:8] = struct.pack("<q", i)
""")


def _returned(path: str) -> int:
    with open(path, "r+b") as f:
        return struct.unpack("<q", mmap.mmap(f.fileno(), 8)[:8])[0]


def one_round(writer: str, tmp: str, slow_disk_ms: float = 0.0, max_queue: int = 1000) -> Dict[str, float]:
    progress = os.path.join(tmp, f"progress_{writer}")
    with open(progress, "wb") as f:
        f.write(b"\0" * 8)
    logdir = os.path.join(tmp, f"run_{writer}_{time.monotonic_ns()}")
    p = subprocess.Popen([sys.executable, "-c", CHILD, progress, logdir, writer, str(slow_disk_ms),
                          str(max_queue)])
    try:
        deadline = time.monotonic() + 120
        while _returned(progress) < 20000 and time.monotonic() < deadline:
            time.sleep(0.01)
        t0, n0 = time.monotonic(), _returned(progress)
        time.sleep(1.0)
        rate = (_returned(progress) - n0) / (time.monotonic() - t0)
        p.send_signal(signal.SIGKILL)
        p.wait(30)
    finally:
        p.kill()
    returned = _returned(progress)
    from gpulog.reader import read_scalars
    steps = [s for s, _ in read_scalars(logdir).get("x", [])]
    lost = returned - len(steps)
    return {"returned": returned, "lost": lost, "lost_ms": 1000 * lost / rate, "rate": rate,
            "prefix_in_order": float(steps == list(range(len(steps))))}


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--writers", default="gpulog,torch", help="comma-separated: gpulog, torch")
    ap.add_argument("--json", default=None, help="also write every round's figures here")
    ap.add_argument("--slow-disk-ms", type=float, default=0.0,
                    help="gpulog only: each write to the OS takes this much longer (its writer falls behind)")
    ap.add_argument("--max-queue", type=int, default=1000, help="the writers' max_queue")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        results: Dict[str, List[Dict[str, float]]] = {w: [] for w in args.writers.split(",")}
        for _ in range(args.rounds):  # writers alternated
            for writer in results:
                results[writer].append(one_round(writer, tmp, args.slow_disk_ms, args.max_queue))
    print("| writer | rate (values/s, median) | lost values min / median / max | lost ms min / median / max |")
    print("|---|---|---|---|")
    for writer, rows in results.items():
        lost = sorted(r["lost"] for r in rows)
        ms = sorted(r["lost_ms"] for r in rows)
        print(f"| {writer} | {statistics.median(r['rate'] for r in rows):,.0f} | "
              f"{lost[0]:.0f} / {statistics.median(lost):.0f} / {lost[-1]:.0f} | "
              f"{ms[0]:.1f} / {statistics.median(ms):.1f} / {ms[-1]:.1f} |")
    if args.json:
        import json
        with open(args.json, "w") as f:
            json.dump(results, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
