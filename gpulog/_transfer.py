"""Stage 2: results cross to the host without stalling the caller.

The ``Staged`` protocol — what an ``Item`` holds until the writer thread encodes it — has three
implementations: ``Ready`` (host arrays computed at the call), ``Deferred`` (host work finished on
the writer thread, optionally after another staged result or a readiness test: CPU reductions,
collective results, a slot of a coalesced scalar batch) and ``DeviceStaged`` (a device copy into
pinned memory with an event).

``DeviceStaged``: reduced CUDA tensors are copied with ``non_blocking=True`` into pinned host
buffers, ordered on the caller's current stream, and a CUDA event marks completion; the writer
thread waits on that event, never the caller.  The device tensors are referenced until then, so
the caching allocator cannot hand their memory to someone else mid-copy; pinned buffers come from
torch's caching host allocator, which reuses a block only after the copies that used it completed.
Inputs read on the current stream are ``record_stream``-ed to it (:func:`guard_inputs`): a tensor
allocated on another stream and freed right after the call keeps its memory until those reads end.

``GATE``: every CUDA call the writer thread makes (event queries, copies out of pinned memory,
releasing pinned and device blocks, whose frees record events) happens while no CUDA graph is being
captured in this process.  Under ``capture_error_mode="global"`` (``torch.cuda.graph``'s default)
such a call from another thread would invalidate the user's capture.  The gate learns of captures
by wrapping ``torch.cuda.CUDAGraph.capture_begin``/``capture_end`` the first time gpulog sees a
CUDA tensor; the writer waits on events by polling ``query()`` with back-off (never a spinning
``synchronize()``), taking the gate's lock for each query only.

``Deferred``: CPU work finished on the writer thread (torch releases the GIL inside its ops).
Its input is a snapshot taken at the call into a buffer from ``SnapshotPool``: copying into memory
that is already mapped costs ~20x less than a fresh allocation, whose pages fault on first touch.
"""
from __future__ import annotations

import collections
import contextlib
import threading
import time
from typing import Any, Callable, Deque, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np
import torch


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host → CUDA without a sync: a plain copy from pageable memory synchronises, so go through
    pinned memory with ``non_blocking`` (torch's caching host allocator keeps the pinned block
    until the copy has finished, so it may be dropped at once)."""
    if t.device == device:
        return t
    if device.type == "cuda" and t.device.type == "cpu":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class CaptureGate:
    """Knows whether a CUDA graph is being captured; serialises the writer's CUDA calls with the
    start of a capture (see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.capturing = 0
        self._installed = False

    def install(self) -> None:
        """Wrap ``CUDAGraph.capture_begin``/``capture_end`` (once, on the first CUDA tensor)."""
        if self._installed:
            return
        with self.lock:
            if self._installed:
                return
            from . import _lifecycle

            def began() -> None:
                self.capturing += 1

            def ended() -> None:
                self.capturing -= 1

            _lifecycle.wrap_graph_capture(torch.cuda.CUDAGraph, self.lock, began, ended)
            self._installed = True

    def run(self, fn: Callable[[], Any], max_wait: float = 0.002) -> Any:
        """``fn()`` (CUDA calls) at a moment when no capture is in progress; polls while one is."""
        delay = 50e-6
        while True:
            with self.lock:
                if not self.capturing:
                    return fn()
            time.sleep(delay)
            delay = min(delay * 2, max_wait)

    def try_query(self, event: Any) -> bool:
        """Has ``event`` completed?  False, without a CUDA call, while a capture is in progress."""
        with self.lock:
            if self.capturing:
                return False
            return bool(event.query())

    def wait_event(self, event: Any) -> None:
        """Until ``event`` has completed: ``query()`` under the gate, sleeping with back-off
        (50 µs doubling to 2 ms) in between, so a lagging GPU costs this thread no CPU."""
        delay = 50e-6
        while not self.run(event.query):
            time.sleep(delay)
            delay = min(delay * 2, 0.002)


GATE = CaptureGate()


def check_not_capturing(what: str) -> None:
    """Raise at the call when the current stream is being captured into a CUDA graph: staging
    allocates pinned memory and queues copies, which a capture cannot hold."""
    if capturing():
        raise RuntimeError(f"{what} was called while this stream is being captured into a CUDA graph; "
                           "only add_scalar and add_histogram (bins='tensorflow') can be captured: "
                           "log the rest outside the captured region (README: 'Logging in compiled "
                           "steps and CUDA graphs')")


def capturing() -> bool:
    """Is the current CUDA stream being captured into a graph?  (~1 µs; CUDA callers only.)"""
    return bool(torch.cuda.is_current_stream_capturing())


def guard_inputs(tensors: Sequence[Any], stream: Any) -> None:
    """``record_stream`` each CUDA input on ``stream``, where gpulog's kernels read it: if the
    caller allocated it on another stream and frees it right after the call, the allocator keeps
    the block until these reads are done (a no-op for tensors allocated on ``stream``)."""
    for t in tensors:
        if isinstance(t, torch.Tensor) and t.is_cuda:
            t.record_stream(stream)


class Staged(Protocol):
    """A result on its way to the host.  ``ready()`` (writer thread, never waits): would
    ``result()`` return at once?  ``result()`` (writer thread only, idempotent where items share
    it): the host arrays, in the order the encoder takes them.  ``nbytes``: host payload bytes."""

    nbytes: int

    def ready(self) -> bool: ...

    def result(self) -> Tuple[np.ndarray, ...]: ...


class DeviceStaged:
    """CUDA tensors copied with ``non_blocking=True`` into pinned memory, one event after the
    copies; host values among ``values`` (numbers, arrays, CPU tensors) are converted now and
    returned in place, so one staging serves a mixed argument list."""

    __slots__ = ("_device_tensors", "_pinned", "_where", "_given", "_event", "_host", "nbytes")

    def __init__(self, values: Sequence[Any], stream: Any = None) -> None:
        where = [i for i, v in enumerate(values) if isinstance(v, torch.Tensor) and v.is_cuda]
        self._given: List[Any] = [None if i in where else np.asarray(_host_numpy(
            v.detach().cpu() if isinstance(v, torch.Tensor) else v)) for i, v in enumerate(values)]
        self._where = where
        self._host: Optional[Tuple[np.ndarray, ...]] = None
        self._event: Any = None
        self._pinned: List[torch.Tensor] = []
        self._device_tensors: List[torch.Tensor] = []
        self.nbytes = 0
        if not where:
            return
        given = stream is not None
        if not given:
            check_not_capturing("gpulog")
            stream = torch.cuda.current_stream(values[where[0]].device)
        GATE.install()
        tensors = [values[i].detach().contiguous() for i in where]
        self._pinned = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
        # on the current stream as it is; on a given one (a scalar batch's) inside its context
        with torch.cuda.stream(stream) if given else contextlib.nullcontext():
            for host, dev in zip(self._pinned, tensors):
                host.copy_(dev, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record(stream)
        self._device_tensors = tensors
        # Counted against the hand-off's byte cap: producers that outrun the writer wait, so
        # pinned memory stays bounded.
        self.nbytes = sum(p.numel() * p.element_size() for p in self._pinned)

    def ready(self) -> bool:
        """Writer thread, without waiting: would :meth:`result` return at once?"""
        return self._host is not None or self._event is None or GATE.try_query(self._event)

    def result(self) -> Tuple[np.ndarray, ...]:
        """Writer thread: the host copies (idempotent; several items may share one staging)."""
        if self._host is None:
            if self._event is None:
                self._host = tuple(self._given)
            else:
                GATE.wait_event(self._event)
                # Copied out and released under the gate: freeing pinned and device blocks
                # records events on the streams that used them.
                self._host = GATE.run(self._release)
        return self._host

    def _release(self) -> Tuple[np.ndarray, ...]:
        out = list(self._given)
        for i, p in zip(self._where, self._pinned):
            out[i] = np.array(_host_numpy(p))
        self._pinned, self._device_tensors, self._given = [], [], []
        return tuple(out)


class DeviceStep:
    """A ``global_step`` held in a CUDA tensor (checked by ``_inputs.to_step``: one element, an
    integer dtype): copied to the host with one small asynchronous copy (like the values), read
    on the writer thread by :meth:`value` — never at the call."""

    __slots__ = ("_staged", "_value")

    def __init__(self, t: torch.Tensor) -> None:
        self._staged = DeviceStaged([t.detach().reshape(1).to(torch.int64)])
        self._value: Optional[int] = None

    def ready(self) -> bool:
        return self._value is not None or self._staged.ready()

    def value(self) -> int:
        """Writer thread: the step (waits on its copy's event, under the capture gate)."""
        if self._value is None:
            self._value = int(self._staged.result()[0][0])
        return self._value


class Ready:
    """Host arrays already computed at the call (a fused CPU pass cheaper than a snapshot copy)."""

    __slots__ = ("_arrays",)
    nbytes = 0

    def __init__(self, arrays: Sequence[Any]) -> None:
        self._arrays = tuple(_host_numpy(a) for a in arrays)

    def ready(self) -> bool:
        return True

    def result(self) -> Tuple[np.ndarray, ...]:
        return self._arrays


class SnapshotPool:
    """Reusable host buffers for call-time snapshots, keyed by (dtype, numel); bounded in bytes.

    ``take`` runs on the caller's thread and ``give`` on the writer's; both are single deque
    operations (atomic in CPython), and the byte count is only advisory, so no lock is held.
    """

    def __init__(self, max_bytes: int = 256 << 20) -> None:
        self.max_bytes = max_bytes
        self._free: Dict[Tuple[torch.dtype, int], Deque[torch.Tensor]] = collections.defaultdict(collections.deque)
        self._bytes = 0

    def snapshot(self, x: torch.Tensor) -> torch.Tensor:
        """A private copy of CPU tensor ``x`` (same shape, contiguous)."""
        try:
            buf = self._free[(x.dtype, x.numel())].pop()
            self._bytes -= buf.numel() * buf.element_size()
        except IndexError:
            buf = torch.empty(x.numel(), dtype=x.dtype)
        out = buf.view(x.shape)
        out.copy_(x)
        return out

    def give(self, t: torch.Tensor) -> None:
        size = t.numel() * t.element_size()
        if size >= 1 << 16 and self._bytes + size <= self.max_bytes:
            self._free[(t.dtype, t.numel())].append(t.reshape(-1))
            self._bytes += size


POOL = SnapshotPool()


class Deferred:
    """``fn(*args, *after.result())`` on the writer thread (``after`` omitted: ``fn(*args)``),
    once ``after`` and the ``ready`` test (if given) say it would not wait; computed once.
    Pooled snapshots among the inputs go back to ``POOL`` afterwards (outputs never alias them)."""

    __slots__ = ("_fn", "_args", "_after", "_ready", "_pooled", "_out", "nbytes")

    def __init__(self, fn: Callable[..., Sequence[Any]], args: Sequence[Any] = (), *,
                 after: Optional[Staged] = None, ready: Optional[Callable[[], bool]] = None,
                 pooled: Sequence[torch.Tensor] = ()) -> None:
        self._fn, self._args, self._after, self._ready = fn, tuple(args), after, ready
        self._pooled = pooled
        self._out: Optional[Tuple[Any, ...]] = None
        self.nbytes = after.nbytes if after is not None else 0

    def ready(self) -> bool:
        if self._out is not None:
            return True
        if self._ready is not None and not self._ready():
            return False
        return self._after is None or self._after.ready()

    def result(self) -> Tuple[np.ndarray, ...]:
        if self._out is None:
            more = self._after.result() if self._after is not None else ()
            self._out = tuple(_host_numpy(t) for t in self._fn(*self._args, *more))
            self._args, self._after = (), None
            for t in self._pooled:
                POOL.give(t)
            self._pooled = ()
        return self._out


def widen_bf16_for_numpy(t: torch.Tensor) -> torch.Tensor:
    """bfloat16 -> float32 (exact), wherever a tensor becomes a numpy array: numpy has no
    bfloat16.  (The other bfloat16 rule, torch's narrowing to float16, is in ``_inputs``.)"""
    return t.float() if t.dtype == torch.bfloat16 else t


def _host_numpy(t: Any) -> Any:
    if isinstance(t, torch.Tensor):
        return widen_bf16_for_numpy(t).numpy()
    return t
