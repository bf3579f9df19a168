"""Fused histogram kernel: bucket counts + min/max/sum/sum of squares in one pass over the data.

Mirrors ``gpulog/_reduce/histogram.py`` (the reference): the same 32768-cell table gives each
float32 value its TensorFlow bin with one gather and one compare.  Each program counts its block
on chip with ``tl.histogram`` (2048 slots ≥ 1550 shifted bins) and adds the block's counts to the
global int64 counters with one vector of atomics, so global atomics scale with programs, not
elements.  Partial statistics go to a [programs, 5] float64 buffer reduced by torch afterwards.
Counts are exact; sum and sum of squares are float64 sums in a different order than numpy's.
"""
from __future__ import annotations

import functools
from typing import Any, Tuple

import numpy as np
import torch

from ._launch import device_of, triton_modules

NB = 2048       # on-chip histogram slots; shifted bins use 0..1549, masked lanes the last slot
BLOCK = 4096    # elements per program


@functools.lru_cache(maxsize=1)
def _kernel() -> Any:
    triton, tl = triton_modules()

    @triton.jit
    def histogram_tf_kernel(
        x_ptr,            # flat float input (fp32/fp16/bf16), n elements
        n,                # number of elements
        base_ptr,         # int32 [32768]: shifted bin of each cell's smallest value
        thr_ptr,          # float32 [32768]: first value of the next bin in the cell (NaN: none)
        counts_ptr,       # int64 [NB]: global counters, zero-initialised
        part_ptr,         # float64 [programs, 5]: min, max, sum, sum of squares, NaN count
        BLOCK: tl.constexpr,
        NB: tl.constexpr,
    ):
        pid = tl.program_id(0)
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        cell = (x.to(tl.int32, bitcast=True) >> 17) & 32767
        base = tl.load(base_ptr + cell, mask=mask, other=0)
        thr = tl.load(thr_ptr + cell, mask=mask, other=0.0)
        b = base + (x >= thr).to(tl.int32)
        b = tl.where(mask, b, NB - 1)
        hist = tl.histogram(b, NB)
        tl.atomic_add(counts_ptr + tl.arange(0, NB), hist.to(tl.int64))
        is_nan = x != x
        x64 = tl.where(mask, x.to(tl.float64), 0.0)
        ok = mask & (x == x)
        tl.store(part_ptr + pid * 5 + 0, tl.min(tl.where(ok, x, float("inf")), axis=0).to(tl.float64))
        tl.store(part_ptr + pid * 5 + 1, tl.max(tl.where(ok, x, float("-inf")), axis=0).to(tl.float64))
        tl.store(part_ptr + pid * 5 + 2, tl.sum(x64, axis=0))
        tl.store(part_ptr + pid * 5 + 3, tl.sum(x64 * x64, axis=0))
        tl.store(part_ptr + pid * 5 + 4, tl.sum((is_nan & mask).to(tl.float64), axis=0))

    return histogram_tf_kernel


def reduce(x: torch.Tensor, edges: np.ndarray, tensorflow: bool = True) -> Tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``_reduce.histogram.reduce_torch`` for the 'tensorflow' edges."""
    from gpulog._reduce.histogram import cell_table
    if not tensorflow or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        from gpulog._reduce.histogram import reduce_torch
        return reduce_torch(x, edges, tensorflow)
    x = x.contiguous().reshape(-1)
    n = x.numel()
    table = cell_table(str(x.device))
    programs = (n + BLOCK - 1) // BLOCK
    counts = torch.zeros(NB, dtype=torch.int64, device=x.device)
    part = torch.empty(programs, 5, dtype=torch.float64, device=x.device)
    with device_of(x):
        _kernel()[(programs,)](x, n, table.base, table.threshold, counts, part, BLOCK=BLOCK, NB=NB)
    any_nan = part[:, 4].sum() > 0
    nan = torch.full((), float("nan"), dtype=torch.float64, device=x.device)  # a fill, not a copy
    stats = torch.stack([torch.where(any_nan, nan, part[:, 0].min()),
                         torch.where(any_nan, nan, part[:, 1].max()),
                         torch.full((), float(n), dtype=torch.float64, device=x.device),
                         part[:, 2].sum(), part[:, 3].sum()])
    return counts[1:len(edges)], stats
