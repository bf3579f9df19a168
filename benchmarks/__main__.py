"""Run gpulog, torch.utils.tensorboard and tensorboardX on the same workloads in one process.

Prints a table of figures with ratios (torch / gpulog: higher is better for gpulog) and writes
JSON.  ``caller`` = time spent inside the add_* call; ``e2e`` = calls plus flush()/close(), i.e.
until everything is on disk.  Usage: python -m benchmarks [--device cpu|cuda] [--quick] [--out F]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional

import torch


def writers() -> Dict[str, Any]:
    import gpulog
    from torch.utils.tensorboard import SummaryWriter as TorchWriter
    out: Dict[str, Any] = {"gpulog": gpulog.SummaryWriter, "torch": TorchWriter}
    try:
        from tensorboardX import SummaryWriter as XWriter
        out["tbx"] = XWriter
    except ImportError:
        pass
    return out


def _process_cpu() -> float:
    """CPU seconds of this process, every thread (user + system); -1 where unavailable."""
    try:
        import resource
    except ImportError:  # not POSIX
        return -1.0
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def settle() -> None:
    """Let thread pools left busy by the previous writer go idle before timing the next one.

    numpy's OpenBLAS threads keep spinning for ~0.1 s after a large ``dot`` (torch's and
    tensorboardX's histograms call one), taking a core from whichever writer is timed next."""
    time.sleep(0.3)


class Bench:
    def __init__(self, device: str, quick: bool) -> None:
        self.device, self.quick = device, quick
        self.rows: List[Dict[str, Any]] = []
        self.tmp = tempfile.mkdtemp(prefix="gpulog-bench-")
        self.W = writers()

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def emit(self, figure: str, writer: str, value: float, unit: str,
             spread: Optional[tuple] = None) -> None:
        row: Dict[str, Any] = dict(figure=figure, writer=writer, value=value, unit=unit, device=self.device)
        if spread is not None:
            row["min"], row["max"] = spread
        self.rows.append(row)
        print(json.dumps(row), flush=True)

    def call_and_e2e(self, figure: str, fn: Callable[[Any, int], None], reps: int, unit_scale: float = 1e3,
                     unit: str = "ms", rounds: int = 3, **kw: Any) -> None:
        """Per writer, ``rounds`` runs of ``reps // rounds`` calls, each on a new writer ended by
        ``close()``: the caller figure is each round's median time inside one call, the end-to-end
        figure each round's (calls + close()) / calls; both reported as median with min and max
        over the rounds."""
        rounds = max(1, min(rounds, reps))
        for name, cls in self.W.items():
            caller, e2e = [], []
            for r in range(rounds):
                w = cls(os.path.join(self.tmp, f"{figure}_{name}_{r}"), **kw)
                fn(w, -1)  # warm-up (imports, tables, caches)
                w.flush()
                settle()
                calls = []
                n = reps // rounds
                self.sync()
                t0 = time.perf_counter()
                for i in range(n):
                    t = time.perf_counter()
                    fn(w, i)
                    self.sync()
                    calls.append(time.perf_counter() - t)
                w.close()
                caller.append(statistics.median(calls) * unit_scale)
                e2e.append((time.perf_counter() - t0) / n * unit_scale)
            self.emit(figure + ".caller", name, statistics.median(caller), unit, spread=(min(caller), max(caller)))
            self.emit(figure + ".e2e", name, statistics.median(e2e), unit, spread=(min(e2e), max(e2e)))

    def scalars(self) -> None:
        n = 2000 if self.quick else 20000
        for kind in ("float", "tensor"):
            for name, cls in self.W.items():
                w = cls(os.path.join(self.tmp, f"s_{kind}_{name}"), max_queue=1000, flush_secs=3600)
                v = torch.tensor(1.5, device=self.device) if kind == "tensor" else 1.5
                self.sync()
                cpu0 = _process_cpu()
                t = time.perf_counter()
                for i in range(n):
                    w.add_scalar("loss", v, i)
                self.sync()
                t_call = time.perf_counter() - t
                w.close()
                t_all = time.perf_counter() - t
                cpu = _process_cpu() - cpu0
                if cpu0 >= 0:  # what a value costs the whole process (all threads), first
                    self.emit(f"scalar.{kind}.cpu_us", name, cpu / n * 1e6, "us/value, all threads")
                self.emit(f"scalar.{kind}.e2e_per_s", name, n / t_all, "events/s")
                self.emit(f"scalar.{kind}.caller_us", name, t_call / n * 1e6, "us/call")
        # 20 tensor scalars of one step: 20 add_scalar calls against one add_scalar_batch (gpulog
        # only; on CUDA one copy and no kernel), host time per step
        values = [torch.tensor(float(k), device=self.device) for k in range(20)]
        tags = [f"m/{k}" for k in range(20)]
        steps = max(1, n // 20)
        for mode in ("20 calls", "batch"):
            if mode == "batch" and "gpulog" not in self.W:
                continue
            names = ["gpulog"] if mode == "batch" else list(self.W)
            for name in names:
                w = self.W[name](os.path.join(self.tmp, f"s20_{mode[:5]}_{name}"), max_queue=1000)
                self.sync()
                t = time.perf_counter()
                for i in range(steps):
                    if mode == "batch":
                        w.add_scalar_batch(tags, torch.stack(values), i)
                    else:
                        for tag, v in zip(tags, values):
                            w.add_scalar(tag, v, i)
                t_call = time.perf_counter() - t
                w.close()
                self.emit(f"scalar.20_per_step.{mode.replace(' ', '_')}.caller_us", name,
                          t_call / steps * 1e6, "us/step")

    def tensors(self) -> None:
        d = self.device
        g = torch.Generator(device=d).manual_seed(0)
        reps = 6 if self.quick else 9  # calls, over 3 rounds
        for n in ([1 << 20, 1 << 22] if self.quick else [1 << 20, 1 << 22, 1 << 24]):
            x = torch.randn(n, device=d, generator=g)
            self.call_and_e2e(f"histogram.{n >> 20}M", lambda w, i: w.add_histogram("h", x, i), reps)
        labels = torch.randint(0, 2, (1 << 20,), device=d, generator=g)
        preds = torch.rand(1 << 20, device=d, generator=g)
        self.call_and_e2e("pr_curve.1M", lambda w, i: w.add_pr_curve("pr", labels, preds, i), reps)
        img = torch.rand(3, 1024, 1024, device=d, generator=g)
        self.call_and_e2e("image.3x1024x1024", lambda w, i: w.add_image("img", img, i), 3)
        imgs = torch.rand(64, 3, 64, 64, device=d, generator=g)
        self.call_and_e2e("images.64x3x64x64", lambda w, i: w.add_images("imgs", imgs, i), reps)
        verts = torch.rand(1, 100000, 3, device=d, generator=g)
        cols = torch.randint(0, 255, (1, 100000, 3), device=d, generator=g)
        faces = torch.randint(0, 100000, (1, 200000, 3), device=d, generator=g)
        self.call_and_e2e("mesh.100k", lambda w, i: w.add_mesh("m", verts, colors=cols, faces=faces,
                                                                global_step=i), 3)

    def timed_ms(self, fn: Callable[[], Any], reps: int = 10) -> float:
        """Median time of ``fn()`` on the device: CUDA events on the current stream (the work
        ``fn`` queues, not the time to queue it), wall clock on CPU."""
        fn()  # warm-up (compilation, tables, allocator)
        times = []
        for _ in range(reps):
            if self.device == "cuda":
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t) * 1e3)
        return statistics.median(times)

    def work(self) -> None:
        """Histogram reduction work against one read of the same data (issue #3: within 5x), and on
        CUDA the 128M caller time against torch's writer (issue #3: under 1 ms, >= 1000x)."""
        from gpulog._reduce import histogram as red
        n = (1 << 27 if self.device == "cuda" else 1 << 24) >> (3 if self.quick else 0)
        x = torch.randn(n, device=self.device, generator=torch.Generator(device=self.device).manual_seed(0))
        edges = red.tensorflow_edges()
        tag = f"histogram.{n >> 20}M"
        read = self.timed_ms(lambda: torch.amax(x))  # one bandwidth-bound pass over the data
        self.emit(f"{tag}.one_read", "-", read, "ms")
        saved = os.environ.get("GPULOG_BACKEND", "auto")

        def torch_ops() -> Any:  # the torch reference path, never the native or Triton one
            os.environ["GPULOG_BACKEND"] = "torch"
            try:
                return red.reduce_torch(x, edges, True)
            finally:
                os.environ["GPULOG_BACKEND"] = saved

        paths: Dict[str, Callable[[], Any]] = {"torch_ops": torch_ops}
        if self.device == "cuda":
            from gpulog.kernels import histogram as kernel
            table = red.cell_table(str(x.device))
            paths["triton"] = lambda: kernel.reduce(x, edges, table=table)
        elif red.native() is not None:  # as add_histogram runs it: in the caller, on torch's threads
            paths["native"] = lambda: red.reduce_native(x, len(edges), torch.get_num_threads())
        import numpy as np
        want, _ = np.histogram(x.double().cpu().numpy(), bins=edges)  # the oracle for every path
        for name, fn in paths.items():
            try:
                counts = fn()[0]
                ms = self.timed_ms(fn)
            except Exception as err:  # an experimental path must not cost the other figures
                print(f"work.{name} failed: {type(err).__name__}: {err}", file=sys.stderr)
                continue
            exact = np.array_equal(counts.cpu().numpy().reshape(-1)[-len(want):], want)
            self.emit(f"{tag}.work.{name}", "-", ms, "ms")
            self.emit(f"{tag}.work.{name}/one_read", "-", ms / read, "x")
            self.emit(f"{tag}.work.{name}.exact", "-", float(exact), "bool")
        if self.device == "cuda":
            reps = {"gpulog": 10}
            for name, cls in self.W.items():
                w = cls(os.path.join(self.tmp, f"work_{name}"))
                w.add_histogram("h", x, -1)  # warm-up
                w.flush()
                self.sync()
                settle()
                calls = []
                for i in range(reps.get(name, 1)):  # torch's writer takes seconds per call
                    t = time.perf_counter()
                    w.add_histogram("h", x, i)
                    calls.append(time.perf_counter() - t)
                    self.sync()
                w.close()
                self.emit(f"{tag}.caller", name, statistics.median(calls) * 1e3, "ms")

    def loop(self) -> None:
        """In-loop overhead: 6-layer 2048-wide MLP, batch 512 (smaller on CPU)."""
        d = self.device
        width, batch, steps = (2048, 512, 200) if d == "cuda" else (256, 64, 60 if self.quick else 200)
        from benchmarks._model import mlp_trainer
        model, step = mlp_trainer(width, batch, 6, d)

        def run(log: Callable[[int, torch.Tensor], None]) -> float:
            for _ in range(10):
                step()
            self.sync()
            t = time.perf_counter()
            for i in range(steps):
                log(i, step())
            self.sync()
            return (time.perf_counter() - t) / steps

        def hist_logger(w: Any) -> Callable[[int, torch.Tensor], None]:
            def log(i: int, loss: torch.Tensor) -> None:
                w.add_scalar("loss", loss, i)
                if i % 20 == 0:
                    for pn, p in model.named_parameters():
                        w.add_histogram(pn, p, i)
            return log

        # Modes are interleaved over several rounds and the median kept, so drift of the machine
        # (frequency, neighbours) does not land on one writer.
        times: Dict[str, List[float]] = {}
        for _ in range(3):
            times.setdefault("base", []).append(run(lambda i, l: None))
            for name, cls in self.W.items():
                w = cls(os.path.join(self.tmp, f"loop_{name}"))
                times.setdefault(name + "/scalar", []).append(run(lambda i, l: w.add_scalar("loss", l, i)))
                times.setdefault(name + "/hist", []).append(run(hist_logger(w)))
                w.close()
        base = statistics.median(times["base"])
        self.emit("loop.no_logging", "-", base * 1e3, "ms/step")
        for name in self.W:
            self.emit("loop.scalar_each_step.overhead", name,
                      (statistics.median(times[name + "/scalar"]) / base - 1) * 100, "%")
            self.emit("loop.scalar+hist_every20.overhead", name,
                      (statistics.median(times[name + "/hist"]) / base - 1) * 100, "%")

    def loop_in_fresh_process(self) -> None:
        """:meth:`loop` in a new interpreter.  Why: on small VMs, earlier parts leave torch's OpenMP
        workers stacked on the main thread's core (measured on the 2-core VM: no-logging step
        1.3 ms alone, 3.7 ms after the tensor figures), which would distort every ratio."""
        import subprocess
        out = os.path.join(self.tmp, "loop.json")
        cmd = [sys.executable, "-m", "benchmarks", "--only", "loop", "--device", self.device, "--out", out]
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.run(cmd + (["--quick"] if self.quick else []), cwd=root, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the loop benchmark failed:\n{proc.stderr[-3000:]}")
        with open(out) as f:
            for row in json.load(f)["rows"]:
                self.emit(row["figure"], row["writer"], row["value"], row["unit"])

    def launch(self) -> None:
        """The launch-bound CPU step (``bench_launch_bound``): 60 tiny ops, 20 tensor scalars
        logged a step, writers alternated round by round, in a fresh interpreter."""
        import subprocess
        rounds, steps = (3, 500) if self.quick else (5, 2000)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_launch_bound", "--json",
                               "--rounds", str(rounds), "--steps", str(steps)], cwd=root,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the launch-bound benchmark failed:\n{proc.stderr[-3000:]}")
        times = json.loads(proc.stdout.strip().splitlines()[-1])
        base = statistics.median(times.pop("none"))
        self.emit("launch_bound.no_logging", "-", base * 1e6, "us/step")
        for name, ts in times.items():
            over = [(t / base - 1) * 100 for t in ts]
            self.emit("launch_bound.20_tensor_scalars.overhead", "tbx" if name == "tensorboardX" else name,
                      statistics.median(over), "%", spread=(min(over), max(over)))
            print(f"  launch-bound overhead {name}: min {min(over):+.1f} / median "
                  f"{statistics.median(over):+.1f} / max {max(over):+.1f} %")

    def read(self) -> None:
        """Reading scalars back (``bench_read --style simple``, a fresh interpreter): gpulog's
        ``read_scalars`` and ``read_events`` in the gpulog column; in the torch column TensorBoard's
        ``EventAccumulator`` (how runs written by torch's writer are read), in the tbx column tbparse."""
        import subprocess
        n, repeats = (100_000, 3) if self.quick else (600_000, 3)
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        proc = subprocess.run([sys.executable, "-m", "benchmarks.bench_read", "--json", "--style", "simple",
                               "--scalars", str(n), "--repeats", str(repeats)], cwd=root,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"the reading benchmark failed:\n{proc.stderr[-3000:]}")
        times = json.loads(proc.stdout.strip().splitlines()[-1])["times"]
        others = {"torch": times.get("EventAccumulator"), "tbx": times.get("tbparse")}
        for fn in ("read_scalars", "read_events"):
            figure = f"read.{n // 1000}k_scalars.{fn} (torch: EventAccumulator, tbx: tbparse)"
            for writer, ts in (("gpulog", times[f"gpulog {fn} (native)"]), *others.items()):
                if ts:
                    self.emit(figure, writer, statistics.median(ts), "s", spread=(min(ts), max(ts)))

    def distributed(self) -> None:
        """gloo processes on CPU in steady state (>= 20 sync points): overhead over no logging,
        collectives per step, bytes per sync point (gpulog only); then an 8-rank correctness run."""
        from benchmarks.bench_distributed import correctness, run
        for row in run(world=2, steps=300 if self.quick else 1500, repeats=2 if self.quick else 3):
            fig = row["figure"]
            for key, unit in (("overhead_pct", "%"), ("collectives_per_step", "count"),
                              ("sync_points", "count"), ("bytes_per_sync_point", "B")):
                if key in row:
                    s = row[key]
                    self.emit(f"{fig}.{key}", "-", s["median"], unit)
                    print(f"  {fig}.{key}: min {s['min']:.4g} / median {s['median']:.4g} / max {s['max']:.4g}")
        check = correctness(world=4 if self.quick else 8, steps=40 if self.quick else 100)
        print(f"  distributed correctness, {check['world']} ranks x {check['steps']} steps: "
              f"{'exact' if not check['errors'] else check['errors']} ({check['seconds']:.1f} s)")
        self.emit(f"distributed.{check['world']}ranks.correctness_errors", "-", len(check["errors"]), "count")

    def table(self) -> str:
        by: Dict[str, Dict[str, float]] = {}
        units: Dict[str, str] = {}
        spread: Dict[tuple, tuple] = {}
        for r in self.rows:
            by.setdefault(r["figure"], {})[r["writer"]] = r["value"]
            units[r["figure"]] = r["unit"]
            if "min" in r:
                spread[(r["figure"], r["writer"])] = (r["min"], r["max"])
        lines = ["| figure | unit | gpulog | torch | tbx | torch/gpulog | tbx/gpulog |", "|---|---|---|---|---|---|---|"]
        for fig, vals in by.items():
            g = vals.get("gpulog")
            higher_better = units[fig] == "events/s"

            def ratio(o: Optional[float]) -> str:
                if g is None or o is None or g == 0 or "overhead" in fig:
                    return ""
                return f"{(g / o) if higher_better else (o / g):.1f}x"
            def fmt(v: Optional[float], writer: str = "") -> str:
                if v is None:
                    return ""
                lo_hi = spread.get((fig, writer))  # median [min–max] over rounds
                return f"{v:.4g}" + (f" [{lo_hi[0]:.3g}–{lo_hi[1]:.3g}]" if lo_hi else "")
            lines.append(f"| {fig} | {units[fig]} | {fmt(g, 'gpulog')} | {fmt(vals.get('torch'), 'torch')} | "
                         f"{fmt(vals.get('tbx'), 'tbx')} | "
                         f"{ratio(vals.get('torch'))} | {ratio(vals.get('tbx'))} |" if "-" not in vals else
                         f"| {fig} | {units[fig]} | {fmt(vals['-'])} | | | | |")
        return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--quick", action="store_true", help="smaller sizes and fewer repetitions")
    ap.add_argument("--only", choices=["scalars", "tensors", "work", "loop", "launch", "read", "distributed"],
                    action="append")
    ap.add_argument("--out", default="benchmarks/out/results.json")
    args = ap.parse_args(argv)
    b = Bench(args.device, args.quick)
    try:
        parts = args.only or ["scalars", "tensors", "work", "loop", "launch", "read", "distributed"]
        for part in parts:
            getattr(b, "loop_in_fresh_process" if part == "loop" and len(parts) > 1 else part)()
    finally:
        shutil.rmtree(b.tmp, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    pinned = 0
    if args.device == "cuda" and hasattr(torch.cuda, "host_memory_stats"):
        stats = torch.cuda.host_memory_stats()  # pinned (host) allocator; key names vary by version
        pinned = stats.get("allocated_bytes.peak", stats.get("reserved_bytes.peak", 0))
    print(f"\nmachine: {platform.node()} {platform.machine()} {os.cpu_count()} cores, torch {torch.__version__}, "
          f"device {args.device}{' ' + torch.cuda.get_device_name() if args.device == 'cuda' else ''}; "
          f"peak RSS {peak:.0f} MiB; peak pinned host memory {pinned / 2**20:.1f} MiB\n")
    print(b.table())
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"rows": b.rows, "peak_rss_mib": peak, "device": args.device}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
