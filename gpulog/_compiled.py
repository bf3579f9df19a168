"""Logging from inside ``torch.compile(fullgraph=True)`` steps and CUDA graphs.

Inside a compiled region ``add_scalar`` and ``add_histogram`` become one opaque custom op each
(``torch.ops.gpulog.log_scalar`` / ``log_histogram``): dynamo and inductor keep them in the graph
(they are registered as ordered side effects, so nothing removes or reorders them) and never trace
gpulog's Python.  The tag, the writer and the options are constant arguments of the op; the step
is a tensor argument (or gpulog's counter), so a new step never recompiles.

Each execution of the op is device work only: the value (or the histogram's counts and stats,
reduced where the data lives) and the step are written into the next slot of a per-(writer, tag)
**ring** on the value's device, and the ring's counter is incremented, all on the current stream.
That is exactly what a CUDA graph can capture and replay: every replay writes its own slot.

On the CPU the op's body runs on the host at every execution, so it simply makes the eager call
(``add_scalar``/``add_histogram`` with the step's value): the values, steps and wall times of eager
logging, at the cost of eager logging.  On CUDA:

A pump thread (``gpulog-ring``, started with the first ring) picks up new slots every
``POLL_S``: on CUDA it copies the counter, the ring and the counter again into pinned memory on a
private stream, under the capture gate (``_transfer.GATE``: never while a graph is being
captured), and waits on an event by polling; nothing is queued on the training streams and the
training thread never waits.  Slots the ring overwrote before they were read (more than
``RING_SLOTS`` executions between two pick-ups) are counted and reported in a warning, never
silently lost.  Picked-up values enter the ordinary pipeline (``FileWriter.submit`` → hand-off →
writer thread → encode), with the wall time of their pick-up.  ``flush()``/``close()`` drain the
rings first (waiting for the device: they are barriers).
"""
from __future__ import annotations

import threading
import time
import warnings
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from . import _inputs, _lifecycle, _transfer
from ._encode import histogram as enc_histogram
from ._encode import scalar as enc_scalar
from ._registry import lookup as _writer

RING_SLOTS = 1024      # executions a ring holds between two pick-ups
POLL_S = 0.1


def add_scalar(writer: Any, tag: str, value: Any, global_step: Any, walltime: Any, new_style: bool,
               double_precision: bool, reduce: Optional[str] = "mean") -> None:
    """``SummaryWriter.add_scalar`` while dynamo traces: checks (at trace time) and one op.
    A Python number (the learning rate) becomes a 0-d float64 tensor of the graph."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        # zeros() + value, not torch.tensor(value): the latter specialises the float, so each new
        # learning rate would recompile; an addition keeps it a dynamic input (exact: 0.0 + x == x).
        value = torch.zeros((), dtype=torch.float64) + value
    _check(tag, value, walltime, "scalar_value")
    _check_distributed(writer, value)
    _inputs.one_element(value, "scalar_value")
    torch.ops.gpulog.log_scalar(value, _step(global_step, value), tag, _writer_id(writer),
                                bool(new_style), bool(double_precision), reduce)


def add_histogram(writer: Any, tag: str, values: Any, global_step: Any, bins: Any, walltime: Any,
                  max_bins: Any) -> None:
    """``SummaryWriter.add_histogram`` while dynamo traces ('tensorflow' bins only)."""
    from ._reduce.histogram import check_max_bins
    _check(tag, values, walltime, "values")
    _check_distributed(writer, values)
    check_max_bins(max_bins)
    if not (isinstance(bins, str) and bins == "tensorflow"):
        raise ValueError(f"add_histogram inside a compiled step supports bins='tensorflow' only, got "
                         f"bins={bins!r}: other bins depend on the data (log them outside the step)")
    torch.ops.gpulog.log_histogram(values, _step(global_step, values), tag, _writer_id(writer),
                                   max_bins)


def _check(tag: Any, value: Any, walltime: Any, name: str) -> None:
    if not isinstance(tag, str):
        raise TypeError(f"tag must be a str, got {type(tag).__name__}")
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a tensor inside a compiled step, got {type(value).__name__}")
    if walltime is not None:
        raise ValueError("walltime cannot be given inside a compiled step: values logged there get "
                         "the time they are picked up (within 0.1 s)")


def _check_distributed(writer: Any, value: torch.Tensor) -> None:
    """CUDA values of a compiled step reach the writer through the ring pump, at times that are
    not program-order points, so they cannot be aggregated across ranks: refused at trace time
    instead of silently writing rank 0's values only (on the CPU each execution logs eagerly,
    in program order, and aggregates)."""
    if not writer._stage.local and value.is_cuda:
        raise ValueError("logging CUDA tensors inside a compiled step with distributed=True is not "
                         "supported yet: return the value from the step and log it outside, or use "
                         "a writer without distributed=True")


def _step(global_step: Any, value: torch.Tensor) -> Optional[torch.Tensor]:
    """A step tensor on ``value``'s device, or None (gpulog's counter: 0, 1, 2, ... per tag)."""
    if global_step is None:
        return None
    if isinstance(global_step, torch.Tensor):
        if global_step.device != value.device:
            raise ValueError(f"global_step is on {global_step.device} but the value on {value.device}; "
                             "keep the step tensor on the value's device (a CUDA graph cannot read "
                             "host memory)")
        return global_step
    if isinstance(global_step, bool) or not isinstance(global_step, int):
        raise TypeError(f"global_step must be an int, an integer tensor or None inside a compiled "
                        f"step, got {type(global_step).__name__}")
    if not -2**63 <= global_step <= 2**63 - 1:
        raise ValueError(f"global_step must fit in int64 (-2**63 .. 2**63-1), got {global_step}; "
                         "TensorBoard stores steps as int64")
    # A Python int: a fill kernel, no host-to-device copy (dynamo makes the int dynamic after its
    # first change, so a new step does not recompile).
    return torch.full((), global_step, dtype=torch.int64, device=value.device)


def _writer_id(writer: Any) -> int:
    return int(writer._writer_id)  # its number in _registry, given at construction


# -- rings ---------------------------------------------------------------------------------------
class Ring:
    """Slots of one (writer, tag, kind) on one CUDA device; written by the op, read by the pump.
    (On the CPU the op's body runs on the host at every execution and logs directly.)"""

    def __init__(self, writer_id: int, tag: str, kind: str, device: torch.device, width: int,
                 options: Tuple[Any, ...]) -> None:
        self.writer_id, self.tag, self.kind, self.options = writer_id, tag, kind, options
        self.device = device
        n = RING_SLOTS
        self.values = torch.zeros(n, width, dtype=torch.float64, device=device)
        self.steps = torch.zeros(n, dtype=torch.int64, device=device)
        self.count = torch.zeros(1, dtype=torch.int64, device=device)
        self.read = 0            # executions already picked up
        self.dropped = 0
        self.drain_lock = threading.Lock()  # one pick-up at a time (the pump, flush, exit)

    def write(self, payload: torch.Tensor, step: Optional[torch.Tensor]) -> None:
        """Device work only: slot ``count % n`` ← payload and step; ``count += 1``."""
        slot = torch.remainder(self.count, RING_SLOTS)
        step_value = self.count if step is None else step.reshape(1).to(torch.int64)
        self.values.index_copy_(0, slot, payload.reshape(1, -1).to(torch.float64))
        self.steps.index_copy_(0, slot, step_value)
        self.count.add_(1)

    def snapshot(self, wait: bool) -> Optional[Tuple[int, int, np.ndarray, np.ndarray, int]]:
        """New slots on the host: (count before, first index, values, steps, count after), or
        None if a capture was in progress (``wait=False``).  Two small round trips on the pump's
        private stream: the counter (8 bytes), then only the slots written since the last pick-up
        (not the whole ring), then the counter again to see what was overwritten meanwhile."""
        if not wait and _transfer.GATE.capturing:
            return None
        n = self.values.shape[0]
        (c1,) = self._fetch([self.count])
        count = int(c1[0])
        first = max(self.read, count - n)
        if first >= count:
            return count, first, np.zeros((0, self.values.shape[1])), np.zeros(0, np.int64), count
        lo, hi = first % n, (count - 1) % n + 1  # slots of executions first .. count-1, in order
        parts = [slice(lo, hi)] if lo < hi else [slice(lo, n), slice(0, hi)]
        fetched = self._fetch([t[p] for p in parts for t in (self.values, self.steps)] + [self.count])
        values = np.concatenate(fetched[0:-1:2])
        steps = np.concatenate(fetched[1:-1:2])
        return count, first, values, steps, int(fetched[-1][0])

    def _fetch(self, tensors: List[torch.Tensor]) -> List[np.ndarray]:
        """Device tensors → host arrays through pinned memory on the pump's stream (the caller's
        streams are untouched); waits by polling, under the capture gate."""
        stream = _pump_stream(self.device)

        def copy() -> Any:
            host = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
            with torch.cuda.stream(stream):
                for h, d in zip(host, tensors):
                    h.copy_(d, non_blocking=True)
                done = torch.cuda.Event()
                done.record(stream)
            return host, done

        host, done = _transfer.GATE.run(copy)
        _transfer.GATE.wait_event(done)
        return [h.numpy().copy() for h in host]


_RINGS: Dict[Tuple[int, str, str, str], Ring] = {}
_RINGS_LOCK = threading.Lock()
_STREAMS: Dict[torch.device, Any] = {}


def _pump_stream(device: torch.device) -> Any:
    s = _STREAMS.get(device)
    if s is None:
        s = _STREAMS[device] = _transfer.GATE.run(lambda: torch.cuda.Stream(device))
    return s


def _ring(writer_id: int, tag: str, kind: str, device: torch.device, width: int,
          options: Tuple[Any, ...]) -> Ring:
    key = (writer_id, tag, kind, str(device))
    ring = _RINGS.get(key)
    if ring is None:
        with _RINGS_LOCK:
            ring = _RINGS.get(key)
            if ring is None:
                ring = _RINGS[key] = Ring(writer_id, tag, kind, device, width, options)
                _start_pump()
    return ring


_HOST_COUNTS: Dict[Tuple[int, str, str], int] = {}


def _host_step(writer_id: int, tag: str, kind: str, step: Optional[torch.Tensor]) -> int:
    """The step of one host execution: the step tensor's value, else gpulog's counter."""
    key = (writer_id, tag, kind)
    n = _HOST_COUNTS.get(key, 0)
    _HOST_COUNTS[key] = n + 1
    return n if step is None else int(step)


# -- the ops -------------------------------------------------------------------------------------
def log_scalar(value: torch.Tensor, step: Optional[torch.Tensor], tag: str, writer_id: int,
               new_style: bool, double_precision: bool, reduce: Optional[str] = "mean") -> None:
    """One execution's scalar into the ring of (writer, tag) on ``value``'s device."""
    if value.device.type != "cuda":  # the host runs this body at every execution: log directly
        writer = _writer(writer_id)
        if writer is not None:
            writer.add_scalar(tag, value.detach(), _host_step(writer_id, tag, "scalar", step),
                              new_style=new_style, double_precision=double_precision, reduce=reduce)
        return
    ring = _ring(writer_id, tag, "scalar", value.device, 1, (new_style, double_precision))
    ring.write(value.detach().reshape(1), step)


def log_histogram(values: torch.Tensor, step: Optional[torch.Tensor], tag: str, writer_id: int,
                  max_bins: Optional[int]) -> None:
    """One execution's histogram ('tensorflow' bins): counts and [min, max, num, sum, sum_sq],
    reduced where ``values`` lives, into the ring of (writer, tag)."""
    from ._reduce import histogram as red
    if values.device.type != "cuda":  # as log_scalar: the eager path (reduced on the writer thread)
        writer = _writer(writer_id)
        if writer is not None:
            writer.add_histogram(tag, values.detach(), _host_step(writer_id, tag, "histogram", step),
                                 max_bins=max_bins)
        return
    edges = red.tensorflow_edges()
    x = values.detach().reshape(-1)
    if x.dtype == torch.bool:
        x = x.to(torch.uint8)
    capturing = x.is_cuda and torch.cuda.is_current_stream_capturing()
    # During a capture: the torch reference (no background compilation, no new cell-table upload).
    counts, stats = (red.reduce_torch if capturing else red.reduce)(x, edges, True)
    ring = _ring(writer_id, tag, "histogram", x.device, len(edges) - 1 + 5, (edges, max_bins))
    ring.write(torch.cat([counts.to(torch.float64), stats.to(torch.float64)]), step)


# Defined with torch.library.Library (one implementation for every backend): a call costs ~2 µs
# of dispatch where torch.library.custom_op's wrapper layers cost ~10 µs.
_LIB = torch.library.Library("gpulog", "DEF")
_LIB.define("log_scalar(Tensor value, Tensor? step, str tag, int writer_id, bool new_style, "
            "bool double_precision, str? reduce=\"mean\") -> ()")
_LIB.define("log_histogram(Tensor values, Tensor? step, str tag, int writer_id, int? max_bins) -> ()")
_LIB.impl("log_scalar", log_scalar, "CompositeExplicitAutograd")
_LIB.impl("log_histogram", log_histogram, "CompositeExplicitAutograd")


# Model watching inside compiled steps (``gpulog.watch``): its hooks become these ops, whose
# bodies run at every execution of the graph, with the graph's values at that program point (the
# parameters before the update, the gradients of this step), and do what the eager hooks do.
def watch_pre(tensors: List[Optional[torch.Tensor]], handle_id: int) -> None:
    handle = _writer(handle_id)
    if handle is not None:
        handle._pre_step([None if t is None else t.detach() for t in tensors])


def watch_post(params: List[torch.Tensor], handle_id: int) -> None:
    handle = _writer(handle_id)
    if handle is not None:
        handle._post_step([p.detach() for p in params])


def watch_act(value: torch.Tensor, handle_id: int, name: str) -> None:
    handle = _writer(handle_id)
    if handle is not None:
        handle._activation(name, value.detach())


_LIB.define("watch_pre(Tensor?[] tensors, int handle_id) -> ()")
_LIB.define("watch_post(Tensor[] params, int handle_id) -> ()")
_LIB.define("watch_act(Tensor value, int handle_id, str name) -> ()")
_LIB.impl("watch_pre", watch_pre, "CompositeExplicitAutograd")
_LIB.impl("watch_post", watch_post, "CompositeExplicitAutograd")
_LIB.impl("watch_act", watch_act, "CompositeExplicitAutograd")


@torch.library.register_fake("gpulog::watch_pre", lib=_LIB)
def _watch_pre_fake(tensors: List[Optional[torch.Tensor]], handle_id: int) -> None:
    return None


@torch.library.register_fake("gpulog::watch_post", lib=_LIB)
def _watch_post_fake(params: List[torch.Tensor], handle_id: int) -> None:
    return None


@torch.library.register_fake("gpulog::watch_act", lib=_LIB)
def _watch_act_fake(value: torch.Tensor, handle_id: int, name: str) -> None:
    return None


@torch.library.register_fake("gpulog::log_scalar", lib=_LIB)
def _log_scalar_fake(value: torch.Tensor, step: Optional[torch.Tensor], tag: str, writer_id: int,
                     new_style: bool, double_precision: bool, reduce: Optional[str] = "mean") -> None:
    return None


@torch.library.register_fake("gpulog::log_histogram", lib=_LIB)
def _log_histogram_fake(values: torch.Tensor, step: Optional[torch.Tensor], tag: str, writer_id: int,
                        max_bins: Optional[int]) -> None:
    return None


def _effectful() -> None:
    """Ordered side effects: kept, and kept in program order, by functionalization and inductor
    (an op that returns nothing would otherwise be dead code to them)."""
    try:
        from torch._higher_order_ops.effects import _EffectType, _register_effectful_op
    except ImportError:  # older torch: dynamo still keeps calls that return nothing
        return
    for op in (torch.ops.gpulog.log_scalar.default, torch.ops.gpulog.log_histogram.default,
               torch.ops.gpulog.watch_pre.default, torch.ops.gpulog.watch_post.default,
               torch.ops.gpulog.watch_act.default):
        _register_effectful_op(op, _EffectType.ORDERED)


_effectful()


# -- pick-up ---------------------------------------------------------------------------------------
def drain(writer_id: Optional[int] = None, wait: bool = True) -> None:
    """Move every new slot of the rings (of one writer, or all) into the writer pipeline."""
    for key, ring in list(_RINGS.items()):
        if writer_id is not None and key[0] != writer_id:
            continue
        writer = _writer(ring.writer_id)
        if writer is None:
            _RINGS.pop(key, None)
            continue
        with ring.drain_lock:
            _drain_ring(writer, ring, wait)


def _drain_ring(writer: Any, ring: Ring, wait: bool) -> None:
    snap = ring.snapshot(wait)
    if snap is None:
        return
    count, first, values, steps, after = snap
    n = ring.values.shape[0]
    # Executions before `oldest` were overwritten (before this pick-up, or while it copied).
    oldest = max(ring.read, after - n)
    if oldest > ring.read:
        ring.dropped += oldest - ring.read
        warnings.warn(f"gpulog: {oldest - ring.read} executions of {ring.kind} {ring.tag!r} were "
                      f"overwritten in its ring of {n} slots before they were picked up "
                      f"({ring.dropped} so far); log less often or raise "
                      "gpulog._compiled.RING_SLOTS before the first compiled call",
                      RuntimeWarning, stacklevel=3)
    wall = time.time()
    for i in range(max(oldest, first), count):
        _submit(writer, ring, values[i - first], int(steps[i - first]), wall)
    ring.read = max(ring.read, count)


def _submit(writer: Any, ring: Ring, payload: np.ndarray, step: int, wall: float) -> None:
    fw = writer._get_file_writer()
    if ring.kind == "scalar":
        new_style, double_precision = ring.options
        fw.submit(enc_scalar.from_array, (ring.tag, new_style, double_precision), step, wall, 0,
                  _transfer.Ready((payload[:1].copy(),)))
    else:
        edges, max_bins = ring.options
        n = len(edges) - 1
        counts = payload[:n].astype(np.int64)
        fw.submit(enc_histogram.histogram, (ring.tag, edges, max_bins), step, wall, 0,
                  _transfer.Ready((counts, payload[n:n + 5].copy())))


_pump: Optional[threading.Thread] = None
_stop = threading.Event()


def _start_pump() -> None:
    global _pump
    if _pump is None:
        _pump = threading.Thread(target=_pump_loop, name="gpulog-ring", daemon=True)
        _pump.start()
        _lifecycle.at_exit("rings", _drain_at_exit)


def _pump_loop() -> None:
    while not _stop.wait(POLL_S):
        try:
            drain(wait=False)
        except Exception as err:  # noqa: BLE001 - keep pumping; say what failed
            warnings.warn(f"gpulog: picking up values logged in compiled steps failed: {err!r}",
                          RuntimeWarning)


def _drain_at_exit() -> None:
    """The "rings" exit phase: before distributed writers settle and the writer drains."""
    _stop.set()
    try:
        drain(wait=True)
    except Exception as err:  # noqa: BLE001
        import sys
        print(f"gpulog: values logged in compiled steps could not be picked up at exit: {err!r}",
              file=sys.stderr)
