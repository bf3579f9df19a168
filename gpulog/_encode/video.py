"""Video: uint8 frames [T, H, W, C] → animated GIF (Pillow) → ``Summary.Image``.

TensorBoard's image dashboard plays GIFs.  Torch's writer needs moviepy 1.x (``moviepy.editor``
is gone in 2.x, and it then writes an empty value); Pillow needs nothing extra.  Grey frames are
shown as RGB; GIF palettes are 256 colours (as moviepy's GIFs are), so colours are quantised.
"""
from __future__ import annotations

import io
from typing import List

import numpy as np

from .._proto import messages as m
from .image import PLUGIN_NAME  # noqa: F401 - videos are images (GIFs) to TensorBoard


def gif(frames: np.ndarray, fps: float) -> bytes:
    from PIL import Image
    t, h, w, c = frames.shape
    if c == 1:
        frames = np.repeat(frames, 3, axis=3)
    mode = "RGBA" if c == 4 else "RGB"
    images = [Image.fromarray(np.ascontiguousarray(f), mode=mode).convert("RGB") for f in frames]
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:],
                   duration=max(1, int(round(1000.0 / fps))), loop=0)
    return out.getvalue()


def video(tag: str, fps: float, frames: np.ndarray) -> List[bytes]:
    t, h, w, c = frames.shape
    return [m.summary_value(tag, image=m.image(h, w, c, gif(frames, fps)))]
