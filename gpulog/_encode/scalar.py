"""Scalar summaries: ``simple_value`` (float32) or torch's ``new_style`` rank-0 tensor.

The event of a plain scalar is built from a per-tag cached prefix: for a given tag every byte
except wall_time, step and the 4 value bytes is fixed, so encoding costs two ``struct.pack`` calls.
tests/test_wire.py checks these bytes against protobuf's own serialization.
"""
from __future__ import annotations

import math
import struct
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .._proto import messages as m
from .._proto.wire import f_str, varint

PLUGIN_NAME = "scalars"


def merge(reduce: Optional[str]) -> tuple:
    """How one scalar merges across ranks (``distributed.packing``): the ``reduce=`` the caller
    chose — ``"mean"``, ``"sum"``, ``"max"``, ``"min"``, or None: rank 0's own value."""
    return (("value", reduce or "rank0"),)

_pack_d = struct.Struct("<d").pack
_pack_f = struct.Struct("<f").pack
_prefix: Dict[str, bytes] = {}


def _f32(value: float) -> bytes:
    try:
        return _pack_f(value)
    except OverflowError:  # beyond float32 range: protobuf stores ±inf, as torch's writer does
        return _pack_f(math.copysign(math.inf, value))


def _tag_prefix(tag: str) -> bytes:
    p = _prefix.get(tag)
    if p is None:
        val = f_str(1, tag) + b"\x15"
        val_len = len(val) + 4
        summ_len = 1 + len(varint(val_len)) + val_len
        p = b"\x2a" + varint(summ_len) + b"\x0a" + varint(val_len) + val
        if len(_prefix) < 65536:  # bounded cache; unusual tag churn falls back to recomputing
            _prefix[tag] = p
    return p


def scalar_event(tag: str, value: float, step: Optional[int], wall: float) -> bytes:
    """Serialized Event{wall_time, step, summary{value{tag, simple_value}}}."""
    head = b"\x09" + _pack_d(wall) if wall else b""
    if step:
        head += b"\x10" + varint(step)
    return head + _tag_prefix(tag) + _f32(value)


def new_style(tag: str, value: float, double_precision: bool) -> List[bytes]:
    """torch's new_style scalar: rank-0 DT_FLOAT (or DT_DOUBLE) tensor, plugin ``scalars``."""
    md = m.summary_metadata(PLUGIN_NAME)
    if double_precision:
        tensor = m.double_tensor(np.array([value]), None)
    else:
        tensor = m.float_tensor(np.array([value], dtype=np.float32), None)
    return [m.summary_value(tag, tensor=tensor, metadata=md)]


def from_array(tag: str, new_style_: bool, double_precision: bool, value: np.ndarray) -> List[bytes]:
    """A scalar that arrived as a one-element array (device scalars, after their async copy)."""
    v = float(value.reshape(()))
    if new_style_:
        return new_style(tag, v, double_precision)
    return [m.summary_value(tag, simple_value=v)]


def parse(value: Any) -> Dict[str, float]:
    """A decoded ``Summary.Value`` written by this module: ``{"value": float}`` (simple_value or
    the new-style one-element tensor)."""
    if value.kind == "scalar":
        return {"value": float(value.scalar)}
    return {"value": float(np.asarray(value.tensor.value).reshape(-1)[0])}


def describe(parsed: Dict[str, float]) -> str:
    return f"{parsed['value']:.6g}"


_prefixes: Dict[str, bytes] = {}


def _value_prefix(tag: str) -> bytes:
    """``Summary.Value{1: tag, 2: <float32 follows>}``'s bytes before the value (cached)."""
    p = _prefixes.get(tag)
    if p is None:
        p = m.summary_value(tag, simple_value=0.0)[:-4]
        if len(_prefixes) < 1 << 20:
            _prefixes[tag] = p
    return p


def simple_values(tags: Sequence[str], vals: np.ndarray) -> List[bytes]:
    """One simple_value per tag: float32 as protobuf stores it (beyond its range: ±inf)."""
    with np.errstate(over="ignore"):
        raw = np.asarray(vals, dtype=np.float64).astype("<f4").tobytes()
    return [_value_prefix(t) + raw[4 * i:4 * i + 4] for i, t in enumerate(tags)]


def batch(tags: List[str], values: np.ndarray) -> List[bytes]:
    """``add_scalar_batch``: one simple_value per tag (the values of one step, in one event)."""
    return simple_values(tags, np.asarray(values).astype(np.float64).reshape(-1))


def batch_from_bf16_bits(tags: List[str], bits: np.ndarray) -> List[bytes]:
    """:func:`batch` of bfloat16 values passed as their int16 bits (numpy has no bfloat16)."""
    wide = (np.asarray(bits).astype(np.int16).view(np.uint16).astype(np.uint32) << 16).view(np.float32)
    return batch(tags, wide)
