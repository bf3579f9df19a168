"""TensorBoard read-back helpers for differential tests against torch's writer."""
from __future__ import annotations

import io
import os
from typing import Any, Dict

import numpy as np


def accumulate(run_dir: str) -> Any:
    """TensorBoard's own EventAccumulator over one run directory, keeping every event."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(run_dir), size_guidance={
        "scalars": 0, "histograms": 0, "images": 0, "audio": 0, "tensors": 0,
        "compressedHistograms": 0})
    acc.Reload()
    return acc


def _png_pixels(data: bytes) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(io.BytesIO(data)))


def snapshot(run_dir: str) -> Dict[str, Any]:
    """Everything TensorBoard reads from a run, minus wall times, as comparable Python data."""
    from tensorboard.util.tensor_util import make_ndarray
    acc = accumulate(run_dir)
    tags = acc.Tags()
    out: Dict[str, Any] = {}
    for tag in tags["scalars"]:
        out["scalar/" + tag] = [(e.step, e.value) for e in acc.Scalars(tag)]
    for tag in tags["histograms"]:
        out["histo/" + tag] = [(e.step, e.histogram_value) for e in acc.Histograms(tag)]
    for tag in tags["images"]:
        out["image/" + tag] = [(e.step, e.width, e.height, _png_pixels(e.encoded_image_string).tolist())
                               for e in acc.Images(tag)]
    for tag in tags["audio"]:
        out["audio/" + tag] = [(e.step, e.content_type, e.sample_rate, e.length_frames,
                                e.encoded_audio_string) for e in acc.Audio(tag)]
    for tag in tags["tensors"]:
        md = acc.SummaryMetadata(tag)
        out["tensor/" + tag] = [(e.step, make_ndarray(e.tensor_proto).tolist()) for e in acc.Tensors(tag)]
        out["meta/" + tag] = (md.plugin_data.plugin_name, md.plugin_data.content)
    try:
        hp = acc.PluginTagToContent("hparams")
    except KeyError:
        hp = {}
    if hp:
        from google.protobuf.json_format import MessageToDict
        from tensorboard.plugins.hparams import plugin_data_pb2
        for tag, content in hp.items():
            out["hparams/" + tag] = MessageToDict(plugin_data_pb2.HParamsPluginData.FromString(content))
    return out


def assert_same(a: Dict[str, Any], b: Dict[str, Any]) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        assert _eq(a[k], b[k]), f"{k}: {a[k]!r:.400} != {b[k]!r:.400}"


def _eq(x: Any, y: Any) -> bool:
    if isinstance(x, float) and isinstance(y, float):
        return (x == y) or (np.isnan(x) and np.isnan(y))
    if isinstance(x, (list, tuple)) and isinstance(y, (list, tuple)):
        return len(x) == len(y) and all(_eq(p, q) for p, q in zip(x, y))
    return x == y


def run_snapshots(root: str) -> Dict[str, Dict[str, Any]]:
    """Snapshot of every run under ``root``, keyed by run path relative to ``root``."""
    out = {}
    for d, _, files in os.walk(root):
        if any("tfevents" in f for f in files):
            out[os.path.relpath(d, root)] = snapshot(d)
    return out
