"""The background writer: dequeue → wait for device data → encode → frame → write (torch-free).

One daemon thread per process serves every event file (main run, ``add_scalars`` sub-runs,
hparams runs), so a writer with many sub-runs still costs one thread.  It is started lazily by the
first item, never at import.  Items are tuples whose first element is an opcode (cheap to build in
the caller, cheap to dispatch here).

Guarantees
----------
* Order: items of one process are encoded and written in the order they were queued.
* ``flush()`` is a barrier: its marker is queued behind everything logged before it, and the
  writer writes those records to the OS before it sets the marker's event.
* Visibility: whenever the queue runs empty the writer writes what it encoded, so at low rates
  data reaches the file within the hand-off's poll interval; under sustained load a file is written
  every ``max_queue`` events or ``flush_secs`` seconds, whichever comes first.
* Exit: an ``atexit`` hook drains the queue, so a script that never calls ``close()`` loses nothing.
* Errors: an I/O error is stored on the event file's sink and raised (chained) on the caller's
  next call; the records are kept and written again on the next attempt.
* Fork: the child gets a fresh engine (new queue, new thread on first use); sinks created by the
  parent are detached in the child, so it never writes into the parent's file.
"""
from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from typing import Any, List, Optional

from ._encode.scalar import scalar_event
from ._handoff import Handoff
from ._proto.messages import event_with_summary, summary
from ._record import frame

OP_SCALAR, OP_SUMMARY, OP_EVENT, OP_FLUSH, OP_CLOSE, OP_CALL, OP_MULTI = range(7)


class Sink:
    """One open event file and the framed records waiting to be written to it."""

    def __init__(self, path: str, max_queue: int, flush_secs: float) -> None:
        self.path = path
        self.fd: Optional[int] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self.max_queue = max(1, int(max_queue))
        self.flush_secs = float(flush_secs)
        self.pending: List[bytes] = []
        self.error: Optional[BaseException] = None
        self.last_write = time.monotonic()
        self.pid = os.getpid()

    def write_pending(self) -> None:
        if not self.pending or self.fd is None:
            return
        data = b"".join(self.pending)
        try:
            view = memoryview(data)
            while view:
                n = os.write(self.fd, view)
                view = view[n:]
        except OSError as err:
            # Keep what was not written (records are appended whole or retried whole).
            written = len(data) - len(view)
            self.pending = [data[written:]] if written else self.pending
            self.error = err
            return
        self.pending = []
        self.last_write = time.monotonic()

    def close(self) -> None:
        self.write_pending()
        if self.fd is not None and not self.pending:
            os.close(self.fd)
            self.fd = None


class Engine:
    """Owns the hand-off and the writer thread of this process."""

    def __init__(self) -> None:
        self.handoff = Handoff()
        self.pid = os.getpid()
        self._thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self._dirty: "dict[int, Sink]" = {}

    # -- caller side ---------------------------------------------------------------------------
    def ensure_started(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    t = threading.Thread(target=self._run, name="gpulog-writer", daemon=True)
                    t.start()
                    self._thread = t

    def barrier(self, op: int, sink: Optional[Sink], timeout: Optional[float] = None) -> bool:
        """Queue a flush/close marker and wait until the writer has passed it."""
        self.ensure_started()
        done = threading.Event()
        self.handoff.put_urgent((op, sink, done))
        return done.wait(timeout)

    # -- writer thread -------------------------------------------------------------------------
    def _run(self) -> None:
        h = self.handoff
        items = h.items
        while True:
            if items:
                self._drain(items)
                continue
            # Queue idle: make everything encoded so far visible to readers.
            self._write_dirty()
            h.notify_space()
            h.wake.wait(h.poll_s)
            h.wake.clear()

    def _drain(self, items: Any) -> None:
        popleft = items.popleft
        dirty = self._dirty
        released = 0
        checked = time.monotonic()
        n = 0
        while items:
            item = popleft()
            op = item[0]
            try:
                if op == OP_SCALAR:
                    _, sink, tag, value, step, wall = item
                    sink.pending.append(frame(scalar_event(tag, value, step, wall)))
                elif op == OP_SUMMARY:
                    _, sink, encode, args, step, wall, nbytes, staged = item
                    released += nbytes
                    arrays = staged.result() if staged is not None else ()
                    values = encode(*args, *arrays)
                    sink.pending.append(frame(event_with_summary(wall, step, summary(values))))
                elif op == OP_EVENT:
                    _, sink, data = item
                    sink.pending.append(frame(data))
                elif op == OP_MULTI:  # several events, possibly to several files
                    _, sink, fn, args, staged = item
                    for target, data in fn(*args, *staged.result()):
                        target.pending.append(frame(data))
                        dirty[id(target)] = target
                elif op == OP_CALL:
                    _, sink, fn, args, nbytes = item
                    released += nbytes
                    fn(*args)
                    continue
                else:
                    self._barrier_item(item)
                    continue
            except Exception as err:  # encode failure: report on the caller's next call
                sink = item[1]
                if isinstance(sink, Sink):
                    sink.error = err
                continue
            dirty[id(sink)] = sink
            if len(sink.pending) >= sink.max_queue:
                sink.write_pending()
            n += 1
            if n & 1023 == 0:
                now = time.monotonic()
                if now - checked > 0.05:
                    checked = now
                    self._write_due(now)
                    if released:
                        self.handoff.release_bytes(released)
                        released = 0
                    self.handoff.notify_space()
        if released:
            self.handoff.release_bytes(released)

    def _write_due(self, now: float) -> None:
        for sink in list(self._dirty.values()):
            if now - sink.last_write >= sink.flush_secs:
                sink.write_pending()

    def _write_dirty(self) -> None:
        dirty = self._dirty
        for key in list(dirty):
            sink = dirty[key]
            sink.write_pending()
            if not sink.pending:
                del dirty[key]

    def _barrier_item(self, item: Any) -> None:
        op, sink, done = item
        try:
            if sink is None:
                self._write_dirty()
            elif op == OP_FLUSH:
                sink.write_pending()
            else:
                sink.close()
                if sink.fd is None:
                    self._dirty.pop(id(sink), None)
        finally:
            done.set()


_engine: Optional[Engine] = None
_engine_lock = threading.Lock()
_live_sinks: "weakref.WeakSet[Any]" = weakref.WeakSet()


def engine() -> Engine:
    global _engine
    e = _engine
    if e is None:
        with _engine_lock:
            if _engine is None:
                _engine = Engine()
            e = _engine
    return e


def register_owner(owner: Any) -> None:
    """Track an object with a ``_detach_after_fork()`` method (FileWriter) for the fork hook."""
    _live_sinks.add(owner)


def _drain_at_exit() -> None:
    e = _engine
    if e is not None and e._thread is not None and e.pid == os.getpid():
        e.barrier(OP_FLUSH, None, timeout=60.0)


def _after_fork_in_child() -> None:
    global _engine, _engine_lock
    _engine = None
    _engine_lock = threading.Lock()
    for owner in list(_live_sinks):
        owner._detach_after_fork()


atexit.register(_drain_at_exit)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)
