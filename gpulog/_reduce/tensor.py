"""``add_tensor``: the whole tensor is the summary (nothing to reduce).

Data contract: any tensor of a dtype ``_encode.tensor.SUPPORTED`` lists (bfloat16 widened to
float32, as numpy has no bfloat16), under 2 GiB; a CUDA tensor is copied asynchronously into
pinned memory, a host one copied now (the value at call time, whatever the caller does next).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .. import _inputs
from .._encode import tensor as enc
from ._backend import Prepared, staged

_LIMIT = 2**31  # protobuf's message limit


def prepare(tag: str, tensor: Any) -> Prepared:
    if _inputs.is_cuda_tensor(tensor):
        from .._transfer import widen_bf16_for_numpy
        t = tensor.detach()
        dtype = str(t.dtype).replace("torch.", "")
        if dtype not in enc.SUPPORTED and dtype != "bfloat16":
            raise TypeError(f"add_tensor: unsupported dtype {t.dtype}; use one of {', '.join(enc.SUPPORTED)}")
        _check_size(t.numel() * t.element_size())
        return staged(enc.tensor, (tag,), [widen_bf16_for_numpy(t)])
    arr = _inputs.to_numpy(tensor, "tensor")
    if arr.dtype.name not in enc.SUPPORTED:
        raise TypeError(f"add_tensor: unsupported dtype {arr.dtype}; use one of {', '.join(enc.SUPPORTED)}")
    _check_size(arr.nbytes)
    arr = np.array(arr, copy=True)
    return staged(enc.tensor, (tag,), [arr], arr.nbytes)


def _check_size(nbytes: int) -> None:
    if nbytes >= _LIMIT:
        raise ValueError(f"add_tensor: tensor of {nbytes} bytes exceeds the 2 GiB protobuf limit; "
                         "log a slice or a summary of it")
