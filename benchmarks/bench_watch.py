"""Watching every parameter and gradient: host cost of one log step and of an off-step.

    python -m benchmarks.bench_watch [--blocks 128] [--repeats 5]

A model of ``blocks`` x (Linear(64, 64) + LayerNorm(64)): 4 tensors a block (512 at the default),
after a backward pass, statistics of every parameter and every gradient (1024 tensors):

* ``gpulog watch``: ``handle.log(step)`` (the fused pass, one staged result, one queued item),
  then end to end with ``flush()`` (the writer thread derived and wrote 8 statistics a tensor);
  CPU = ``getrusage`` of all threads over the same span;
* ``per-tensor loop``: what OLMo v1 / Lightning-style code does: per tensor the same 8 statistics,
  each a torch op and an ``.item()``, logged with torch's ``SummaryWriter`` and flushed;
* ``lightning grad_norm``: ``lightning.pytorch.utilities.grad_norm`` (norms of the gradients
  only), each ``.item()``-ed and logged with torch's writer;
* ``wandb.watch`` (offline, ``log="all"``, ``log_freq=1``): a training step with it minus one
  without (its hooks run inside forward and backward);
* ``off-step``: the watch's optimizer pre-hook on a step it does not log, per call.

Every figure is the whole process's work for the step, measured back to back in one run.
"""
from __future__ import annotations

import argparse
import resource
import statistics
import sys
import tempfile
import time
from typing import Callable, Dict, List

import torch


def model_of(blocks: int) -> torch.nn.Module:
    torch.manual_seed(0)
    layers: List[torch.nn.Module] = []
    for _ in range(blocks):
        layers += [torch.nn.Linear(64, 64), torch.nn.LayerNorm(64)]
    return torch.nn.Sequential(*layers)


def backward(model: torch.nn.Module) -> None:
    model.zero_grad()
    model(torch.randn(8, 64)).pow(2).mean().backward()


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def timed(fn: Callable[[], None]) -> Dict[str, float]:
    c0, t0 = cpu_s(), time.perf_counter()
    fn()
    return {"wall_ms": (time.perf_counter() - t0) * 1e3, "cpu_ms": (cpu_s() - c0) * 1e3}


def per_tensor_loop(model: torch.nn.Module, w: object, step: int) -> None:
    for name, p in model.named_parameters():
        for what, t in (("param", p.detach()), ("grad", p.grad)):
            finite = torch.isfinite(t)
            f = t[finite]
            stats = {"norm": f.norm().item(), "mean": f.mean().item(), "std": f.std().item(),
                     "min": f.min().item(), "max": f.max().item(), "absmax": f.abs().max().item(),
                     "nonfinite": (~finite).sum().item(), "zero_frac": (f == 0).float().mean().item()}
            for k, v in stats.items():
                w.add_scalar(f"{what}_{k}/{name}", v, step)  # type: ignore[attr-defined]
    w.flush()  # type: ignore[attr-defined]


def main(argv: List[str] = None) -> int:  # type: ignore[assignment]
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--blocks", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = ap.parse_args(argv)
    if args.device == "cuda":
        return cuda_main(args.blocks, args.repeats)
    torch.set_num_threads(1)
    import gpulog
    from torch.utils.tensorboard import SummaryWriter as TorchWriter
    model = model_of(args.blocks)
    n_tensors = len(list(model.parameters()))
    rows: Dict[str, List[Dict[str, float]]] = {}

    def add(name: str, r: Dict[str, float]) -> None:
        rows.setdefault(name, []).append(r)

    with tempfile.TemporaryDirectory() as d:
        gw = gpulog.SummaryWriter(d + "/g")
        # hooked to an optimizer that never steps: handle.log() is the log step measured here
        handle = gw.watch(model, log="all", every=10**9, layout=False,
                          optimizer=torch.optim.SGD(model.parameters(), lr=0.0))
        tw = TorchWriter(d + "/t")
        try:
            from lightning.pytorch.utilities import grad_norm
        except ImportError:
            grad_norm = None
        try:
            import wandb
            run = wandb.init(mode="offline", dir=d, project="bench", settings=wandb.Settings(silent=True))
        except Exception:  # noqa: BLE001 - reported below
            wandb = None
        opt = torch.optim.SGD(model.parameters(), lr=1e-4)
        backward(model)
        handle.log(0)
        gw.flush()  # warm-up: the chunk table, the writer thread
        for rep in range(args.repeats + 1):
            backward(model)
            r = {}
            r["caller"] = timed(lambda: handle.log(rep))["wall_ms"]
            e2e = timed(lambda: (handle.log(rep), gw.flush()))
            if rep == 0:
                continue  # the first round warms every path up
            add("gpulog watch: handle.log() caller", {"wall_ms": r["caller"], "cpu_ms": float("nan")})
            add("gpulog watch: log + flush (end to end)", e2e)
            add("per-tensor loop + .item() + torch writer", timed(lambda: per_tensor_loop(model, tw, rep)))
            if grad_norm is not None:
                def lightning() -> None:
                    for k, v in grad_norm(model, norm_type=2).items():
                        tw.add_scalar(k, v.item(), rep)
                    tw.flush()
                add("lightning grad_norm (grad norms only) + torch writer", timed(lightning))
            add("off-step: the watch's step pre-hook, per call", _off_step(gw, model, opt))
            if wandb is not None:
                add("wandb.watch(log='all', log_freq=1): step minus plain step",
                    _wandb_step(model, wandb, run))
        gw.close()
        tw.close()
        if wandb is not None:
            run.finish()
    print(f"{n_tensors} parameter tensors ({2 * n_tensors} watched with gradients), "
          f"{args.repeats} repeats, torch {torch.__version__}, 1 torch thread")
    print(f"{'what':<58} {'wall ms min/median/max':>24} {'CPU ms (all threads) min/med/max':>34}")
    for name, rs in rows.items():
        cells = []
        for key in ("wall_ms", "cpu_ms"):
            v = sorted(x[key] for x in rs)
            cells.append("-" if v[0] != v[0] else f"{v[0]:.3g}/{statistics.median(v):.3g}/{v[-1]:.3g}")
        print(f"{name:<58} {cells[0]:>24} {cells[1]:>34}")
    if wandb is None:
        print("wandb: not installed here, not run")
    return 0


def _off_step(gw: object, model: torch.nn.Module, opt: torch.optim.Optimizer) -> Dict[str, float]:
    """The watch's cost on a step it does not log: its step pre-hook, called as torch calls it
    from ``optimizer.step()`` (timing whole steps with and without would bury ~1 us in the
    optimizer's own ms), per call, in ms like the other rows."""
    n = 20000
    off = gw.watch(model, log="all", every=10**9, layout=False, optimizer=opt)  # type: ignore[attr-defined]
    off.steps = 1  # past its log step 0: only off-steps follow
    hook = off._pre_hook
    r = timed(lambda: [hook(opt, (), {}) for _ in range(n)])
    off.remove()
    return {k: v / n for k, v in r.items()}


def _wandb_step(model: torch.nn.Module, wandb: object, run: object) -> Dict[str, float]:
    plain = timed(lambda: backward(model))
    run.watch(model, log="all", log_freq=1)  # type: ignore[attr-defined]
    with_watch = timed(lambda: (backward(model), run.log({}, commit=True)))  # type: ignore[attr-defined]
    run.unwatch(model)  # type: ignore[attr-defined]
    return {k: with_watch[k] - plain[k] for k in plain}


def cuda_main(blocks: int, repeats: int) -> int:
    """On a GPU: host time of a log step (no sync inside), its device time against one read of
    every watched byte (``torch._foreach_norm`` over the same tensors: the bandwidth floor of any
    pass), and the per-tensor ``.item()`` loop, for ``blocks`` x (Linear(256, 256) + LayerNorm)."""
    import gpulog
    torch.manual_seed(0)
    layers: List[torch.nn.Module] = []
    for _ in range(blocks):
        layers += [torch.nn.Linear(256, 256), torch.nn.LayerNorm(256)]
    model = torch.nn.Sequential(*layers).cuda()
    model(torch.randn(64, 256, device="cuda")).pow(2).mean().backward()
    tensors = [p.detach() for p in model.parameters()] + [p.grad for p in model.parameters()]
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    with tempfile.TemporaryDirectory() as d:
        w = gpulog.SummaryWriter(d)
        handle = w.watch(model, log="all", layout=False,
                         optimizer=torch.optim.SGD(model.parameters(), lr=0.0))
        for _ in range(3):  # compile the kernel, warm the allocator and the writer
            handle.log(0)
        torch.cuda.synchronize()
        w.flush()
        rows: Dict[str, List[float]] = {}
        for rep in range(repeats):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            t0 = time.perf_counter()
            handle.log(rep)
            host = (time.perf_counter() - t0) * 1e3
            end.record()
            torch.cuda.synchronize()
            rows.setdefault("gpulog log step: host ms (caller)", []).append(host)
            rows.setdefault("gpulog log step: device ms", []).append(start.elapsed_time(end))
            start.record()
            torch._foreach_norm(tensors)
            end.record()
            torch.cuda.synchronize()
            rows.setdefault("one read of every watched byte (_foreach_norm): device ms", []).append(
                start.elapsed_time(end))
            t0 = time.perf_counter()
            for t in tensors:
                finite = torch.isfinite(t)
                f = t[finite]
                [v.item() for v in (f.norm(), f.mean(), f.std(), f.min(), f.max(), f.abs().max(),
                                    (~finite).sum(), (f == 0).float().mean())]
            rows.setdefault("per-tensor loop with .item(): wall ms", []).append((time.perf_counter() - t0) * 1e3)
        w.close()
    print(f"{len(tensors)} watched tensors, {nbytes / 1e6:.0f} MB, {torch.cuda.get_device_name()}")
    for name, v in rows.items():
        v = sorted(v)
        print(f"{name:<64} {v[0]:.3g} / {statistics.median(v):.3g} / {v[-1]:.3g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
