"""Image reduction: layout → HWC, torch's scaling, clamp and uint8, in one pass where the data is.

Data contract (torch's ``convert_to_HWC`` + ``image``): ``dataformats`` of 2 letters (HW, grey →
3 channels), 3 letters (HWC order; C=1 → 3 channels, 3 = RGB, 4 = RGBA) or 4 letters (a batch tiled
8 per row, no padding, empty cells black).  Scale factor 1 for uint8 data, else 255; the product is
taken in float32, clipped to [0, 255] and truncated to uint8 (NaN → 0).  Only these uint8 pixels
cross to the host; PNG encoding happens on the writer thread.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional

import numpy as np
import torch

from .. import _inputs
from .._encode import image as enc
from .._transfer import to_device
from ._backend import Prepared, finish, kernel_or


def check_format(x: torch.Tensor, dataformats: Any, allowed: tuple) -> str:
    if not isinstance(dataformats, str):
        raise TypeError(f"dataformats must be a str such as 'CHW', got {type(dataformats).__name__}")
    fmt = dataformats.upper()
    if len(set(fmt)) != len(fmt) or set(fmt) - set("NCHW") or len(fmt) not in allowed:
        raise ValueError(f"dataformats {dataformats!r} is not valid: use distinct letters from "
                         f"N, C, H, W, {' or '.join(str(a) for a in allowed)} of them")
    if x.dim() != len(fmt):
        raise ValueError(f"dataformats {dataformats!r} has {len(fmt)} letters but the image has "
                         f"{x.dim()} dimensions (shape {tuple(x.shape)})")
    if "C" in fmt and x.shape[fmt.index("C")] not in (1, 3, 4):
        raise ValueError(f"images need 1, 3 or 4 channels, got {x.shape[fmt.index('C')]} "
                         f"(shape {tuple(x.shape)}, dataformats {dataformats!r})")
    if x.numel() == 0:
        raise ValueError(f"the image is empty (shape {tuple(x.shape)})")
    return fmt


def to_nchw(x: torch.Tensor, fmt: str) -> torch.Tensor:
    """Any accepted layout → NCHW (a view)."""
    if len(fmt) == 2:
        return x.permute([fmt.index(c) for c in "HW"])[None, None]
    if len(fmt) == 3:
        return x.permute([fmt.index(c) for c in "CHW"])[None]
    return x.permute([fmt.index(c) for c in "NCHW"])


def grid_hwc_uint8_torch(x: torch.Tensor, ncols: int = 8) -> torch.Tensor:
    """Reference and fallback: NCHW (any dtype) → HWC uint8 grid with torch's scaling."""
    n, c, h, w = x.shape
    if c == 1:
        x = x.expand(n, 3, h, w)
        c = 3
    ncols = min(n, ncols)
    nrows = math.ceil(n / ncols)
    scale = 1.0 if x.dtype == torch.uint8 else 255.0
    y = x.to(torch.float32) * scale
    y = torch.nan_to_num(y, nan=0.0).clamp_(0, 255).to(torch.uint8)
    canvas = torch.zeros(nrows * ncols, c, h, w, dtype=torch.uint8, device=x.device)
    canvas[:n] = y
    return canvas.reshape(nrows, ncols, c, h, w).permute(0, 3, 1, 4, 2).reshape(nrows * h, ncols * w, c)


def _reduce(x: torch.Tensor) -> tuple:
    return (kernel_or(x, "image.grid_hwc_uint8", grid_hwc_uint8_torch)(x),)


def _tensor(img: Any, name: str = "img_tensor") -> torch.Tensor:
    if isinstance(img, torch.Tensor):
        t = _inputs.local(img.detach(), name)
    else:
        t = torch.from_numpy(np.ascontiguousarray(_inputs.to_numpy(img, name)))
    if t.is_complex() or not (t.is_floating_point() or t.dtype in
                              (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)):
        raise TypeError(f"{name} must be a real-valued image, got dtype {t.dtype}")
    return t


def prepare_image(tag: str, img: Any, dataformats: str) -> Prepared:
    x = _tensor(img)
    fmt = check_format(x, dataformats, (2, 3))
    return finish(enc.image, (tag, 1.0, None, None), to_nchw(x, fmt), _reduce)


def prepare_images(tag: str, img: Any, dataformats: str) -> Prepared:
    x = _tensor(img)
    fmt = check_format(x, dataformats, (2, 3, 4))
    return finish(enc.image, (tag, 1.0, None, None), to_nchw(x, fmt), _reduce)


def prepare_image_with_boxes(tag: str, img: Any, boxes: Any, rescale: float, dataformats: str,
                             labels: Optional[List[str]]) -> Prepared:
    x = _tensor(img)
    fmt = check_format(x, dataformats, (2, 3))
    on_device = _inputs.is_cuda_tensor(boxes)
    b = boxes.detach() if on_device else _inputs.to_numpy(boxes, "box_tensor")
    if b.ndim == 1 and b.shape[0] == 4:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"box_tensor must have shape [N, 4] (x1, y1, x2, y2), got {tuple(b.shape)}")
    rescale = _inputs.positive(rescale, "rescale")
    nchw = to_nchw(x, fmt)
    h, w = int(nchw.shape[-2]), int(nchw.shape[-1])
    if int(h * rescale) < 1 or int(w * rescale) < 1:
        raise ValueError(f"rescale={rescale!r} shrinks the {h}x{w} image below one pixel; pass a "
                         "larger rescale")
    if labels is not None:
        if not isinstance(labels, (list, tuple)) or not all(isinstance(s, str) for s in labels):
            raise TypeError(f"labels must be a list of str, one per box, got {labels!r:.60}")
        for i, s in enumerate(labels):
            _inputs.check_text(s, f"labels[{i}]")
        if len(labels) != len(b):
            labels = None  # torch drops labels whose count does not match the boxes
    if on_device:
        # Detector boxes live on the GPU: they travel with the pixels in the same staged copy
        # (a CPU image goes up to the boxes' device, asynchronously, first).
        nchw = to_device(nchw.contiguous(), boxes.device)
        return finish(enc.image_boxes_staged, (tag, float(rescale), labels), (nchw, b),
                      lambda t: (*_reduce(t[0]), t[1].to(torch.float64)))
    return finish(enc.image, (tag, float(rescale), np.array(b, dtype=np.float64), labels), nchw, _reduce)


def prepare_figure(tag: str, figure: Any, close: bool) -> Prepared:
    """Render matplotlib figure(s) on the caller's thread (matplotlib is not thread-safe)."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends import backend_agg
    except ImportError as err:
        raise ImportError("add_figure needs matplotlib: pip install matplotlib") from err

    def render(fig: Any) -> np.ndarray:
        if not hasattr(fig, "canvas"):
            raise TypeError(f"figure must be a matplotlib Figure or a list of them, got {type(fig).__name__}")
        canvas = backend_agg.FigureCanvasAgg(fig)
        canvas.draw()
        rgba = np.asarray(canvas.buffer_rgba(), dtype=np.uint8)
        if close:
            import matplotlib.pyplot as plt
            plt.close(fig)
        return rgba[:, :, :3].transpose(2, 0, 1)

    if isinstance(figure, (list, tuple)):
        if not figure:
            raise ValueError("figure list is empty")
        x = torch.from_numpy(np.stack([render(f) for f in figure]))
    else:
        x = torch.from_numpy(render(figure))[None]
    return finish(enc.image, (tag, 1.0, None, None), x, _reduce, snapshot=False)
