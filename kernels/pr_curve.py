"""PR-curve bucket kernel: weighted true/false counts per threshold in one pass.

Mirrors ``gpulog/_reduce/pr_curve.py``: bucket ``floor(p * (n-1))`` with the product rounded to the
predictions' dtype (fp16 products are rounded to fp16, as torch's numpy path computes them),
buckets outside [0, n-1] and NaN dropped, float64 accumulation (only 2·n values ever leave the
device).  As in ``histogram.py``: a fixed grid of programs strides over the data, each adding into
its own [2, n] slice of counters with relaxed atomics (no contention between programs), and torch
sums the slices in a fixed order.
"""
from __future__ import annotations

import functools
from typing import Any, Optional, Tuple

import torch

from ._launch import device_of, programs_for, triton_modules

BLOCK = 1024


@functools.lru_cache(maxsize=1)
def _kernel() -> Any:
    triton, tl = triton_modules()

    @triton.jit
    def pr_buckets_kernel(
        pred_ptr,         # predictions (fp16/fp32/fp64), n elements
        label_ptr,        # labels, any real dtype, n elements
        weight_ptr,       # float64 weights, n elements (ignored unless HAS_WEIGHTS)
        slices_ptr,       # float64 [programs, 2, T]: per-program true/false sums, zero-initialised
        n,                # number of elements
        T: tl.constexpr,              # number of thresholds (buckets)
        HAS_WEIGHTS: tl.constexpr,
        MODE: tl.constexpr,           # 0: fp32 product, 1: fp16-rounded product, 2: fp64 product
        BLOCK: tl.constexpr,
    ):
        pid = tl.program_id(0)
        step = tl.num_programs(0).to(tl.int64) * BLOCK
        tp_ptr = slices_ptr + pid.to(tl.int64) * (2 * T)
        fp_ptr = tp_ptr + T
        for start in range(pid.to(tl.int64) * BLOCK, n, step):
            offs = tl.multiple_of(start, BLOCK) + tl.arange(0, BLOCK)
            mask = offs < n
            p = tl.load(pred_ptr + offs, mask=mask, other=0.0)
            if MODE == 2:
                idx = tl.floor(p.to(tl.float64) * (T - 1))
            elif MODE == 1:
                idx = tl.floor((p.to(tl.float32) * (T - 1)).to(tl.float16).to(tl.float32))
            else:
                idx = tl.floor(p.to(tl.float32) * (T - 1))
            keep = mask & (idx >= 0) & (idx <= T - 1)
            k = tl.where(keep, idx, 0).to(tl.int32)
            lab = tl.load(label_ptr + offs, mask=mask, other=0).to(tl.float64)
            w = tl.full([BLOCK], 1.0, tl.float64)
            if HAS_WEIGHTS:
                w = tl.load(weight_ptr + offs, mask=mask, other=0.0)
            tl.atomic_add(tp_ptr + k, lab * w, mask=keep, sem="relaxed")
            tl.atomic_add(fp_ptr + k, (1.0 - lab) * w, mask=keep, sem="relaxed")

    return pr_buckets_kernel


def buckets(pred: torch.Tensor, labels: torch.Tensor, weights: Optional[torch.Tensor],
            n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``_reduce.pr_curve.buckets_torch``."""
    pred, labels = pred.contiguous().reshape(-1), labels.contiguous().reshape(-1)
    if labels.dtype == torch.bool:
        labels = labels.to(torch.uint8)
    w = None if weights is None else weights.to(torch.float64).contiguous().reshape(-1)
    mode = {torch.float16: 1, torch.float64: 2}.get(pred.dtype, 0)
    programs = programs_for(pred, BLOCK)
    slices = torch.zeros(programs, 2, n, dtype=torch.float64, device=pred.device)
    with device_of(pred):
        _kernel()[(programs,)](pred, labels, w if w is not None else slices, slices, pred.numel(),
                               T=n, HAS_WEIGHTS=w is not None, MODE=mode, BLOCK=BLOCK)
    tp, fp = slices.sum(0).unbind(0)
    return tp, fp
