"""Every ``add_*`` path for CUDA inputs, on a machine without a GPU: no call may make the host wait
for the device, and every call logs exactly what the same call logs with CPU tensors.

The detector (``syncprobe.py``) presents CPU data as ``cuda:0`` tensors and fails on any operation
that would synchronise on a real GPU (see its docstring for the list).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import pytest
import torch

import gpulog
import syncprobe
from syncprobe import fake
from tbcompare import assert_same, run_snapshots

Case = Callable[[Any, Callable[[torch.Tensor], torch.Tensor]], None]


def _data() -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5000, generator=g)
    return {
        "x": x, "x16": x.half(), "xbf": x.bfloat16(), "x64": x.double(), "xi": (x * 20).int(),
        "xb": x > 0, "s": x[:1].reshape(()), "pred": torch.rand(5000, generator=g),
        "lab": (torch.rand(5000, generator=g) > 0.5).int(), "w": torch.rand(5000, generator=g),
        "img": torch.rand(3, 12, 10, generator=g), "imgs": torch.rand(5, 3, 8, 8, generator=g),
        "u8": (torch.rand(12, 10, 3, generator=g) * 255).to(torch.uint8),
        "boxes": torch.tensor([[1.0, 1.0, 6.0, 8.0], [2.0, 0.0, 9.0, 5.0]]),
        "vid": torch.rand(3, 4, 3, 8, 8, generator=g), "snd": torch.rand(800, generator=g) * 2 - 1,
        "verts": torch.rand(1, 20, 3, generator=g), "faces": torch.randint(0, 20, (1, 10, 3), generator=g),
        "cols": torch.randint(0, 255, (1, 20, 3), generator=g), "mat": torch.randn(12, 5, generator=g),
        "label_img": torch.rand(12, 3, 4, 4, generator=g),
        "rows": torch.rand(6, 9, generator=g).double(),
    }


D = _data()


def _hist_cases() -> List[Tuple[str, Case]]:
    out: List[Tuple[str, Case]] = []
    for key in ("x", "x16", "xbf", "x64", "xi", "xb"):
        out.append((f"histogram-tensorflow-{key}", lambda w, T, k=key: w.add_histogram("h", T(D[k]), 1)))
    for bins in (10, 1, "auto", "fd", "doane", "scott", "stone", "rice", "sturges", "sqrt"):
        out.append((f"histogram-bins-{bins}", lambda w, T, b=bins: w.add_histogram("h", T(D["x"]), 1, bins=b)))
    out += [
        ("histogram-int-values-int-bins", lambda w, T: w.add_histogram("h", T(D["xi"]), 1, bins=7)),
        ("histogram-edges-list", lambda w, T: w.add_histogram("h", T(D["x"]), 1, bins=[-1.0, 0.0, 0.5, 2.0])),
        ("histogram-edges-array", lambda w, T: w.add_histogram("h", T(D["x"]), 1, bins=np.linspace(-2, 2, 9))),
        ("histogram-edges-tensor", lambda w, T: w.add_histogram("h", T(D["x"]), 1,
                                                                 bins=T(torch.linspace(-2, 2, 9).double()))),
        ("histogram-max-bins", lambda w, T: w.add_histogram("h", T(D["x"]), 1, max_bins=20)),
        ("histogram-raw", lambda w, T: w.add_histogram_raw(
            "hr", T(D["x"].min()), T(D["x"].max()), T(torch.tensor(5000.0)), T(D["x"].sum()),
            T((D["x"] ** 2).sum()), T(torch.tensor([-1.0, 0.0, 1.0, 9.0])), T(torch.tensor([3.0, 4.0, 5.0, 6.0])), 2)),
    ]
    return out


CASES: List[Tuple[str, Case]] = [
    ("scalar", lambda w, T: w.add_scalar("s", T(D["s"]), 1)),
    ("scalar-new-style", lambda w, T: w.add_scalar("s", T(D["s"]), 1, new_style=True)),
    ("scalar-double", lambda w, T: w.add_scalar("s", T(D["s"].double()), 1, new_style=True,
                                                double_precision=True)),
    ("scalar-int-tensor", lambda w, T: w.add_scalar("s", T(torch.tensor(3)), 1)),
    ("scalars", lambda w, T: w.add_scalars("m", {"a": T(D["s"]), "b": T(D["s"] * 2), "c": 1.5}, 1)),
    *_hist_cases(),
    ("pr-curve", lambda w, T: w.add_pr_curve("pr", T(D["lab"]), T(D["pred"]), 1)),
    ("pr-curve-bool-labels", lambda w, T: w.add_pr_curve("pr", T(D["lab"].bool()), T(D["pred"]), 1)),
    ("pr-curve-float-labels", lambda w, T: w.add_pr_curve("pr", T(D["lab"].float()), T(D["pred"]), 1,
                                                          num_thresholds=33)),
    ("pr-curve-weights", lambda w, T: w.add_pr_curve("pr", T(D["lab"]), T(D["pred"]), 1, weights=T(D["w"]))),
    ("pr-curve-cpu-weights", lambda w, T: w.add_pr_curve("pr", T(D["lab"]), T(D["pred"]), 1, weights=D["w"])),
    ("pr-curve-half", lambda w, T: w.add_pr_curve("pr", T(D["lab"]), T(D["pred"].bfloat16()), 1)),
    ("pr-curve-raw", lambda w, T: w.add_pr_curve_raw("prr", *(T(D["rows"][i] * 10) for i in range(4)),
                                                     T(D["rows"][4]), T(D["rows"][5]), 1, num_thresholds=9)),
    ("image-chw", lambda w, T: w.add_image("i", T(D["img"]), 1)),
    ("image-hwc-uint8", lambda w, T: w.add_image("i", T(D["u8"]), 1, dataformats="HWC")),
    ("image-hw", lambda w, T: w.add_image("i", T(D["img"][0]), 1, dataformats="HW")),
    ("images-nchw", lambda w, T: w.add_images("i", T(D["imgs"]), 1)),
    ("images-nhwc", lambda w, T: w.add_images("i", T(D["imgs"].permute(0, 2, 3, 1)), 1, dataformats="NHWC")),
    ("image-boxes", lambda w, T: w.add_image_with_boxes("b", T(D["img"]), T(D["boxes"]), 1)),
    ("image-boxes-labels-rescale", lambda w, T: w.add_image_with_boxes(
        "b", T(D["img"]), T(D["boxes"]), 1, rescale=2, labels=["a", "b"])),
    ("image-cpu-boxes", lambda w, T: w.add_image_with_boxes("b", T(D["img"]), D["boxes"], 1)),
    ("video", lambda w, T: w.add_video("v", T(D["vid"]), 1)),
    ("video-uint8", lambda w, T: w.add_video("v", T((D["vid"] * 255).to(torch.uint8)), 1, fps=2)),
    ("audio", lambda w, T: w.add_audio("a", T(D["snd"]), 1, sample_rate=8000)),
    ("audio-loud", lambda w, T: w.add_audio("a", T(D["snd"] * 3), 1)),
    ("mesh", lambda w, T: w.add_mesh("m", T(D["verts"]), colors=T(D["cols"]), faces=T(D["faces"]),
                                     global_step=1)),
    ("tensor", lambda w, T: w.add_tensor("t", T(D["x"][:50]), 1)),
    ("tensor-bf16", lambda w, T: w.add_tensor("t", T(D["xbf"][:50]), 1)),
    ("tensor-int", lambda w, T: w.add_tensor("t", T(D["xi"][:50].long()), 1)),
    ("hparams", lambda w, T: w.add_hparams({"lr": T(torch.tensor(0.5)), "n": 3}, {"acc": T(torch.tensor(0.25))},
                                           run_name="hp")),
    ("embedding", lambda w, T: w.add_embedding(T(D["mat"]), metadata=list(range(12)),
                                               label_img=T(D["label_img"]), global_step=1)),
    ("embedding-cpu-mat", lambda w, T: w.add_embedding(D["mat"], label_img=T(D["label_img"]), global_step=1)),
]


def _run(tmp_path: Any, name: str, case: Case, T: Callable[[torch.Tensor], torch.Tensor]) -> str:
    d = str(tmp_path / name)
    w = gpulog.SummaryWriter(d)
    case(w, T)
    syncprobe.PROBE.local.strict = False  # close() waits for the writer (a thread, not the device)
    w.close()
    return d


def _files(d: str) -> Dict[str, bytes]:
    import os
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            if f.endswith((".tsv", ".png", ".pbtxt")):
                with open(os.path.join(root, f), "rb") as fh:
                    out[os.path.relpath(os.path.join(root, f), d)] = fh.read()
    return out


@pytest.mark.parametrize("name,case", CASES, ids=[c[0] for c in CASES])
def test_no_host_wait_and_same_values_as_cpu(tmp_path, monkeypatch, name, case):
    want = _run(tmp_path, "cpu", case, lambda t: t)
    with syncprobe.installed(monkeypatch) as probe:
        got = _run(tmp_path, "cuda", case, fake)
        syncs = list(probe.syncs)
        foreign = list(probe.foreign_enqueues)
    assert not syncs, f"{len(syncs)} host waits in {name}; first:\n{syncs[0]}"
    assert not foreign, f"the writer thread queued work on a user stream: {foreign[:3]}"
    a, b = _comparable(run_snapshots(want)), _comparable(run_snapshots(got))
    assert a.keys() == b.keys() and a
    for run in a:
        assert_same(a[run], b[run])
    assert _files(want) == _files(got)


def _comparable(runs: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Histogram sums differ in the last bits between summation orders (the CPU path sums in one
    fused pass, the device path chunk by chunk); everything else must match exactly."""
    out = {}
    for run, snap in runs.items():
        snap = dict(snap)
        for k, events in snap.items():
            if k.startswith("histo/"):
                snap[k] = [(step, h.min, h.max, h.num, float(f"{h.sum:.12g}"), float(f"{h.sum_squares:.12g}"),
                            list(h.bucket_limit), list(h.bucket)) for step, h in events]
        out[run] = snap
    return out
