"""How long gpulog's writer thread can keep another Python thread waiting for the GIL.

    python -m benchmarks.bench_gil [--calls 300000] [--repeats 3]

The main thread logs ``add_scalar(float)`` as fast as it can while a *ticker* thread loops on
``time.perf_counter()`` with ``sys.setswitchinterval`` at 50 µs; the longest gap between two of
the ticker's readings is the longest stretch some other thread (the training thread, the writer,
or C code holding the GIL) kept it from running.  A run with no writer at all (the ticker beside
a plain Python loop) gives the floor of this machine; ``none+busy-thread`` adds a second Python
thread that always wants the GIL (as a writer thread does): the floor for three threads on this
machine's cores, where the OS, not the GIL, deschedules the ticker.  Reported per writer: median and max of the
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
    import gc
    gc.collect()  # the imports' objects (one full collection a fresh interpreter owes)
    gc_pauses, gc_t = [], {}
    def on_gc(phase, info):
        if phase == "start":
            gc_t[0] = time.perf_counter()
        else:
            gc_pauses.append((info["generation"], time.perf_counter() - gc_t[0]))
    gc.callbacks.append(on_gc)
    # The ticker keeps only the gaps of 20 us or more (and a count): appending every reading to a
    # growing list would itself stall the ticker when the list is reallocated.
    long_gaps, count, stop = [], [0], threading.Event()
    def tick():
        last = time.perf_counter()
        n = 0
        while not stop.is_set():
            now = time.perf_counter()
            if now - last >= 20e-6:
                long_gaps.append(now - last)
            n += 1
            last = now
        count[0] = n
    t = threading.Thread(target=tick); t.start()
    if writer in ("none", "none+busy-thread"):
        busy = threading.Event()
        def spin():  # a second Python thread that always wants the GIL, as the writer does
            y = 0
            while not busy.is_set():
                y += 1
        if writer == "none+busy-thread":
            b = threading.Thread(target=spin); b.start()
        x = 0.0
        for i in range(calls):
            x += i * 0.5
        busy.set()
    else:
        w = SummaryWriter(logdir, max_queue=1000, flush_secs=3600)
        for i in range(calls):
            w.add_scalar("loss", float(i), i)
        w.close()
    stop.set(); t.join()
    long_gaps.sort(reverse=True)
    k = int(count[0] * 0.001)
    p999 = long_gaps[k] * 1e6 if k < len(long_gaps) else 20.0  # under 20 us
    gc2 = [p for g, p in gc_pauses if g == 2]
    print(json.dumps({"max_us": long_gaps[0] * 1e6 if long_gaps else 20.0, "p999_us": p999,
                      "gc_max_us": max((p for _, p in gc_pauses), default=0.0) * 1e6,
                      "full_collections": len(gc2)}))
""")


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    writers = ("none", "none+busy-thread", "gpulog", "gpulog-python", "torch")
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
    print("| writer | longest gap: median / max of runs | 99.9th percentile gap (median) | longest GC pause (median) | full collections (median) |")
    print("|---|---|---|---|---|")
    for writer, rs in rows.items():
        mx = sorted(r["max_us"] for r in rs)
        print(f"| {writer} | {statistics.median(mx):.0f} / {mx[-1]:.0f} | "
              f"{statistics.median(r['p999_us'] for r in rs):.0f} | "
              f"{statistics.median(r['gc_max_us'] for r in rs):.0f} | "
              f"{statistics.median(r['full_collections'] for r in rs):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
