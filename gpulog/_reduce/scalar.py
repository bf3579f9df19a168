"""Device scalars, coalesced: many ``add_scalar(cuda_tensor)`` calls share one device→host copy.

Data contract: each call copies its one-element tensor into the next float64 slot of a batch
buffer on the tensor's device, ordered on the caller's current stream (one small kernel, and no
lock: see ``Coalescer``; this snapshot fixes the value at call time even if the caller mutates or
frees the tensor next).  A
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
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch

from .. import _inputs
from .._transfer import GATE, Deferred, DeviceStaged, Ready, check_not_capturing, guard_inputs

SLOTS = 256
MAX_AGE_S = 0.05   # a batch older than this is sealed at the next call
IDLE_S = 0.2       # the writer seals a requested batch itself after the caller was away this long


class Batch:
    __slots__ = ("device_buf", "used", "count", "closing", "staged", "lock", "stream", "born",
                 "wanted", "wanted_at", "sealed")

    def __init__(self, device: torch.device, stream: Any) -> None:
        self.device_buf = torch.empty(SLOTS, dtype=torch.float64, device=device)
        self.used = 0            # slots written (only the batch's own thread advances it)
        self.count = 0           # slots the seal copied
        self.closing = False     # set before the seal reads ``used`` (see Coalescer)
        self.staged: Any = None  # once sealed: a DeviceStaged copy of the filled slots (CPU: Ready)
        self.lock = threading.Lock()
        self.stream = stream
        self.born = time.monotonic()
        self.wanted = False
        self.wanted_at = 0.0
        self.sealed = threading.Event()

    def seal_locked(self) -> None:
        """Queue the copy of the filled slots to the host (caller holds ``lock``)."""
        if self.sealed.is_set():
            return
        self.closing = True  # first: a slot counted after this line is seen as missed
        self.count = self.used
        src = self.device_buf[: self.count]
        self.staged = DeviceStaged([src], self.stream) if src.is_cuda else Ready((src.clone(),))
        self.sealed.set()

    def ready(self) -> bool:
        """Writer thread, without waiting: are the values on the host?  The first ask marks the
        batch wanted (the caller seals it at its next call); a caller that stays away ``IDLE_S``
        gets it sealed here, under the capture gate."""
        if not self.sealed.is_set():
            if not self.wanted:
                self.wanted_at = time.monotonic()
                self.wanted = True
                return False
            if time.monotonic() - self.wanted_at < IDLE_S:
                return False
            GATE.run(self._seal_from_writer)
        return self.staged.ready()

    def values(self) -> np.ndarray:
        """Writer thread: the batch's values, once sealed and copied (idempotent)."""
        if not self.sealed.is_set():
            self.wanted = True  # the caller seals it at its next call
            if not self.sealed.wait(IDLE_S):
                GATE.run(self._seal_from_writer)
        return self.staged.result()[0]

    def _seal_from_writer(self) -> None:
        with self.lock:
            self.seal_locked()


def _slot(batch: Batch, index: int) -> Tuple[np.ndarray]:
    """Writer thread: the value of one slot, once its batch has reached the host."""
    return (batch.values()[index:index + 1],)


class Coalescer:
    """Open batches per (thread, device, stream).

    The common path takes no lock: each thread writes only its own batches, and writes a slot
    *before* counting it (``used``), and a seal — by the thread itself, by ``flush()`` on another
    thread, or by the writer — sets ``closing`` before it reads ``used``, so it copies only slots
    whose copy was queued before it; a value that finds ``closing`` set with ``count <= index``
    (the seal may have missed it) is written again into a new batch.  Sealing takes the batch's
    lock (once per batch)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._open: "list[Batch]" = []   # every thread's batches not yet sealed, for seal_all
        self._lock = threading.Lock()    # guards _open (a new batch, seal_all)

    def stage(self, value: torch.Tensor) -> Deferred:
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
        mine = getattr(self._local, "batches", None)
        if mine is None:
            mine = self._local.batches = {}
        src = value.detach().reshape(())
        while True:
            batch = mine.get(key)
            if batch is None or batch.closing:
                batch = mine[key] = self._new_batch(value.device, stream)
            index = batch.used
            batch.device_buf[index].copy_(src)  # the slot first ...
            batch.used = index + 1              # ... then it counts
            if not batch.closing or index < batch.count:
                break
            # a seal by another thread began before this slot counted: write it again
        if index + 1 == SLOTS or batch.wanted or time.monotonic() - batch.born > MAX_AGE_S:
            with batch.lock:
                batch.seal_locked()
        return Deferred(_slot, (batch, index), ready=batch.ready)

    def _new_batch(self, device: torch.device, stream: Any) -> Batch:
        batch = Batch(device, stream)
        with self._lock:
            self._open = [b for b in self._open if not b.sealed.is_set()]
            self._open.append(batch)
        return batch

    def seal_all(self) -> None:
        """Seal every open batch of every thread (the caller's thread, at flush/close)."""
        with self._lock:
            batches = list(self._open)
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


def stage(value: torch.Tensor) -> Deferred:
    """Snapshot a one-element tensor into the process's coalescer (see module docstring)."""
    global _coalescer
    if _coalescer is None:
        with _coalescer_lock:
            if _coalescer is None:
                _coalescer = Coalescer()
    return _coalescer.stage(value)


def prepare_batch(tags: Sequence[str], values: Any) -> Any:
    """``add_scalar_batch``: a 1-D real tensor of ``len(tags)`` values, staged as it is (its own
    dtype: the conversion to float runs on the writer thread, so a CUDA tensor costs one copy and
    no kernel); host values converted now."""
    from .._encode import scalar as enc_scalar
    from ._backend import staged
    if _inputs.is_tensor(values):
        t = _inputs.local(values.detach(), "values")
        if t.is_complex() or not (t.is_floating_point() or t.dtype in _REAL_INT):
            raise TypeError(f"values must be a real tensor, got {t.dtype}")
    else:
        arr = _inputs.to_numpy(values, "values")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
            raise TypeError(f"values must be real numbers, got dtype {arr.dtype}")
        t = torch.from_numpy(np.array(arr, dtype=np.float64, copy=True))
    if t.dim() != 1 or t.shape[0] != len(tags):
        raise ValueError(f"values must be 1-D with one element per tag ({len(tags)}), got shape "
                         f"{tuple(t.shape)}; e.g. torch.stack(metrics)")
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)  # numpy has no bfloat16: widened on the writer thread
        return staged(enc_scalar.batch_from_bf16_bits, (list(tags),), [t if t.is_cuda else t.clone()])
    return staged(enc_scalar.batch, (list(tags),), [t if t.is_cuda else t.clone()])


_REAL_INT = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool)
