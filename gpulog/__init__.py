"""gpulog: a GPU-aware, high-throughput drop-in for ``torch.utils.tensorboard.SummaryWriter``.

``import gpulog`` is cheap: it starts no thread, imports neither torch nor Triton and touches no
CUDA (unless ``GPULOG_PATCH=1`` asks it to patch torch's writer, see ``patch()``).  Names are
resolved on first use.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["SummaryWriter", "FileWriter", "WriterError", "GpulogError", "read_events",
           "read_scalars", "patch", "unpatch", "__version__"]

_LAZY = {
    "SummaryWriter": ("gpulog.writer", "SummaryWriter"),
    "FileWriter": ("gpulog.file_writer", "FileWriter"),
    "WriterError": ("gpulog.errors", "WriterError"),
    "GpulogError": ("gpulog.errors", "GpulogError"),
    "read_events": ("gpulog.reader", "read_events"),
    "read_scalars": ("gpulog.reader", "read_scalars"),
    "patch": ("gpulog._patching", "patch"),
    "unpatch": ("gpulog._patching", "unpatch"),
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'gpulog' has no attribute {name!r}")


def __dir__() -> list:
    return sorted(__all__)


def _patch_from_environment() -> None:
    """``GPULOG_PATCH=1`` (set by ``patch()`` for child processes): patch this process too."""
    import os
    if os.environ.get("GPULOG_PATCH") == "1":
        from ._patching import patch
        patch()


_patch_from_environment()
