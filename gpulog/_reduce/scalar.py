"""Device scalars, coalesced: many ``add_scalar(cuda_tensor)`` calls share one device→host copy.

Data contract: each call copies its one-element tensor into the next float64 slot of a batch
buffer on the tensor's device, ordered on the caller's current stream (one small kernel; this
snapshot fixes the value at call time even if the caller mutates or frees the tensor next).  A
batch is *sealed* — one ``non_blocking`` copy of its filled slots into pinned memory, then one
CUDA event — on the caller's thread: when it is full, when it is older than ``MAX_AGE_S``, when
the writer has asked for it (it reached one of its items), and at ``flush()``/``close()``.  The
writer waits on the event, never the caller.  Only when the caller stays away for ``IDLE_S``
after the writer asked does the writer seal the batch itself, under the capture gate (see
``_transfer``), so it never queues work on a stream that is being captured.  Batches are kept per
(device, stream), so values logged from several streams or devices stay right.

The same code runs on CPU tensors (no pinned memory, no event), which is how it is unit-tested.
"""
from __future__ import annotations

import threading
import time
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from .. import _inputs
from .._transfer import GATE, check_not_capturing, guard_inputs

SLOTS = 256
MAX_AGE_S = 0.05   # a batch older than this is sealed at the next call
IDLE_S = 0.2       # the writer seals a requested batch itself after the caller was away this long


class Batch:
    __slots__ = ("device_buf", "used", "host", "event", "lock", "stream", "born", "wanted",
                 "wanted_at", "sealed", "_values")

    def __init__(self, device: torch.device, stream: Any) -> None:
        self.device_buf = torch.empty(SLOTS, dtype=torch.float64, device=device)
        self.used = 0
        self.host: Optional[torch.Tensor] = None
        self.event: Any = None
        self.lock = threading.Lock()
        self.stream = stream
        self.born = time.monotonic()
        self.wanted = False
        self.wanted_at = 0.0
        self.sealed = threading.Event()
        self._values: Optional[np.ndarray] = None

    def seal_locked(self) -> None:
        """Queue the copy of the filled slots to the host (caller holds ``lock``)."""
        if self.sealed.is_set():
            return
        src = self.device_buf[: self.used]
        if src.is_cuda:
            self.host = torch.empty(self.used, dtype=torch.float64, pin_memory=True)
            with torch.cuda.stream(self.stream):
                self.host.copy_(src, non_blocking=True)
                self.event = torch.cuda.Event()
                self.event.record(self.stream)
        else:
            self.host = src.clone()
        self.sealed.set()

    def ready(self) -> bool:
        """Writer thread, without waiting: are the values on the host?  The first ask marks the
        batch wanted (the caller seals it at its next call); a caller that stays away ``IDLE_S``
        gets it sealed here, under the capture gate."""
        if self._values is not None:
            return True
        if not self.sealed.is_set():
            if not self.wanted:
                self.wanted_at = time.monotonic()
                self.wanted = True
                return False
            if time.monotonic() - self.wanted_at < IDLE_S:
                return False
            GATE.run(self._seal_from_writer)
        return self.event is None or GATE.try_query(self.event)

    def values(self) -> np.ndarray:
        """Writer thread: the batch's values, once sealed and copied (idempotent)."""
        if self._values is not None:
            return self._values
        if not self.sealed.is_set():
            self.wanted = True  # the caller seals it at its next call
            if not self.sealed.wait(IDLE_S):
                GATE.run(self._seal_from_writer)
        if self.event is not None:
            GATE.wait_event(self.event)
        assert self.host is not None
        self._values = GATE.run(self._release)
        return self._values

    def _seal_from_writer(self) -> None:
        with self.lock:
            self.seal_locked()

    def _release(self) -> np.ndarray:
        assert self.host is not None
        values = np.array(self.host.numpy())
        self.host = self.device_buf = None  # type: ignore[assignment]
        return values


class SlotRef:
    """``result()`` → the value of one slot, once its batch has reached the host."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: Batch, index: int) -> None:
        self.batch, self.index = batch, index

    def ready(self) -> bool:
        return self.batch.ready()

    def result(self) -> Tuple[np.ndarray]:
        return (self.batch.values()[self.index:self.index + 1],)


class Coalescer:
    """Open batches per (device, stream); thread-safe."""

    def __init__(self) -> None:
        self._open: Dict[Tuple[Any, ...], Batch] = {}
        self._lock = threading.Lock()

    def stage(self, value: torch.Tensor) -> SlotRef:
        _inputs.one_element(value, "scalar_value")
        if value.is_complex():
            raise TypeError(f"scalar_value must be real, got a {value.dtype} tensor")
        stream = None
        if value.is_cuda:
            check_not_capturing("add_scalar")
            GATE.install()
            stream = torch.cuda.current_stream(value.device)
            guard_inputs((value,), stream)
        key = (value.device, None if stream is None else stream.cuda_stream)
        with self._lock:
            batch = self._open.get(key)
            if batch is None or batch.sealed.is_set():
                batch = self._open[key] = Batch(value.device, stream)
            with batch.lock:
                if batch.sealed.is_set():  # sealed by the writer between the two locks
                    batch = self._open[key] = Batch(value.device, stream)
                index = batch.used
                batch.device_buf[index].copy_(value.detach().reshape(()))
                batch.used += 1
                if batch.used == SLOTS or batch.wanted or time.monotonic() - batch.born > MAX_AGE_S:
                    batch.seal_locked()
        return SlotRef(batch, index)

    def seal_all(self) -> None:
        """Seal every open batch (the caller's thread, at flush/close)."""
        with self._lock:
            batches = list(self._open.values())
        for batch in batches:
            with batch.lock:
                if batch.used:
                    batch.seal_locked()


def seal_all() -> None:
    """At ``flush()``/``close()``: hand every value logged so far to the writer.  From one of
    gpulog's own threads (the SIGTERM drain, the exit drain's helpers) the seals — a pinned
    allocation and a copy queued on the user's stream — wait for any CUDA-graph capture in this
    process to end, as every other CUDA call of those threads does (``_transfer.GATE``)."""
    if _coalescer is not None:
        if threading.current_thread().name.startswith("gpulog"):
            GATE.run(_coalescer.seal_all)
        else:
            _coalescer.seal_all()


_coalescer: Optional[Coalescer] = None
_coalescer_lock = threading.Lock()


def stage(value: torch.Tensor) -> SlotRef:
    """Snapshot a one-element tensor into the process's coalescer (see module docstring)."""
    global _coalescer
    if _coalescer is None:
        with _coalescer_lock:
            if _coalescer is None:
                _coalescer = Coalescer()
    return _coalescer.stage(value)
