"""Mesh reduction: vertices, faces and colours packed into one float32 buffer for one transfer.

Data contract: each present tensor is [B, N, 3] (torch's check); all are converted to float32
(faces and colours too, as torch writes them) and concatenated in the order vertices, faces,
colours.  The writer splits the buffer by the recorded shapes.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .. import _inputs
from .._encode import mesh as enc
from ._backend import Prepared, finish

PARTS = (("vertices", enc.VERTEX), ("faces", enc.FACE), ("colors", enc.COLOR))


def pack_torch(parts: List[torch.Tensor]) -> tuple:
    return (torch.cat([p.reshape(-1).to(torch.float32) for p in parts]),)


def _check(x: Any, name: str) -> torch.Tensor:
    t = _inputs.local(x.detach(), name) if isinstance(x, torch.Tensor) else \
        torch.from_numpy(np.array(_inputs.to_numpy(x, name)))
    if t.dim() != 3 or t.shape[2] != 3:
        raise ValueError(f"{name} must have shape [B, N, 3], got {tuple(t.shape)}")
    if t.is_complex():
        raise TypeError(f"{name} must be real-valued, got {t.dtype}")
    return t


def prepare(tag: str, vertices: Any, colors: Any, faces: Any,
            config_dict: Optional[Dict[str, Any]]) -> Prepared:
    if vertices is None:
        raise ValueError("add_mesh needs vertices of shape [B, N, 3]")
    given = {"vertices": vertices, "faces": faces, "colors": colors}
    parts: List[Tuple[int, torch.Tensor]] = [(kind, _check(given[name], name))
                                             for name, kind in PARTS if given[name] is not None]
    devices = {t.device for _, t in parts}
    if len(devices) != 1:
        raise ValueError(f"add_mesh: all tensors must be on one device, got {sorted(map(str, devices))}")
    if config_dict is not None and not isinstance(config_dict, dict):
        raise TypeError(f"config_dict must be a dict or None, got {type(config_dict).__name__}")
    json_config = enc.json_config(config_dict)
    layout = [(kind, tuple(t.shape)) for kind, t in parts]
    tensors = [t for _, t in parts]
    if tensors[0].is_cuda:  # one cat on the device (a Triton kernel did no better), one copy back
        return finish(enc.mesh, (tag, layout, json_config), tensors, pack_torch, snapshot=False)
    return finish(enc.mesh, (tag, layout, json_config), tuple(tensors), lambda ts: pack_torch(list(ts)))
