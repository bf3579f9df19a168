"""Producer → writer hand-off (host side, torch-free).

Design
------
The queue is a ``collections.deque``: CPython documents ``append`` and ``popleft`` as atomic and
thread-safe (each is one C call made while holding the GIL), so any number of producer threads and
the one writer thread exchange items without taking a lock.  ``add_scalar`` therefore costs one
tuple and one ``append``.

What wakes the writer: it sleeps on a ``threading.Event`` with a short timeout (``poll_s``, 0.2 s)
and drains everything queued when it wakes, so at low rates an item reaches the file within about
``poll_s``.  Small items (scalars, text) do not wake it: the training thread pays no wake-up per
call and the writer encodes them in large batches, taking the GIL ~5 times per second instead of
once per call.  Producers set the event for a ``flush()``/``close()`` barrier, for every payload
item (a reduction or image to finish, worth overlapping with the caller), and when the backlog
passes ``limit`` items.

Memory and lag are bounded: when more than ``limit`` items or ``max_bytes`` payload bytes are
pending, the producer waits (never drops) until the writer has caught up.  ``limit`` follows the
writer's measured throughput so that the queue holds about ``LAG_S`` of its work (between
``MIN_LIMIT`` and ``max_items``): a ``kill -9`` then loses only the last moments' values, however
fast the producer.  Payload bytes are counted under a lock, which only large items (arrays) pay
for.
"""
from __future__ import annotations

import collections
import threading
from typing import Any, Deque

DEFAULT_MAX_ITEMS = 1 << 17          # ~25 MB of small scalar items
DEFAULT_MAX_BYTES = 512 << 20         # payload bytes (histogram/image/tensor data) waiting to be encoded
LAG_S = 0.05                          # the queue holds about this much of the writer's work
MIN_LIMIT = 128                       # never fewer queued items than this (slow writers)


class Handoff:
    """A multi-producer, single-consumer FIFO of work items with a sleeping consumer."""

    def __init__(self, poll_s: float = 0.2, max_items: int = DEFAULT_MAX_ITEMS,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.items: Deque[Any] = collections.deque()
        self.wake = threading.Event()
        self.poll_s = poll_s
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.limit = min(max_items, 16 * MIN_LIMIT)  # adapted by the writer (see adapt)
        self._bytes = 0
        self._bytes_lock = threading.Lock()
        self._space = threading.Condition(threading.Lock())

    # -- producers -----------------------------------------------------------------------------
    def put(self, item: Any) -> None:
        """Queue a small item (no payload accounting).  Lock-free unless the backlog is huge."""
        items = self.items
        items.append(item)
        if len(items) >= self.limit:
            self._backpressure()

    def put_payload(self, item: Any, nbytes: int) -> None:
        """Queue an item that holds ``nbytes`` of array data; the writer releases them later."""
        with self._bytes_lock:
            self._bytes += nbytes
            over = self._bytes >= self.max_bytes
        self.items.append(item)
        # Payload work (a reduction to finish, an image to encode) is worth starting at once: the
        # writer overlaps it with the caller and returns the snapshot buffers sooner.
        self.wake.set()
        if over or len(self.items) >= self.limit:
            self._backpressure()

    def put_urgent(self, item: Any) -> None:
        """Queue a barrier (flush/close) and wake the writer at once."""
        self.items.append(item)
        self.wake.set()

    def _backpressure(self) -> None:
        self.wake.set()
        # Hysteresis: once blocked, wait until the writer has drained half the limit, so producer
        # and writer hand the GIL over in large chunks, not every few items.
        resume = self.limit // 2
        with self._space:
            while len(self.items) >= resume or self._bytes >= self.max_bytes:
                self.wake.set()
                self._space.wait(0.01)

    # -- consumer ------------------------------------------------------------------------------
    def release_bytes(self, nbytes: int) -> None:
        with self._bytes_lock:
            self._bytes -= nbytes

    def adapt(self, done: int, seconds: float) -> None:
        """Writer thread: ``done`` items took ``seconds``; size the queue to ~``LAG_S`` of that."""
        if seconds > 0:
            self.limit = int(min(self.max_items, max(MIN_LIMIT, done / seconds * LAG_S)))

    def notify_space(self) -> None:
        with self._space:
            self._space.notify_all()
