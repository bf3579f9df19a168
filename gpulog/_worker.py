"""The background writer: dequeue → wait for device data → encode → frame → write (torch-free).

One daemon thread per process serves every event file (main run, ``add_scalars`` sub-runs,
hparams runs), so a writer with many sub-runs still costs one thread.  It is started lazily by the
first item, never at import.  It receives ``_item.Item``s (a plain scalar in its compact tuple
form), ``Barrier``s and ``STOP``, and dispatches on their class.

Guarantees
----------
* Order: items of one process are encoded and written in the order they were queued.
* ``flush()`` is a barrier: its marker is queued behind everything logged before it, and the
  writer writes those records to the OS before it sets the marker's event.
* Visibility: whenever the queue runs empty the writer writes what it encoded, so at low rates
  data reaches the file within the hand-off's poll interval; under sustained load a file is written
  every ``max_queue`` events or ``flush_secs`` seconds, whichever comes first.
* Exit: an ``atexit`` hook drains the queue, so a script that never calls ``close()`` loses nothing.
* Errors: an I/O error is stored on the event file's sink and raised (an ``OSError``, chained) on
  the caller's next call, after that call's own value was queued; the records are kept, as a list
  of framed records (never re-joined into one growing buffer), and written again once per poll
  interval (``RETRY_S``) or at a ``flush()``/``close()``.  A summary that fails to *encode* on this
  thread is skipped with a warning naming its method, tag and step; it never fails a later call.
* Forked children: a child's engine registers a ``multiprocessing`` finalizer, so children that
  end through ``multiprocessing`` (``os._exit()`` after the target returns: ``Process``, DataLoader
  workers) drain too.  A child that calls ``os._exit()`` itself must ``close()`` or ``flush()`` first.
* SIGTERM (preemption by SLURM, Kubernetes) and Ctrl-C at exit: see ``_lifecycle``.
* kill -9: the hand-off holds at most ~``MAX_LAG_S`` / 2 of the writer's work (its limit follows
  the writer's measured throughput) and encoded records reach the OS at least every
  ``MAX_LAG_S``, so a killed process loses at most the values of its last ~0.1 s.
* Fork: the child gets a fresh engine (new queue, new thread on first use); sinks created by the
  parent are detached in the child, so it never writes into the parent's file.
"""
from __future__ import annotations

import collections
import itertools
import os
import sys
import threading
import time
import weakref
from typing import Any, List, Optional

from . import _lifecycle
from ._encode.scalar import scalar_event
from ._handoff import Handoff
from ._item import EVENTS, FILES, STOP, Barrier, Item
from ._proto.messages import event_with_summary, summary
from ._record import frame

RETRY_S = 0.2          # after a failed write, the next attempt waits this long (or a flush/close)
MAX_LAG_S = 0.1        # under sustained load, records reach the OS at least this often
WRITE_CHUNK = 1 << 20  # bytes joined per os.write: a backlog is never copied whole


class Sink:
    """One event file and the framed records waiting to be written to it.

    The file is created at construction (on the caller's thread, so an unusable directory fails
    at the call); its descriptor is opened by the writer thread when it writes, and kept in a
    process-wide LRU of at most ``MAX_OPEN_FILES`` descriptors, so thousands of sub-runs or
    writers never close to the ``ulimit -n``.  A file deleted under the writer (the log dir
    removed mid-run) is detected before the next write, recreated and reported.
    """

    def __init__(self, path: str, max_queue: int, flush_secs: float) -> None:
        self.path = path
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644))
        self.fd: Optional[int] = None
        self.header: bytes = b""       # the file's first record, rewritten into a recreated file
        self.max_queue = max(1, int(max_queue))
        self.flush_secs = float(flush_secs)
        self.pending: List[bytes] = []
        self.error: Optional[BaseException] = None  # set by gpulog's threads, taken by callers
        self._error_lock = threading.Lock()
        self.last_error: Optional[BaseException] = None  # kept for the exit report
        self.failures = 0              # failed write attempts since the last success
        self.retry_at = 0.0
        self.last_write = time.monotonic()
        self.pid = os.getpid()
        self.closed = False
        self.sentinel: Any = None      # _nonfinite.Sentinel of the writer, if on_nonfinite is set
        # Scalar items name their sink by this number, not the object: a tuple of numbers and a
        # str is untracked by the cyclic GC after its first collection, so a queue of them costs
        # the older generations nothing (with the object in it, the GC took ~40% of a call).
        self.key = next(_sink_keys)
        SINKS[self.key] = self

    def _open_fd(self) -> int:
        """Writer thread: this file's descriptor, (re)opened through the LRU."""
        fd = self.fd
        if fd is not None:
            _open_files[id(self)] = self  # most recently used
            _open_files.move_to_end(id(self))
            try:
                if os.fstat(fd).st_nlink > 0:
                    return fd
            except OSError:
                pass
            self._release_fd()
            self._recreate()
        while len(_open_files) >= MAX_OPEN_FILES:
            _open_files.popitem(last=False)[1]._release_fd()
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            self._recreate()
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self.fd = fd
        _open_files[id(self)] = self
        return fd

    def _recreate(self) -> None:
        import warnings
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if self.header:
                os.write(fd, self.header)
        finally:
            os.close(fd)
        warnings.warn(f"gpulog: the event file {self.path} was removed while in use (log dir "
                      "deleted?); gpulog recreated it: events written before are gone with the old "
                      "file, later ones are in the new one", RuntimeWarning, stacklevel=2)

    def _release_fd(self) -> None:
        _open_files.pop(id(self), None)
        fd, self.fd = self.fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass

    def write_pending(self, force: bool = False) -> None:
        """Write the pending records in chunks of at most ``WRITE_CHUNK`` bytes.  After a failure,
        attempts before ``retry_at`` return at once (unless ``force``: a flush or close), so a full
        disk costs the writer one failed call per ``RETRY_S``, not one per record."""
        if not self.pending:
            return
        if self.failures and not force and time.monotonic() < self.retry_at:
            return
        pending = self.pending
        i = j = 0
        data: Any = b""
        view = memoryview(b"")
        try:
            fd = self._open_fd()
            while i < len(pending):
                j, size = i, 0
                while j < len(pending) and (size == 0 or size + len(pending[j]) <= WRITE_CHUNK):
                    size += len(pending[j])
                    j += 1
                data = pending[i] if j == i + 1 else b"".join(pending[i:j])
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                i = j
        except OSError as err:
            # Keep what was not written; a record cut by a partial write keeps its unwritten tail
            # first, so the file stays a sequence of whole records once it is retried.
            written = len(data) - len(view) if j > i else 0
            rest = pending[j:] if j > i else pending[i:]
            if written:
                rest.insert(0, bytes(data[written:]))
            elif j > i:
                rest[0:0] = pending[i:j]
            self.pending = rest
            self.set_error(err)
            self.failures += 1
            self.retry_at = time.monotonic() + RETRY_S
            return
        self.pending = []
        if self.failures:
            self.failures = 0
            self.take_error()  # everything reached the file after all: nothing to report
        self.last_write = time.monotonic()

    def set_error(self, err: BaseException) -> None:
        """gpulog's threads: a write (or upload) failed; the next call on the caller's side raises it."""
        with self._error_lock:
            self.error = self.last_error = err

    def take_error(self) -> Optional[BaseException]:
        """The error to report, once (the caller raises it); None if there is none."""
        if self.error is None:
            return None
        with self._error_lock:
            err, self.error = self.error, None
        return err

    def flush_now(self) -> None:
        """A flush barrier: write everything now (retrying a failed write at once)."""
        self.write_pending(force=True)

    def busy(self) -> bool:
        """Holds data not yet durable where it belongs."""
        return bool(self.pending)

    def close(self) -> None:
        """Writer thread, at this sink's close barrier (every item naming it came before)."""
        self.write_pending(force=True)
        if not self.pending:
            self._release_fd()
            self.closed = True


# key -> sink, for the scalar items' first field.  Weak: a sink lives while its FileWriter or a
# queued barrier holds it, which every item naming it precedes; a value logged by another thread
# racing close() may find it gone (dropped with a warning, see _lost).
SINKS: "weakref.WeakValueDictionary[int, Sink]" = weakref.WeakValueDictionary()
_sink_keys = itertools.count(1)
MAX_OPEN_FILES = 128
_open_files: "collections.OrderedDict[int, Sink]" = collections.OrderedDict()  # writer thread only


class Engine:
    """Owns the hand-off and the writer thread of this process."""

    def __init__(self) -> None:
        self.handoff = Handoff()
        self.pid = os.getpid()
        self._thread: Optional[threading.Thread] = None
        self._start_lock = threading.Lock()
        self._dirty: "dict[int, Sink]" = {}
        self._parked: "dict[int, collections.deque]" = {}  # writer thread only: see _drain

    # -- caller side ---------------------------------------------------------------------------
    def ensure_started(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    t = threading.Thread(target=self._run, name="gpulog-writer", daemon=True)
                    t.start()
                    self._thread = t
                    _lifecycle.install_sigterm_handler(drain_at_exit, flush_all, block_new_items)

    def barrier(self, sink: Optional[Sink], close: bool = False, timeout: Optional[float] = None) -> bool:
        """Queue a flush/close marker and wait until the writer has passed it (at once, False,
        once the writer was stopped at exit)."""
        self.ensure_started()
        t = self._thread
        if t is not None and not t.is_alive():
            return False
        scalars = sys.modules.get("gpulog._reduce.scalar")  # loaded only once a tensor was logged
        if scalars is not None:
            scalars.seal_all()  # device scalars logged so far reach the writer (no wait here)
        done = threading.Event()
        self.handoff.put_urgent(Barrier(sink, close, done))
        return done.wait(timeout)

    # -- writer thread -------------------------------------------------------------------------
    def _run(self) -> None:
        h = self.handoff
        items = h.items
        delay = 50e-6
        while True:
            if items:
                try:
                    self._drain(items)
                except _Stop:
                    return
                continue
            if self._parked:
                # Items waiting for the device (or for their caller to seal a batch): poll them
                # with back-off (50 us doubling to 2 ms) while writing what is encoded.
                self._unpark(block=False)
                if self._parked:
                    self._write_dirty()
                    h.notify_space()
                    h.wake.wait(delay)
                    h.wake.clear()
                    delay = min(delay * 2, 0.002)
                    continue
            delay = 50e-6
            # Queue idle: make everything encoded so far visible to readers.
            self._write_dirty()
            h.notify_space()
            h.wake.wait(h.poll_s)
            h.wake.clear()

    def _drain(self, items: Any) -> None:
        """Handle everything queued, in order per event file.  An item whose staged result is
        not ready (device work still running, a CUDA scalar batch its caller has not sealed) is
        *parked*, with every later item of the same file behind it, instead of making the one
        writer thread wait: the other files go on (see :meth:`_unpark`)."""
        popleft = items.popleft
        dirty = self._dirty
        parked = self._parked
        frame_batch = _native_framer()
        drain = _native_drainer() if frame_batch is not None else None
        released = 0
        checked = started = time.monotonic()
        n = checked_n = 0
        while items:
            item = popleft()
            cls = item.__class__
            if cls is tuple and frame_batch is not None and not parked and \
                    (item[3] is None or item[3].__class__ is int):
                # The run of scalars for this one file with host steps that starts here, framed by
                # one C call (byte for byte the Python encoder's records, tests/test_wire.py), at
                # most BATCH at a time, which bounds this thread's hold on the GIL (median ~40 us, 99.9th
                # percentile ~150 us: benchmarks/bench_gil.py --only drain).  Only this thread pops,
                # so peeking at items[0] is safe while producers append at the other end.
                key = item[0]
                sink = SINKS.get(key)
                if sink is None:
                    _lost(item)
                    continue
                if sink.sentinel is None and drain is not None:
                    # popped and framed in C into one bytes of whole records
                    blob, count = drain(item, items, popleft, key, BATCH)
                    sink.pending.append(blob)
                    dirty[id(sink)] = sink
                    if count >= sink.max_queue or len(sink.pending) >= min(sink.max_queue, WRITE_BLOBS):
                        sink.write_pending()
                    n += count
                else:
                    batch = [item]
                    while items and len(batch) < BATCH:
                        nxt = items[0]
                        if nxt.__class__ is not tuple or nxt[0] != key or \
                                not (nxt[3] is None or nxt[3].__class__ is int):
                            break
                        batch.append(popleft())
                    if sink.sentinel is not None:
                        sink.sentinel.scalars(sink, batch)
                    sink.pending.extend(frame_batch(batch, 0, len(batch)))
                    dirty[id(sink)] = sink
                    if len(sink.pending) >= sink.max_queue:
                        sink.write_pending()
                    n += len(batch)
                if n - checked_n >= 1024:
                    checked_n = n
                    now = time.monotonic()
                    self.handoff.adapt(n, now - started)
                    if now - checked > 0.02:
                        checked = now
                        self._write_due(now)
                    self.handoff.notify_space()
                continue
            if parked:
                sink = SINKS.get(item[0]) if cls is tuple else item.sink
                if sink is None:  # a barrier for every file, or the end: what is parked first
                    self._unpark(block=True)
                elif id(sink) in parked:
                    parked[id(sink)].append(item)
                    continue
            if cls is tuple:  # a plain scalar: the hot path, inline (Python framing)
                key, tag, value, step, wall = item
                sink = SINKS.get(key)
                if sink is None:
                    _lost(item)
                    continue
                if step is not None and step.__class__ is not int:
                    if not step.ready():
                        parked[id(sink)] = collections.deque((item,))
                        continue
                    step = step.value()  # a CUDA step, staged at the call
                if sink.sentinel is not None:
                    sink.sentinel.scalars(sink, ((sink, tag, value, step, wall),))
                sink.pending.append(frame(scalar_event(tag, value, step, wall)))
                dirty[id(sink)] = sink
                if len(sink.pending) >= sink.max_queue:
                    sink.write_pending()
            elif cls is Item and not item.ready():
                parked[id(item.sink)] = collections.deque((item,))
                continue
            else:
                released += self._handle(item)
            n += 1
            if n & 1023 == 0:
                now = time.monotonic()
                self.handoff.adapt(n, now - started)
                if now - checked > 0.02:
                    checked = now
                    self._write_due(now)
                    if released:
                        self.handoff.release_bytes(released)
                        released = 0
                self.handoff.notify_space()
        if released:
            self.handoff.release_bytes(released)
        if n:  # a slow writer may never reach the check above: size the queue from this drain
            self.handoff.adapt(n, time.monotonic() - started)

    def _unpark(self, block: bool) -> None:
        """Handle parked items whose results are ready, in order per file; ``block``: all of
        them, waiting as long as needed (a barrier for every file, the end)."""
        released = 0
        for key in list(self._parked):
            queue = self._parked[key]
            while queue and (block or _ready(queue[0])):
                released += self._handle(queue.popleft())
            if not queue:
                del self._parked[key]
        if released:
            self.handoff.release_bytes(released)

    def _handle(self, item: Any) -> int:
        """Encode and frame one item (waiting for its staged result if needed); returns the
        payload bytes it releases."""
        cls = item.__class__
        if cls is tuple:
            key, tag, value, step, wall = item
            sink = SINKS.get(key)
            if sink is None:
                _lost(item)
                return 0
            if step is not None and step.__class__ is not int:
                step = step.value()
            if sink.sentinel is not None:
                sink.sentinel.scalars(sink, ((sink, tag, value, step, wall),))
            sink.pending.append(frame(scalar_event(tag, value, step, wall)))
        elif cls is Item:
            sink = item.sink
            try:
                step = item.step
                if step is not None and step.__class__ is not int:
                    step = step.value()
                staged = item.staged
                arrays = staged.result() if staged is not None else ()
                if sink.sentinel is not None and item.kind in _CHECKED:
                    _check_nonfinite(sink, item, step, arrays)
                out = item.encode(*item.meta, *arrays)
                if item.out is FILES:
                    return item.nbytes
                if item.out is EVENTS:
                    sink.pending.extend(frame(data) for data in out)
                else:
                    sink.pending.append(frame(event_with_summary(item.wall, step, summary(out))))
            except _Stop:
                raise
            except OSError as err:
                if item.out is not FILES:
                    _warn_skipped(item, err)
                    return item.nbytes
                sink.set_error(err)  # side files (embeddings): a write error, reported as an
                return item.nbytes   # OSError on the caller's next call
            except Exception as err:  # noqa: BLE001 - encode failure: skip this item, say which
                _warn_skipped(item, err)
                return item.nbytes
        else:
            self._barrier_item(item)
            return 0
        self._dirty[id(sink)] = sink
        if len(sink.pending) >= sink.max_queue:
            sink.write_pending()
        return item.nbytes if cls is Item else 0

    def _write_due(self, now: float) -> None:
        for sink in list(self._dirty.values()):
            if now - sink.last_write >= min(sink.flush_secs, MAX_LAG_S):
                sink.write_pending()

    def _write_dirty(self, force: bool = False) -> None:
        dirty = self._dirty
        for key in list(dirty):
            sink = dirty[key]
            if force:
                sink.flush_now()
            else:
                sink.write_pending()
            if not sink.busy():
                del dirty[key]

    def stop(self, timeout: float = 10.0) -> None:
        """Write what is queued, then end the writer thread and join it (at exit: a daemon thread
        still running while the interpreter finalizes can free objects too late and abort it)."""
        t = self._thread
        if t is None or not t.is_alive():
            return
        self.handoff.put_urgent(STOP)
        t.join(timeout)

    def _barrier_item(self, item: Any) -> None:
        if item is STOP:
            self._write_dirty(force=True)
            raise _Stop
        sink, done = item.sink, item.done
        try:
            if sink is None:
                self._write_dirty(force=True)
            elif not item.close:
                sink.flush_now()
            else:
                sink.close()
                if sink.closed:
                    self._dirty.pop(id(sink), None)
        finally:
            done.set()


BATCH = 512  # scalar items framed per native call: bounds the writer's hold on the GIL
WRITE_BLOBS = 4  # framed runs written together at most: their join holds the GIL too
_CHECKED = ("scalar", "histogram")  # kinds whose values on_nonfinite checks


def _check_nonfinite(sink: Sink, item: Item, step: Any, arrays: Any) -> None:
    """``on_nonfinite`` for a scalar or histogram item: its staged arrays and float arguments
    (a scalar's value, a histogram's min/max/sums) hold a NaN or ±inf?"""
    tag = item.tag
    if tag in sink.sentinel.seen:
        return
    import math

    import numpy as np
    for a in (*arrays, *item.meta):
        if isinstance(a, float):
            bad = None if math.isfinite(a) else a
        elif isinstance(a, np.ndarray) and a.dtype.kind == "f" and a.size:
            flat = a.reshape(-1)
            where = np.flatnonzero(~np.isfinite(flat))
            bad = float(flat[where[0]]) if where.size else None
        else:
            continue
        if bad is not None:
            sink.sentinel.report(sink, tag, step, item.wall, bad)
            return


def _native_fn(name: str) -> Any:
    """``gpulog._native.<name>`` where the extension is built, else None (the Python path)."""
    try:
        from . import _native  # type: ignore[attr-defined]
    except ImportError:
        return None
    return getattr(_native, name, None)


def _native_drainer() -> Any:
    """``drain_scalars``: pops and frames a run of one file's scalars in C."""
    return _native_fn("drain_scalars")


def _native_framer() -> Any:
    """``frame_scalars``: frames a list of scalar items in C (the path with on_nonfinite)."""
    return _native_fn("frame_scalars")


def _ready(item: Any) -> bool:
    """Can ``item`` be encoded without waiting (its staged result and CUDA step are on the host)?"""
    cls = item.__class__
    if cls is Item:
        return item.ready()
    if cls is tuple:
        step = item[3]
        return step is None or step.__class__ is int or step.ready()
    return True


def _lost(item: Any) -> None:
    """A scalar whose event file was closed and dropped before it arrived (another thread called
    ``close()`` while this one logged)."""
    import warnings
    try:
        warnings.warn(f"gpulog: add_scalar({item[1]!r}, step={item[3]}) arrived after its event file "
                      "was closed by another thread and was dropped", RuntimeWarning, stacklevel=2)
    except Exception:  # noqa: BLE001 - a warnings filter set to "error" must not end this thread
        pass


def _warn_skipped(item: Item, err: BaseException) -> None:
    """An item that failed on this thread: a warning naming what was skipped (the caller's call
    returned long ago; raising it on a later, unrelated call would cost that call its value)."""
    import warnings
    what = item.describe()
    try:
        warnings.warn(f"gpulog: {what} could not be written and was skipped: {type(err).__name__}: "
                      f"{err}", RuntimeWarning, stacklevel=2)
    except Exception:  # noqa: BLE001 - a warnings filter set to "error" must not end this thread
        sys.stderr.write(f"gpulog: {what} could not be written and was skipped: {err!r}\n")


class _Stop(BaseException):
    """Ends the writer thread's loop (``Engine.stop``)."""


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
                _register_child_finalizer()
            e = _engine
    return e


_first_pid = os.getpid()


def _register_child_finalizer() -> None:
    """In a process started by ``multiprocessing`` (fork, spawn or forkserver), drain at its
    end: such children leave through ``os._exit()``, which skips ``atexit``, but run the
    finalizers of ``multiprocessing.util`` first.  Registered when the child's engine is made,
    after ``multiprocessing`` has cleared the finalizers inherited from the parent."""
    mp = sys.modules.get("multiprocessing")
    if mp is None or (mp.current_process().name == "MainProcess" and os.getpid() == _first_pid):
        return
    from multiprocessing import util
    util.Finalize(None, drain_at_exit, exitpriority=100)


def register_owner(owner: Any) -> None:
    """Track an object with a ``_detach_after_fork()`` method (FileWriter) for the fork hook."""
    _live_sinks.add(owner)


def drain_at_exit() -> None:
    """Write everything queued, stop and join the writer thread, and report on stderr whatever
    could not be written (a full disk at exit must not pass silently).  Ctrl-C cannot cut it
    short (``_lifecycle.sigint_deferred``)."""
    from ._lifecycle import sigint_deferred
    e = _engine
    if e is None or e._thread is None or not e._thread.is_alive() or e.pid != os.getpid():
        return
    with sigint_deferred(f"writing {len(e.handoff.items)} queued items"):
        while True:
            try:
                e.barrier(None, timeout=60.0)
                e.stop()
                break
            except KeyboardInterrupt:  # arrived before the deferral took effect: keep draining
                continue
        remote = sys.modules.get("gpulog._remote")  # loaded only for a remote log dir
        if remote is not None:
            remote.report_at_exit()
        lost = [sink for sink in list(e._dirty.values()) if sink.busy()]
        for sink in lost:
            nbytes = sum(len(p) for p in sink.pending)
            where = getattr(sink, "url", sink.path)
            sys.stderr.write(f"gpulog: {len(sink.pending)} pending record chunk(s), {nbytes} bytes, were not "
                             f"written to {where} at exit: {sink.last_error} ({sink.failures} failed "
                             "attempts)\n")


def flush_all(timeout: float = 60.0) -> None:
    """Write everything queued so far to every event file (the writer keeps running)."""
    e = _engine
    if e is not None and e._thread is not None and e._thread.is_alive() and e.pid == os.getpid():
        e.barrier(None, timeout=timeout)


def block_new_items(wait: Any) -> None:
    """From now on every ``add_*`` waits on ``wait()`` instead of queuing (SIGTERM: the process
    ends once the drain is done, so a call that returned is a call that was written).  Instance
    attributes shadow the hand-off's methods: an assignment takes no lock."""
    e = _engine
    if e is not None:
        def blocked(*args: Any) -> None:
            wait()
            while True:  # the process is ending: this call must never return unwritten
                time.sleep(3600)
        e.handoff.put = e.handoff.put_payload = blocked  # type: ignore[method-assign,assignment]


def _after_fork_in_child() -> None:
    global _engine, _engine_lock  # an inherited SIGTERM handler drains the child's own engine
    for sink in list(_open_files.values()):
        sink._release_fd()
    _engine = None
    _engine_lock = threading.Lock()
    for owner in list(_live_sinks):
        owner._detach_after_fork()


_lifecycle.at_exit("writer", drain_at_exit)
_lifecycle.in_forked_child(_after_fork_in_child)
