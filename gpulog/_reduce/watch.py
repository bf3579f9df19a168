"""Model watching, the reduction: raw moments of many tensors in one pass, where they live.

Data contract (``_encode/watch.py`` derives the statistics): for a list of tensors on one device,
a float64 ``[T, 8]`` tensor of rows ``(count, sum, sum_squares, nonfinite, zeros, max, absmax,
min)`` over each tensor's finite values (``max``/``absmax`` -inf and ``min`` +inf where there
are none, so rows merge by max/min), counts exact.  Three implementations with one contract:

* :func:`reduce_torch` — the reference and the fallback: per chunk of at most ``CHUNK`` elements
  (the chunk table is built once, at ``watch()``), a few torch ops accumulated in float64, so
  temporaries stay below ``3 * CHUNK * 8`` bytes whatever the tensor sizes;
* :func:`reduce_native` — CPU tensors of float32/float64/float16/bfloat16, one C call for the
  whole list (``gpulog/_native.c``, GIL released);
* ``gpulog.kernels.watch.stats`` — CUDA: one Triton launch per dtype over the chunk table (no
  atomics: per-chunk rows, merged by two segment reductions), then no host sync anywhere.

Device memory of a pass: the ``[T, 8]`` result and, for the kernel, ``[chunks, 8]`` partial rows
(``chunks`` = sum of ceil(numel / CHUNK)), plus the histogram counts ``[H, 1548]`` on histogram
steps — never a copy of the watched tensors.
"""
from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np
import torch

from ._backend import kernel_or, native

CHUNK = 1 << 18          # elements per chunk (1 MiB of float32)
_NATIVE_CODES = {torch.float32: "f", torch.float64: "d", torch.float16: "e", torch.bfloat16: "b"}
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


class ChunkTable:
    """Built once per watched list: which tensor each chunk reads and where (shape-based, so it
    holds while the tensors are replaced by ones of the same shapes: new gradients each step)."""

    def __init__(self, numels: Sequence[int], chunk: int = CHUNK) -> None:
        rows = []
        for i, n in enumerate(numels):
            for start in range(0, max(int(n), 1), chunk):
                rows.append((i, start, min(chunk, int(n) - start)))
        self.rows = rows
        self.numels = [int(n) for n in numels]
        self.chunk = chunk
        self._device: dict = {}

    def on(self, device: torch.device) -> torch.Tensor:
        """The table as an int64 ``[chunks, 3]`` tensor on ``device`` (copied once)."""
        key = str(device)
        t = self._device.get(key)
        if t is None:
            host = torch.tensor(self.rows if self.rows else np.zeros((0, 3)), dtype=torch.int64)
            from .._transfer import to_device
            t = self._device[key] = to_device(host.reshape(-1, 3), device)
        return t


def reduce(tensors: Sequence[torch.Tensor], table: ChunkTable) -> torch.Tensor:
    """The ``[T, 8]`` rows by the fastest path for the tensors' device (see the module docstring).
    Queues device work only."""
    if not tensors:
        return torch.zeros(0, 8, dtype=torch.float64)
    device = tensors[0].device
    if device.type == "cuda":
        from .._transfer import guard_inputs
        # read on the current stream: a gradient made on another stream and freed right after
        # (zero_grad(set_to_none=True)) keeps its memory until these reads are done
        guard_inputs(tensors, torch.cuda.current_stream(device))
        if all(t.dtype in KERNEL_DTYPES and t.is_contiguous() for t in tensors):
            return kernel_or(tensors[0], "watch.stats", reduce_torch)(tensors, table)
    if device.type == "cpu" and native() is not None and all(t.dtype in _NATIVE_CODES for t in tensors):
        return reduce_native(tensors)
    return reduce_torch(tensors, table)


def reduce_torch(tensors: Sequence[torch.Tensor], table: Optional[ChunkTable] = None) -> torch.Tensor:
    """The reference: chunk by chunk in float64 (bounded temporaries), any device and dtype."""
    device = tensors[0].device if tensors else torch.device("cpu")
    chunk = table.chunk if table is not None else CHUNK
    out = []
    inf = torch.full((), math.inf, dtype=torch.float64, device=device)
    for t in tensors:
        flat = t.detach().reshape(-1)
        acc = torch.zeros(5, dtype=torch.float64, device=device)
        mx, amax, mn = -inf, -inf, inf
        for start in range(0, flat.numel(), chunk):
            x = flat[start:start + chunk]
            x = x.double() if x.is_floating_point() else x.to(torch.float64)
            finite = torch.isfinite(x)
            xf = torch.where(finite, x, torch.zeros((), dtype=torch.float64, device=device))
            n_finite = finite.sum()
            acc += torch.stack([n_finite.to(torch.float64), xf.sum(), (xf * xf).sum(),
                                (x.numel() - n_finite).to(torch.float64), ((x == 0).sum()).to(torch.float64)])
            mx = torch.maximum(mx, torch.where(finite, x, -inf).amax())
            mn = torch.minimum(mn, torch.where(finite, x, inf).amin())
            amax = torch.maximum(amax, torch.where(finite, x.abs(), -inf).amax())
        # count is the tensor's numel; column 0 becomes it below (finite count + nonfinite)
        out.append(torch.cat([acc, torch.stack([mx, amax, mn])]))
    rows = torch.stack(out) if out else torch.zeros(0, 8, dtype=torch.float64, device=device)
    rows[:, 0] += rows[:, 3]  # count = every element (finite + non-finite)
    # a tensor with no finite value has absmax -inf: keep it so rows merge; derive() shows NaN
    return rows


def reduce_native(tensors: Sequence[torch.Tensor], nthreads: int = 1) -> torch.Tensor:
    """CPU: one C call over the whole list (same contract as :func:`reduce_torch`)."""
    arrays, codes = [], []
    for t in tensors:
        flat = t.detach().reshape(-1)
        if not flat.is_contiguous():
            flat = flat.contiguous()
        code = _NATIVE_CODES[flat.dtype]
        arrays.append((flat.view(torch.int16) if code in "eb" else flat).numpy())
        codes.append(code)
    out = np.zeros((len(tensors), 8), dtype=np.float64)
    native().watch_stats(arrays, "".join(codes), out, nthreads)
    return torch.from_numpy(out)


def histograms(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Counts of each tensor over TensorBoard's default edges, flattened ``[H * 1548]`` float64
    (the histogram kind's reduction, run on each tensor where it lives: no host sync)."""
    from .histogram import reduce as hist_reduce
    from .histogram import tensorflow_edges
    edges = tensorflow_edges()
    parts = []
    for t in tensors:
        x = t.detach().reshape(-1)
        counts, _ = hist_reduce(x, edges, True)
        parts.append(counts.to(torch.float64))
    if not parts:
        return torch.zeros(0, dtype=torch.float64)
    return torch.cat(parts)


def local_part(t: torch.Tensor) -> Tuple[torch.Tensor, bool]:
    """``(this rank's part of t, does it count?)``.  A DTensor gives its local shard; it counts on
    the ranks whose coordinate is 0 along every mesh dimension where it is replicated, so a
    replicated shard is counted once.  A plain tensor counts everywhere (the caller decides how
    ranks combine plain tensors)."""
    placements = getattr(t, "placements", None)
    if placements is None or not hasattr(t, "to_local"):
        return t, True
    mesh = getattr(t, "device_mesh")
    coord = mesh.get_coordinate()
    counts = True
    for dim, p in enumerate(placements):
        if p.is_partial():
            raise ValueError("a watched DTensor has a Partial placement (a pending reduction); "
                             "watch reads gradients after their reduction: call it where they are "
                             "Shard or Replicate (the optimizer step)")
        if p.is_replicate() and coord is not None and coord[dim] != 0:
            counts = False
    return t.to_local(), counts


def empty_rows(n: int, device: torch.device) -> torch.Tensor:
    """Rows that merge as nothing (a replicated shard counted by another rank)."""
    rows = torch.zeros(n, 8, dtype=torch.float64, device=device)
    rows[:, 5:7] = -math.inf
    rows[:, 7] = math.inf
    return rows


def pack(rows: torch.Tensor, hist: torch.Tensor) -> List[torch.Tensor]:
    """The parts of ``_encode.watch.MERGE``: sums (raw columns 0-4, then histogram counts),
    maxima (max, absmax), minima (min)."""
    sums = torch.cat([rows[:, :5].reshape(-1), hist.reshape(-1).to(rows.device)])
    return [sums, rows[:, 5:7].reshape(-1), rows[:, 7:8].reshape(-1)]
