"""Rank-0 aggregation over ``torch.distributed``: ``SummaryWriter(..., distributed=True)``.

Every rank makes the same sequence of ``add_*`` calls; rank 0 alone writes files.

* Scalars (``reduce`` = ``"mean"`` | ``"sum"`` | ``"min"`` | ``"max"`` | ``None`` for rank 0's
  value), histograms (counts of all ranks' values, exact) and PR curves (bucket counts summed) are
  queued, not communicated one by one.
* At a sync point — a change of step once ``distributed_sync_secs`` (default 1 s; 0 = every step
  change) have passed since the last one, ``flush()``, ``close()``, or 1024 pending items — the queue
  becomes **at most three collectives, all asynchronous**: a 32-byte signature header on a CPU
  (gloo) group, then — at the next sync point, once that header is known to agree — one packed SUM
  and one packed MAX ``all_reduce`` (min is the max of the negation) on the default group (NCCL
  for CUDA tensors), awaited on rank 0's writer thread.  The training loop never waits on a
  collective and never syncs the device; ranks may run one sync point apart.
* Ranks that diverge (other tags, order or count) fail the header check: every rank raises a
  ``ValueError`` naming the first mismatch, before any data collective could hang or mix values.
  A rank that dies leaves the others in a collective until the process group's ``timeout``
  (``init_process_group(timeout=...)``) fires; gpulog then raises :class:`DistributedError`.
* Other summaries (images, text, audio, ...) are logged from rank 0's arguments; other ranks
  return at once.  Without ``distributed=True`` no collective is ever issued.
* Histogram bins: 'tensorflow' and explicit edges are fixed; int bins take the global range (one
  small synchronous collective at the call); numpy's estimators gather all ranks' values at the
  call, so the edges equal those of one process on the concatenated data.

Cost per sync point: one 32-byte CPU all_reduce, plus two all_reduces whose size is the sum of the
pending items (8 bytes per scalar, ~12 KiB per 'tensorflow' histogram, 16·n bytes per PR curve).
Across machines the same API runs on multi-node NCCL: the collectives are the same, only slower.
"""
from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import _convert
from ._encode import histogram as enc_histogram
from ._encode import pr_curve as enc_pr_curve
from ._encode import scalar as enc_scalar
from ._proto.messages import event_with_summary, summary
from .errors import GpulogError

REDUCE_OPS = ("mean", "sum", "min", "max", None)
MAX_PENDING = 1024


class DistributedError(GpulogError):
    """A collective failed: another rank died, diverged or timed out."""


@dataclass
class _Entry:
    kind: str                 # "scalar" | "histogram" | "pr_curve"
    tag: str
    step: Optional[int]
    wall: float
    reduce: Optional[str]
    sum_part: Optional[torch.Tensor]   # float64, summed across ranks
    max_part: Optional[torch.Tensor]   # float64, max across ranks
    meta: Tuple[Any, ...]              # host-side encoding arguments
    target: Any = None                 # rank 0: the FileWriter, then its sink, the event goes to

    def signature(self) -> Tuple[Any, ...]:
        return (self.kind, self.tag, self.step, self.reduce,
                0 if self.sum_part is None else self.sum_part.numel(),
                0 if self.max_part is None else self.max_part.numel())


class _NullFileWriter:
    """What non-zero ranks hold instead of a FileWriter: creates nothing, writes nothing."""

    def __init__(self, log_dir: Any) -> None:
        self._log_dir = str(log_dir)

    def get_logdir(self) -> str:
        return self._log_dir

    def __getattr__(self, name: str) -> Any:
        return lambda *a, **k: None


class RankContext:
    def __init__(self, sync_secs: float = 1.0) -> None:
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("distributed=True needs torch.distributed initialised first: call "
                             "torch.distributed.init_process_group(...) before SummaryWriter")
        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_writer = self.rank == 0
        backend = str(dist.get_backend())
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" \
            else torch.device("cpu")
        # The signature check runs on CPU so it never syncs a CUDA device.
        self.cpu_group = None if backend == "gloo" else dist.new_group(backend="gloo")
        self.pending: List[_Entry] = []
        self.prev: Optional[Tuple[Any, ...]] = None  # the last sync point, header in flight
        self.inflight: List[Any] = []
        self.collectives = 0  # issued by this rank (benchmarks report it)
        if not isinstance(sync_secs, (int, float)) or sync_secs < 0:
            raise ValueError(f"distributed_sync_secs must be a number >= 0, got {sync_secs!r}")
        self.sync_secs = float(sync_secs)
        self.last_sync = time.monotonic()

    @classmethod
    def from_process_group(cls, sync_secs: float = 1.0) -> "RankContext":
        return cls(sync_secs)

    def null_writer(self, log_dir: Any) -> _NullFileWriter:
        return _NullFileWriter(log_dir)

    # -- queueing ----------------------------------------------------------------------------
    def _queue(self, writer: Any, entry: _Entry) -> None:
        if self.pending and self.pending[-1].step != entry.step and \
                time.monotonic() - self.last_sync >= self.sync_secs:
            self.sync(writer)
        if self.is_writer:
            fw = entry.target if entry.target is not None else writer._get_file_writer()
            entry.target = fw._live_sink()  # resolved now: the sink the event must land in
        self.pending.append(entry)
        if len(self.pending) >= MAX_PENDING:
            self.sync(writer)

    def _value(self, value: Any, name: str) -> torch.Tensor:
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise ValueError(f"{name} must hold exactly one element, got shape {tuple(value.shape)}")
            return value.detach().reshape(1).to(self.device, torch.float64, copy=True)
        # A device-side fill: a host scalar copied to a CUDA device would sync.
        return torch.full((1,), _convert.scalar(value, name), dtype=torch.float64, device=self.device)

    def add_scalar(self, writer: Any, tag: str, value: Any, step: Optional[int], wall: float,
                   reduce: Optional[str], new_style: bool, double_precision: bool,
                   target: Any = None) -> None:
        if reduce not in REDUCE_OPS:
            raise ValueError(f"reduce must be one of 'mean', 'sum', 'min', 'max' or None, got {reduce!r}")
        v = self._value(value, "scalar_value")
        sum_part = v if reduce in ("mean", "sum") else None
        max_part = v if reduce == "max" else (-v if reduce == "min" else None)
        own = v if reduce is None else None
        self._queue(writer, _Entry("scalar", tag, step, wall, reduce, sum_part, max_part,
                                   (new_style, double_precision, own), target))

    def add_scalars(self, writer: Any, main_tag: str, values: Dict[str, Any], step: Optional[int],
                    wall: float, reduce: Optional[str]) -> None:
        import os
        if self.is_writer:
            logdir = writer._get_file_writer().get_logdir()
        for key, v in values.items():
            target = writer._sub_writer(os.path.join(logdir, main_tag.replace("/", "_") + "_" + key)) \
                if self.is_writer else None
            self.add_scalar(writer, main_tag, v, step, wall, reduce, False, False, target)

    def add_histogram(self, writer: Any, tag: str, values: Any, step: Optional[int], wall: float,
                      bins: Any, max_bins: Optional[int]) -> None:
        from ._reduce import histogram as red
        x = red._as_tensor(values)
        if x.dtype == torch.bool:
            x = x.to(torch.uint8)
        x = x.to(self.device)
        if isinstance(bins, str) and bins != "tensorflow":
            edges = self._gathered_edges(x, bins)
        elif isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
            edges = self._global_int_edges(x, int(bins))
        else:
            edges, _ = red._edges_for(x, bins)
        tensorflow = isinstance(bins, str) and bins == "tensorflow"
        counts, stats = red.reduce_torch(x, edges, tensorflow)
        # Masked reductions, not boolean indexing: indexing would sync a CUDA device.
        x64 = x.double()
        nan = torch.isnan(x64)
        inf = float("inf")
        mx = torch.where(nan, torch.full_like(x64, -inf), x64).max()
        mn = torch.where(nan, torch.full_like(x64, inf), x64).min()
        sum_part = torch.cat([counts.double(), stats[2:5], nan.sum().double().reshape(1)])
        max_part = torch.stack([mx, -mn])
        self._queue(writer, _Entry("histogram", tag, step, wall, "hist", sum_part, max_part,
                                   (edges, max_bins)))

    def _global_int_edges(self, x: torch.Tensor, bins: int) -> np.ndarray:
        """numpy's int-bins edges over the global range (one extra, synchronous, collective)."""
        if bins < 1:
            raise ValueError(f"bins must be a positive int, got {bins}")
        x64 = x.double()
        x64 = x64[torch.isfinite(x64)]
        inf = float("inf")
        local = torch.tensor([x64.max().item() if x64.numel() else -inf,
                              -(x64.min().item() if x64.numel() else inf)], dtype=torch.float64)
        self._collective(self.dist.all_reduce, local, op=self.dist.ReduceOp.MAX, group=self.cpu_group)
        lo, hi = -float(local[1]), float(local[0])
        if not math.isfinite(lo):
            raise ValueError("add_histogram: no rank has a finite value to bin")
        return np.histogram_bin_edges(np.array([lo, hi]), bins=bins)

    def _gathered_edges(self, x: torch.Tensor, bins: str) -> np.ndarray:
        """numpy's estimators ('auto', 'fd', ...) see quantiles of all the data: gather it (two
        synchronous collectives at this call, the price of those bins) and build the edges
        every rank then shares."""
        local = x.detach().double().reshape(-1).cpu()
        sizes = torch.tensor([local.numel()], dtype=torch.int64)
        all_sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world)]
        self._collective(self.dist.all_gather, all_sizes, sizes, group=self.cpu_group)
        longest = int(max(int(t) for t in all_sizes))
        padded = torch.zeros(longest, dtype=torch.float64)
        padded[:local.numel()] = local
        parts = [torch.empty(longest, dtype=torch.float64) for _ in range(self.world)]
        self._collective(self.dist.all_gather, parts, padded, group=self.cpu_group)
        data = torch.cat([p[:int(n)] for p, n in zip(parts, all_sizes)]).numpy()
        try:
            return np.histogram_bin_edges(data, bins=bins)
        except ValueError as err:
            raise ValueError(f"add_histogram: cannot build bins={bins!r} for this data "
                             f"(NaN or infinite values need explicit edges): {err}") from err

    def add_pr_curve(self, writer: Any, tag: str, labels: Any, predictions: Any, step: Optional[int],
                     wall: float, num_thresholds: int, weights: Any) -> None:
        from ._reduce import pr_curve as red
        pred, lab, w = red.validate(labels, predictions, weights)
        pred, lab = pred.to(self.device).reshape(-1), lab.to(self.device).reshape(-1)
        w = None if w is None else w.to(self.device).reshape(-1)
        n = min(int(num_thresholds), enc_pr_curve.MAX_THRESHOLDS)
        tp, fp = red.buckets_torch(pred, lab, w, n)
        self._queue(writer, _Entry("pr_curve", tag, step, wall, "sum", torch.cat([tp, fp]), None,
                                   (num_thresholds, n)))

    # -- sync points ---------------------------------------------------------------------------
    def _collective(self, fn: Any, *args: Any, **kw: Any) -> Any:
        self.collectives += 1
        try:
            return fn(*args, **kw)
        except RuntimeError as err:
            raise DistributedError(
                f"rank {self.rank}: a collective of gpulog's aggregation failed ({err}). Another "
                "rank may have died or stopped logging; the process group's timeout applies "
                "(torch.distributed.init_process_group(timeout=...)).") from err

    def _header(self, sigs: List[Tuple[Any, ...]]) -> Tuple[Any, torch.Tensor]:
        """Async MAX all_reduce of [h, -h, n, -n]: equal signatures on all ranks iff max == -min."""
        digest = hashlib.sha1(repr(sigs).encode()).digest()
        h = int.from_bytes(digest[:7], "little")
        t = torch.tensor([h, -h, len(sigs), -len(sigs)], dtype=torch.int64)
        work = self._collective(self.dist.all_reduce, t, op=self.dist.ReduceOp.MAX,
                                group=self.cpu_group, async_op=True)
        return work, t

    def _settle(self, writer: Any) -> None:
        """Check the previous sync point's header, then launch its data collectives (async)."""
        if self.prev is None:
            return
        entries, work, t, sigs = self.prev
        self.prev = None
        self._wait(work)  # issued a step ago: normally complete already
        if not (int(t[0]) == -int(t[1]) and int(t[2]) == -int(t[3])):
            gathered: List[Any] = [None] * self.world
            self._collective(self.dist.all_gather_object, gathered, sigs, group=self.cpu_group)
            raise ValueError(_describe_mismatch(gathered))
        sums = [e.sum_part for e in entries if e.sum_part is not None]
        maxes = [e.max_part for e in entries if e.max_part is not None]
        sum_buf = torch.cat(sums) if sums else None
        max_buf = torch.cat(maxes) if maxes else None
        works = []
        for buf, op in ((sum_buf, self.dist.ReduceOp.SUM), (max_buf, self.dist.ReduceOp.MAX)):
            if buf is not None:
                works.append(self._collective(self.dist.all_reduce, buf, op=op, async_op=True))
        if not self.is_writer:
            self.inflight.extend(works)
            return
        staged = _Reduced(works, sum_buf, max_buf, [e.meta[2] if e.kind == "scalar" else None for e in entries],
                          self._wait)
        writer._get_file_writer().submit_multi(_deliver, (entries, self.world), staged)

    def _wait(self, work: Any) -> None:
        try:
            work.wait()
        except RuntimeError as err:
            raise DistributedError(
                f"rank {self.rank}: a collective of gpulog's aggregation failed ({err}). Another "
                "rank may have died or stopped logging; the process group's timeout applies "
                "(torch.distributed.init_process_group(timeout=...)).") from err

    def sync(self, writer: Any, final: bool = False) -> None:
        """A sync point: settle the previous one, start this one; ``final`` settles both (flush/close).

        Pipelining by one sync point keeps every collective asynchronous: the header issued here
        is checked at the next sync point, and only then are the data collectives launched.
        """
        entries, self.pending = self.pending, []
        self.last_sync = time.monotonic()
        done = [w for w in self.inflight if w.is_completed()]
        self.inflight = [w for w in self.inflight if w not in done]
        self._settle(writer)
        if entries:
            sigs = [e.signature() for e in entries]
            work, t = self._header(sigs)
            self.prev = (entries, work, t, sigs)
        if final:
            self._settle(writer)
            for w in self.inflight:
                self._wait(w)
            self.inflight = []


_unsettled: "Dict[int, Any]" = {}  # id -> distributed SummaryWriter not yet closed


def _settle(writer: Any) -> None:
    dist = writer._dist
    if dist is None or writer.all_writers is None:
        return
    if not dist.dist.is_initialized():
        if dist.pending or dist.prev is not None:
            import warnings
            warnings.warn("gpulog: the process group was destroyed before the distributed "
                          "SummaryWriter was closed; its last pending reductions are lost. "
                          "Call writer.close() before destroy_process_group().", RuntimeWarning)
        return
    writer.flush()


def _install_destroy_hook(dist: Any) -> None:
    """Settle unclosed writers inside ``destroy_process_group()``, which every rank calls at the
    same point of the script, so the collectives still match (code that imported the function
    by name before gpulog did keeps the original and relies on the exit hook instead)."""
    original = dist.destroy_process_group
    if getattr(original, "__gpulog_wrapped__", False):
        return

    def destroy_process_group(group: Any = None) -> Any:
        if group is None or group is dist.GroupMember.WORLD:
            for writer in list(_unsettled.values()):
                _settle(writer)
        return original(group)

    destroy_process_group.__gpulog_wrapped__ = True  # type: ignore[attr-defined]
    destroy_process_group.__doc__ = original.__doc__
    dist.destroy_process_group = destroy_process_group


def sync_at_exit(writer: Any) -> Any:
    """A script that ends without close() still gets its pending reductions written: every rank
    settles its last sync point in ``destroy_process_group()`` or, failing that, at interpreter
    exit (before the writer thread drains, as atexit runs later-registered hooks first).  The
    writer is held until ``close()`` unregisters it, so dropping it does not lose pending data."""
    import atexit
    _install_destroy_hook(writer._dist.dist)
    _unsettled[id(writer)] = writer

    def settle() -> None:
        _settle(writer)

    def unregister() -> None:
        _unsettled.pop(id(writer), None)
        atexit.unregister(settle)

    atexit.register(settle)
    return unregister


class _Reduced:
    """Waits (on the writer thread) for the packed collectives, then hands host arrays over."""

    def __init__(self, works: List[Any], sum_buf: Optional[torch.Tensor], max_buf: Optional[torch.Tensor],
                 own: List[Optional[torch.Tensor]], wait: Any) -> None:
        self.works, self.sum_buf, self.max_buf, self.own, self.wait = works, sum_buf, max_buf, own, wait

    def result(self) -> Tuple[np.ndarray, np.ndarray, List[Optional[float]]]:
        for w in self.works:
            self.wait(w)
        host = lambda t: np.zeros(0) if t is None else t.double().cpu().numpy()  # noqa: E731
        own = [None if t is None else float(t.cpu()[0]) for t in self.own]
        return host(self.sum_buf), host(self.max_buf), own


def _deliver(entries: List[_Entry], world: int, sums: np.ndarray, maxes: np.ndarray,
             own: List[Optional[float]]) -> List[Tuple[Any, bytes]]:
    """Writer thread: split the reduced buffers back into events, one per entry."""
    out = []
    si = mi = 0
    for e, own_value in zip(entries, own):
        ns = 0 if e.sum_part is None else e.sum_part.numel()
        nm = 0 if e.max_part is None else e.max_part.numel()
        s, m = sums[si:si + ns], maxes[mi:mi + nm]
        si, mi = si + ns, mi + nm
        if e.kind == "scalar":
            new_style, double_precision, _ = e.meta
            value = {"mean": lambda: s[0] / world, "sum": lambda: s[0], "max": lambda: m[0],
                     "min": lambda: -m[0], None: lambda: own_value}[e.reduce]()
            values = enc_scalar.from_array(e.tag, new_style, double_precision, np.array([value]))
        elif e.kind == "histogram":
            edges, max_bins = e.meta
            counts, num, total, squares, nans = s[:-4], s[-4], s[-3], s[-2], s[-1]
            mn, mx = (float("nan"), float("nan")) if nans > 0 else (-m[1], m[0])
            stats = np.array([mn, mx, num, total, squares])
            values = enc_histogram.histogram(e.tag, edges, max_bins, np.rint(counts).astype(np.int64), stats)
        else:
            num_thresholds, n = e.meta
            values = enc_pr_curve.pr_curve(e.tag, num_thresholds, s[:n], s[n:])
        out.append((e.target, event_with_summary(e.wall, e.step, summary(values))))
    return out


def _describe_mismatch(gathered: List[List[Tuple[Any, ...]]]) -> str:
    ref = gathered[0]
    for rank, sigs in enumerate(gathered[1:], start=1):
        for i in range(max(len(ref), len(sigs))):
            a = ref[i] if i < len(ref) else None
            b = sigs[i] if i < len(sigs) else None
            if a != b:
                fmt = lambda s: "nothing" if s is None else f"{s[0]} {s[1]!r} at step {s[2]} (reduce={s[3]!r})"  # noqa: E731
                return (f"distributed logging diverged: item {i} since the last sync is {fmt(a)} on "
                        f"rank 0 but {fmt(b)} on rank {rank}. Every rank must make the same add_* "
                        "calls in the same order.")
    return "distributed logging diverged between ranks"


