"""``add_hparams``: check the hyperparameters and metrics at the call; stage CUDA values.

Data contract: hparam values are int, float, str, bool, None or one-element tensors (CPU ones read
now, CUDA ones staged in one asynchronous copy and filled in on the writer thread: no wait at the
call); metric values are numbers or one-element tensors.  The three hparams events and one scalar
per metric go to the run's own event file (``FileWriter`` given to :func:`submit`).
"""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .. import _inputs
from .._encode import hparams as enc_hparams
from .._encode import scalar as enc_scalar


def check(hparam_dict: Any, metric_dict: Any, domain: Any) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """Validated (hparams, metrics); ``ValueError``/``TypeError`` naming the key otherwise."""
    hparams = _check_hparams(hparam_dict, metric_dict, domain)
    metrics = {_inputs.check_tag(k, "metric_dict key"):
               _device_number(v, f"metric_dict[{k!r}]") if _inputs.is_cuda_tensor(v)
               else _inputs.scalar(v, f"metric_dict[{k!r}]") for k, v in metric_dict.items()}
    return hparams, metrics


def submit(fw: Any, hparams: Dict[str, Any], metrics: Dict[str, Any], domain: Any,
           step: Optional[int]) -> None:
    """Queue the hparams events and the metric scalars to ``fw``."""
    now = time.time()
    from_device = [(d, k) for d in (hparams, metrics) for k, v in d.items() if _inputs.is_tensor(v)]
    if from_device:
        from .._transfer import DeviceStaged
        staged = DeviceStaged([d[k] for d, k in from_device])
        for part in range(3):
            fw.submit(_hparams_part, (part, hparams, metrics, domain, from_device), step, now, 0,
                      staged, method="add_hparams")
        for i, (d, k) in enumerate(from_device):
            if d is metrics:
                fw.submit(_scalar_from_staged, (k, i), step, time.time(), 0, staged, method="add_hparams")
    else:
        for values in enc_hparams.hparams(hparams, metrics, domain):
            fw.submit(_constant, (values,), step, now, method="add_hparams")
    for k, v in metrics.items():
        if not _inputs.is_tensor(v):
            fw.submit_scalar(k, v, step, time.time())


def _constant(values: List[bytes]) -> List[bytes]:
    return values

def _device_number(v: Any, name: str) -> Any:
    """A one-element CUDA tensor kept on the device (read on the writer thread), as float64."""
    _inputs.one_element(v, name)
    if v.is_complex():
        raise TypeError(f"{name} must be real, got a {v.dtype} tensor")
    return v.detach().reshape(1).double()

def _hparams_part(part: int, hparams: Dict[str, Any], metrics: Dict[str, Any], domain: Any,
                  from_device: List[Any], *arrays: np.ndarray) -> List[bytes]:
    """Writer thread: one of the three hparams events, with the staged device values filled in."""
    filled = {id(hparams): dict(hparams), id(metrics): dict(metrics)}
    for (d, k), arr in zip(from_device, arrays):
        filled[id(d)][k] = float(arr.reshape(-1)[0])
    return enc_hparams.hparams(filled[id(hparams)], filled[id(metrics)], domain)[part]

def _scalar_from_staged(tag: str, index: int, *arrays: np.ndarray) -> List[bytes]:
    return enc_scalar.from_array(tag, False, False, arrays[index].reshape(-1)[:1])


def _check_hparams(hparam_dict: Any, metric_dict: Any, domain: Any) -> Dict[str, Any]:
    if not isinstance(hparam_dict, dict) or not isinstance(metric_dict, dict):
        raise TypeError("hparam_dict and metric_dict must be dicts, got "
                        f"{type(hparam_dict).__name__} and {type(metric_dict).__name__}")
    out: Dict[str, Any] = {}
    for k, v in hparam_dict.items():
        k = _inputs.check_tag(k, "hparam_dict key")
        if _inputs.is_cuda_tensor(v):
            v = _device_number(v, f"hparam_dict[{k!r}]")  # read on the writer thread: no wait here
        elif _inputs.is_tensor(v):
            v = float(_inputs.local(v.detach(), f"hparam_dict[{k!r}]").reshape(-1)[0].item())
        elif isinstance(v, np.generic):
            v = v.item()
        elif callable(v) and not isinstance(v, (int, float, str, bool)):
            v = getattr(v, "__name__", repr(v))
        if v is not None and not isinstance(v, (int, float, str, bool)) and not _inputs.is_tensor(v):
            raise ValueError(f"hparam_dict[{k!r}] must be an int, float, str, bool or tensor, "
                             f"got {type(v).__name__}")
        out[k] = v
    if domain is not None:
        if not isinstance(domain, dict):
            raise TypeError(f"hparam_domain_discrete must be a dict, got {type(domain).__name__}")
        for k, values in domain.items():
            if k not in out or not isinstance(values, list) or \
                    not all(isinstance(d, float if _inputs.is_tensor(out[k]) else type(out[k]))
                            for d in values):
                raise TypeError(f"hparam_domain_discrete[{k!r}] must be a list of values of the "
                                f"same type as hparam_dict[{k!r}]")
    return out
