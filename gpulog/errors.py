"""Error types.  Bad user input raises the builtin ``ValueError``/``TypeError`` at the call."""
from __future__ import annotations


class GpulogError(RuntimeError):
    """Base class for gpulog's lifecycle errors."""


class WriterError(GpulogError):
    """The background writer could not write (disk full, directory removed, …).

    Raised on the caller's next call, chained to the original exception (``__cause__``).
    """
