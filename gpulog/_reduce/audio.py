"""Audio reduction: mono samples → int16 (torch's rule), with the out-of-range flag.

Data contract: squeeze to 1-D; values beyond [-1, 1] are clipped (the writer warns once per call,
as torch prints); ``int16(x * 32767)`` truncating, multiplied in the input dtype (bfloat16 is
narrowed to float16 first, as torch's writer does).  WAV encoding runs on the writer thread.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .. import _inputs
from .._encode import audio as enc
from ._backend import Prepared, finish


def samples_torch(x: torch.Tensor) -> tuple:
    out_of_range = (x.abs().max() > 1).reshape(1)
    y = x.clamp(-1, 1) if x.is_floating_point() else x.clamp(-1, 1).to(torch.int64)
    return (y * 32767).to(torch.int16), out_of_range


def prepare(tag: str, snd: Any, sample_rate: Any) -> Prepared:
    if isinstance(snd, torch.Tensor):
        x = _inputs.local(snd.detach(), "snd_tensor")
    else:
        x = torch.from_numpy(np.array(_inputs.to_numpy(snd, "snd_tensor")))
    x = x.squeeze()
    if x.dim() != 1:
        raise ValueError(f"snd_tensor must be mono: 1-D after squeeze, got shape {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError("snd_tensor is empty")
    if x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"snd_tensor must be real-valued, got {x.dtype}")
    # WAV stores the rate, and rate x 2 bytes per second, as 32-bit unsigned integers.
    sample_rate = _inputs.positive(sample_rate, "sample_rate", maximum=(2**32 - 1) // 2)
    x = _inputs.narrow_bf16_as_torch(x)
    return finish(enc.audio, (tag, sample_rate), x, samples_torch)
