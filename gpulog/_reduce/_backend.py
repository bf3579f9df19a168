"""Where reductions run: the one place that picks Triton or torch, and builds ``Prepared`` items.

``GPULOG_BACKEND`` = ``auto`` (Triton for CUDA tensors when it imports, the optional native
extension for CPU tensors when it was built), ``torch`` (always the torch reference path) or
``triton`` (Triton for CUDA tensors, error if missing).  Probes are cached and run on first use,
never at import.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, NamedTuple, Optional, Sequence, Tuple

import torch

from .. import _transfer


class Prepared(NamedTuple):
    encode: Callable[..., Any]   # encode(*args, *arrays) -> list of Summary.Value bytes
    args: Tuple[Any, ...]        # host-side arguments (tag, edges, options)
    nbytes: int                  # payload bytes held until the writer is done with them
    staged: Any                  # object whose result() returns the reduced host arrays


@functools.lru_cache(maxsize=1)
def _triton_available() -> bool:
    try:
        import triton  # noqa: F401
        return True
    except Exception:
        return False


@functools.lru_cache(maxsize=1)
def _native_module() -> Any:
    try:
        from .. import _native  # built from gpulog/_native.c when a C compiler was available
        return _native
    except ImportError:
        return None


def native() -> Any:
    """The fused CPU reductions (``gpulog._native``), or None (not built, or GPULOG_BACKEND=torch)."""
    return None if backend() == "torch" else _native_module()


def threads() -> int:
    """Threads for a writer-side CPU reduction: torch's setting, leaving one core to the trainer."""
    return max(1, min(torch.get_num_threads(), (os.cpu_count() or 1) - 1))


def backend() -> str:
    choice = os.environ.get("GPULOG_BACKEND", "auto").lower()
    if choice not in ("auto", "torch", "triton"):
        raise ValueError(f"GPULOG_BACKEND must be auto, torch or triton, got {choice!r}")
    return choice


def use_triton(x: torch.Tensor) -> bool:
    """Run the Triton kernel for ``x``?  (CUDA tensors only; the interpreter is for tests.)"""
    choice = backend()
    if choice == "torch" or not x.is_cuda:
        return False
    if not _triton_available():
        if choice == "triton":
            raise RuntimeError("GPULOG_BACKEND=triton but triton is not installed: "
                               "pip install 'gpulog[triton]'")
        return False
    return True


def finish(encode: Callable[..., Any], args: Sequence[Any], x: Any,
           reduce: Callable[[Any], Sequence[torch.Tensor]], snapshot: bool = True,
           nbytes: Optional[int] = None) -> Prepared:
    """Start ``reduce(x)`` where ``x`` lives and package the result for the writer.

    CUDA: the kernels are queued on the current stream now and their small outputs copied
    asynchronously (no sync).  CPU: ``x`` (a tensor or a tuple of tensors/None) is copied into
    pooled buffers (the value at call time) and reduced later on the writer thread; pass
    ``snapshot=False`` only when ``x`` is already a private copy.
    """
    if _on_cuda(x):
        staged = _transfer.DeviceStaged(reduce(x))
        return Prepared(encode, tuple(args), staged.nbytes, staged)
    pooled: Tuple[torch.Tensor, ...] = ()
    if snapshot:
        x = _snapshot(x)
        pooled = tuple(t for t in (x if isinstance(x, tuple) else (x,)) if isinstance(t, torch.Tensor))
    size = nbytes if nbytes is not None else _nbytes(x)
    return Prepared(encode, tuple(args), size, _transfer.Deferred(reduce, x, pooled))


def _snapshot(x: Any) -> Any:
    """Private copies (the values at call time) in reusable buffers; tuples element-wise."""
    if isinstance(x, tuple):
        return tuple(_snapshot(t) for t in x)
    if isinstance(x, torch.Tensor):
        return _transfer.POOL.snapshot(x)
    return x


def _nbytes(x: Any) -> int:
    if isinstance(x, torch.Tensor):
        return x.numel() * x.element_size()
    if isinstance(x, (tuple, list)):
        return sum(_nbytes(t) for t in x)
    return int(getattr(x, "nbytes", 0))


def _on_cuda(x: Any) -> bool:
    if isinstance(x, (tuple, list)):
        return any(_on_cuda(t) for t in x)
    return isinstance(x, torch.Tensor) and x.is_cuda
