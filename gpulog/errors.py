"""Error types.  Bad user input raises the builtin ``ValueError``/``TypeError`` at the call."""
from __future__ import annotations


class GpulogError(RuntimeError):
    """Base class for gpulog's lifecycle errors."""


class WriterError(OSError, GpulogError):
    """The background writer could not write (disk full, directory removed, …).

    An ``OSError`` (``except OSError`` catches it, as torch's writer raises one) with the original
    ``errno`` and the event file as ``filename``; raised on the caller's next call, after that
    call's own value was queued, chained to the original exception (``__cause__``).
    """
