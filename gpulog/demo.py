"""``gpulog demo``: train a small model and log every summary kind gpulog has."""
from __future__ import annotations

import math
import os
import sys
import time


def run_demo(logdir: str, steps: int, device: str | None) -> int:
    import torch

    import gpulog

    dev = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if dev == "cuda" and not torch.cuda.is_available():
        print("gpulog demo: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    torch.manual_seed(0)
    # A two-moons-like toy problem: 2-D points, binary labels.
    n = 2048
    t = torch.rand(n) * math.pi
    xs = torch.cat([torch.stack([t.cos(), t.sin()], 1), torch.stack([1 - t.cos(), 0.5 - t.sin()], 1)])
    xs = (xs + 0.1 * torch.randn_like(xs)).to(dev)
    ys = torch.cat([torch.zeros(n), torch.ones(n)]).to(dev)
    model = torch.nn.Sequential(torch.nn.Linear(2, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64),
                                torch.nn.ReLU(), torch.nn.Linear(64, 1)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    # System metrics four times a second, at the training step (GPU ones from NVML when a GPU is
    # visible; host ones always), so even a short demo shows curves, not a single point.
    w = gpulog.SummaryWriter(logdir, system_metrics=True, system_metrics_interval=0.25)
    w.add_text("about", "gpulog demo: a small MLP on two moons, logged by **gpulog**", 0)
    w.add_custom_scalars_multilinechart(["loss", "accuracy"], category="training", title="curves")
    start = time.perf_counter()
    for step in range(steps):
        idx = torch.randint(0, 2 * n, (256,), device=dev)
        logits = model(xs[idx]).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, ys[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        w.add_scalar("loss", loss.detach(), step)  # a device tensor: no sync on CUDA
        if step % 20 == 0 or step == steps - 1:
            with torch.no_grad():
                probs = torch.sigmoid(model(xs).squeeze(1))
            w.add_scalar("accuracy", ((probs > 0.5).float() == ys).float().mean(), step)
            w.add_scalars("lr_and_loss", {"lr": opt.param_groups[0]["lr"], "loss": loss.detach()}, step)
            for name, p in model.named_parameters():
                w.add_histogram(name, p, step)
            w.add_pr_curve("pr", ys, probs, step)
            grid = torch.stack(torch.meshgrid(torch.linspace(-1.5, 2.5, 64), torch.linspace(-1, 1.5, 64),
                                              indexing="xy"), -1).reshape(-1, 2).to(dev)
            with torch.no_grad():
                field = torch.sigmoid(model(grid)).reshape(1, 64, 64)
            w.add_image("decision_field", field.flip(1), step)
        if step % max(1, steps // 40) and step != steps - 1:
            continue
        rate = (step + 1) / (time.perf_counter() - start)
        bar = "#" * int(30 * (step + 1) / steps)
        print(f"\r[{bar:<30}] {step + 1}/{steps} steps  {rate:7.1f} steps/s", end="", flush=True)
    print()
    frames = torch.stack([torch.rand(8, 3, 32, 32) * (i / 8) for i in range(4)])  # [N=4, T=8, ...]
    w.add_video("noise_video", frames, steps, fps=4)
    tone = torch.sin(torch.arange(16000) * 2 * math.pi * 440 / 16000) * 0.3
    w.add_audio("tone_440hz", tone, steps, sample_rate=16000)
    verts = torch.rand(1, 200, 3) * 2 - 1
    w.add_mesh("point_cloud", verts, colors=(verts + 1) * 127, global_step=steps)
    with torch.no_grad():
        feats = model[:4](xs[::16]).cpu()
    w.add_embedding(feats, metadata=[int(v) for v in ys[::16].cpu()], global_step=steps, tag="hidden")
    w.add_tensor("final_logits", model(xs[:8]).detach().cpu(), steps)
    w.add_hparams({"lr": 1e-2, "hidden": 64, "optimizer": "adam", "batchnorm": False},
                  {"hparam/accuracy": float(((probs > 0.5).float() == ys).float().mean())},
                  run_name="hparams", global_step=steps)
    w.close()
    print(f"logs written to {os.path.abspath(logdir)}")
    print(f"inspect them:   gpulog inspect {logdir}")
    try:
        import tensorboard  # noqa: F401
        print(f"view them:      tensorboard --logdir {logdir}")
    except ImportError:
        print(f"view them:      pip install 'gpulog[tensorboard]' && tensorboard --logdir {logdir}")
    return 0
