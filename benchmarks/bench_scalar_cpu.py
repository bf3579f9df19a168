"""What a logged scalar costs the whole process: CPU time of all threads (``getrusage``) for the
calls plus ``close()``, per value, beside the caller's wall time per call.

    python -m benchmarks.bench_scalar_cpu [--repeats 3] [--sizes 100000,1000000]

Each measurement runs in a fresh interpreter (no thread or allocator state carried over), and the
writers are alternated within each repeat: gpulog (scalar records framed in C), gpulog with the
Python framing (the fallback), torch's writer (100k calls only: 1M would take ~40 s a run).
``float``: ``add_scalar(tag, python_float, step)``; ``tensor``: a 0-d CPU tensor.  Each child runs
``gc.collect()`` after its imports and before timing: a fresh interpreter owes torch's import one
full collection (~100 ms on this VM) that would otherwise land in a 100k-call window; a training
process has long paid it.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import textwrap
from typing import Dict, List, Tuple

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    writer, n, kind, logdir = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    import torch
    if writer == "torch":
        from torch.utils.tensorboard import SummaryWriter
    else:
        from gpulog import SummaryWriter
        if writer == "gpulog-python":
            from gpulog import _worker
            _worker._native_framer = lambda: None
    values = [torch.tensor(float(i % 100)) for i in range(100)] if kind == "tensor" else [float(i) for i in range(100)]
    w = SummaryWriter(logdir, max_queue=1000, flush_secs=3600)
    import gc; gc.collect()  # the imports' objects: one ~100 ms full collection, paid once per process
    r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.perf_counter()
    for i in range(n):
        w.add_scalar("loss", values[i % 100], i)
    t1 = time.perf_counter()
    w.close()
    t2 = time.perf_counter(); r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"cpu_us": cpu / n * 1e6, "caller_us": (t1 - t0) / n * 1e6, "e2e_us": (t2 - t0) / n * 1e6}))
""")


def run(writer: str, n: int, kind: str) -> Dict[str, float]:
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, "-c", CHILD, writer, str(n), kind, d], capture_output=True,
                           text=True, timeout=600)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-2000:])
        return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sizes", default="100000,1000000")
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    results: Dict[Tuple[str, int, str], List[Dict[str, float]]] = {}
    for _ in range(args.repeats):
        for n in sizes:
            for kind in ("float", "tensor"):
                for writer in ("gpulog", "gpulog-python", "torch"):
                    if writer == "torch" and n > 100_000:
                        continue
                    results.setdefault((writer, n, kind), []).append(run(writer, n, kind))
    print(f"min / median / max over {args.repeats} runs, each in a fresh interpreter; microseconds per value")
    print("| writer | calls | value | CPU, all threads (calls + close) | caller per call | end to end per call |")
    print("|---|---|---|---|---|---|")
    for (writer, n, kind), rows in results.items():
        def f(key: str) -> str:
            v = sorted(r[key] for r in rows)
            return f"{v[0]:.2f} / {statistics.median(v):.2f} / {v[-1]:.2f}"
        print(f"| {writer} | {n:,} | {kind} | {f('cpu_us')} | {f('caller_us')} | {f('e2e_us')} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
