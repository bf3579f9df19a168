"""Where reductions run: the one place that picks Triton or torch, and builds ``Prepared`` items.

``GPULOG_BACKEND`` = ``auto`` (Triton for CUDA tensors when it imports, the optional native
extension for CPU tensors when it was built), ``torch`` (always the torch reference path) or
``triton`` (Triton for CUDA tensors, error if missing).  Probes are cached and run on first use,
never at import.
"""
from __future__ import annotations

import functools
import importlib
import os
import warnings
from typing import Any, Callable, Dict, NamedTuple, Optional, Sequence, Tuple, TypeVar

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


F = TypeVar("F", bound=Callable[..., Any])
_FAILED: Dict[str, str] = {}  # kernel name -> the error that retired it for this process


def kernel_or(x: torch.Tensor, name: str, reference: F) -> F:
    """``gpulog.kernels.<name>`` (same contract as ``reference``) when :func:`use_triton` says so,
    else ``reference``.

    A kernel that fails to compile or launch (a Triton, driver or GPU it was never built for, too
    little shared memory) is reported in one warning and replaced by ``reference`` for the rest of
    the process, so logging keeps working; ``GPULOG_BACKEND=triton`` raises instead.  Running out
    of device memory is not a kernel failure and propagates.
    """
    if not use_triton(x) or name in _FAILED:
        return reference
    module, _, attr = name.partition(".")

    def run(*args: Any, **kwargs: Any) -> Any:
        if name in _FAILED:
            return reference(*args, **kwargs)
        try:
            return getattr(importlib.import_module(f"gpulog.kernels.{module}"), attr)(*args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as err:
            if backend() == "triton":
                raise
            _FAILED[name] = f"{type(err).__name__}: {err}"
            warnings.warn(f"gpulog: the Triton kernel {name} failed ({_FAILED[name][:500]}); using the "
                          "torch path for it from now on (results are the same, only slower). "
                          "Set GPULOG_BACKEND=torch to skip Triton, or =triton to make this an error.",
                          RuntimeWarning, stacklevel=2)
            return reference(*args, **kwargs)
    return run  # type: ignore[return-value]


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
