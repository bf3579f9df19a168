"""Image kernel: NCHW (any strides, any real dtype) → HWC uint8 grid in one pass.

Mirrors ``gpulog/_reduce/image.py``: 8 images per row, no padding, empty cells black; one channel
is replicated to three; scale ×255 unless uint8 (product in float32), NaN → 0, clamp to [0, 255],
truncate to uint8.  One program writes BLOCK output bytes, reading the input through its strides,
so a permuted (e.g. NHWC) input needs no copy first.
"""
from __future__ import annotations

import functools
import math
from typing import Any

import torch

from ._launch import device_of, triton_modules

BLOCK = 1024


@functools.lru_cache(maxsize=1)
def _kernel() -> Any:
    triton, tl = triton_modules()

    @triton.jit
    def grid_hwc_uint8_kernel(
        src_ptr,                      # input image batch, read through its strides
        out_ptr,                      # uint8 [rows*H, cols*W, C_OUT]
        total,                        # number of output bytes
        N, H, W,                      # batch size and image size
        sN, sC, sH, sW,               # input strides (elements)
        COLS: tl.constexpr,           # images per grid row
        C_IN: tl.constexpr,           # input channels (1 is replicated)
        C_OUT: tl.constexpr,          # output channels (3 or 4)
        SCALE: tl.constexpr,          # 1.0 for uint8 input, else 255.0
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        o = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = o < total
        c = o % C_OUT
        x = (o // C_OUT) % (COLS * W)
        y = o // (C_OUT * COLS * W)
        img = (y // H) * COLS + x // W
        h = y % H
        w = x % W
        cin = c if C_IN > 1 else c * 0
        live = mask & (img < N)
        v = tl.load(src_ptr + img * sN + cin * sC + h * sH + w * sW, mask=live, other=0).to(tl.float32)
        v = v * SCALE
        v = tl.where(v != v, 0.0, v)
        v = tl.minimum(tl.maximum(v, 0.0), 255.0)
        tl.store(out_ptr + o, v.to(tl.uint8), mask=mask)

    return grid_hwc_uint8_kernel


def grid_hwc_uint8(x: torch.Tensor, ncols: int = 8) -> torch.Tensor:
    """Same contract as ``_reduce.image.grid_hwc_uint8_torch``."""
    n, c, h, w = x.shape
    if x.dtype == torch.bool:
        x = x.to(torch.int16)  # bools scale by 255 like any non-uint8 dtype
    cols = min(n, ncols)
    rows = math.ceil(n / cols)
    c_out = 3 if c == 1 else c
    out = torch.empty(rows * h, cols * w, c_out, dtype=torch.uint8, device=x.device)
    total = out.numel()
    sN, sC, sH, sW = x.stride()
    with device_of(x):
        _kernel()[((total + BLOCK - 1) // BLOCK,)](
            x, out, total, n, h, w, sN, sC, sH, sW, COLS=cols, C_IN=c, C_OUT=c_out,
            SCALE=1.0 if x.dtype == torch.uint8 else 255.0, BLOCK=BLOCK)
    return out
