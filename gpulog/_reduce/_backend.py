"""Where reductions run: the one place that picks Triton or torch, and builds ``Prepared`` items.

``GPULOG_BACKEND`` = ``auto`` (Triton for CUDA tensors when it imports, the optional native
extension for CPU tensors when it was built), ``torch`` (always the torch reference path) or
``triton`` (Triton for CUDA tensors, error if missing).  Probes are cached and run on first use,
never at import.
"""
from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import threading
import warnings
from typing import Any, Callable, Dict, Iterator, NamedTuple, Optional, Sequence, Tuple, TypeVar

import numpy as np
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


@functools.lru_cache(maxsize=1)
def kernels() -> Dict[str, Callable[..., Any]]:
    """The Triton kernels gpulog launches, by the name ``kernel_or`` is given, each with the same
    contract as its torch reference in ``_reduce/<kind>.py`` (imported on first use: Triton)."""
    from ..kernels import histogram, image, pr_curve, watch
    return {"histogram.reduce": histogram.reduce, "pr_curve.buckets": pr_curve.buckets,
            "image.grid_hwc_uint8": image.grid_hwc_uint8, "watch.stats": watch.stats}


F = TypeVar("F", bound=Callable[..., Any])
_FAILED: Dict[str, str] = {}  # kernel name -> the error that retired it for this process


def kernel_or(x: torch.Tensor, name: str, reference: F) -> F:
    """The kernel registered as ``name`` in :func:`kernels` (same contract as ``reference``) when
    :func:`use_triton` says so, else ``reference``.

    A kernel that fails to compile or launch (a Triton, driver or GPU it was never built for, too
    little shared memory) is reported in one warning and replaced by ``reference`` for the rest of
    the process, so logging keeps working; ``GPULOG_BACKEND=triton`` raises instead.  Running out
    of device memory is not a kernel failure and propagates.  Each new specialisation is compiled
    on a background thread while ``reference`` serves the call (see below).
    """
    if not use_triton(x) or name in _FAILED:
        return reference

    def kernel(*args: Any, **kwargs: Any) -> Any:
        return kernels()[name](*args, **kwargs)

    def run(*args: Any, **kwargs: Any) -> Any:
        if name in _FAILED:
            return reference(*args, **kwargs)
        key = _specialisation(name, args, kwargs)
        if key not in _READY and backend() == "auto" and \
                os.environ.get("GPULOG_COMPILE", "background") != "inline":
            _warm_in_background(key, name, kernel, args, kwargs)
            return reference(*args, **kwargs)
        try:
            return kernel(*args, **kwargs)
        except torch.cuda.OutOfMemoryError:
            raise
        except Exception as err:
            _retire(name, err)
            return reference(*args, **kwargs)
    return run  # type: ignore[return-value]


def _retire(name: str, err: BaseException) -> None:
    if backend() == "triton":
        raise err
    _FAILED[name] = f"{type(err).__name__}: {err}"
    warnings.warn(f"gpulog: the Triton kernel {name} failed ({_FAILED[name][:500]}); using the "
                  "torch path for it from now on (results are the same, only slower). "
                  "Set GPULOG_BACKEND=torch to skip Triton, or =triton to make this an error.",
                  RuntimeWarning, stacklevel=3)


# -- compilation off the training thread ----------------------------------------------------------
# Triton compiles a kernel at its first launch for each specialisation (dtypes, and whether sizes
# and pointers are multiples of 16): seconds on the caller's thread.  Instead, the first call with a
# new specialisation runs the torch reference (same results) and starts a background thread that
# launches the kernel once on the same inputs, on a private stream that waits for the caller's
# stream; once that launch completed, later calls use the kernel.  Triton's on-disk cache makes
# later processes load instead of compile.  GPULOG_COMPILE=inline (or GPULOG_BACKEND=triton, which
# makes kernel failures errors) compiles on the caller's thread.  The warm-up starts only while no
# CUDA graph is being captured (the capture gate), but a capture that begins during that one launch
# could still meet its allocation: a narrow window, once per specialisation, not yet probed on a GPU.
_READY: set = set()
_WARMING: Dict[Any, threading.Thread] = {}
_WARM_LOCK = threading.Lock()
_PRIVATE_STREAMS: Dict[Any, Any] = {}


def _spec(a: Any) -> Any:
    if isinstance(a, torch.Tensor):
        n = a.numel()
        return (a.dtype, str(a.device), n % 16 == 0, n == 1, a.is_contiguous())
    if isinstance(a, bool) or a is None:
        return a
    if isinstance(a, int):
        return (a == 1, a % 16 == 0)
    if isinstance(a, np.ndarray):
        return ("array", a.shape)
    return type(a).__name__


def _specialisation(name: str, args: Sequence[Any], kwargs: Dict[str, Any]) -> Tuple[Any, ...]:
    return (name, *(_spec(a) for a in args), *((k, _spec(v)) for k, v in sorted(kwargs.items())))


def _warm_in_background(key: Any, name: str, kernel: Callable[..., Any], args: Sequence[Any],
                        kwargs: Dict[str, Any]) -> None:
    with _WARM_LOCK:
        if key in _WARMING or key in _READY:
            return
        tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor) and a.is_cuda]
        if not tensors:  # nothing on a device to launch with: compile at the next call
            _READY.add(key)
            return
        device = tensors[0].device
        stream = _PRIVATE_STREAMS.get(device)
        if stream is None:
            stream = _PRIVATE_STREAMS[device] = torch.cuda.Stream(device)
        ready = torch.cuda.Event()
        ready.record(torch.cuda.current_stream(device))
        _transfer.guard_inputs(tensors, stream)  # read there: keep them until it is done

        def warm() -> None:
            try:
                _transfer.GATE.run(lambda: None)  # start outside a capture
                with torch.cuda.stream(stream):
                    stream.wait_event(ready)
                    kernel(*args, **kwargs)
                    done = torch.cuda.Event()
                    done.record(stream)
                _transfer.GATE.wait_event(done)
                _READY.add(key)
            except torch.cuda.OutOfMemoryError:
                pass  # tried again at a later call
            except Exception as err:  # noqa: BLE001 - reported once, the reference takes over
                _FAILED[name] = f"{type(err).__name__}: {err}"
                warnings.warn(f"gpulog: the Triton kernel {name} failed to compile or run "
                              f"({_FAILED[name][:500]}); using the torch path for it from now on "
                              "(results are the same, only slower).", RuntimeWarning)
            finally:
                with _WARM_LOCK:
                    _WARMING.pop(key, None)

        t = threading.Thread(target=warm, name=f"gpulog-compile-{name}", daemon=True)
        _WARMING[key] = t
        t.start()


def wait_compiled(timeout: Optional[float] = None) -> None:
    """Block until every background kernel compilation started so far has finished (tests,
    benchmarks, or a warm-up step before timing)."""
    for t in list(_WARMING.values()):
        t.join(timeout)


_VALIDATE_ONLY = contextvars.ContextVar("gpulog_validate_only", default=False)


@contextlib.contextmanager
def validation_only() -> Iterator[None]:
    """Within: :func:`finish` stages nothing (no snapshot, no device work).  Non-zero ranks of a
    distributed writer run a summary's ``prepare`` this way, so every rank checks the same
    arguments at the call and raises the same error, without reducing data rank 0 alone writes."""
    token = _VALIDATE_ONLY.set(True)
    try:
        yield
    finally:
        _VALIDATE_ONLY.reset(token)


def finish(encode: Callable[..., Any], args: Sequence[Any], x: Any,
           reduce: Callable[[Any], Sequence[torch.Tensor]], snapshot: bool = True,
           nbytes: Optional[int] = None) -> Prepared:
    """Start ``reduce(x)`` where ``x`` lives and package the result for the writer.

    CUDA: the kernels are queued on the current stream now and their small outputs copied
    asynchronously (no sync).  CPU: ``x`` (a tensor or a tuple of tensors/None) is copied into
    pooled buffers (the value at call time) and reduced later on the writer thread; pass
    ``snapshot=False`` only when ``x`` is already a private copy.
    """
    if _VALIDATE_ONLY.get():
        return Prepared(encode, tuple(args), 0, None)
    if _on_cuda(x):
        _transfer.check_not_capturing("gpulog")
        _transfer.guard_inputs(_flat(x), torch.cuda.current_stream())
        staged = _transfer.DeviceStaged(reduce(x))
        return Prepared(encode, tuple(args), staged.nbytes, staged)
    pooled: Tuple[torch.Tensor, ...] = ()
    if snapshot:
        x = _snapshot(x)
        pooled = tuple(t for t in (x if isinstance(x, tuple) else (x,)) if isinstance(t, torch.Tensor))
    size = nbytes if nbytes is not None else _nbytes(x)
    return Prepared(encode, tuple(args), size, _transfer.Deferred(reduce, (x,), pooled=pooled))


def staged(encode: Callable[..., Any], args: Sequence[Any], values: Sequence[Any],
           host_nbytes: int = 0) -> Prepared:
    """Arguments that need no reduction: CUDA tensors among ``values`` are copied to the host
    asynchronously (one event), host values pass as they are (already private copies); nothing
    is staged under :func:`validation_only`.  ``host_nbytes``: payload of the host values."""
    if _VALIDATE_ONLY.get():
        return Prepared(encode, tuple(args), 0, None)
    staged_ = _transfer.DeviceStaged(values)
    nbytes = staged_.nbytes + host_nbytes
    return Prepared(encode, tuple(args), nbytes, staged_)


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


def _flat(x: Any) -> Tuple[Any, ...]:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _on_cuda(x: Any) -> bool:
    if isinstance(x, (tuple, list)):
        return any(_on_cuda(t) for t in x)
    return isinstance(x, torch.Tensor) and x.is_cuda
