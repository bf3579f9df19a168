"""Device scalars: snapshot a one-element CUDA tensor and copy it to the host asynchronously.

The snapshot (a device-side copy ordered on the current stream) fixes the value at call time even
if the caller mutates the tensor afterwards; the copy to pinned memory never blocks the caller.
"""
from __future__ import annotations

import torch

from .._transfer import DeviceStaged


def stage(value: torch.Tensor) -> DeviceStaged:
    if value.numel() != 1:
        raise ValueError(f"scalar_value must hold exactly one element, got a tensor of shape "
                         f"{tuple(value.shape)}; reduce it first (e.g. .mean())")
    if value.is_complex():
        raise TypeError(f"scalar_value must be real, got a {value.dtype} tensor")
    return DeviceStaged([value.detach().reshape(1).to(torch.float64, copy=True)])
