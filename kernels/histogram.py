"""Fused histogram kernel: bucket counts + min/max/sum/sum of squares in one pass over the data.

Mirrors ``gpulog/_reduce/histogram.py`` (the reference): the same 32768-cell table gives each
float32 value its TensorFlow bin with one gather and one compare.

Counting: a fixed grid of programs (a few per SM) strides over the data; each program adds its
elements to its *own* slice of int32 counters with relaxed atomics; the slices are summed into
int64 afterwards.  Why this shape: a calibration of *earlier prototypes, not of this kernel*, on
an H100 (``shared/reference/baseline-figures.md``, 128M float32, 1548 bins) timed ``tl.histogram``
over 2048 slots per block at 6.8 ms, one shared counter array at 23 ms, and private counter slices
per program at 1.5 ms (contention only among one program's own lanes).  This kernel has not been
timed on any GPU yet (``benchmarks/device_check.sh`` does it).  Slices are int32:
``programs_for`` gives no program more than 2**30 elements.

Statistics: each lane keeps min/max (float32, exact) and float64 sum/sum of squares across the
loop; per-program partials go to a [programs, 5] float64 buffer.  A small finishing kernel sums
the slices into the int64 bins and the partials into the five statistics: one launch where torch
ops would take a dozen (host time is what logging costs a launch-bound training step).  Counts are
exact; sums are float64 sums in a different order than numpy's.

An on-chip variant (``tl.histogram`` per tile into registers, one slice written per program,
no global atomics) was prepared as an experiment and removed unmeasured (issue #19: no benchmark
had shown it wins); it is in git history (commit a6dc705, ``histogram_tf_onchip_kernel``) for a
GPU session that wants to time it.
"""
from __future__ import annotations

import functools
from typing import Any, Tuple

import numpy as np
import torch

from ._launch import device_of, programs_for, triton_modules

SLICE = 1552         # counters per program: shifted bins 0..1549 (1549: NaN), padded
BLOCK = 1024         # elements per program per loop iteration
FINISH_COLS, FINISH_ROWS = 128, 32  # the finishing kernel's tile: bins per program x slices per step
FINISH_PROGS = 256                  # ... and per-program partials it reads per step


@functools.lru_cache(maxsize=1)
def _kernels() -> Any:
    triton, tl = triton_modules()

    @triton.jit
    def histogram_tf_kernel(
        x_ptr,            # flat float input (fp32/fp16/bf16), n elements
        n,                # number of elements
        base_ptr,         # int32 [32768]: shifted bin of each cell's smallest value
        thr_ptr,          # float32 [32768]: first value of the next bin in the cell (NaN: none)
        slices_ptr,       # int32 [programs, SLICE]: per-program counters, zero-initialised
        part_ptr,         # float64 [programs, 5]: min, max, sum, sum of squares, NaN count
        BLOCK: tl.constexpr,
        SLICE: tl.constexpr,
    ):
        pid = tl.program_id(0)
        step = tl.num_programs(0).to(tl.int64) * BLOCK
        counters = slices_ptr + pid.to(tl.int64) * SLICE
        mn = tl.full([BLOCK], float("inf"), tl.float32)
        mx = tl.full([BLOCK], float("-inf"), tl.float32)
        s = tl.zeros([BLOCK], tl.float64)
        ss = tl.zeros([BLOCK], tl.float64)
        nans = tl.zeros([BLOCK], tl.int32)
        for start in range(pid.to(tl.int64) * BLOCK, n, step):
            offs = tl.multiple_of(start, BLOCK) + tl.arange(0, BLOCK)  # lets the loads vectorise
            mask = offs < n
            x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            # shifted TensorFlow bin: one gather and one compare (a helper @triton.jit function
            # defined in this closure would not resolve under the interpreter)
            cell = (x.to(tl.int32, bitcast=True) >> 17) & 32767
            thr = tl.load(thr_ptr + cell, mask=mask, other=0.0)
            b = tl.load(base_ptr + cell, mask=mask, other=0) + (x >= thr).to(tl.int32)
            tl.atomic_add(counters + b, 1, mask=mask, sem="relaxed")
            ok = mask & (x == x)
            mn = tl.minimum(mn, tl.where(ok, x, float("inf")))
            mx = tl.maximum(mx, tl.where(ok, x, float("-inf")))
            x64 = x.to(tl.float64)  # masked lanes loaded 0.0
            s += x64
            ss += x64 * x64
            nans += (mask & (x != x)).to(tl.int32)
        out = part_ptr + pid * 5
        tl.store(out + 0, tl.min(mn, axis=0).to(tl.float64))
        tl.store(out + 1, tl.max(mx, axis=0).to(tl.float64))
        tl.store(out + 2, tl.sum(s, axis=0))
        tl.store(out + 3, tl.sum(ss, axis=0))
        tl.store(out + 4, tl.sum(nans, axis=0).to(tl.float64))

    @triton.jit
    def histogram_finish_kernel(
        slices_ptr,       # int32 [programs, SLICE] from either counting kernel
        part_ptr,         # float64 [programs, 5] from either counting kernel
        counts_ptr,       # int64 [nbins]: out, the bins proper (shifted bins 1..nbins)
        stats_ptr,        # float64 [5]: out, min, max, num, sum, sum of squares (numpy's NaN rule)
        programs, nbins,
        num,              # int: the element count
        SLICE: tl.constexpr,
        COLS: tl.constexpr,   # bins per program
        ROWS: tl.constexpr,   # slices summed per step
        PROGS: tl.constexpr,  # per-program partials read per step
    ):
        # One launch instead of a dozen small torch ops: on a launch-bound training step the
        # host time of each op is what logging costs.
        pid = tl.program_id(0)
        cols = pid * COLS + tl.arange(0, COLS)
        live = cols < nbins
        acc = tl.zeros([COLS], tl.int64)
        for r0 in range(0, programs, ROWS):
            rows = r0 + tl.arange(0, ROWS)
            tile = tl.load(slices_ptr + rows[:, None] * SLICE + 1 + cols[None, :],
                           mask=(rows[:, None] < programs) & live[None, :], other=0)
            acc += tl.sum(tile.to(tl.int64), axis=0)
        tl.store(counts_ptr + cols, acc, mask=live)
        if pid == 0:
            nans = tl.zeros([PROGS], tl.float64)
            mn = tl.full([PROGS], float("inf"), tl.float64)
            mx = tl.full([PROGS], float("-inf"), tl.float64)
            sm = tl.zeros([PROGS], tl.float64)
            sq = tl.zeros([PROGS], tl.float64)
            for p0 in range(0, programs, PROGS):
                p = p0 + tl.arange(0, PROGS)
                m = p < programs
                nans += tl.load(part_ptr + p * 5 + 4, mask=m, other=0.0)
                mn = tl.minimum(mn, tl.load(part_ptr + p * 5 + 0, mask=m, other=float("inf")))
                mx = tl.maximum(mx, tl.load(part_ptr + p * 5 + 1, mask=m, other=float("-inf")))
                sm += tl.load(part_ptr + p * 5 + 2, mask=m, other=0.0)
                sq += tl.load(part_ptr + p * 5 + 3, mask=m, other=0.0)
            nan = tl.sum(nans, axis=0) > 0
            tl.store(stats_ptr + 0, tl.where(nan, float("nan"), tl.min(mn, axis=0)))
            tl.store(stats_ptr + 1, tl.where(nan, float("nan"), tl.max(mx, axis=0)))
            tl.store(stats_ptr + 2, tl.cast(num, tl.float64))
            tl.store(stats_ptr + 3, tl.sum(sm, axis=0))
            tl.store(stats_ptr + 4, tl.sum(sq, axis=0))

    return {"slices": histogram_tf_kernel, "finish": histogram_finish_kernel}


def _kernel() -> Any:
    """The kernel gpulog runs (see the module docstring for why it is "slices")."""
    return _kernels()["slices"]


def reduce(x: torch.Tensor, edges: np.ndarray, tensorflow: bool = True, *, table: Any
           ) -> Tuple[torch.Tensor, torch.Tensor]:
    """Same contract as ``_reduce.histogram.reduce_torch`` for the 'tensorflow' edges of float
    data (the caller takes the reference for anything else); ``table`` is that module's
    ``cell_table`` on ``x``'s device."""
    if not tensorflow or x.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise ValueError(f"the histogram kernel counts float data on the 'tensorflow' edges only, got "
                         f"{x.dtype} (tensorflow={tensorflow}); use _reduce.histogram.reduce_torch")
    x = x.contiguous().reshape(-1)
    n = x.numel()
    nbins = len(edges) - 1
    counts = torch.empty(nbins, dtype=torch.int64, device=x.device)
    stats = torch.empty(5, dtype=torch.float64, device=x.device)
    programs = programs_for(x, BLOCK)
    part = torch.empty(programs, 5, dtype=torch.float64, device=x.device)
    with device_of(x):
        slices = torch.zeros(programs, SLICE, dtype=torch.int32, device=x.device)
        _kernel()[(programs,)](x, n, table.base, table.threshold, slices, part, BLOCK=BLOCK, SLICE=SLICE)
        _kernels()["finish"][((nbins + FINISH_COLS - 1) // FINISH_COLS,)](
            slices, part, counts, stats, programs, nbins, n,
            SLICE=SLICE, COLS=FINISH_COLS, ROWS=FINISH_ROWS, PROGS=FINISH_PROGS)
    return counts, stats
