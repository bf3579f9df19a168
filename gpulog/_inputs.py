"""The one input module: every ``add_*`` checks and coerces its arguments here, at the call, on
every rank (tags, text, steps, wall times, numbers, arrays, one-element values, the bfloat16
rules), before any reduction starts.

Torch is imported lazily and only when the caller passes a tensor, so numpy-only users and the
host-side modules never pay for it.  Errors name the argument, what was received and what fits.
"""
from __future__ import annotations

import numbers
import sys
import time
from typing import Any, Optional

import numpy as np


REDUCE_OPS = ("mean", "sum", "min", "max", None)  # how add_scalar combines ranks (distributed=True)


def bad_reduce(reduce: Any) -> None:
    raise ValueError(f"reduce must be one of 'mean', 'sum', 'min', 'max' or None (rank 0's value), got "
                     f"{reduce!r:.40}; it says how distributed=True combines the ranks' values")


def is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def is_cuda_tensor(x: Any) -> bool:
    """A tensor on a CUDA device (other accelerators and ``meta`` take the host path, which
    reads them with ``.item()`` or rejects them at the call)."""
    return is_tensor(x) and x.device.type == "cuda"


def local(t: Any, name: str) -> Any:
    """A tensor gpulog can reduce where it lives: CPU and CUDA tensors as they are; tensors on
    other accelerators (MPS, XPU, ...) copied to the host now (a synchronous read: gpulog's
    device path is CUDA-only); ``meta`` tensors, which hold no values, rejected at the call."""
    kind = t.device.type
    if kind in ("cpu", "cuda"):
        return t
    if kind == "meta":
        raise ValueError(f"{name} is a meta tensor: it has a shape but no values to log; pass a "
                         "tensor that holds data")
    return t.detach().cpu()


def check_tag(tag: Any, name: str = "tag") -> str:
    if type(tag) is not str:
        if isinstance(tag, str):
            tag = str(tag)
        else:
            raise TypeError(f"{name} must be a str, got {type(tag).__name__} ({tag!r:.60})")
    if not tag.isascii():
        check_text(tag, name)
    return tag


def check_text(text: str, name: str) -> str:
    """``text`` must encode as UTF-8 (a lone surrogate, e.g. from a mis-decoded file, cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"{name} cannot be written as UTF-8 ({err.reason} at position {err.start}: "
                         f"{text[max(0, err.start - 10):err.end + 10]!r}); fix the string, e.g. "
                         ".encode('utf-8', 'replace').decode()") from err
    return text


def positive(x: Any, name: str, integer: bool = False, maximum: float = float("inf")) -> Any:
    """A positive finite number (Python or numpy) not above ``maximum``, as ``int``/``float``."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, numbers.Real):
        kind = "an integer" if integer else "a number"
        raise TypeError(f"{name} must be {kind}, got {type(x).__name__} ({x!r:.40})")
    if integer and not isinstance(x, numbers.Integral):
        if not float(x).is_integer():
            raise ValueError(f"{name} must be a whole number, got {x!r}")
    value: Any = int(x) if integer else float(x)  # type: ignore[call-overload]
    if not (value > 0 and value <= maximum) or value != value:
        raise ValueError(f"{name} must be positive{f' and at most {maximum:g}' if maximum != float('inf') else ''}, "
                         f"got {x!r}")
    return value


def scalar(x: Any, name: str = "scalar_value") -> float:
    """A host float from a Python number, numpy value or one-element CPU tensor."""
    if isinstance(x, (str, bytes)):
        raise TypeError(f"{name} must be a number, got a {type(x).__name__} ({x!r:.60}); "
                        "log text with add_text")
    if isinstance(x, numbers.Real):
        try:
            return float(x)
        except OverflowError as err:
            raise ValueError(f"{name} is too large for a float64 ({x!r:.40}); log a smaller number "
                             "(or its logarithm)") from err
    if is_tensor(x):
        one_element(x, name)
        if x.is_complex():
            raise TypeError(f"{name} must be real, got a {x.dtype} tensor")
        if x.device.type == "meta":
            raise ValueError(f"{name} is a meta tensor and has no value to log")
        return float(x.detach().reshape(()).item())
    if isinstance(x, np.ndarray) or isinstance(x, np.generic):
        arr = np.asarray(x)
        if arr.size != 1:
            raise ValueError(f"{name} must hold exactly one element, got an array of shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_) or np.iscomplexobj(arr):
            raise TypeError(f"{name} must be a real number, got dtype {arr.dtype}")
        return float(arr.reshape(()))
    raise TypeError(f"{name} must be a number, numpy value or one-element tensor, got "
                    f"{type(x).__name__}")


def to_numpy(x: Any, name: str) -> np.ndarray:
    """A host ndarray from numpy data, a CPU tensor, a list or a number (no dtype change,
    except bfloat16, which numpy lacks and is widened to float32)."""
    if isinstance(x, np.ndarray):
        if not x.dtype.isnative:  # big-endian data (from a file, a network): native order
            x = x.astype(x.dtype.newbyteorder("="))
        return x
    if is_tensor(x):
        torch = sys.modules["torch"]
        t = local(x.detach(), name)
        if t.device.type != "cpu":
            t = t.cpu()
        from ._transfer import widen_bf16_for_numpy
        t = widen_bf16_for_numpy(t)
        return t.resolve_conj().resolve_neg().numpy()
    if isinstance(x, (str, bytes)) or x is None:
        raise TypeError(f"{name} must be an array or tensor, got {type(x).__name__}")
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be an array or tensor, got {type(x).__name__}") from err
    if arr.dtype == object:
        raise TypeError(f"{name} must be numeric, got {type(x).__name__} with non-numeric items")
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    return arr


INT64_MIN, INT64_MAX = -2**63, 2**63 - 1


def to_step(global_step: Any, device_ok: bool = True) -> Any:
    """``None`` or an integral step in int64 (ints, integral floats, numpy ints, one-element
    tensors): the event's ``step`` field is an int64, and a larger value would be written
    wrapped or undecodable (TensorBoard's reload thread dies on it).

    A one-element integer tensor on a CUDA device is not read here (that would wait for the
    device): it becomes a ``_transfer.DeviceStep``, copied to the host asynchronously and read on
    the writer thread.  Where the step is needed on the host at the call (``device_ok=False``:
    purge_step, embedding folders, protobuf events) a CUDA step is a ``TypeError``."""
    if global_step is None:
        return None
    if type(global_step) is int:
        step = global_step
    else:
        if is_cuda_tensor(global_step):
            if not device_ok:
                raise TypeError("global_step must be a host integer here (it is needed at the call); "
                                "pass int(step), or log from a host counter")
            one_element(global_step, "global_step")
            if global_step.is_floating_point() or global_step.is_complex() or \
                    global_step.dtype == sys.modules["torch"].bool:
                raise TypeError(f"global_step on a CUDA device must be an integer tensor (it is read "
                                f"on the writer thread, so a fraction could not be refused at the "
                                f"call), got {global_step.dtype}; pass step.long()")
            from ._transfer import DeviceStep
            return DeviceStep(global_step)
        if isinstance(global_step, bool) or isinstance(global_step, bytes):
            raise TypeError(f"global_step must be an integer, got {global_step!r}")
        if isinstance(global_step, str):  # torch's writer takes int(global_step): "5" is 5
            try:
                return to_step(int(global_step.strip()))
            except ValueError:
                raise TypeError(f"global_step must be an integer, got {global_step!r:.40}") from None
        try:
            step = int(global_step)
        except (TypeError, ValueError, OverflowError) as err:
            raise TypeError(f"global_step must be an integer, got {type(global_step).__name__} "
                            f"({global_step!r:.40})") from err
        if isinstance(global_step, float) and step != global_step:
            raise ValueError(f"global_step must be a whole number, got {global_step!r}")
    if not INT64_MIN <= step <= INT64_MAX:
        raise ValueError(f"global_step must fit in int64 (-2**63 .. 2**63-1), got {step}; "
                         "TensorBoard stores steps as int64")
    return step


def to_walltime(walltime: Any) -> float:
    """The event's wall time: now, or the number given (seconds since the epoch)."""
    if walltime is None:
        return time.time()
    try:
        return float(walltime)
    except (TypeError, ValueError) as err:
        raise TypeError(f"walltime must be a number of seconds, got {walltime!r}") from err


def one_element(t: Any, name: str) -> None:
    """A value logged as one number (a scalar, a step, a raw statistic) must hold exactly one:
    checked by shape, so a CUDA tensor is never read here."""
    if t.numel() != 1:
        raise ValueError(f"{name} must hold exactly one element, got shape {tuple(t.shape)}; "
                         "reduce it first (e.g. .mean())")


def narrow_bf16_as_torch(t: Any) -> Any:
    """bfloat16 -> float16, as torch's writer converts PR-curve predictions and audio before it
    computes (the results then match torch's bit for bit); other dtypes unchanged.  (Where a
    tensor becomes a numpy array, bfloat16 is widened instead: ``_transfer.widen_bf16_for_numpy``.)"""
    torch = sys.modules["torch"]
    return t.half() if t.dtype == torch.bfloat16 else t


def float64_number(v: Any, name: str) -> Any:
    """A raw summary's statistic: a one-element CUDA tensor as float64 (staged later, no sync),
    else a one-element float64 array."""
    if is_cuda_tensor(v):
        one_element(v, name)
        return v.detach().reshape(1).double()
    import numpy as np
    return np.array([scalar(v, name)])


def float64_row(v: Any, name: str) -> Any:
    """A raw summary's row as float64: a flat CUDA tensor (staged later), or a host array (a copy)."""
    if is_cuda_tensor(v):
        return v.detach().reshape(-1).double()
    return to_numpy(v, name).astype("float64").ravel()
