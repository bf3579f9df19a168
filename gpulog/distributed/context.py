"""``RankContext``: one rank's side of the aggregation; the writer's only interface to it.

The writer calls ``add_scalar``/``add_histogram``/``add_pr_curve`` (validated arguments and, on
rank 0, the sink each event goes to), ``sync(final=True)`` at ``flush()``/``close()`` and
``close()``.  Each kind's parts merge as its ``_encode/<kind>.py`` declares (``MERGE``); after
the collectives rank 0 hands the writer thread ordinary ``Item``s, one per summary, through the
``submit`` callback it was given, each staged as a slice of the shared reduced buffers.  The parts: :mod:`.schedule` (when), :mod:`.protocol`
(agreement), :mod:`.packing` (what travels), :mod:`.lifecycle` (start and end).
"""
from __future__ import annotations

import math
from datetime import timedelta
from typing import Any, Callable, List, Optional, Tuple

import numpy as np
import torch

from .. import _inputs
from .._encode import histogram as enc_histogram
from .._encode import pr_curve as enc_pr_curve
from .._encode import scalar as enc_scalar
from .._encode.pr_curve import MAX_THRESHOLDS
from .._item import Item
from .._transfer import Deferred, DeviceStaged, to_device
from . import packing, protocol
from .lifecycle import DistributedError, handshake
from .packing import Entry
from .schedule import SyncSchedule

Submit = Callable[[List[Item]], None]


class RankContext:
    def __init__(self, sync_secs: float, timeout: float, submit: Submit) -> None:
        import torch.distributed as dist
        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("distributed=True needs torch.distributed initialised first: call "
                             "torch.distributed.init_process_group(...) before SummaryWriter")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"distributed_timeout must be a positive number of seconds, got {timeout!r}")
        self.schedule = SyncSchedule(sync_secs)
        self.dist = dist
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        self.is_writer = self.rank == 0
        self.timeout = float(timeout)
        self.submit = submit
        backend = str(dist.get_backend())
        self.device = torch.device("cuda", torch.cuda.current_device()) if "nccl" in backend \
            else torch.device("cpu")
        self.store = dist.distributed_c10d._get_default_store()
        self.prefix = handshake(self.store, self.rank, self.world, self.timeout)
        # gpulog's own gloo group: its collectives never pair with the training loop's, and they
        # time out after `timeout` (a rank that stops logging), or sooner if the user gave the
        # default group a shorter timeout.
        world_timeout = _world_timeout(dist)
        if world_timeout is not None and world_timeout < self.timeout:
            self.timeout = world_timeout
        self.proto_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=self.timeout))
        # Data collectives: the same group on CPU; the default (NCCL) group for CUDA data, issued
        # at sync points, which are program-order points identical on every rank.
        self.data_group = self.proto_group if self.device.type == "cpu" else None
        self.pending: List[Entry] = []
        self.prev: Optional[Tuple[List[Entry], Any, torch.Tensor, List[Any], int]] = None
        self.inflight: List[Tuple[Any, ...]] = []
        self.seq = 0
        self.failed: Optional[str] = None
        # figures for benchmarks and tests
        self.collectives = 0
        self.sync_points = 0
        self.bytes_synced = 0

    # -- the stage interface (see gpulog._stage) ---------------------------------------------
    local = False  # SummaryWriter's inline fast path does not apply

    @property
    def writes(self) -> bool:
        """Only rank 0 writes event files."""
        return self.is_writer

    def _target(self, fw: Any) -> Any:
        """Rank 0: the sink an aggregated event goes to, resolved at the call (the file open now)."""
        return fw._live_sink() if self.is_writer else None

    def scalar(self, fw: Any, tag: str, value: Any, step: Any, wall: float, reduce: Optional[str],
               new_style: bool, double_precision: bool) -> None:
        self.add_scalar(tag, value, step, wall, reduce, new_style, double_precision, self._target(fw))

    def histogram(self, fw: Any, tag: str, values: Any, step: Any, wall: float, bins: Any,
                  max_bins: Optional[int]) -> None:
        self.add_histogram(tag, values, step, wall, bins, max_bins, self._target(fw))

    def pr_curve(self, fw: Any, tag: str, labels: Any, predictions: Any, step: Any, wall: float,
                 num_thresholds: int, weights: Any) -> None:
        self.add_pr_curve(tag, labels, predictions, step, wall, num_thresholds, weights, self._target(fw))

    def prepared(self, fw: Any, tag: str, step: Any, wall: float, prepare: Callable[[str], Any]) -> None:
        """Kinds not merged across ranks: rank 0 writes its own; the other ranks run the same
        checks without the work (``validation_only``), so a bad input raises on every rank."""
        if not self.is_writer:
            from .._reduce._backend import validation_only
            with validation_only():
                prepare(tag)
            return
        prep = prepare(tag)
        fw.submit(prep.encode, prep.args, step, wall, prep.nbytes, prep.staged)

    def merged(self, fw: Any, kind: str, method: str, tag: str, step: int, wall: float,
               merge: Any, parts: Any, encode: Callable[..., Any], meta: Tuple[Any, ...]) -> None:
        """Any kind's reduced parts, merged across ranks by its ``merge`` declaration (model
        watching of sharded parameters); rank 0 writes ``encode(*meta, *merged parts)``."""
        _host_step(step)
        self._queue(packing.entry(kind, method, tag, step, wall, merge, parts, encode, meta,
                                  self._target(fw), self.is_writer))

    def emit(self, submit: Callable[[], None]) -> None:
        if self.is_writer:
            submit()

    def exit_hook(self, flush: Callable[[], None]) -> Optional[Callable[[], None]]:
        """Settle pending aggregation at exit (``lifecycle.settle_at_exit``)."""
        from .lifecycle import settle_at_exit
        return settle_at_exit(self.dist, self.has_pending, flush)

    # -- items -------------------------------------------------------------------------------
    def add_scalar(self, tag: str, value: Any, step: Optional[int], wall: float,
                   reduce: Optional[str], new_style: bool, double_precision: bool,
                   target: Any) -> None:
        if reduce not in _inputs.REDUCE_OPS:
            _inputs.bad_reduce(reduce)
        _host_step(step)
        self._queue(packing.entry("scalar", "add_scalar", tag, step, wall, enc_scalar.merge(reduce),
                                  [self._value(value)], enc_scalar.from_array,
                                  (tag, new_style, double_precision), target, self.is_writer))

    def _value(self, value: Any) -> Any:
        """A host float, or a one-element float64 tensor on its own device (no sync)."""
        if isinstance(value, torch.Tensor) and value.device.type not in ("cpu", "meta"):
            _inputs.one_element(value, "scalar_value")
            if value.is_complex():
                raise TypeError(f"scalar_value must be real, got a {value.dtype} tensor")
            return value.detach().reshape(1).to(torch.float64, copy=True)
        return _inputs.scalar(value, "scalar_value")

    def add_histogram(self, tag: str, values: Any, step: Optional[int], wall: float, bins: Any,
                      max_bins: Optional[int], target: Any) -> None:
        from .._reduce import histogram as red
        _host_step(step)
        red.check_max_bins(max_bins)
        x = red.as_tensor(values)
        if x.dtype == torch.bool:
            x = x.to(torch.uint8)
        self._check_usable()
        dev_edges = None
        kind = red.bins_kind(bins)  # an unknown string or bins < 1: ValueError, before any collective
        tensorflow = kind == "tensorflow"
        if kind == "estimator":
            edges: Any = self._gathered_edges(x, bins)
        elif kind == "int":
            x, dev_edges = self._global_int_edges(x, int(bins))
            edges = None  # they travel in the max part, as counted
        else:
            edges, _ = red.host_edges_for(x, bins)
        counts, stats = red.reduce(x, edges if dev_edges is None else dev_edges, tensorflow)
        merge = enc_histogram.MERGE if dev_edges is None else enc_histogram.MERGE_WITH_EDGES
        self._queue(packing.entry("histogram", "add_histogram", tag, step, wall, merge,
                                  red.merge_parts(counts, stats, dev_edges), enc_histogram.from_merged,
                                  (tag, edges, max_bins), target, self.is_writer))

    def _global_int_edges(self, x: torch.Tensor, bins: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """numpy's int-bins edges over the global range: one small MAX all_reduce at the call
        (stream-ordered under NCCL: no host wait), the edges built on the device."""
        from .._reduce import histogram as red
        if x.device != self.device:
            x = to_device(x, self.device)
        mn, mx = red.minmax(x)
        r = torch.stack([mx, -mn])
        r = torch.where(torch.isnan(r), torch.full_like(r, math.inf), r)  # NaN: no finite range
        self._collective(self.dist.all_reduce, r, op=self.dist.ReduceOp.MAX, group=self.data_group)
        if r.device.type == "cpu" and not all(math.isfinite(v) for v in r.tolist()):
            raise ValueError(f"add_histogram: bins={bins} needs a finite range, but the values of "
                             "some rank are NaN or infinite; pass explicit edges")
        return x, red.int_edges(-r[1], r[0], bins)

    def _gathered_edges(self, x: torch.Tensor, bins: str) -> np.ndarray:
        """numpy's estimators ('auto', 'fd', ...) need quantiles of all the data: gather it to the
        host (two synchronous collectives and, for CUDA data, a device→host copy at this call:
        the documented price of those bins) and build the edges every rank then shares."""
        local = x.detach().double().reshape(-1).cpu()
        sizes = torch.tensor([local.numel()], dtype=torch.int64)
        all_sizes = [torch.zeros(1, dtype=torch.int64) for _ in range(self.world)]
        self._collective(self.dist.all_gather, all_sizes, sizes, group=self.proto_group)
        longest = int(max(int(t) for t in all_sizes))
        padded = torch.zeros(longest, dtype=torch.float64)
        padded[:local.numel()] = local
        parts = [torch.empty(longest, dtype=torch.float64) for _ in range(self.world)]
        self._collective(self.dist.all_gather, parts, padded, group=self.proto_group)
        from .._reduce import histogram as red
        return red.estimated_edges(torch.cat([p[:int(n)] for p, n in zip(parts, all_sizes)]).numpy(), bins)

    def add_pr_curve(self, tag: str, labels: Any, predictions: Any, step: Optional[int], wall: float,
                     num_thresholds: int, weights: Any, target: Any) -> None:
        from .._reduce import pr_curve as red
        _host_step(step)
        pred, lab, w = red.validate(labels, predictions, weights)
        self._check_usable()
        n = min(int(num_thresholds), MAX_THRESHOLDS)
        tp, fp = red.buckets(pred.reshape(-1), lab.reshape(-1), None if w is None else w.reshape(-1), n)
        self._queue(packing.entry("pr_curve", "add_pr_curve", tag, step, wall, enc_pr_curve.MERGE,
                                  [tp.to(torch.float64), fp.to(torch.float64)], enc_pr_curve.pr_curve,
                                  (tag, num_thresholds), target, self.is_writer))

    def _queue(self, entry: Entry) -> None:
        self._check_usable()
        if self.schedule.due(entry.step):
            self.sync()
        self.pending.append(entry)
        self.schedule.queued(entry.step)

    def has_pending(self) -> bool:
        """Anything an exit hook should still settle (nothing once an error was raised)."""
        return self.failed is None and (bool(self.pending) or self.prev is not None)

    # -- sync points ---------------------------------------------------------------------------
    def sync(self, final: bool = False) -> None:
        """A sync point: settle the previous one, start this one; ``final`` settles both
        (``flush()``/``close()``).  Pipelining by one sync point keeps every collective
        asynchronous: the header issued here is checked at the next sync point, and only then
        are the data collectives launched."""
        self._check_usable()
        entries, self.pending = self.pending, []
        self.schedule.cut()
        self.inflight = [item for item in self.inflight if not all(w.is_completed() for w in item[0])]
        self._settle()
        if entries:
            sigs = [e.signature() for e in entries]
            self.seq += 1
            t = protocol.header(self.seq, sigs, self.schedule.propose() if self.is_writer else 0)
            work = self._collective(self.dist.all_reduce, t, op=self.dist.ReduceOp.MAX,
                                    group=self.proto_group, async_op=True)
            self.prev = (entries, work, t, sigs, self.seq)
            self.sync_points += 1
            self.bytes_synced += t.numel() * t.element_size()
        if final:
            self._settle()
            self._wait_inflight()

    def _settle(self) -> None:
        if self.prev is None:
            return
        entries, work, t, sigs, seq = self.prev
        self.prev = None
        self._wait(work)  # issued a sync point ago: normally complete already
        if not protocol.agrees(t):
            gathered = protocol.exchange(self.store, self.prefix, seq, self.rank, self.world, sigs,
                                         self.timeout)
            message = protocol.describe(gathered)
            agreed = protocol.common_prefix(gathered)
            if agreed:
                # Every rank holds every list, so every rank computes the same prefix and issues
                # the same collectives for it: what all ranks logged alike is still written.
                self._reduce_and_deliver(entries[:agreed])
                self._wait_inflight()
                message += (f" The {agreed} item(s) every rank logged alike before it were written; "
                            "nothing after it was.")
            self.failed = message
            raise ValueError(message)
        self.schedule.adopt(protocol.proposal_of(t))
        self._reduce_and_deliver(entries)

    def _wait_inflight(self) -> None:
        for works, *_ in self.inflight:
            for w in works:
                self._wait(w)
        self.inflight = []

    def _reduce_and_deliver(self, entries: List[Entry]) -> None:
        """Launch the packed SUM and MAX collectives of ``entries``; rank 0 queues one item per
        entry, staged as its slice of the reduced buffers (waited for on the writer thread)."""
        sum_buf, max_buf = packing.pack(entries, self.device)
        works = []
        for buf, op in ((sum_buf, self.dist.ReduceOp.SUM), (max_buf, self.dist.ReduceOp.MAX)):
            if buf is not None:
                self.bytes_synced += buf.numel() * buf.element_size()
                works.append(self._collective(self.dist.all_reduce, buf, op=op,
                                              group=self.data_group, async_op=True))
        if not self.is_writer:
            self.inflight.append((works, sum_buf, max_buf))  # buffers live until the collectives end
            return
        bufs = [b if b is not None else torch.zeros(0, dtype=torch.float64, device=self.device)
                for b in (sum_buf, max_buf)]
        shared: Any
        if self.device.type == "cuda":
            # NCCL's wait() only orders the current stream after the collective (no host wait);
            # the results then come back like every CUDA reduction: pinned, non-blocking, an event.
            for w in works:
                w.wait()
            shared = DeviceStaged(bufs)
        else:  # gloo: waited for on rank 0's writer thread
            shared = Deferred(_waited, (works, bufs, self._wait),
                              ready=lambda: all(w.is_completed() for w in works))
        items = []
        for e, (s_at, m_at) in zip(entries, packing.offsets(entries)):
            staged = Deferred(_merged_parts, (e, self.world, s_at, m_at), after=shared)
            items.append(Item(e.kind, e.method, e.tag, e.step, e.wall, e.sink, e.encode, e.meta, staged))
        self.submit(items)

    # -- collectives ---------------------------------------------------------------------------
    def _check_usable(self) -> None:
        if self.failed is not None:
            raise DistributedError(f"gpulog's distributed aggregation stopped after an earlier "
                                   f"error on rank {self.rank}: {self.failed}")

    def _fail(self, err: BaseException) -> DistributedError:
        self.failed = (f"rank {self.rank}: a collective of gpulog's aggregation failed or timed out "
                       f"({err}). Another rank may have died, diverged or stopped logging; gpulog "
                       f"waits distributed_timeout={self.timeout:g} s for the other ranks.")
        return DistributedError(self.failed)

    def _collective(self, fn: Any, *args: Any, **kw: Any) -> Any:
        self.collectives += 1
        try:
            return fn(*args, **kw)
        except RuntimeError as err:
            raise self._fail(err) from err

    def _wait(self, work: Any) -> None:
        try:
            work.wait()
        except RuntimeError as err:
            raise self._fail(err) from err


def _host_step(step: Any) -> None:
    if step is not None and type(step) is not int:
        raise TypeError("with distributed=True global_step must be a host integer (or None): every "
                        "rank cuts its sync points at step changes, which it must see at the call; "
                        "pass int(step) or a host counter")


def _world_timeout(dist: Any) -> Optional[float]:
    """The default group's timeout in seconds, where torch exposes it (gloo), else None."""
    try:
        backend = dist.group.WORLD._get_backend(torch.device("cpu"))
        return float(backend.options._timeout.total_seconds())
    except Exception:  # noqa: BLE001 - a private API: absent in some versions and backends
        return None


def _waited(works: List[Any], bufs: List[torch.Tensor], wait: Callable[[Any], None]
           ) -> Tuple[torch.Tensor, ...]:
    """Writer thread (gloo): the reduced buffers, once their collectives completed."""
    for w in works:
        wait(w)
    return tuple(bufs)


def _merged_parts(e: Entry, world: int, s_at: int, m_at: int, sums: np.ndarray, maxes: np.ndarray
                  ) -> List[np.ndarray]:
    return packing.unpack(e, world, sums, s_at, maxes, m_at)[0]
