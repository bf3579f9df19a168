"""Device scalars, coalesced: many ``add_scalar(cuda_tensor)`` calls share one device→host copy.

Data contract: each call copies its one-element tensor into the next float64 slot of a batch
buffer on the tensor's device, ordered on the caller's current stream (one small kernel; this
snapshot fixes the value at call time even if the caller mutates or frees the tensor next).  A
batch is *sealed* — one ``non_blocking`` copy of its filled slots into pinned memory, then one
CUDA event — when it is full, or when the writer thread reaches its first item, whichever comes
first.  Sealing from the writer thread is safe: the copy is queued on the same stream, after every
slot write.  The writer waits on the event, never the caller.  Batches are kept per (device,
stream), so values logged from several streams or devices stay right.

The same code runs on CPU tensors (no pinned memory, no event), which is how it is unit-tested.
"""
from __future__ import annotations

import threading
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

SLOTS = 256


class Batch:
    __slots__ = ("device_buf", "used", "host", "event", "lock", "stream")

    def __init__(self, device: torch.device, stream: Any) -> None:
        self.device_buf = torch.empty(SLOTS, dtype=torch.float64, device=device)
        self.used = 0
        self.host: Optional[torch.Tensor] = None
        self.event: Any = None
        self.lock = threading.Lock()
        self.stream = stream

    def seal_locked(self) -> None:
        """Queue the copy of the filled slots to the host (caller holds ``lock``)."""
        if self.host is not None:
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

    def values(self) -> np.ndarray:
        with self.lock:
            self.seal_locked()
        if self.event is not None:
            self.event.synchronize()
        assert self.host is not None
        return self.host.numpy()


class SlotRef:
    """``result()`` → the value of one slot, once its batch has reached the host."""

    __slots__ = ("batch", "index")

    def __init__(self, batch: Batch, index: int) -> None:
        self.batch, self.index = batch, index

    def result(self) -> Tuple[np.ndarray]:
        return (self.batch.values()[self.index:self.index + 1],)


class Coalescer:
    """Open batches per (device, stream); thread-safe."""

    def __init__(self) -> None:
        self._open: Dict[Tuple[Any, ...], Batch] = {}
        self._lock = threading.Lock()

    def stage(self, value: torch.Tensor) -> SlotRef:
        if value.numel() != 1:
            raise ValueError(f"scalar_value must hold exactly one element, got a tensor of shape "
                             f"{tuple(value.shape)}; reduce it first (e.g. .mean())")
        if value.is_complex():
            raise TypeError(f"scalar_value must be real, got a {value.dtype} tensor")
        stream = torch.cuda.current_stream(value.device) if value.is_cuda else None
        key = (value.device, None if stream is None else stream.cuda_stream)
        with self._lock:
            batch = self._open.get(key)
            if batch is None or batch.host is not None or batch.used == SLOTS:
                batch = self._open[key] = Batch(value.device, stream)
            with batch.lock:
                if batch.host is not None:  # sealed by the writer between the two locks
                    batch = self._open[key] = Batch(value.device, stream)
                index = batch.used
                batch.device_buf[index].copy_(value.detach().reshape(()))
                batch.used += 1
                if batch.used == SLOTS:
                    batch.seal_locked()
        return SlotRef(batch, index)


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
