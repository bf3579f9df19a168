"""Stage 2: results cross to the host without stalling the caller.

``DeviceStaged``: reduced CUDA tensors are copied with ``non_blocking=True`` into pinned host
buffers, ordered on the caller's current stream, and a CUDA event marks completion; the writer
thread waits on that event, never the caller.  The device tensors are referenced until then, so
the caching allocator cannot hand their memory to someone else mid-copy; pinned buffers come from
torch's caching host allocator, which reuses a block only after the copies that used it completed.

``Deferred``: CPU work finished on the writer thread (torch releases the GIL inside its ops).
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, Tuple

import numpy as np
import torch


class DeviceStaged:
    __slots__ = ("_device_tensors", "_pinned", "_event")

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

    def result(self) -> Tuple[np.ndarray, ...]:
        self._event.synchronize()
        self._device_tensors = []
        return tuple(_host_numpy(p) for p in self._pinned)


class Deferred:
    __slots__ = ("_fn", "_arg")

    def __init__(self, fn: Callable[[Any], Sequence[Any]], arg: Any) -> None:
        self._fn, self._arg = fn, arg

    def result(self) -> Tuple[np.ndarray, ...]:
        out = self._fn(self._arg)
        self._arg = None
        return tuple(_host_numpy(t) for t in out)


def _host_numpy(t: Any) -> Any:
    if isinstance(t, torch.Tensor):
        return t.numpy() if t.dtype != torch.bfloat16 else t.float().numpy()
    return t
