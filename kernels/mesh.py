"""Mesh packing kernel: vertices, faces and colours → one contiguous float32 buffer.

Mirrors ``gpulog/_reduce/mesh.py`` (``pack_torch``): parts are converted to float32 and laid end
to end in the order given, so the whole mesh crosses to the host in a single copy.  One launch per
part writes straight into its slice of the output (no intermediate float32 copies).
"""
from __future__ import annotations

import functools
from typing import Any, List

import torch

from ._launch import device_of, triton_modules

BLOCK = 1024


@functools.lru_cache(maxsize=1)
def _kernel() -> Any:
    triton, tl = triton_modules()

    @triton.jit
    def pack_kernel(
        src_ptr,          # one contiguous part, any real dtype
        out_ptr,          # float32 output, already offset to this part's slice
        n,                # elements in this part
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        tl.store(out_ptr + offs, tl.load(src_ptr + offs, mask=mask).to(tl.float32), mask=mask)

    return pack_kernel


def pack(parts: List[torch.Tensor]) -> tuple:
    """Same contract as ``_reduce.mesh.pack_torch``."""
    total = sum(p.numel() for p in parts)
    out = torch.empty(total, dtype=torch.float32, device=parts[0].device)
    offset = 0
    with device_of(parts[0]):
        for p in parts:
            src = p.contiguous().reshape(-1)
            if src.dtype == torch.bool:
                src = src.to(torch.uint8)
            n = src.numel()
            _kernel()[((n + BLOCK - 1) // BLOCK,)](src, out[offset:offset + n], n, BLOCK=BLOCK)
            offset += n
    return (out,)
