"""A/B of two gpulog trees on the host fast paths, alternated run by run (no pause between them).

    git worktree add /tmp/old <ref> && (build its extension: see README "Development")
    python -m benchmarks.bench_ab --old /tmp/old [--repeats 5] [--n 200000]

Each run is a fresh interpreter importing gpulog from one tree (``PYTHONPATH``), logging ``n``
calls of one workload, then ``close()``; it reports the process's CPU time over all threads
(``getrusage``) per call and the wall time per call until the data is on disk.  Workloads:
``float`` (``add_scalar(tag, float, step)``), ``tensor`` (a 0-d CPU tensor), ``histogram``
(``add_histogram`` of 4096 float32 values, n/100 calls), ``image`` (a 3x32x32 float image, n/200).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from typing import Dict, List

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    n, kind, logdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    import torch
    import gpulog
    w = gpulog.SummaryWriter(logdir, max_queue=1000, flush_secs=3600)
    if kind == "float":
        vals = [float(i) for i in range(100)]
        call = lambda i: w.add_scalar("loss", vals[i % 100], i)
    elif kind == "tensor":
        vals = [torch.tensor(float(i)) for i in range(100)]
        call = lambda i: w.add_scalar("loss", vals[i % 100], i)
    elif kind == "histogram":
        n //= 100
        x = torch.randn(4096)
        call = lambda i: w.add_histogram("h", x, i)
    else:
        n //= 200
        x = torch.rand(3, 32, 32)
        call = lambda i: w.add_image("img", x, i)
    import gc; gc.collect()  # the imports' objects: one ~100 ms full collection, paid once per process
    r0 = resource.getrusage(resource.RUSAGE_SELF); t0 = time.perf_counter()
    for i in range(n):
        call(i)
    w.close()
    t1 = time.perf_counter(); r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(json.dumps({"cpu_us": cpu / n * 1e6, "e2e_us": (t1 - t0) / n * 1e6, "where": gpulog.__file__}))
""")

KINDS = ("float", "tensor", "histogram", "image")


def run(tree: str, n: int, kind: str) -> Dict[str, float]:
    env = dict(os.environ, PYTHONPATH=tree)
    with tempfile.TemporaryDirectory() as d:
        r = subprocess.run([sys.executable, "-c", CHILD, str(n), kind, d], capture_output=True,
                           text=True, timeout=600, env=env, cwd=d)
        if r.returncode != 0:
            raise RuntimeError(r.stderr[-2000:])
        out = json.loads(r.stdout.strip().splitlines()[-1])
        if not out["where"].startswith(os.path.abspath(tree)):
            raise RuntimeError(f"imported {out['where']}, not the tree {tree}")
        return out


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--old", required=True, help="a gpulog checkout with its extension built")
    ap.add_argument("--new", default=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=200000)
    ap.add_argument("--kinds", default=",".join(KINDS))
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",")
    res: Dict[str, Dict[str, List[Dict[str, float]]]] = {k: {"old": [], "new": []} for k in kinds}
    for _ in range(args.repeats):
        for kind in kinds:
            for name in ("old", "new"):
                res[kind][name].append(run(getattr(args, name), args.n, kind))
    print(f"{'workload':<10} {'tree':<4} {'CPU us/call min/med/max':>26} {'e2e us/call min/med/max':>26}")
    for kind in kinds:
        for name in ("old", "new"):
            rows = res[kind][name]
            cells = []
            for key in ("cpu_us", "e2e_us"):
                v = sorted(r[key] for r in rows)
                cells.append(f"{v[0]:.2f}/{statistics.median(v):.2f}/{v[-1]:.2f}")
            print(f"{kind:<10} {name:<4} {cells[0]:>26} {cells[1]:>26}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
