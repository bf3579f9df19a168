"""A CPU-only detector of host-device synchronisation in gpulog's CUDA path.

No GPU is needed: ``FakeCuda`` is a tensor that says ``device="cuda:0"`` (so gpulog takes its
CUDA branches) while holding CPU data, and ``SyncProbe`` is a ``TorchDispatchMode`` that runs
every op on the CPU and records, on the thread that made the call, each operation that would
make the host wait for a real device:

- reading a device value: ``_local_scalar_dense`` (``.item()``, ``bool(t)``, ``float(t)``),
  ``is_nonzero``, ``equal``; output sizes that depend on device data (``nonzero``,
  ``masked_select``, boolean indexing, the ``unique`` family, ``bincount``, ``histc`` with a
  data-dependent range, ``repeat_interleave`` without ``output_size``);
- device-to-host copies that are not ``non_blocking`` into pinned memory (``.cpu()``,
  ``.numpy()`` through ``.cpu()``, ``.to("cpu")``, ``copy_`` into pageable memory);
- host-to-device copies from pageable memory or without ``non_blocking`` (torch synchronises
  the stream after those);
- ``torch.cuda.synchronize``, ``Stream.synchronize``, ``Event.synchronize``/``wait`` on the
  training thread, and pinned or device allocation made during stream capture.

``torch.cuda`` streams, events, ``stream()`` contexts and pinned allocation are replaced by
stand-ins that record what was queued where.  The writer thread runs under a permissive probe:
it may wait on events (that is its job) but is recorded when it queues work on a user stream.
"""
from __future__ import annotations

import contextlib
import itertools
import threading
import traceback
from typing import Any, Iterator, List, Optional, Set

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

aten = torch.ops.aten

# Ops whose output size or result is a device value the host must read.
_SYNC_OPS = {
    "_local_scalar_dense", "is_nonzero", "equal", "nonzero", "nonzero_static", "masked_select",
    "argwhere", "unique_dim", "_unique", "_unique2", "unique_consecutive", "bincount", "histc",
    "allclose", "_assert_async", "item", "repeat_interleave",
    # torch.linalg functions documented to synchronise the device with the CPU: the error checks
    # of cholesky/inv/solve/lu_factor/ldl_factor (their *_ex forms, which skip them, do not), and
    # eig/eigvals/eigh/svd/cond/pinv/matrix_rank/lstsq, whose CUDA kernels read results back.
    "_linalg_check_errors", "linalg_eig", "linalg_eigvals", "_linalg_eigh", "linalg_eigh",
    "_linalg_svd", "linalg_svd", "linalg_svdvals", "linalg_cond", "linalg_pinv", "linalg_matrix_rank",
    "linalg_lstsq",
}


class FakeCuda(torch.Tensor):
    """A tensor on ``cuda:0`` (as far as anyone can tell) whose data lives on the CPU."""

    elem: torch.Tensor

    @staticmethod
    def __new__(cls, elem: torch.Tensor, device: str = "cuda:0") -> "FakeCuda":
        assert type(elem) is torch.Tensor and elem.device.type == "cpu"
        r = torch.Tensor._make_wrapper_subclass(  # type: ignore[attr-defined]
            cls, elem.shape, dtype=elem.dtype, device=torch.device(device), strides=elem.stride(),
            storage_offset=elem.storage_offset(), requires_grad=elem.requires_grad)
        r.elem = elem
        return r

    # Printing or formatting a CUDA tensor copies it to the host (torch's _tensor_str reads the
    # values; a 0-d tensor's __format__ is .item()): a host wait, recorded like one.
    def __repr__(self) -> str:
        PROBE.host_wait("repr()/str() of a device tensor (reads its values)")
        return f"FakeCuda({self.elem!r})"

    def __str__(self) -> str:
        return self.__repr__()

    def __format__(self, spec: str) -> str:
        PROBE.host_wait("format() of a device tensor (reads its values)")
        return format(self.elem.item() if self.elem.dim() == 0 else self.elem, spec)

    @classmethod
    def __torch_dispatch__(cls, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        # Reached only on threads without a probe (none in these tests: a loud failure).
        raise AssertionError(f"{func} on a FakeCuda tensor outside a SyncProbe")


def fake(t: torch.Tensor, device: str = "cuda:0") -> torch.Tensor:
    """``t`` (CPU) presented as a tensor on ``device``."""
    return FakeCuda(t.detach().contiguous(), device)


class FakeStream(torch.Stream):
    """A ``torch.Stream`` that names a CUDA stream (so torch's bindings accept it) and queues
    nothing."""

    _ids = itertools.count(1)

    def __new__(cls, device: Any = None, priority: int = 0, **_: Any) -> "FakeStream":
        return super().__new__(cls, stream_id=next(cls._ids) * 16, device_index=0, device_type=1)

    def __init__(self, device: Any = None, priority: int = 0, **_: Any) -> None:
        pass

    @property
    def cuda_stream(self) -> int:  # type: ignore[override]
        return int(self.stream_id)

    def __eq__(self, other: Any) -> bool:
        return isinstance(other, FakeStream) and other.cuda_stream == self.cuda_stream

    def __hash__(self) -> int:
        return self.cuda_stream

    def synchronize(self) -> None:
        PROBE.host_wait("Stream.synchronize()")

    def wait_stream(self, other: "FakeStream") -> None:
        PROBE.enqueue(self, "wait_stream")

    def wait_event(self, event: "FakeEvent") -> None:
        PROBE.enqueue(self, "wait_event")

    def record_event(self, event: Optional["FakeEvent"] = None) -> "FakeEvent":
        event = event or FakeEvent()
        event.record(self)
        return event

    def query(self) -> bool:
        return True


class FakeEvent:
    def __init__(self, enable_timing: bool = False, blocking: bool = False,
                 interprocess: bool = False) -> None:
        self.blocking = blocking
        PROBE.events.append(self)

    def record(self, stream: Optional[FakeStream] = None) -> None:
        PROBE.enqueue(stream or PROBE.current_stream(), "Event.record")

    def synchronize(self) -> None:
        if not self.blocking:
            PROBE.spins += 1
        PROBE.host_wait("Event.synchronize()")

    def wait(self, stream: Optional[FakeStream] = None) -> None:
        PROBE.enqueue(stream or PROBE.current_stream(), "Event.wait")

    def query(self) -> bool:
        from gpulog._transfer import GATE
        PROBE.queries.append((threading.current_thread().name, GATE.capturing))
        return True


class _State(threading.local):
    def __init__(self) -> None:
        self.stream: Optional[FakeStream] = None
        self.strict = False


class Probe:
    """What the detector saw; one per test (``install`` resets it)."""

    def __init__(self) -> None:
        self.local = _State()
        self.default = FakeStream()
        self.reset()

    def reset(self) -> None:
        self.syncs: List[str] = []
        self.events: List[FakeEvent] = []
        self.spins = 0
        self.pinned: Set[int] = set()          # storage data pointers of "pinned" host tensors
        self.record_stream: List[int] = []     # streams passed to record_stream
        self.foreign_enqueues: List[str] = []  # work queued on a user stream by a gpulog thread
        self.capturing: Set[int] = set()
        self.queries: List[Any] = []           # (thread, captures in progress) per Event.query()

    # -- streams --------------------------------------------------------------------------------
    def current_stream(self, device: Any = None) -> FakeStream:
        return self.local.stream or self.default

    def enqueue(self, stream: FakeStream, what: str) -> None:
        if not self.local.strict and threading.current_thread().name.startswith("gpulog"):
            self.foreign_enqueues.append(f"{what} on stream {stream.cuda_stream} from "
                                         f"{threading.current_thread().name}")

    def host_wait(self, what: str) -> None:
        if self.local.strict:
            self.syncs.append(what + "\n" + "".join(traceback.format_stack(limit=12)[:-2]))

    def is_pinned(self, t: torch.Tensor) -> bool:
        return t.untyped_storage().data_ptr() in self.pinned


PROBE = Probe()


def _unwrap(t: Any) -> Any:
    return t.elem if isinstance(t, FakeCuda) else t


def _is_dev(t: Any) -> bool:
    return isinstance(t, FakeCuda)


class SyncProbe(TorchDispatchMode):
    """Runs ops on the CPU; in strict mode records every op that makes the host wait."""

    def __init__(self, strict: bool = True) -> None:
        super().__init__()
        self.strict = strict

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        name = func.overloadpacket.__name__
        leaves: List[Any] = []
        tree_map(lambda x: leaves.append(x), (args, kwargs))
        on_dev = any(_is_dev(x) for x in leaves)
        dev_device = next((x.device for x in leaves if _is_dev(x)), torch.device("cuda", 0))
        strict = PROBE.local.strict

        def sync(why: str) -> None:
            if strict:
                PROBE.syncs.append(f"{func}: {why}\n" + "".join(traceback.format_stack(limit=14)[:-3]))

        if func.namespace == "gpulog":  # gpulog's own ops: run their bodies on the stand-ins
            from gpulog import _compiled
            with SyncProbe(strict=self.strict):  # this mode is off inside its own handler
                return getattr(_compiled, func._opname)(*args, **kwargs)
        if on_dev and not strict:
            PROBE.enqueue(PROBE.current_stream(), str(func))
        if name == "record_stream":
            PROBE.record_stream.append(int(args[1].cuda_stream) if hasattr(args[1], "cuda_stream") else -1)
            return None
        if name == "is_pinned":
            return PROBE.is_pinned(_unwrap(args[0]))
        if name == "_pin_memory":
            out = _unwrap(args[0]).clone()
            PROBE.pinned.add(out.untyped_storage().data_ptr())
            return out
        if on_dev and name in _SYNC_OPS and not (name == "repeat_interleave" and kwargs.get("output_size")):
            sync("output size or value depends on device data")
        if name in ("index", "index_put", "index_put_") and on_dev:
            idx = args[1] if len(args) > 1 else kwargs.get("indices")
            if any(i is not None and i.dtype == torch.bool for i in idx):
                sync("boolean-mask indexing (a nonzero)")
        if name == "copy_":
            dst, src = args[0], args[1]
            non_blocking = args[2] if len(args) > 2 else kwargs.get("non_blocking", False)
            if _is_dev(src) and not _is_dev(dst):
                if not non_blocking or not PROBE.is_pinned(dst):
                    sync("device-to-host copy_ " + ("into pageable memory" if non_blocking else
                                                     "without non_blocking"))
            elif _is_dev(dst) and not _is_dev(src) and src.dim() > 0 and src.numel() > 0:
                if not non_blocking or not PROBE.is_pinned(src):
                    sync("host-to-device copy_ from pageable memory or without non_blocking")
        if name == "_to_copy":
            src = args[0]
            dev = kwargs.get("device")
            target_dev = dev is not None and torch.device(dev).type == "cuda"
            if _is_dev(src) and dev is not None and not target_dev:
                sync(".cpu() / .to('cpu') of a device tensor")
            if target_dev and not _is_dev(src) and src.numel() > 0:
                if not kwargs.get("non_blocking") or not PROBE.is_pinned(src):
                    sync("host-to-device copy from pageable memory or without non_blocking")
        pin = bool(kwargs.get("pin_memory"))
        if pin:
            kwargs["pin_memory"] = False
        target = kwargs.get("device")
        if target is not None:
            result_dev = torch.device(target).type != "cpu"
            if result_dev:
                dev_device = torch.device(target)
                kwargs["device"] = torch.device("cpu")
        else:
            result_dev = on_dev
        cpu_args = tree_map(_unwrap, args)
        cpu_kwargs = tree_map(_unwrap, kwargs)
        if name == "_to_copy" and cpu_kwargs.get("non_blocking"):
            cpu_kwargs["non_blocking"] = False
        if name == "copy_" and len(cpu_args) > 2:
            cpu_args = (cpu_args[0], cpu_args[1], False)
        cpu_kwargs.pop("non_blocking", None) if name == "copy_" else None
        out = func(*cpu_args, **cpu_kwargs)
        if pin and isinstance(out, torch.Tensor):
            PROBE.pinned.add(out.untyped_storage().data_ptr())
        if name.endswith("_") and func._schema.is_mutable:
            # in-place: the caller's (possibly FakeCuda) tensor; in-place foreach ops return nothing
            return args[0] if func._schema.returns else None
        if "out" in kwargs:
            return kwargs["out"]
        if result_dev:
            return tree_map(lambda x: FakeCuda(x, str(dev_device)) if type(x) is torch.Tensor
                            and x.device.type == "cpu" else x, out)
        return out


class IndexProbe(TorchFunctionMode):
    """``t[...]`` and ``t[...] = v`` on FakeCuda tensors, done on the CPU data: the C++ indexing
    code opens a CUDA device guard first, which a CPU-only build cannot."""

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is torch.Tensor.pin_memory:
            out = _unwrap(args[0]).clone()
            PROBE.pinned.add(out.untyped_storage().data_ptr())
            return out
        if func is torch.Tensor.is_pinned:
            return PROBE.is_pinned(_unwrap(args[0]))
        if func in (torch.Tensor.to, torch.Tensor.cuda) and _moves_to_cuda(func, args, kwargs):
            src = args[0]
            if isinstance(src, FakeCuda):
                return src
            non_blocking = kwargs.get("non_blocking", False) or (
                len(args) > 2 and isinstance(args[-1], bool) and args[-1])
            if PROBE.local.strict and src.numel() > 0 and (not non_blocking or not PROBE.is_pinned(src)):
                PROBE.syncs.append("host-to-device copy from pageable memory or without non_blocking\n"
                                   + "".join(traceback.format_stack(limit=12)[:-2]))
            dtype = next((a for a in list(args[1:]) + list(kwargs.values()) if isinstance(a, torch.dtype)),
                         src.dtype)
            return FakeCuda(src.to(dtype).clone().contiguous())
        if str(func).startswith("gpulog."):  # gpulog's ops: run their bodies under both probes
            from gpulog import _compiled
            with IndexProbe(), SyncProbe(strict=PROBE.local.strict):
                return getattr(_compiled, str(func).split(".")[1])(*args, **kwargs)
        if not any(isinstance(a, FakeCuda) for a in _leaves((args, kwargs))):
            return func(*args, **kwargs)
        if func in _READS:
            if PROBE.local.strict:
                PROBE.syncs.append(f"{func.__name__}() reads a device value\n" +
                                   "".join(traceback.format_stack(limit=12)[:-2]))
            return func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
        if func not in (torch.Tensor.__getitem__, torch.Tensor.__setitem__):
            try:
                return func(*args, **kwargs)
            except RuntimeError as err:
                if "not linked with support for cuda" not in str(err) or \
                        str(func).startswith("gpulog."):
                    raise
            # The C++ binding opened a CUDA device guard before dispatch: run it on the CPU data
            # (the ops inside still go through SyncProbe) and hand device results back.
            out = func(*tree_map(_unwrap, args), **tree_map(_unwrap, kwargs))
            return tree_map(lambda x: FakeCuda(x) if type(x) is torch.Tensor else x, out)
        if any(isinstance(a, torch.Tensor) and a.dtype == torch.bool and a.dim() > 0
               for a in _leaves(args[1:2])) and PROBE.local.strict:
            PROBE.syncs.append("boolean-mask indexing (a nonzero)\n" +
                               "".join(traceback.format_stack(limit=12)[:-2]))
        if func is torch.Tensor.__setitem__ and isinstance(args[0], FakeCuda):
            value = args[2]
            if isinstance(value, torch.Tensor) and not isinstance(value, FakeCuda) and \
                    value.dim() > 0 and PROBE.local.strict:
                PROBE.syncs.append("host-to-device copy through t[...] = cpu_tensor\n" +
                                   "".join(traceback.format_stack(limit=12)[:-2]))
        out = func(*tree_map(_unwrap, args), **kwargs)
        if func is torch.Tensor.__getitem__ and isinstance(args[0], FakeCuda):
            return FakeCuda(out)
        return out


def _moves_to_cuda(func: Any, args: Any, kwargs: Any) -> bool:
    if func is torch.Tensor.cuda:
        return True
    for a in list(args[1:]) + [kwargs.get("device")]:
        if isinstance(a, (str, torch.device)) and torch.device(a).type == "cuda":
            return True
        if isinstance(a, torch.Tensor) and a.device.type == "cuda":
            return True
    return False


_READS = {torch.Tensor.__float__, torch.Tensor.__int__, torch.Tensor.__bool__, torch.Tensor.__index__,
          torch.Tensor.item, torch.Tensor.tolist}


def _leaves(x: Any) -> List[Any]:
    out: List[Any] = []
    tree_map(lambda a: out.append(a), x)
    return out


# -- torch.cuda stand-ins ------------------------------------------------------------------------
class _StreamContext:
    def __init__(self, stream: Optional[FakeStream]) -> None:
        self.stream = stream

    def __enter__(self) -> Optional[FakeStream]:
        self.prev = PROBE.local.stream
        if self.stream is not None:
            PROBE.local.stream = self.stream
        return self.stream

    def __exit__(self, *exc: Any) -> None:
        PROBE.local.stream = self.prev


def _synchronize(device: Any = None) -> None:
    PROBE.host_wait("torch.cuda.synchronize()")


def _is_capturing() -> bool:
    return PROBE.current_stream().cuda_stream in PROBE.capturing


@contextlib.contextmanager
def capturing(stream: Optional[FakeStream] = None) -> Iterator[FakeStream]:
    """Pretend ``stream`` (default: a new one made current) is being captured into a CUDA graph."""
    s = stream or FakeStream()
    PROBE.capturing.add(s.cuda_stream)
    try:
        with _StreamContext(s):
            yield s
    finally:
        PROBE.capturing.discard(s.cuda_stream)


@contextlib.contextmanager
def installed(monkeypatch: Any, strict: bool = True) -> Iterator[Probe]:
    """Install the stand-ins and a strict probe on this thread; gpulog's writer thread (a fresh
    engine, started inside) runs under a permissive one."""
    from gpulog import _worker

    PROBE.reset()
    # Triton needs a real device (its interpreter copies to the host); the probe checks the torch
    # path that every kernel mirrors, and the launch wrappers' host code separately.
    monkeypatch.setenv("GPULOG_BACKEND", "torch")
    cuda = torch.cuda
    monkeypatch.setattr(cuda, "_lazy_init", lambda: None)
    monkeypatch.setattr(cuda, "is_available", lambda: True)
    monkeypatch.setattr(cuda, "current_stream", PROBE.current_stream)
    monkeypatch.setattr(cuda, "default_stream", lambda device=None: PROBE.default)
    monkeypatch.setattr(cuda, "Stream", FakeStream)
    monkeypatch.setattr(cuda, "Event", FakeEvent)
    monkeypatch.setattr(cuda, "stream", _StreamContext)
    monkeypatch.setattr(cuda, "synchronize", _synchronize)
    monkeypatch.setattr(cuda, "is_current_stream_capturing", _is_capturing)
    monkeypatch.setattr(cuda, "current_device", lambda: 0)
    monkeypatch.setattr(cuda, "device_count", lambda: 1)

    old_engine = _worker._engine
    orig_run = threading.Thread.run

    def run_probed(self: threading.Thread) -> None:
        if not self.name.startswith("gpulog"):
            return orig_run(self)
        PROBE.local.strict = False
        with IndexProbe(), SyncProbe(strict=False):
            orig_run(self)

    monkeypatch.setattr(threading.Thread, "run", run_probed)
    monkeypatch.setattr(_worker, "_engine", None)
    PROBE.local.strict = strict
    try:
        with IndexProbe(), SyncProbe(strict=strict):
            yield PROBE
    finally:
        PROBE.local.strict = False
        eng = _worker._engine
        if eng is not None and eng is not old_engine:
            eng.stop()
        _worker._engine = old_engine
