"""Stage 2: results cross to the host without stalling the caller.

``DeviceStaged``: reduced CUDA tensors are copied with ``non_blocking=True`` into pinned host
buffers, ordered on the caller's current stream, and a CUDA event marks completion; the writer
thread waits on that event, never the caller.  The device tensors are referenced until then, so
the caching allocator cannot hand their memory to someone else mid-copy; pinned buffers come from
torch's caching host allocator, which reuses a block only after the copies that used it completed.

``Deferred``: CPU work finished on the writer thread (torch releases the GIL inside its ops).
Its input is a snapshot taken at the call into a buffer from ``SnapshotPool``: copying into memory
that is already mapped costs ~20x less than a fresh allocation, whose pages fault on first touch.
"""
from __future__ import annotations

import collections
from typing import Any, Callable, Deque, Dict, Sequence, Tuple

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


class DeviceStaged:
    __slots__ = ("_device_tensors", "_pinned", "_event", "nbytes")

    def __init__(self, tensors: Sequence[torch.Tensor]) -> None:
        tensors = [t.detach().contiguous() for t in tensors]
        device = tensors[0].device
        stream = torch.cuda.current_stream(device)
        self._pinned = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in tensors]
        for host, dev in zip(self._pinned, tensors):
            host.copy_(dev, non_blocking=True)
        self._event = torch.cuda.Event()
        self._event.record(stream)
        self._device_tensors = tensors
        # Counted against the hand-off's byte cap: producers that outrun the writer wait, so
        # pinned memory stays bounded.
        self.nbytes = sum(p.numel() * p.element_size() for p in self._pinned)

    def result(self) -> Tuple[np.ndarray, ...]:
        self._event.synchronize()
        self._device_tensors = []
        return tuple(_host_numpy(p) for p in self._pinned)


class Ready:
    """Host arrays already computed at the call (a fused CPU pass cheaper than a snapshot copy)."""

    __slots__ = ("_arrays",)

    def __init__(self, arrays: Sequence[Any]) -> None:
        self._arrays = tuple(_host_numpy(a) for a in arrays)

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
    """``fn(arg)`` on the writer thread; pooled snapshots in ``arg`` are returned afterwards."""

    __slots__ = ("_fn", "_arg", "_pooled")

    def __init__(self, fn: Callable[[Any], Sequence[Any]], arg: Any, pooled: Sequence[torch.Tensor] = ()) -> None:
        self._fn, self._arg, self._pooled = fn, arg, pooled

    def result(self) -> Tuple[np.ndarray, ...]:
        out = tuple(_host_numpy(t) for t in self._fn(self._arg))
        self._arg = None
        for t in self._pooled:  # the outputs never alias the input snapshot
            POOL.give(t)
        self._pooled = ()
        return out


def _host_numpy(t: Any) -> Any:
    if isinstance(t, torch.Tensor):
        return t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy()
    return t
