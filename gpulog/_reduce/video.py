"""Video reduction: [N, T, C, H, W] → uint8 frames [T, rows·H, cols·W, C], torch's layout and scaling.

Data contract (torch's ``_prepare_video``): uint8 input is divided by 255 first; N is padded with
black videos to the next power of two; ``rows = 2 ** ((bit_length(N) - 1) // 2)``; video i sits at
row i // cols, column i % cols; then ×255 in float32, clip, uint8.  GIF encoding (Pillow) runs on
the writer thread.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import _inputs
from .._encode import video as enc
from ._backend import Prepared, finish


def frames_torch(v: torch.Tensor) -> tuple:
    b, t, c, h, w = v.shape
    x = v.to(torch.float32) / 255.0 if v.dtype == torch.uint8 else v.to(torch.float32)
    padded = b if b & (b - 1) == 0 else 1 << b.bit_length()
    rows = 2 ** ((b.bit_length() - 1) // 2)
    cols = padded // rows
    y = torch.nan_to_num(x * 255.0, nan=0.0).clamp_(0, 255).to(torch.uint8)
    canvas = torch.zeros(padded, t, c, h, w, dtype=torch.uint8, device=v.device)
    canvas[:b] = y
    frames = canvas.reshape(rows, cols, t, c, h, w).permute(2, 0, 4, 1, 5, 3)
    return (frames.reshape(t, rows * h, cols * w, c),)


def prepare(tag: str, vid: Any, fps: Any) -> Prepared:
    if isinstance(vid, torch.Tensor):
        v = _inputs.local(vid.detach(), "vid_tensor")
    else:
        v = torch.from_numpy(np.ascontiguousarray(_inputs.to_numpy(vid, "vid_tensor")))
    if v.dim() != 5:
        raise ValueError(f"vid_tensor must have 5 dimensions [N, T, C, H, W], got shape {tuple(v.shape)}")
    if v.numel() == 0:
        raise ValueError(f"vid_tensor is empty (shape {tuple(v.shape)})")
    if v.shape[2] not in (1, 3, 4):
        raise ValueError(f"videos need 1, 3 or 4 channels in dimension 2, got {v.shape[2]}")
    if v.is_complex() or v.dtype == torch.bool:
        raise TypeError(f"vid_tensor must be real-valued, got {v.dtype}")
    # A GIF frame lasts at most 655.35 s (a 16-bit count of centiseconds).
    fps = _inputs.positive(fps, "fps")
    if fps < 1 / 655.35:
        raise ValueError(f"fps must be at least 1/655.35 (a GIF frame lasts at most 655.35 s), got {fps!r}")
    return finish(enc.video, (tag, fps), v, frames_torch)
