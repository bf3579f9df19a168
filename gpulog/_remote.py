"""Remote log dirs (``s3://``, ``gs://``, ``hdfs://``, ``memory://``, any fsspec protocol).

Object stores have no append, so a remote event file is written as **segments**: immutable event
files ``<event file name>.<000000>``, ``.<000001>``, ... (TensorBoard reads a run's files in name
order), each a complete event file (it starts with the file-version record).

Who does what:

* The **writer thread** appends framed records to the current segment, a local file in the
  sink's *staging folder* (see :func:`staging_root`), exactly as it appends to a local event file,
  and *seals* it: at ``flush()``, ``close()``, exit and SIGTERM, after ``flush_secs`` or at
  ``SEGMENT_BYTES``.  It never talks to the store, so a slow or unreachable store never slows it
  (nor, through the hand-off's backpressure, the training loop).
* The **upload thread** (``gpulog-upload``, one per process, started by the first remote sink)
  uploads sealed segments in order.  While an upload is in flight the writer does not seal on its
  timer (the current segment keeps growing), and segments sealed meanwhile by flushes are merged
  into one upload, so a store slower than ``flush_secs`` gets fewer, larger uploads instead of a
  queue that grows without bound.  A failed upload is kept, retried with back-off (0.2 s doubling
  to 5 s), and reported like a write error (an ``OSError`` on the next call).
* ``flush()``/``close()`` return once everything logged before them is in the store, or raise an
  ``OSError`` after ``flush_timeout`` seconds naming what is not uploaded yet (it stays staged and
  keeps being retried).  At exit gpulog waits up to ``flush_timeout`` for the uploads, then names
  the segments left on stderr.

Segments that were not uploaded when the process ended (exit timeout, store outage, ``kill -9``)
stay in the staging folder with a ``manifest.json`` naming their destination; ``gpulog sync
<folder>`` uploads them later, in order.  A sink's folder is removed once all its segments are
uploaded.  Host side, torch-free; fsspec is imported only for such a log dir.
"""
from __future__ import annotations

import collections
import json
import os
import shutil
import socket
import threading
import time
from typing import Any, Deque, Dict, List, Optional, Tuple

from . import _lifecycle
from ._worker import Sink

SEGMENT_BYTES = 16 << 20
DEFAULT_FLUSH_TIMEOUT = 60.0
RETRY_MIN_S, RETRY_MAX_S = 0.2, 5.0
MANIFEST = "manifest.json"


def is_remote(path: str) -> bool:
    """``scheme://...`` with a scheme other than ``file`` (a Windows drive letter is not one)."""
    head, sep, _ = path.partition("://")
    return bool(sep) and len(head) > 1 and head.isidentifier() and head != "file"


def filesystem(url: str) -> Any:
    """The fsspec filesystem for ``url``; clear errors for a missing fsspec, an unknown scheme or
    a missing backend package (never a local folder named ``s3:``)."""
    scheme = url.partition("://")[0]
    try:
        import fsspec
    except ImportError as err:
        raise ImportError(f"log_dir {url!r} is remote: install fsspec and the package for "
                          f"'{scheme}://' (pip install 'gpulog[remote]' s3fs / gcsfs / ...)") from err
    try:
        cls = fsspec.get_filesystem_class(scheme)
    except ValueError as err:
        raise ValueError(f"log_dir {url!r}: unknown scheme '{scheme}://' ({err}); use a local path "
                         "or a protocol fsspec knows (s3, gs, hdfs, memory, ...)") from err
    except ImportError as err:
        raise ImportError(f"log_dir {url!r} needs the fsspec backend for '{scheme}://': {err}") from err
    return cls()


def prepare_dir(url: str) -> str:
    fs = filesystem(url)
    try:
        fs.makedirs(url, exist_ok=True)
    except OSError:
        raise  # already what callers expect
    except Exception as err:  # noqa: BLE001 - backends raise their own types for I/O failures
        raise OSError(f"cannot create log_dir {url!r}: {type(err).__name__}: {err}") from err
    return url


def staging_root() -> str:
    """Where segments wait for upload: ``$GPULOG_STAGING_DIR``, else
    ``$XDG_CACHE_HOME/gpulog/staging`` (``~/.cache/gpulog/staging``).  A persistent folder, not a
    temporary one, so that segments left by a crash are still there for ``gpulog sync``."""
    root = os.environ.get("GPULOG_STAGING_DIR")
    if not root:
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        root = os.path.join(cache, "gpulog", "staging")
    return root


_folder_numbers = iter(range(1 << 62))


class RemoteSink(Sink):
    """A :class:`Sink` whose records go to local segment files that the upload thread uploads."""

    def __init__(self, url: str, max_queue: int, flush_secs: float,
                 flush_timeout: float = DEFAULT_FLUSH_TIMEOUT) -> None:
        register_shutdown_hook()
        self.url = url
        self.fs = filesystem(url)
        self.flush_timeout = float(flush_timeout)
        root = staging_root()
        self.staging = os.path.join(root, f"{socket.gethostname()}-{os.getpid()}-{next(_folder_numbers)}-"
                                          f"{os.path.basename(url)[:80]}")
        os.makedirs(self.staging, exist_ok=True)
        with open(os.path.join(self.staging, MANIFEST), "w", encoding="utf-8") as f:
            json.dump({"url": url, "pid": os.getpid(), "host": socket.gethostname()}, f)
        self.seg = 0                     # number of the segment being written
        self.lock = threading.Lock()     # the writer thread and the upload thread
        self.changed = threading.Condition(self.lock)
        self.sealed: Deque[Tuple[int, str]] = collections.deque()  # (segment, local path), in order
        self.in_flight: Optional[Tuple[int, str]] = None
        self.uploaded_through = -1       # every segment <= this one is in the store
        self.upload_error: Optional[BaseException] = None
        self.upload_retry_at = 0.0
        self.upload_delay = RETRY_MIN_S
        super().__init__(self._local(0), max_queue, flush_secs)
        self.seg_bytes = 0
        self.seg_started = time.monotonic()
        UPLOADS.add(self)

    def _local(self, seg: int) -> str:
        return os.path.join(self.staging, f"{os.path.basename(self.url)}.{seg:06d}")

    def remote_name(self, seg: int) -> str:
        return f"{self.url}.{seg:06d}"

    # -- writer thread ---------------------------------------------------------------------------
    def write_pending(self, force: bool = False) -> None:
        before = sum(len(p) for p in self.pending)
        super().write_pending(force)
        self.seg_bytes += before - sum(len(p) for p in self.pending)  # what reached the segment
        if self.seg_bytes >= SEGMENT_BYTES or \
                (self.seg_bytes and time.monotonic() - self.seg_started >= self.flush_secs):
            self.seal(force=False)

    def flush_now(self) -> None:
        self.write_pending(force=True)
        if not self.pending:
            self.seal(force=True)

    def busy(self) -> bool:
        return bool(self.pending) or self.seg_bytes > 0

    def seal(self, force: bool) -> Optional[int]:
        """Hand the current segment to the upload thread and start the next one; returns the
        segment sealed (None if nothing was written to it).  Unless ``force`` (a flush or close),
        waits while an earlier segment is still being uploaded: the current one keeps growing."""
        with self.lock:
            if not self.seg_bytes:
                return None
            if not force and (self.sealed or self.in_flight is not None):
                return None
            self._release_fd()
            sealed = self.seg
            self.sealed.append((self.seg, self.path))
            self.seg += 1
            self.seg_bytes = 0
            self.seg_started = time.monotonic()
            self.path = self._local(self.seg)
            with open(self.path, "wb") as f:
                f.write(self.header)
            self.changed.notify_all()
        UPLOADS.wake()
        return sealed

    def close(self) -> None:
        self.write_pending(force=True)
        if self.pending:
            return
        self.seal(force=True)
        self._release_fd()
        self.closed = True
        with self.lock:
            if self.seg_bytes == 0 and os.path.exists(self.path):
                os.unlink(self.path)  # the empty next segment (header only) is never uploaded
            finished = not self.sealed and self.in_flight is None
        if finished:  # nothing left to upload (else the upload thread removes it when done)
            shutil.rmtree(self.staging, ignore_errors=True)
            UPLOADS.discard(self)
        UPLOADS.wake()

    # -- callers (flush/close) -------------------------------------------------------------------
    def last_sealed(self) -> int:
        with self.lock:
            return self.seg - 1

    def wait_uploaded(self, seg: int, timeout: float) -> None:
        """Until every segment up to ``seg`` is in the store; ``OSError`` after ``timeout`` s
        naming what is still staged (it stays there and keeps being retried)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while self.uploaded_through < seg:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise OSError(self._not_uploaded_message(timeout))
                self.changed.wait(min(left, 0.5))

    def pending_uploads(self) -> List[str]:
        with self.lock:
            waiting = ([self.in_flight] if self.in_flight else []) + list(self.sealed)
            return [path for _, path in waiting]

    def _not_uploaded_message(self, timeout: float) -> str:
        waiting = ([self.in_flight] if self.in_flight else []) + list(self.sealed)
        names = ", ".join(os.path.basename(p) for _, p in waiting[:4]) + (" ..." if len(waiting) > 4 else "")
        size = sum(os.path.getsize(p) for _, p in waiting if os.path.exists(p))
        why = f"; last error: {self.upload_error}" if self.upload_error else ""
        return (f"gpulog: {len(waiting)} segment(s) ({size} bytes: {names}) of {self.url} were not "
                f"uploaded within flush_timeout={timeout:g} s{why}. They are kept in {self.staging} "
                f"and retried in the background; after the process ends, upload them with: "
                f"gpulog sync {self.staging}")

    # -- upload thread ---------------------------------------------------------------------------
    def upload_next(self) -> bool:
        """Upload what is sealed, merged into one object; True if there was something to do."""
        with self.lock:
            if not self.sealed or time.monotonic() < self.upload_retry_at:
                return False
            batch = list(self.sealed)
            self.in_flight = batch[0]
        first = batch[0][0]
        try:
            if len(batch) == 1:
                self.fs.put_file(batch[0][1], self.remote_name(first))
            else:  # merged: whole event files one after the other are one event file
                data = b"".join(_read(path) for _, path in batch)
                self.fs.pipe_file(self.remote_name(first), data)
        except Exception as err:  # noqa: BLE001 - any backend failure: keep, retry, report
            if not isinstance(err, OSError):
                err = OSError(f"upload of {self.remote_name(first)} failed: {type(err).__name__}: {err}")
            self.set_error(err)
            with self.lock:
                self.in_flight = None
                self.upload_error = err
                self.failures += 1
                self.upload_retry_at = time.monotonic() + self.upload_delay
                self.upload_delay = min(self.upload_delay * 2, RETRY_MAX_S)
                self.changed.notify_all()
            return True
        for _, path in batch:
            try:
                os.unlink(path)
            except OSError:
                pass
        with self.lock:  # closed: no segment is sealed after these, so the folder is done with
            finished = self.closed and len(self.sealed) == len(batch)
        if finished:  # removed before the waiters are told: close() returning means it is gone
            shutil.rmtree(self.staging, ignore_errors=True)
            UPLOADS.discard(self)
        with self.lock:
            for _ in batch:
                self.sealed.popleft()
            self.in_flight = None
            self.uploaded_through = batch[-1][0]
            self.upload_error = None
            self.upload_delay = RETRY_MIN_S
            self.changed.notify_all()
        return True


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class _Uploader:
    """The process's upload thread: uploads every remote sink's sealed segments in order."""

    def __init__(self) -> None:
        self.sinks: "Dict[int, RemoteSink]" = {}
        self.lock = threading.Lock()
        self.event = threading.Event()
        self.thread: Optional[threading.Thread] = None
        self.pid = os.getpid()

    def add(self, sink: RemoteSink) -> None:
        with self.lock:
            if self.pid != os.getpid():  # a forked child: the parent's thread is not ours
                self.sinks, self.thread, self.pid = {}, None, os.getpid()
            self.sinks[id(sink)] = sink
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="gpulog-upload", daemon=True)
                self.thread.start()

    def discard(self, sink: RemoteSink) -> None:
        with self.lock:
            self.sinks.pop(id(sink), None)

    def wake(self) -> None:
        self.event.set()

    def _run(self) -> None:
        while True:
            self.event.wait(RETRY_MIN_S)
            self.event.clear()
            busy = True
            while busy:
                with self.lock:
                    sinks = list(self.sinks.values())
                busy = False
                for sink in sinks:
                    busy = sink.upload_next() or busy

    def drain(self, timeout: float) -> List[RemoteSink]:
        """At exit: wait up to ``timeout`` s for every sealed segment; the sinks still waiting."""
        deadline = time.monotonic() + timeout
        self.wake()
        while True:
            with self.lock:
                left = [s for s in self.sinks.values() if s.pending_uploads()]
            if not left or time.monotonic() >= deadline:
                return left
            time.sleep(0.02)


UPLOADS = _Uploader()
def _flush_before_thread_shutdown() -> None:
    """The "uploads" exit phase (``_lifecycle``): upload at interpreter exit *before*
    ``concurrent.futures`` shuts its executors down: the fsspec backends (aiobotocore's DNS
    lookups, say) cannot schedule work after that.  The writer keeps running for its own phase."""
    from . import _worker
    e = _worker._engine
    if e is not None and e._thread is not None and e._thread.is_alive() and e.pid == os.getpid():
        e.barrier(None, timeout=120.0)
    report_at_exit()


_shutdown_hook = False


def register_shutdown_hook() -> None:
    global _shutdown_hook
    if not _shutdown_hook:
        _lifecycle.at_exit("uploads", _flush_before_thread_shutdown)
        _shutdown_hook = True


_exit_deadline: Optional[float] = None


def report_at_exit(timeout: Optional[float] = None) -> None:
    """Wait for the uploads (up to the longest ``flush_timeout``), then name on stderr what is left
    and how to upload it later.  Called by the "uploads" exit phase and again by the writer's exit
    drain (for what it sealed last, and on SIGTERM); every call waits until one deadline, set by
    the first, so the process's exit waits at most one ``flush_timeout`` in all."""
    global _exit_deadline
    import sys
    with UPLOADS.lock:
        sinks = list(UPLOADS.sinks.values())
    if not sinks or UPLOADS.pid != os.getpid():
        return
    if timeout is None:
        timeout = max(s.flush_timeout for s in sinks)
    if _exit_deadline is None:
        _exit_deadline = time.monotonic() + timeout
    for sink in UPLOADS.drain(max(0.0, _exit_deadline - time.monotonic())):
        waiting = sink.pending_uploads()
        if getattr(sink, "_reported", False):
            continue
        sink._reported = True  # type: ignore[attr-defined]
        sys.stderr.write(f"gpulog: {len(waiting)} segment(s) of {sink.url} were not uploaded at exit "
                         f"({sink.upload_error or 'upload still in progress'}); they are kept in "
                         f"{sink.staging}: upload them later with: gpulog sync {sink.staging}\n")


# -- gpulog sync ---------------------------------------------------------------------------------
def sync_folders(path: str) -> List[str]:
    """The staging folders at ``path``: the folder itself if it holds a manifest, else its
    sub-folders that do."""
    if os.path.isfile(os.path.join(path, MANIFEST)):
        return [path]
    if not os.path.isdir(path):
        return []
    return sorted(os.path.join(path, d) for d in os.listdir(path)
                  if os.path.isfile(os.path.join(path, d, MANIFEST)))


def _alive(pid: int, host: str) -> bool:
    if host != socket.gethostname() or pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _only_header(path: str) -> bool:
    """A segment holding nothing but its first record (the file-version header)."""
    import struct
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return True
        first = 12 + struct.unpack("<Q", head)[0] + 4
        f.seek(0, os.SEEK_END)
        return f.tell() <= first


def sync(folder: str, force: bool = False) -> Tuple[int, List[str]]:
    """Upload the segments of one staging folder in order, removing each once uploaded, and the
    folder once empty.  Returns (segments uploaded, problems).  A folder whose process is still
    running on this host is skipped unless ``force``."""
    with open(os.path.join(folder, MANIFEST), encoding="utf-8") as f:
        manifest = json.load(f)
    if not force and _alive(int(manifest.get("pid", -1)), str(manifest.get("host", ""))):
        return 0, [f"{folder}: its process {manifest['pid']} is still running (it uploads them "
                   "itself); pass --force to upload anyway"]
    url = manifest["url"]
    base = os.path.basename(url)
    segments = sorted((int(name.rsplit(".", 1)[1]), name) for name in os.listdir(folder)
                      if name.startswith(base + ".") and name.rsplit(".", 1)[1].isdigit())
    fs = filesystem(url)
    done = 0
    for seg, name in segments:
        path = os.path.join(folder, name)
        if not _only_header(path):
            try:
                fs.put_file(path, f"{url}.{seg:06d}")
            except Exception as err:  # noqa: BLE001 - report and stop: order matters
                return done, [f"{path}: upload to {url}.{seg:06d} failed: {type(err).__name__}: {err}"]
            done += 1
        os.unlink(path)
    shutil.rmtree(folder, ignore_errors=True)
    return done, []
