"""Remote log dirs (``s3://``, ``gs://``, ``hdfs://``, ``memory://``, any fsspec protocol).

Object stores have no append, so a remote event file is written as **segments**: immutable event
files ``<event file name>.<000000>``, ``.<000001>``, ... (TensorBoard reads a run's files in name
order), each staged in a local file by the writer thread and uploaded whole once it is sealed.  A
segment is sealed at ``flush()``, ``close()``, exit and SIGTERM (both drain through ``flush``),
after ``flush_secs`` seconds, or at ``SEGMENT_BYTES``.  A failed upload keeps the staged file, is
retried once per poll interval (and at every flush), and is reported like a write error: an
``OSError`` on the next call, and on stderr at exit if it never succeeded.  Every segment starts
with the file-version record, so each is a complete event file.  Host side, torch-free; fsspec
is imported only for such a log dir.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any, List, Tuple

from ._worker import RETRY_S, Sink

SEGMENT_BYTES = 16 << 20


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


_shutdown_hook = False


def _flush_before_thread_shutdown() -> None:
    """Upload at interpreter exit *before* ``concurrent.futures`` shuts its executors down: the
    fsspec backends (aiobotocore's DNS lookups, say) cannot schedule work after that, which is
    before ``atexit`` hooks run.  The writer thread keeps running for the ``atexit`` drain."""
    from . import _worker
    e = _worker._engine
    if e is not None and e._thread is not None and e._thread.is_alive() and e.pid == os.getpid():
        e.barrier(_worker.OP_FLUSH, None, timeout=120.0)


def _register_shutdown_hook() -> None:
    global _shutdown_hook
    if _shutdown_hook:
        return
    import threading
    register = getattr(threading, "_register_atexit", None)  # runs in reverse order: before
    if register is not None:                                  # executors registered earlier
        try:
            register(_flush_before_thread_shutdown)
            _shutdown_hook = True
        except RuntimeError:  # already shutting down
            pass


class RemoteSink(Sink):
    """A :class:`Sink` whose records go to local segment files, uploaded when sealed."""

    def __init__(self, url: str, max_queue: int, flush_secs: float) -> None:
        _register_shutdown_hook()
        self.url = url
        self.fs = filesystem(url)
        self.staging = tempfile.mkdtemp(prefix="gpulog-segments-")
        self.seg = 0
        self.to_upload: List[Tuple[str, str]] = []
        super().__init__(self._local(0), max_queue, flush_secs)
        self.seg_bytes = 0
        self.seg_started = time.monotonic()

    def _local(self, seg: int) -> str:
        return os.path.join(self.staging, f"{os.path.basename(self.url)}.{seg:06d}")

    def _remote(self, seg: int) -> str:
        return f"{self.url}.{seg:06d}"

    def write_pending(self, force: bool = False) -> None:
        size = sum(len(p) for p in self.pending)
        super().write_pending(force)
        if not self.pending:
            self.seg_bytes += size
        if self.seg_bytes >= SEGMENT_BYTES or \
                (self.seg_bytes and time.monotonic() - self.seg_started >= self.flush_secs):
            self.seal()
        if self.to_upload and (force or time.monotonic() >= self.retry_at):
            self.upload()

    def flush_now(self) -> None:
        super().write_pending(force=True)
        if not self.pending:
            self.seal()
            self.upload()

    def busy(self) -> bool:
        return bool(self.pending) or self.seg_bytes > 0 or bool(self.to_upload)

    def seal(self, start_next: bool = True) -> None:
        """Close the current segment for upload and (normally) start the next one."""
        if not self.seg_bytes:
            return
        self._release_fd()
        self.to_upload.append((self.path, self._remote(self.seg)))
        self.seg += 1
        self.seg_bytes = 0
        self.seg_started = time.monotonic()
        self.path = self._local(self.seg)
        if start_next:
            with open(self.path, "wb") as f:
                f.write(self.header)

    def upload(self) -> None:
        while self.to_upload:
            local, remote = self.to_upload[0]
            try:
                self.fs.put_file(local, remote)
            except Exception as err:  # noqa: BLE001 - any backend failure: keep, retry, report
                if not isinstance(err, OSError):
                    err = OSError(f"upload of {remote} failed: {type(err).__name__}: {err}")
                self.error = self.last_error = err
                self.failures += 1
                self.retry_at = time.monotonic() + RETRY_S
                return
            os.unlink(local)
            self.to_upload.pop(0)
        self.failures = 0

    def close(self) -> None:
        super().write_pending(force=True)
        if self.pending:
            return
        self.seal(start_next=False)
        self.upload()
        if not self.to_upload:
            self._release_fd()
            self.closed = True
            shutil.rmtree(self.staging, ignore_errors=True)
