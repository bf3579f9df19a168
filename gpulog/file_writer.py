"""``FileWriter``: one event file fed by the background writer (torch's FileWriter API).

The caller's thread only stamps wall time and step and queues an ``_item.Item``; encoding, CRC and I/O run
on the writer thread (see ``_worker``).  ``add_event``/``add_summary`` also accept protobuf
``Event``/``Summary`` messages from tensorboard's generated code (PyTorch Lightning writes its
hparams this way); those are serialized here, since the caller may reuse the message.
"""
from __future__ import annotations

import os
import time
import weakref
from typing import Any, Callable, List, Optional, Sequence

from . import _inputs, _worker
from ._inputs import to_step, to_walltime
from ._item import EVENTS, FILES, Barrier, Item
from ._proto import messages as m
from ._record import event_file_name, frame
from .errors import WriterError


def _as_dir(log_dir: Any) -> str:
    """Create ``log_dir``; bad values are ``TypeError``/``ValueError``, an unusable directory an
    ``OSError`` with its errno (as torch's writer raises)."""
    import errno
    if not isinstance(log_dir, (str, os.PathLike)):
        raise TypeError(f"log_dir must be a str or os.PathLike, got {type(log_dir).__name__}")
    path = os.fspath(log_dir)
    if not isinstance(path, str):
        raise TypeError(f"log_dir must be a str path, got {type(path).__name__}")
    if "\0" in path:
        raise ValueError(f"log_dir {path!r} contains a NUL character")
    from . import _remote
    if _remote.is_remote(path):
        return _remote.prepare_dir(path.rstrip("/"))
    if os.path.exists(path) and not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "log_dir exists and is not a directory; pass a "
                                 "directory path", path)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as err:
        raise type(err)(err.errno, f"cannot create log_dir ({err.strerror or err}); choose a "
                        "writable directory", path) from err
    if not os.access(path, os.W_OK | os.X_OK):
        raise PermissionError(errno.EACCES, "log_dir is not writable; choose a writable directory", path)
    return str(log_dir)


class FileWriter:
    """Writes events to ``<log_dir>/events.out.tfevents.*``; thread-safe, never blocks on I/O."""

    def __init__(self, log_dir: Any, max_queue: int = 10, flush_secs: float = 120,
                 filename_suffix: str = "", *, flush_timeout: float = 60.0,
                 _purge_step: Optional[int] = None, _sentinel: Any = None) -> None:
        self._sentinel = _sentinel  # SummaryWriter(on_nonfinite=...): checked on the writer thread
        try:
            max_queue = _inputs.positive(max_queue, "max_queue", integer=True)
            flush_secs = _inputs.positive(flush_secs, "flush_secs")
            flush_timeout = _inputs.positive(flush_timeout, "flush_timeout")
        except TypeError as err:  # a wrong type for these counts is a bad value, as before
            raise ValueError(str(err)) from None
        self._flush_timeout = flush_timeout
        if not isinstance(filename_suffix, str):
            raise TypeError(f"filename_suffix must be a str, got {type(filename_suffix).__name__}")
        self._log_dir = _as_dir(log_dir)
        self._max_queue, self._flush_secs, self._suffix = max_queue, flush_secs, filename_suffix
        self._sink: Optional[_worker.Sink] = None
        self._reopen_on_use = False
        self._open(_purge_step)
        _worker.register_owner(self)

    def _open(self, purge_step: Optional[int] = None) -> None:
        path = os.path.join(os.fspath(self._log_dir), event_file_name(self._suffix))
        try:
            from . import _remote
            if _remote.is_remote(path):
                sink: _worker.Sink = _remote.RemoteSink(path, self._max_queue, self._flush_secs,
                                                        self._flush_timeout)
            else:
                sink = _worker.Sink(path, self._max_queue, self._flush_secs)
        except OSError as err:
            raise type(err)(err.errno, f"cannot create an event file ({err.strerror or err})", path) from err
        self._engine = _worker.engine()
        self._handoff = self._engine.handoff
        self._engine.ensure_started()
        # The header goes through the writer like any event (no encoding or I/O on the caller's
        # thread); it is queued before anything else for this sink, so it is the file's first
        # record.  Only the open() above runs here, so an unusable directory fails at once.
        now = time.time()
        header = [m.event(now, file_version=m.FILE_VERSION, source_writer=m.WRITER_NAME)]
        if purge_step is not None:
            header.append(m.event(now, purge_step, file_version=m.FILE_VERSION))
            header.append(m.event(now, purge_step, session_log_status=m.SESSION_START))
        sink.header = frame(header[0])
        sink.sentinel = self._sentinel
        self._handoff.put_urgent(Item("header", "FileWriter", None, None, now, sink, _as_events,
                                      (header,), out=EVENTS))
        self._sink = sink
        # A writer dropped without close() (sweeps, notebooks) closes its file when collected.
        self._finalizer = weakref.finalize(self, _close_dropped, self._handoff, sink)

    def _detach_after_fork(self) -> None:
        """In a forked child: forget the parent's file; the next call opens the child's own."""
        sink, self._sink = self._sink, None
        if sink is not None:
            self._finalizer.detach()
            sink._release_fd()
        self._reopen_on_use = True

    # -- properties ------------------------------------------------------------------------
    def get_logdir(self) -> str:
        return self._log_dir

    # -- submission (caller thread) --------------------------------------------------------
    def _live_sink(self) -> _worker.Sink:
        """The open sink (reopened in a forked child); raises nothing stored: see ``_report``."""
        sink = self._sink
        if sink is None:
            if not self._reopen_on_use:
                raise WriterError(None, "this FileWriter is closed; call reopen() first")
            self._reopen_on_use = False
            self._open()
            sink = self._sink
            assert sink is not None
        return sink

    @staticmethod
    def _report(sink: _worker.Sink) -> None:
        """Raise a write error the writer thread met — after the caller's own item was queued,
        so the call that surfaces it keeps its value."""
        err = sink.take_error()
        if err is not None:
            _raise_stored(err, getattr(sink, "url", sink.path))

    def _wait_uploaded(self, sink: _worker.Sink) -> None:
        """Remote log dirs: until what the barrier sealed is in the store (bounded, see _remote)."""
        wait = getattr(sink, "wait_uploaded", None)
        if wait is not None:
            try:
                wait(sink.last_sealed(), self._flush_timeout)  # type: ignore[attr-defined]
            except OSError as err:
                raise WriterError(getattr(err, "errno", None), str(err), getattr(sink, "url", "")) from err

    def submit_scalar(self, tag: str, value: float, step: Optional[int], wall: float) -> None:
        """A host float with a host step (or a ``DeviceStep``): the compact scalar item."""
        sink = self._sink
        if sink is None:
            sink = self._live_sink()
        self._handoff.put((sink.key, tag, value, step, wall))
        if sink.error is not None:
            self._report(sink)

    def submit(self, encode: Callable[..., List[bytes]], args: Sequence[Any], step: Optional[int],
               wall: float, nbytes: int = 0, staged: Any = None, *, method: Optional[str] = None,
               sink: Optional[_worker.Sink] = None) -> None:
        """Queue one summary: ``encode(*args, *staged.result())`` → list of Summary.Value bytes,
        written as one event.  ``encode`` lives in ``_encode/<kind>.py``, which names the kind;
        ``method`` defaults to the ``add_*`` that encoder serves (for warnings).  ``sink``: an
        event file resolved earlier (rank 0's aggregated items), else this writer's."""
        if sink is None:
            sink = self._live_sink()
        kind = encode.__module__.rpartition(".")[2]
        tag = next((a for a in args if isinstance(a, str)), None)
        item = Item(kind, method or _METHODS.get(encode.__name__, "add_" + kind), tag, step, wall,
                    sink, encode, args, staged, nbytes)
        if nbytes:
            self._handoff.put_payload(item, nbytes)
        else:
            self._handoff.put(item)
        self._report(sink)

    def submit_urgent(self, items: Sequence[Item]) -> None:
        """Queue items built elsewhere (rank 0's merged summaries, each with its sink) past the
        hand-off's limit: they are produced at sync points, which the exit drain also reaches."""
        for item in items:
            self._handoff.put_urgent(item)
        if items:
            self._report(items[0].sink)

    def submit_events(self, method: str, encode: Callable[..., Any], args: Sequence[Any],
                      wall: float) -> None:
        """Queue ``encode(*args)`` → list of serialized Events, written as they are (graphs)."""
        sink = self._live_sink()
        self._handoff.put(Item("events", method, None, None, wall, sink, encode, args, out=EVENTS))
        self._report(sink)

    def submit_files(self, method: str, fn: Callable[..., Any], args: Sequence[Any],
                     nbytes: int = 0) -> None:
        """Run ``fn(*args)`` on the writer thread, in order with the events (embedding files);
        an ``OSError`` it raises is reported on the caller's next call."""
        sink = self._live_sink()
        self._handoff.put_payload(Item("files", method, None, None, time.time(), sink, fn, args,
                                       nbytes=nbytes, out=FILES), nbytes)
        self._report(sink)

    # -- torch FileWriter API --------------------------------------------------------------
    def add_event(self, event: Any, step: Optional[int] = None, walltime: Optional[float] = None) -> None:
        """Queue a protobuf ``Event`` (any message with ``SerializeToString``)."""
        if not hasattr(event, "SerializeToString"):
            raise TypeError(f"add_event expects a protobuf Event message, got {type(event).__name__}")
        event.wall_time = to_walltime(walltime)
        step = to_step(step, device_ok=False)
        if step is not None:
            event.step = step
        sink = self._live_sink()
        self._handoff.put(Item("event", "add_event", None, step, event.wall_time, sink, _as_events,
                               ([event.SerializeToString()],), out=EVENTS))
        self._report(sink)

    def add_summary(self, summary: Any, global_step: Optional[int] = None,
                    walltime: Optional[float] = None) -> None:
        """Queue a protobuf ``Summary`` message as one event."""
        if not hasattr(summary, "SerializeToString"):
            raise TypeError(f"add_summary expects a protobuf Summary message, got {type(summary).__name__}")
        wall, step = to_walltime(walltime), to_step(global_step, device_ok=False)
        data = m.event(wall, step, summary=summary.SerializeToString())
        sink = self._live_sink()
        self._handoff.put(Item("event", "add_summary", None, step, wall, sink, _as_events, ([data],),
                               out=EVENTS))
        self._report(sink)

    def flush(self) -> None:
        """Barrier: returns when everything queued before it is written to the file."""
        sink = self._sink
        if sink is None:
            return
        self._engine.barrier(sink)
        self._report(sink)  # surface a write error now
        self._wait_uploaded(sink)

    def close(self) -> None:
        """Write everything queued and close the file; idempotent."""
        sink = self._sink
        if sink is None:
            return
        # Closed before waiting: a KeyboardInterrupt during the wait must not leave a writer
        # that accepts calls for a file the writer thread is closing.
        self._sink = None
        self._finalizer.detach()
        self._engine.barrier(sink, close=True)
        self._report(sink)
        self._wait_uploaded(sink)

    def close_async(self) -> None:
        """Close after everything queued is written, without waiting for it (sub-runs)."""
        sink = self._sink
        if sink is not None:
            self._sink = None
            self._finalizer.detach()
            self._handoff.put_urgent(Barrier(sink, True, _NullEvent()))

    def reopen(self) -> None:
        """Open a new event file in the same directory after ``close()``."""
        if self._sink is None:
            self._open()


def _close_dropped(handoff: Any, sink: _worker.Sink) -> None:
    handoff.put_urgent(Barrier(sink, True, _NullEvent()))


def _as_events(events: List[bytes]) -> List[bytes]:
    """Events serialized at the call (headers, ``add_event``/``add_summary``): written as they are."""
    return events


# encoder name -> the method users called, where it is not add_<kind> (for warnings)
_METHODS = {"histogram_raw": "add_histogram_raw", "pr_curve_raw": "add_pr_curve_raw",
            "histogram_raw_arrays": "add_histogram_raw", "pr_curve_raw_arrays": "add_pr_curve_raw",
            "from_array": "add_scalar", "new_style": "add_scalar", "images": "add_images"}


class _NullEvent:
    """Stands in for ``threading.Event`` where nobody waits on a barrier."""

    def set(self) -> None:
        pass


def _raise_stored(err: BaseException, path: str) -> None:
    """Re-raise a write error the writer thread met, on the caller's thread, chained to it.
    Errors that are not I/O errors (``on_nonfinite``'s ``FloatingPointError``, a callback's own)
    are raised as they are."""
    if not isinstance(err, OSError):
        raise err
    code = getattr(err, "errno", None)
    raise WriterError(code, f"gpulog's writer could not write ({getattr(err, 'strerror', None) or err}); "
                      "the records not written are kept and retried", path) from err
