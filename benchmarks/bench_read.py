"""Reading scalars back: gpulog's read_scalars (native scan and Python decoder) against
TensorBoard's EventAccumulator and tbparse, on the same run, in one process.

    python -m benchmarks.bench_read [--scalars 600000] [--repeats 3]

The run has 3 tags (``--style mixed``: simple_value, new-style float and double; ``simple``: three
simple_value tags) across 2 event files; ``read_events`` rows count the values of the events
they return (the file_version events hold none); each reader
is timed ``--repeats`` times (min / median / max), alternated, after one untimed warm-up read
(the page cache holds the files for all of them).  Reported as seconds and scalars per second.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List


def write_run(path: str, n: int, style: str = "mixed") -> None:
    """``mixed``: 3 tags, one simple_value and two new-style (float, double); ``simple``: 3
    simple_value tags (what ``add_scalar`` writes by default)."""
    import gpulog
    per_file = n // 6
    new = style == "mixed"
    for part in range(2):
        with gpulog.SummaryWriter(path, max_queue=10_000) as w:
            for i in range(per_file):
                step = part * per_file + i
                w.add_scalar("loss", 1.0 / (step + 1), step)
                w.add_scalar("lr", 0.001, step, new_style=new)
                w.add_scalar("grad_norm", float(step % 97), step, new_style=new, double_precision=new)


def readers(path: str) -> Dict[str, Callable[[], int]]:
    from gpulog import reader

    def native() -> int:
        return sum(len(v) for v in reader.read_scalars(path).values())

    def events(python: bool) -> Callable[[], int]:
        def read() -> int:
            saved = reader._native_event_scan
            if python:
                reader._native_event_scan = lambda: None  # the Python decoder alone
            try:
                return sum(len(e.values) for e in reader.read_events(path))
            finally:
                reader._native_event_scan = saved
        return read

    def python() -> int:
        saved = reader._scan_scalars, reader._native_event_scan
        reader._scan_scalars = lambda p: None  # the fallback decoder, with no native part
        reader._native_event_scan = lambda: None
        try:
            return sum(len(v) for v in reader.read_scalars(path).values())
        finally:
            reader._scan_scalars, reader._native_event_scan = saved

    def accumulator() -> int:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
        acc = EventAccumulator(path, size_guidance={"scalars": 0, "tensors": 0})
        acc.Reload()
        return sum(len(acc.Scalars(t)) for t in acc.Tags()["scalars"]) + \
            sum(len(acc.Tensors(t)) for t in acc.Tags()["tensors"])

    out = {"gpulog read_scalars (native)": native, "gpulog read_scalars (python)": python,
           "gpulog read_events (native)": events(False), "gpulog read_events (python)": events(True),
           "EventAccumulator": accumulator}
    try:
        from tbparse import SummaryReader

        def tbparse() -> int:
            return len(SummaryReader(path).scalars) + len(SummaryReader(path).tensors)
        out["tbparse"] = tbparse
    except ImportError:
        print("tbparse is not installed: its column is missing", file=sys.stderr)
    return out


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scalars", type=int, default=600_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--style", choices=("mixed", "simple"), default="mixed")
    ap.add_argument("--json", action="store_true", help="print the raw times and counts as JSON")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        write_run(d, args.scalars, args.style)
        fns = readers(d)
        counts = {name: fn() for name, fn in fns.items()}  # warm-up, and what each one found
        times: Dict[str, List[float]] = {name: [] for name in fns}
        for _ in range(args.repeats):
            for name, fn in fns.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
    if args.json:
        import json
        print(json.dumps({"times": times, "counts": counts}))
        return 0
    print(f"{args.scalars} scalars ({args.style}); min / median / max over {args.repeats} reads, alternated")
    print("| reader | scalars found | seconds | scalars/s (median) |")
    print("|---|---|---|---|")
    for name, ts in times.items():
        ts.sort()
        print(f"| {name} | {counts[name]} | {ts[0]:.3f} / {statistics.median(ts):.3f} / {ts[-1]:.3f} | "
              f"{counts[name] / statistics.median(ts):,.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
