"""Multi-tensor statistics for model watching: every watched tensor of one dtype in one launch.

Mirrors ``gpulog/_reduce/watch.py`` (``reduce_torch`` is the reference; same contract: per tensor
the float64 row ``(count, sum, sum_squares, nonfinite, zeros, max, absmax, min)`` over its finite
values).  The chunk table (tensor, start, length), built once at ``watch()`` time, gives each
program one chunk of at most ``CHUNK`` elements of one tensor; the tensors' data pointers travel
in a small int64 table (copied asynchronously each pass: gradients are new tensors each step).
Each program writes its chunk's partial row — no atomics, so results are deterministic — and two
segment reductions on the device (``index_add_`` for the five sums, ``scatter_reduce_`` for the
extremes) merge the partial rows per tensor.  Lanes accumulate sums in float64 and extremes in
float32 (exact for float32/float16/bfloat16 inputs), counts in int32 per chunk (a chunk holds at
most ``CHUNK`` < 2**31 elements).  Not timed on a GPU yet (``benchmarks/device_check.sh``).
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Sequence, Tuple

import torch

from ._launch import device_of, triton_modules

BLOCK = 1024
_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


@functools.lru_cache(maxsize=1)
def _kernels() -> Any:
    triton, tl = triton_modules()

    @triton.jit
    def watch_chunks_kernel(
        addr_ptr,     # int64 [tensors of this dtype]: data pointers
        chunk_ptr,    # int64 [chunks, 3]: (tensor index in addr, first element, length)
        out_ptr,      # float64 [chunks, 8]: partial rows
        DT: tl.constexpr,     # 0 float32, 1 float16, 2 bfloat16
        CHUNK: tl.constexpr,  # elements per chunk at most (a multiple of BLOCK)
        BLOCK: tl.constexpr,
    ):
        c = tl.program_id(0).to(tl.int64)
        t = tl.load(chunk_ptr + 3 * c)
        start = tl.load(chunk_ptr + 3 * c + 1)
        n = tl.load(chunk_ptr + 3 * c + 2)
        a = tl.load(addr_ptr + t)
        if DT == 0:
            p = a.to(tl.pointer_type(tl.float32))
        elif DT == 1:
            p = a.to(tl.pointer_type(tl.float16))
        else:
            p = a.to(tl.pointer_type(tl.bfloat16))
        s = tl.zeros([BLOCK], tl.float64)
        ss = tl.zeros([BLOCK], tl.float64)
        bad = tl.zeros([BLOCK], tl.int32)
        zeros = tl.zeros([BLOCK], tl.int32)
        mx = tl.full([BLOCK], float("-inf"), tl.float32)
        amax = tl.full([BLOCK], float("-inf"), tl.float32)
        mn = tl.full([BLOCK], float("inf"), tl.float32)
        for off in range(0, CHUNK, BLOCK):
            idx = off + tl.arange(0, BLOCK)
            m = idx < n
            x = tl.load(p + start + idx, mask=m, other=0.0).to(tl.float32)
            finite = (x == x) & (tl.abs(x) < float("inf"))
            valid = m & finite
            xf = tl.where(valid, x, 0.0)
            xd = xf.to(tl.float64)
            s += xd
            ss += xd * xd
            bad += (m & (finite == 0)).to(tl.int32)
            zeros += (valid & (x == 0.0)).to(tl.int32)
            mx = tl.maximum(mx, tl.where(valid, x, float("-inf")))
            mn = tl.minimum(mn, tl.where(valid, x, float("inf")))
            amax = tl.maximum(amax, tl.where(valid, tl.abs(x), float("-inf")))
        row = out_ptr + 8 * c
        tl.store(row + 0, n.to(tl.float64))
        tl.store(row + 1, tl.sum(s, axis=0))
        tl.store(row + 2, tl.sum(ss, axis=0))
        tl.store(row + 3, tl.sum(bad, axis=0).to(tl.float64))
        tl.store(row + 4, tl.sum(zeros, axis=0).to(tl.float64))
        tl.store(row + 5, tl.max(mx, axis=0).to(tl.float64))
        tl.store(row + 6, tl.max(amax, axis=0).to(tl.float64))
        tl.store(row + 7, tl.min(mn, axis=0).to(tl.float64))

    return {"chunks": watch_chunks_kernel}


def _kernel() -> Any:
    return _kernels()["chunks"]


def stats(tensors: Sequence[torch.Tensor], table: Any) -> torch.Tensor:
    """The ``[T, 8]`` rows of ``tensors`` (contiguous, float32/float16/bfloat16, one device);
    ``table``: the ``_reduce.watch.ChunkTable`` built for their shapes."""
    device = tensors[0].device
    chunk = _round_up(table.chunk, BLOCK)
    rows = torch.zeros(len(tensors), 8, dtype=torch.float64, device=device)
    rows[:, 5:7] = float("-inf")
    rows[:, 7] = float("inf")
    for dtype, (chunks, owner) in _groups(tensors, table, device).items():
        members = [i for i, t in enumerate(tensors) if t.dtype == dtype]
        addr = torch.tensor([tensors[i].data_ptr() for i in members], dtype=torch.int64)
        if device.type == "cuda":
            addr = addr.pin_memory().to(device, non_blocking=True)
        part = torch.empty(chunks.shape[0], 8, dtype=torch.float64, device=device)
        with device_of(part):
            _kernel()[(chunks.shape[0],)](addr, chunks, part, DT=_CODES[dtype], CHUNK=chunk, BLOCK=BLOCK)
        # the data pointers must outlive the launch: keep the watched tensors referenced until
        # the stream has passed it (the caller holds them through the staged result)
        rows[:, :5].index_add_(0, owner, part[:, :5])
        rows[:, 5:7].scatter_reduce_(0, owner.unsqueeze(1).expand(-1, 2), part[:, 5:7], "amax")
        rows[:, 7:8].scatter_reduce_(0, owner.unsqueeze(1), part[:, 7:8], "amin")
    return rows


def _round_up(n: int, k: int) -> int:
    return (n + k - 1) // k * k


def _groups(tensors: Sequence[torch.Tensor], table: Any, device: torch.device
            ) -> Dict[torch.dtype, Tuple[torch.Tensor, torch.Tensor]]:
    """Per dtype: the chunk rows with tensor indices local to the group, and each chunk's global
    tensor index, on ``device`` — cached on the table (built once per dtype layout)."""
    key = (str(device), tuple(t.dtype for t in tensors))
    cache: Dict[Any, Any] = table.__dict__.setdefault("_kernel_groups", {})
    got = cache.get(key)
    if got is not None:
        return got
    out: Dict[torch.dtype, Tuple[torch.Tensor, torch.Tensor]] = {}
    for dtype in dict.fromkeys(t.dtype for t in tensors):
        local = {g: i for i, g in enumerate(j for j, t in enumerate(tensors) if t.dtype == dtype)}
        rows: List[Tuple[int, int, int]] = [(local[i], s, n) for i, s, n in table.rows if i in local]
        owners = [i for i, _, _ in table.rows if i in local]
        chunks = torch.tensor(rows, dtype=torch.int64).reshape(-1, 3)
        owner = torch.tensor(owners, dtype=torch.int64)
        if device.type == "cuda":
            chunks = chunks.pin_memory().to(device, non_blocking=True)
            owner = owner.pin_memory().to(device, non_blocking=True)
        out[dtype] = (chunks, owner)
    cache[key] = out
    return out
