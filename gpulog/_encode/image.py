"""Images: uint8 HWC pixels → PNG (Pillow, on the writer thread) → ``Summary.Image``.

Height/width are the pre-rescale sizes and colorspace the channel count, as torch writes them.
Boxes are drawn as torch's ``_draw_single_box`` draws them (red outline of width 2, optional label
on a red box, PIL's default font) before the LANCZOS rescale.
"""
from __future__ import annotations

import io
import math
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .._proto import messages as m

PLUGIN_NAME = "images"  # Summary.Image values (written without metadata); add_video's GIFs too


def _draw_boxes(image: Any, boxes: np.ndarray, labels: Optional[Sequence[str]]) -> None:
    from PIL import ImageDraw, ImageFont
    font = ImageFont.load_default()
    draw = ImageDraw.Draw(image)
    for i, (left, top, right, bottom) in enumerate(boxes.tolist()):
        draw.line([(left, top), (left, bottom), (right, bottom), (right, top), (left, top)],
                  width=2, fill="Red")
        text = None if labels is None else labels[i]
        if text:
            x0, y0, x1, y1 = font.getbbox(text)
            tw, th = x1 - x0, y1 - y0
            margin = math.ceil(0.05 * th)
            draw.rectangle([(left, bottom - th - 2 * margin), (left + tw, bottom)], fill="Red")
            draw.text((left + margin, bottom - th - margin), text, fill="black", font=font)


def png(pixels: np.ndarray, rescale: float = 1.0, boxes: Optional[np.ndarray] = None,
        labels: Optional[Sequence[str]] = None) -> bytes:
    from PIL import Image
    h, w, _ = pixels.shape
    img = Image.fromarray(np.ascontiguousarray(pixels))
    if boxes is not None:
        _draw_boxes(img, boxes, labels)
    if rescale != 1.0:
        img = img.resize((int(w * rescale), int(h * rescale)), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def image(tag: str, rescale: float, boxes: Optional[np.ndarray], labels: Optional[Sequence[str]],
          pixels: np.ndarray) -> List[bytes]:
    h, w, c = pixels.shape
    return [m.summary_value(tag, image=m.image(h, w, c, png(pixels, rescale, boxes, labels)))]


def image_boxes_staged(tag: str, rescale: float, labels: Optional[Sequence[str]], pixels: np.ndarray,
                       boxes: np.ndarray) -> List[bytes]:
    """:func:`image` with boxes that were staged from the device beside the pixels."""
    return image(tag, rescale, np.asarray(boxes, dtype=np.float64).reshape(-1, 4), labels, pixels)


def parse(value: Any) -> Dict[str, Any]:
    """A decoded ``Summary.Image``: size, channels, ``format`` ('png' or 'gif') and the bytes."""
    im = value.image
    data = bytes(im["encoded"])
    fmt = "png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "gif" if data[:3] == b"GIF" else "unknown"
    return {"width": int(im["width"]), "height": int(im["height"]), "channels": int(im["colorspace"]),
            "format": fmt, "encoded": data}


def describe(parsed: Dict[str, Any]) -> str:
    return f"{parsed['width']}x{parsed['height']} {parsed['format']}"
