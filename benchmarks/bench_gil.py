"""How long gpulog's writer thread can keep another Python thread waiting for the GIL.

    python -m benchmarks.bench_gil [--calls 300000] [--repeats 3] [--only drain|caller]
                                   [--max-queue 1000] [--switch-interval SECONDS]

Two measurements, each child a fresh interpreter:

* **The writer alone** (``drain``): ``--calls`` scalars are queued while the writer thread is
  held inside an item, then drained.  (1) *Holds* (the caller blocked in ``flush()``): the
  writer thread's stretches between the calls where it lets the GIL go (``os.write``, its idle
  wait, and the native drain, whose duration is counted whole: each stretch is an upper bound),
  timed from inside the writer thread, with no other thread wanting the GIL.  (2) *A ticker's
  gaps* during the same drain (a thread looping on ``time.perf_counter()`` at Python's switch
  interval, 5 ms unless ``--switch-interval``; the caller idle, polling the queue every
  millisecond, not blocked on the writer), beside the ticker alone for as long (the machine's
  floor: the OS deschedules it too): share of the time spent in gaps over 100 µs, gaps over
  1 ms per second, the longest gap.
* **The caller logging** (the rows below): the main thread logs while the ticker ticks.

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

DRAIN_CHILD = textwrap.dedent("""
    import json, os, sys, threading, time
    mode, calls, logdir, max_queue = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    interval = float(sys.argv[5])
    if interval:
        sys.setswitchinterval(interval)
    from gpulog import SummaryWriter, _worker
    from gpulog._encode import text as enc_text
    import gc
    gc.collect()
    events = []  # (enter, exit, native drain?) of the writer thread's GIL-releasing calls
    if mode == "holds":
        drain = _worker._native_drainer()
        def timed_drain(*a):
            t0 = time.perf_counter(); r = drain(*a); events.append((t0, time.perf_counter(), 1)); return r
        _worker._native_drainer = lambda: timed_drain
        for name in ("write", "writev"):
            real = getattr(os, name)
            def timed(fd, data, real=real):
                t0 = time.perf_counter(); r = real(fd, data); events.append((t0, time.perf_counter(), 0)); return r
            setattr(os, name, timed)
    w = SummaryWriter(logdir, max_queue=max_queue, flush_secs=3600)
    w.add_scalar("warm", 1.0, 0); w.flush()
    h = _worker.engine().handoff
    if mode == "holds":
        wait = h.wake.wait
        def timed_wait(t=None):
            t0 = time.perf_counter(); r = wait(t); events.append((t0, time.perf_counter(), 0)); return r
        h.wake.wait = timed_wait
    gate = threading.Event()
    def held(*a):  # the writer thread waits here while the backlog is queued
        gate.wait(); return enc_text.text(*a)
    w._get_file_writer().submit(held, ("held", "x"), None, time.time())
    time.sleep(0.05)
    h.limit = h.max_items = calls + 10  # the whole backlog queued: the writer is held
    for i in range(calls):
        w.add_scalar("loss", float(i), i)
    gaps, stop = [], threading.Event()
    def tick():
        last = time.perf_counter()
        while not stop.is_set():
            now = time.perf_counter()
            if now - last >= 20e-6:
                gaps.append(now - last)
            last = now
    events.clear()
    if mode != "holds":
        t = threading.Thread(target=tick); t.start()
    t0 = time.perf_counter()
    if mode == "alone":  # the ticker alone for as long as a drain took, then the drain
        time.sleep(float(sys.argv[6]))
    elif mode == "ticker":  # the main thread idle (not blocked on the writer: a flush would be)
        gate.set()
        while h.items:
            time.sleep(0.001)
    else:
        gate.set(); w.flush()
    elapsed = time.perf_counter() - t0
    if mode != "holds":
        stop.set(); t.join()
    gate.set()
    w.close()
    out = {"seconds": elapsed}
    if mode == "holds":
        # stretches from one release to the next, up to the last native drain (after it the
        # caller wakes from flush() and its own GIL use would count)
        events.sort()
        last_drain = max(i for i, e in enumerate(events) if e[2])
        holds = [b[0] - a[1] + (b[1] - b[0] if b[2] else 0.0)
                 for a, b in zip(events[:last_drain], events[1:last_drain + 1])]
        holds.sort()
        out.update(max_us=holds[-1] * 1e6, p999_us=holds[int(len(holds) * 0.999)] * 1e6,
                   median_us=holds[len(holds) // 2] * 1e6)
    else:
        out.update(share=sum(g for g in gaps if g > 100e-6) / elapsed,
                   per_s_1ms=sum(g > 1e-3 for g in gaps) / elapsed,
                   max_us=max(gaps, default=20e-6) * 1e6)
    print(json.dumps(out))
""")


def drain_rows(calls: int, repeats: int, max_queue: int, interval: float) -> None:
    """The writer alone: its holds, and a ticker's gaps during its drain against the ticker alone."""
    def child(*args: str) -> Dict[str, float]:
        with tempfile.TemporaryDirectory() as d:
            r = subprocess.run([sys.executable, "-c", DRAIN_CHILD, args[0], str(calls), d, str(max_queue),
                                str(interval), *args[1:]],
                               capture_output=True, text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-2000:])
        return json.loads(r.stdout.strip().splitlines()[-1])
    holds, ticks, alone = [], [], []
    for _ in range(repeats):
        holds.append(child("holds"))
        ticks.append(child("ticker"))
        alone.append(child("alone", f"{ticks[-1]['seconds']:.3f}"))
    def mmm(rows: List[Dict[str, float]], key: str, scale: float = 1.0, fmt: str = ".0f") -> str:
        v = sorted(r[key] * scale for r in rows)
        return f"{v[0]:{fmt}} / {statistics.median(v):{fmt}} / {v[-1]:{fmt}}"
    print(f"the writer draining {calls} queued scalars alone, max_queue={max_queue}, switch interval "
          f"{interval * 1e6 if interval else sys.getswitchinterval() * 1e6:.0f} µs ({repeats} runs each; min / median / max)")
    print(f"- drain: {mmm(holds, 'seconds', 1e9 / calls, '.0f')} ns per scalar")
    print(f"- the writer's stretches between GIL releases (upper bounds), µs: median "
          f"{mmm(holds, 'median_us')}, 99.9th percentile {mmm(holds, 'p999_us')}, longest {mmm(holds, 'max_us')}")
    print("| ticker | seconds | share of time in gaps > 100 µs (%) | gaps > 1 ms per second | longest gap (µs) |")
    print("|---|---|---|---|---|")
    for name, rows in (("during the drain", ticks), ("alone (the floor)", alone)):
        print(f"| {name} | {mmm(rows, 'seconds', 1, '.2f')} | {mmm(rows, 'share', 100, '.1f')} | {mmm(rows, 'per_s_1ms', 1, '.0f')} | {mmm(rows, 'max_us')} |")
    print()


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--calls", type=int, default=300_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=("drain", "caller"), default=None)
    ap.add_argument("--max-queue", type=int, default=1000,
                    help="the drain's writer: records kept before a write (the 20 ms cadence writes too)")
    ap.add_argument("--switch-interval", type=float, default=0.0,
                    help="sys.setswitchinterval for the drain's children (0: Python's default, 5 ms)")
    args = ap.parse_args(argv)
    if args.only != "caller":
        drain_rows(args.calls, args.repeats, args.max_queue, args.switch_interval)
        if args.only == "drain":
            return 0
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
