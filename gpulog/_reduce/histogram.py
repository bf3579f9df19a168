"""Histogram reduction: exact bucket counts plus min/max/num/sum/sum of squares.

Data contract (torch's ``np.histogram`` semantics): values are compared as float64 against float64
edges; bin ``i`` is ``[edges[i], edges[i+1])`` and the last bin is closed.  NaN, ±inf and values
outside the edges are not counted but enter min/max/num/sum/sum_squares.  Counts are int64.

The default 'tensorflow' edges (1549 edges, ratio 1.1) are counted with a cell table: a float32's
sign, exponent and top 6 mantissa bits pick one of 32768 cells; each cell spans a value ratio under
2**(1/64) ≈ 1.011 < 1.1, so it holds at most one edge, and one comparison with that edge (rounded
up to float32, which is exact for float32 inputs) gives the bin.  Lower-precision floats are widened
to float32 (exact); float64 and integer inputs use ``torch.bucketize`` on the float64 edges.
This file is the reference, the CPU path (on the writer thread; the fused native pass of
``gpulog/_native.c`` when it was built, else torch ops in cache-sized chunks with reused buffers)
and the CUDA fallback; ``gpulog.kernels.histogram`` mirrors it.
"""
from __future__ import annotations

import functools
import math
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch

from .. import _inputs
from .._encode import histogram as enc
from .._transfer import Deferred, DeviceStaged, Ready, to_device
from ._backend import Prepared, finish, kernel_or, native, staged, threads

CELL_SHIFT = 17                    # 32 - 1 sign - 8 exponent - 6 mantissa bits
N_CELLS = 1 << (32 - CELL_SHIFT)   # 32768


@functools.lru_cache(maxsize=1)
def tensorflow_edges() -> np.ndarray:
    """torch's default edges: v = 1e-12, v *= 1.1 (sequential float64 rounding) while v < 1e20."""
    v, pos = 1e-12, []
    while v < 1e20:
        pos.append(v)
        v *= 1.1
    return np.array([-x for x in pos[::-1]] + [0.0] + pos, dtype=np.float64)


def reference_bins(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Bin index per value, numpy's rule: 0 = below, len(edges) = above/NaN, i+1 = bin i."""
    with np.errstate(invalid="ignore"):
        v = np.asarray(values, dtype=np.float64)
    idx = np.searchsorted(edges, v, side="right")      # i+1 where edges[i] <= v < edges[i+1]
    idx = np.where(v == edges[-1], len(edges) - 1, idx)  # the last bin is closed
    return np.where(np.isnan(v), len(edges), idx)


class CellTable(NamedTuple):
    base: torch.Tensor       # int32 [N_CELLS]: shifted bin of the cell's smallest value
    threshold: torch.Tensor  # float32 [N_CELLS]: values >= it fall one bin higher (NaN: never)


def cell_table(device: str = "cpu") -> CellTable:
    """Per cell: the bin of its lowest value and the float32 value where the next bin starts.

    On CUDA there is one copy per (device, current stream): its upload (asynchronous, no sync) is
    queued on the stream whose kernels then read it, so no stream can read a table that has not
    arrived yet.  While a CUDA graph is being captured nothing can be uploaded: the capture reads
    a table already on that device (uploaded long before any replay runs)."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return _host_cell_table()
    stream = torch.cuda.current_stream(dev).cuda_stream
    table = _DEVICE_TABLES.get((dev, stream))
    if table is not None:
        return table
    if torch.cuda.is_current_stream_capturing():
        for (d, _), table in list(_DEVICE_TABLES.items()):
            if d == dev:
                return table
        raise RuntimeError("add_histogram inside a CUDA graph capture needs one histogram logged on "
                           f"{dev} before the capture (a warm-up step, as CUDA graphs need anyway)")
    host = _host_cell_table()
    table = _DEVICE_TABLES[(dev, stream)] = CellTable(to_device(host.base, dev), to_device(host.threshold, dev))
    return table


_DEVICE_TABLES: Dict[Tuple[torch.device, int], CellTable] = {}


@functools.lru_cache(maxsize=1)
def _host_cell_table() -> CellTable:
    edges = tensorflow_edges()
    cells = np.arange(N_CELLS, dtype=np.int64)
    # Ordinal range of float32 bit patterns covered by each cell, in increasing *value* order.
    lo_bits = (cells << CELL_SHIFT).astype(np.uint32)
    hi_bits = lo_bits + np.uint32((1 << CELL_SHIFT) - 1)
    negative = cells >= N_CELLS // 2
    vmin_bits = np.where(negative, hi_bits, lo_bits)
    vmax_bits = np.where(negative, lo_bits, hi_bits)
    as_f = lambda b: np.asarray(b, dtype=np.uint32).view(np.float32)  # noqa: E731
    bmin = reference_bins(as_f(vmin_bits), edges)
    bmax = reference_bins(as_f(vmax_bits), edges)
    nan = np.isnan(as_f(vmin_bits)) | np.isnan(as_f(vmax_bits))
    threshold = np.full(N_CELLS, np.nan, dtype=np.float32)
    split = (bmin != bmax) & ~nan
    # Binary search, in value order, for the first value of each split cell in a higher bin.
    step = np.where(negative, -1, 1).astype(np.int64)
    lo = np.zeros(N_CELLS, dtype=np.int64)          # offset (in value order) known to be in bmin
    hi = np.full(N_CELLS, (1 << CELL_SHIFT) - 1, dtype=np.int64)  # offset known to be higher
    start = vmin_bits.astype(np.int64)
    for _ in range(CELL_SHIFT):
        mid = (lo + hi) // 2
        b = reference_bins(as_f((start + step * mid).astype(np.uint32)), edges)
        higher = b != bmin
        hi = np.where(split & higher, mid, hi)
        lo = np.where(split & ~higher, mid, lo)
    threshold[split] = as_f((start + step * hi).astype(np.uint32))[split]
    top = reference_bins(as_f((start + step * hi).astype(np.uint32)), edges)
    assert np.all(top[split] == bmin[split] + 1), "a cell holds more than one edge"
    base = np.where(nan, len(edges), bmin).astype(np.int32)  # NaN cells: never counted
    return CellTable(torch.from_numpy(base), torch.from_numpy(threshold))


CHUNK = 1 << 18        # CPU elements per step: temporaries stay in cache and are reused (no page faults)
CUDA_CHUNK = 1 << 23   # CUDA elements per step: ~150 MB of temporaries at most, whatever the input size


def _tf_reduce_chunked(x: torch.Tensor, n_edges: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shifted counts [n_edges + 1], sum and sum of squares, chunk by chunk into reused buffers.

    Every op releases the GIL and runs on torch's intra-op threads, so on the writer thread this
    costs the training thread almost nothing.  On CUDA (the fallback when Triton is missing) the
    chunks bound the temporaries, which would otherwise be ~20 bytes per element.
    """
    table = cell_table(str(x.device))
    n = x.numel()
    size = min(CUDA_CHUNK if x.is_cuda else CHUNK, n)
    dev = x.device
    counts = torch.zeros(n_edges + 1, dtype=torch.int64, device=dev)
    cell = torch.empty(size, dtype=torch.int32, device=dev)
    idx = torch.empty(size, dtype=torch.int32, device=dev)
    thr = torch.empty(size, dtype=torch.float32, device=dev)
    ge = torch.empty(size, dtype=torch.bool, device=dev)
    x64 = torch.empty(size, dtype=torch.float64, device=dev)
    s = torch.zeros((), dtype=torch.float64, device=dev)
    ss = torch.zeros((), dtype=torch.float64, device=dev)
    for i in range(0, n, size):
        xc = x[i:i + size]
        m = xc.numel()
        if xc.dtype != torch.float32:
            xc = xc.float()
        c = torch.bitwise_right_shift(xc.view(torch.int32), CELL_SHIFT, out=cell[:m])
        c.bitwise_and_(N_CELLS - 1)
        b = torch.index_select(table.base, 0, c, out=idx[:m])
        b.add_(torch.ge(xc, torch.index_select(table.threshold, 0, c, out=thr[:m]), out=ge[:m]))
        _count_into(counts, b)
        d = x64[:m]
        d.copy_(xc)
        s += d.sum()
        ss += torch.dot(d, d)
    return counts, s, ss


def _count_into(counts: torch.Tensor, idx: torch.Tensor) -> None:
    """counts[i] += number of idx == i.  ``bincount`` on CUDA reads the maximum back to size its
    output (a device sync), so CUDA adds ones with ``index_add_`` instead (int32 indices and a
    broadcast one: no per-element temporaries)."""
    if idx.is_cuda:
        counts.index_add_(0, idx, torch.ones((), dtype=counts.dtype, device=idx.device).expand(idx.numel()))
    else:
        counts += torch.bincount(idx, minlength=counts.numel())


def minmax(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """float64 min and max; both NaN when any value is NaN, as numpy's are."""
    mn, mx = torch.aminmax(x)
    mn, mx = mn.double(), mx.double()
    nan = torch.isnan(mn) | torch.isnan(mx)
    nan_value = torch.full_like(mn, float("nan"))
    return torch.where(nan, nan_value, mn), torch.where(nan, nan_value, mx)


def merge_parts(counts: torch.Tensor, stats: torch.Tensor, edges: Optional[torch.Tensor] = None
                ) -> List[torch.Tensor]:
    """One rank's parts in the order of ``_encode.histogram.MERGE`` (``MERGE_WITH_EDGES`` when
    ``edges`` is given): counts, num, sum, sum of squares, a NaN flag, max and min — the
    extremes -inf/+inf where a value was NaN, so a MAX collective ignores this rank's.  ``stats``
    = [min, max, num, sum, sum_squares] as :func:`reduce` returns them; all on the data's device."""
    nan = torch.isnan(stats[0:2]).any().reshape(1)
    mx = torch.where(nan, torch.full_like(stats[1:2], -math.inf), stats[1:2])
    mn = torch.where(nan, torch.full_like(stats[0:1], math.inf), stats[0:1])
    parts = [counts.to(torch.float64), stats[2:3], stats[3:4], stats[4:5], nan.to(torch.float64), mx, mn]
    return parts if edges is None else parts + [edges.to(torch.float64)]


def reduce_native(x: torch.Tensor, n_edges: int, nthreads: Optional[int] = None
                  ) -> Tuple[torch.Tensor, torch.Tensor]:
    """CPU float path in one fused pass (gpulog/_native.c); same contract as :func:`reduce_torch`."""
    table = cell_table("cpu")
    xf = x.contiguous() if x.dtype == torch.float32 else x.float()
    counts = np.zeros(n_edges + 1, dtype=np.int64)
    mn, mx, s, ss, nans = native().hist_tf(xf.numpy(), table.base.numpy(), table.threshold.numpy(),
                                           counts, threads() if nthreads is None else nthreads)
    if nans:
        mn = mx = float("nan")
    stats = torch.tensor([mn, mx, float(x.numel()), s, ss], dtype=torch.float64)
    return torch.from_numpy(counts[1:n_edges]), stats


def reduce_torch(x: torch.Tensor, edges: Any, tensorflow: bool, table: Any = None
                 ) -> Tuple[torch.Tensor, torch.Tensor]:
    """(counts int64 [len(edges)-1], stats float64 [min, max, num, sum, sum_squares]) of a flat
    tensor on any device: the reference, the CPU path and the CUDA fallback.  ``edges`` is a host
    array, or a float64 tensor on ``x``'s device (edges computed there, see :func:`int_edges`).
    ``table`` (the kernel's argument) is accepted and unused: this path looks its table up."""
    n_edges = len(edges)
    tf_float = tensorflow and x.dtype in (torch.float32, torch.float16, torch.bfloat16)
    if tf_float and not x.is_cuda and native() is not None:
        return reduce_native(x, n_edges)  # one fused pass, min/max included
    mn, mx = minmax(x)
    num = torch.full((), float(x.numel()), dtype=torch.float64, device=x.device)  # no host copy
    if tf_float:
        counts, s, ss = _tf_reduce_chunked(x, n_edges)
        return counts[1:n_edges], torch.stack([mn, mx, num, s, ss])
    x64 = x.double()
    e = edges if isinstance(edges, torch.Tensor) else \
        to_device(torch.from_numpy(np.asarray(edges, dtype=np.float64)), x.device)
    idx = torch.bucketize(x64, e, right=True)
    idx = torch.where(x64 == e[-1], torch.full_like(idx, n_edges - 1), idx)
    idx = torch.where(torch.isnan(x64), torch.full_like(idx, n_edges), idx)
    counts = torch.zeros(n_edges + 1, dtype=torch.int64, device=x.device)
    _count_into(counts, idx)
    return counts[1:n_edges], torch.stack([mn, mx, num, x64.sum(), torch.dot(x64, x64)])


def reduce(x: torch.Tensor, edges: Any, tensorflow: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`reduce_torch`'s contract, run where ``x`` lives by the fastest path there: the
    Triton kernel for CUDA data (its torch reference if Triton is missing or fails), the fused
    native pass or torch ops on CPU.  Queues device work only: nothing waits for the device."""
    if x.is_cuda and tensorflow and x.dtype in _KERNEL_DTYPES:
        return kernel_or(x, "histogram.reduce", reduce_torch)(x, edges=edges, tensorflow=True,
                                                               table=cell_table(str(x.device)))
    return reduce_torch(x, edges, tensorflow)


_KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what gpulog.kernels.histogram counts


def int_edges(lo: torch.Tensor, hi: torch.Tensor, bins: int) -> torch.Tensor:
    """numpy's edges for ``bins=<int>`` over the range [lo, hi] (0-d float64 tensors), computed
    on their device with numpy's own arithmetic (``np.linspace``: ``i * step + lo``, last edge
    = hi; a zero-width range widened by 0.5 each way), so the edges match numpy's bit for bit
    and the data never leaves the device.  The multiply and the add are separate ops on purpose:
    a fused multiply-add would round differently from numpy."""
    same = lo == hi
    lo = torch.where(same, lo - 0.5, lo)
    hi = torch.where(same, hi + 0.5, hi)
    step = (hi - lo) / bins
    y = torch.arange(bins, dtype=torch.float64, device=lo.device) * step
    y = y + lo
    return torch.cat([y, hi.reshape(1)])


ESTIMATORS = ("auto", "fd", "doane", "scott", "stone", "rice", "sturges", "sqrt")


def bins_kind(bins: Any) -> str:
    """The kind of ``bins``: 'tensorflow', 'int', 'estimator' or 'edges' (checked at the call)."""
    if isinstance(bins, str):
        if bins == "tensorflow":
            return "tensorflow"
        if bins not in ESTIMATORS:
            raise ValueError(f"bins={bins!r} is not known: use 'tensorflow', an int, explicit edges, "
                             f"or one of numpy's estimators {', '.join(ESTIMATORS)}")
        return "estimator"
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        if bins < 1:
            raise ValueError(f"bins must be a positive int, got {bins}")
        return "int"
    return "edges"


def _host_edges(bins: Any) -> np.ndarray:
    edges = np.asarray(_inputs.to_numpy(bins, "bins"), dtype=np.float64).ravel()
    _check_edges(edges)
    return edges


def _check_edges(edges: np.ndarray) -> None:
    if edges.size < 2 or np.any(np.diff(edges) < 0) or not np.all(np.isfinite(edges)):
        raise ValueError("bins as explicit edges must be a finite, non-decreasing sequence of at least "
                         f"2 values, got {edges.size} values")


def estimated_edges(data: np.ndarray, bins: Any) -> np.ndarray:
    try:
        return np.histogram_bin_edges(np.asarray(data, dtype=np.float64), bins=bins)
    except ValueError as err:
        raise ValueError(f"add_histogram: cannot build bins={bins!r} for this data "
                         f"(NaN or infinite values need explicit edges): {err}") from err


def host_edges_for(x: torch.Tensor, bins: Any) -> Tuple[np.ndarray, bool]:
    """Host edges for host data (numpy's estimators and int bins read the data)."""
    kind = bins_kind(bins)
    if kind == "tensorflow":
        return tensorflow_edges(), True
    if kind in ("int", "estimator"):
        return estimated_edges(x.detach().double().numpy(), bins), False
    return _host_edges(bins), False


def as_tensor(values: Any) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        t = _inputs.local(values.detach(), "values")
    else:
        t = torch.from_numpy(np.ascontiguousarray(_inputs.to_numpy(values, "values")))
    if t.is_complex() or not (t.is_floating_point() or t.dtype in _INT_DTYPES):
        raise TypeError(f"add_histogram: values must be real numbers, got dtype {t.dtype}")
    if t.numel() == 0:
        raise ValueError("add_histogram: values is empty; log at least one element")
    return t.reshape(-1)


_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)


def _nothing_to_count() -> ValueError:
    return ValueError("add_histogram: no value falls inside the bin edges (every value is NaN, "
                      "infinite or out of range); nothing to draw. Log finite values (NaN/inf are not "
                      "counted in any bucket).")


def _any_finite(x: torch.Tensor) -> bool:
    """Early exit: real data almost always has a finite value in its first chunk."""
    return bool(torch.isfinite(x[:CHUNK]).any()) or bool(torch.isfinite(x).any())


def check_max_bins(max_bins: Any) -> None:
    if max_bins is not None and (not isinstance(max_bins, (int, np.integer)) or isinstance(max_bins, bool)
                                 or max_bins < 1):
        raise ValueError(f"max_bins must be a positive int or None, got {max_bins!r}")


def prepare(tag: str, values: Any, bins: Any, max_bins: Optional[int]) -> Prepared:
    """Validate and start the reduction; only the counts cross to the host, never the data
    (except for numpy's estimator strings on CUDA data, see :func:`_prepare_cuda`)."""
    check_max_bins(max_bins)
    x = as_tensor(values)
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    if x.is_cuda:
        return _prepare_cuda(tag, x, bins, max_bins)
    edges, tensorflow = host_edges_for(x, bins)
    args = (tag, edges, max_bins)
    if tensorflow and x.dtype == torch.float32 and native() is not None:
        # One fused read of the data (GIL released, all of torch's threads: the caller waits
        # anyway) costs about what a snapshot copy would, and leaves only the counts to queue.
        # No torch op runs first: its OpenMP workers would spin on the cores this pass uses.
        counts, stats = reduce_native(x, len(edges), max(1, torch.get_num_threads()))
        if not bool(counts.any()):
            raise _nothing_to_count()
        return Prepared(enc.histogram, args, 0, Ready((counts, stats)))
    if x.is_floating_point() and not _any_finite(x):
        raise _nothing_to_count()
    # finish() clones x (the value at call time); the reduction then runs on the writer thread.
    return finish(enc.histogram, args, x, functools.partial(reduce_torch, edges=edges, tensorflow=tensorflow))


def _prepare_cuda(tag: str, x: torch.Tensor, bins: Any, max_bins: Optional[int]) -> Prepared:
    """CUDA data: every kind of ``bins`` queues device work and returns; nothing waits.

    - 'tensorflow' and host edges: counts and stats on the device.
    - int: the range (min, max) on the device, numpy's edges built there bit for bit
      (:func:`int_edges`), counted there; the edges travel back with the counts.
    - edges given as a CUDA tensor: counted against them on the device; their values are checked
      on the writer thread (a bad sequence is reported there, with the tag, and skipped).
    - numpy's estimators ('auto', 'fd', ...): their edges depend on quantiles of the data, so the
      data itself is copied, asynchronously, into pinned memory and the estimator and the counts
      run on the writer thread.  The caller still does not wait; the cost is one device-to-host
      copy of the data (8 bytes per value for float64).
    Data whose values are all NaN/inf, which the host path rejects at the call, is reported by
    the writer (a warning naming the tag) and skipped: checking it here would read the device.
    """
    kind = bins_kind(bins)
    if kind == "tensorflow":
        edges = tensorflow_edges()
        return finish(enc.histogram, (tag, edges, max_bins), x,
                      functools.partial(reduce, edges=edges, tensorflow=True))
    if kind == "estimator":
        staged = Deferred(functools.partial(_estimate_and_count, bins=bins), after=DeviceStaged([x]))
        return Prepared(enc.histogram_with_edges, (tag, max_bins), staged.nbytes, staged)
    if kind == "int":
        mn, mx = minmax(x)
        dev_edges = int_edges(mn, mx, int(bins))
    elif isinstance(bins, torch.Tensor) and bins.is_cuda:
        if bins.numel() < 2:
            raise ValueError(f"bins as explicit edges needs at least 2 values, got {bins.numel()}")
        dev_edges = bins.detach().reshape(-1).to(torch.float64)
    else:
        edges = _host_edges(bins)
        return finish(enc.histogram, (tag, edges, max_bins), x,
                      functools.partial(reduce_torch, edges=edges, tensorflow=False))
    return finish(enc.histogram_with_edges, (tag, max_bins), x,
                  lambda t: (*reduce_torch(t, dev_edges, False), dev_edges))


def _estimate_and_count(data: np.ndarray, bins: str) -> Tuple[Any, ...]:
    """Writer thread: numpy's estimator edges, then the counts and stats, as the host path."""
    edges = estimated_edges(data, bins)
    counts, stats = reduce_torch(torch.from_numpy(np.ascontiguousarray(data)), edges, False)
    return counts, stats, edges


def prepare_raw(tag: str, stats: Tuple[Any, ...], bucket_limits: Any, bucket_counts: Any) -> Prepared:
    """``add_histogram_raw``: ``stats`` = (min, max, num, sum, sum_squares), numbers or
    one-element tensors; the rows of one length.  CUDA arguments are checked by shape and copied
    asynchronously (no wait); host ones converted now."""
    names = ("min", "max", "num", "sum", "sum_squares")
    values = [_inputs.float64_number(v, n) for v, n in zip(stats, names)]
    rows = [_inputs.float64_row(bucket_limits, "bucket_limits"), _inputs.float64_row(bucket_counts, "bucket_counts")]
    if rows[0].shape[0] != rows[1].shape[0]:
        raise ValueError(f"len(bucket_limits) ({rows[0].shape[0]}) != len(bucket_counts) "
                         f"({rows[1].shape[0]}); pass one limit per bucket")
    return staged(enc.histogram_raw_arrays, (tag,), values + rows)

