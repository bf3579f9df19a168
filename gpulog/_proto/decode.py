"""A small protobuf wire decoder for reading event files back (host side, torch-free).

``fields(buf)`` splits one message into ``{field_number: [raw values]}``: ints for varints,
``bytes`` for length-delimited fields and for fixed 32/64-bit fields (decode with ``struct``).
Typed helpers below turn Events and their Summary values into plain Python objects.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

import numpy as np

Raw = Union[int, bytes]


class DecodeError(ValueError):
    """The bytes are not a well-formed protobuf message."""


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(buf):
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long")


def fields(buf: bytes) -> Dict[int, List[Raw]]:
    out: Dict[int, List[Raw]] = {}
    pos, n = 0, len(buf)
    while pos < n:
        k, pos = _varint(buf, pos)
        num, wt = k >> 3, k & 7
        if wt == 0:
            v, pos = _varint(buf, pos)
            out.setdefault(num, []).append(v)
            continue
        size = {1: 8, 5: 4}.get(wt)
        if wt == 2:
            size, pos = _varint(buf, pos)
        if size is None or pos + size > n:
            raise DecodeError(f"bad wire type {wt} or truncated field {num}")
        out.setdefault(num, []).append(buf[pos:pos + size])
        pos += size
    return out


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _first(f: Dict[int, List[Raw]], num: int, default: Raw = 0) -> Raw:
    vals = f.get(num)
    return vals[-1] if vals else default


def _unpack_varints(raw: List[Raw]) -> List[int]:
    """Repeated varint field: packed (bytes) or unpacked (ints) encodings."""
    out: List[int] = []
    for item in raw:
        if isinstance(item, int):
            out.append(item)
            continue
        pos = 0
        while pos < len(item):
            v, pos = _varint(item, pos)
            out.append(v)
    return out


def _unpack_fixed(raw: List[Raw], fmt: str, width: int) -> np.ndarray:
    data = b"".join(r for r in raw if isinstance(r, bytes))
    return np.frombuffer(data, dtype=fmt, count=len(data) // width)


@dataclass
class Histogram:
    min: float
    max: float
    num: float
    sum: float
    sum_squares: float
    bucket_limit: np.ndarray
    bucket: np.ndarray


@dataclass
class Tensor:
    dtype: int
    shape: List[int]
    value: np.ndarray  # decoded values, reshaped (strings as an object array)


@dataclass
class Value:
    tag: str
    kind: str  # "scalar" | "histogram" | "image" | "audio" | "tensor" | "empty"
    plugin_name: str = ""
    plugin_content: bytes = b""
    scalar: Optional[float] = None
    histogram: Optional[Histogram] = None
    image: Optional[Dict[str, object]] = None
    audio: Optional[Dict[str, object]] = None
    tensor: Optional[Tensor] = None


@dataclass
class Event:
    wall_time: float
    step: int
    file_version: str = ""
    session_log_status: int = 0
    values: List[Value] = field(default_factory=list)
    has_summary: bool = False
    has_graph: bool = False            # graph_def (4) or meta_graph_def (9)
    run_metadata_tag: str = ""         # tagged_run_metadata (8)
    graph_def: bytes = b""             # graph_def (4), serialized GraphDef


def _double(raw: Raw) -> float:
    return struct.unpack("<d", raw)[0] if isinstance(raw, bytes) and len(raw) == 8 else 0.0


_DT_NP = {1: "<f4", 2: "<f8", 3: "int32", 4: "uint8", 5: "int16", 6: "int8", 9: "int64",
          10: "bool", 19: "<f2", 14: "bfloat16", 8: "complex64", 18: "complex128"}


def parse_tensor(buf: bytes) -> Tensor:
    """TensorProto → values; reads tensor_content and every typed repeated field."""
    f = fields(buf)
    dtype = int(_first(f, 1))
    shape = [int(_first(fields(d), 1)) for d in fields(_first(f, 2, b"")).get(2, [])]  # type: ignore[arg-type]
    content = _first(f, 4, b"")
    if dtype == 7:
        value: np.ndarray = np.array(f.get(8, []), dtype=object)
    elif content:
        value = np.frombuffer(content, dtype=_np_dtype(dtype))  # type: ignore[arg-type]
    elif dtype == 1:
        value = _unpack_fixed(f.get(5, []), "<f4", 4)
    elif dtype == 2:
        value = _unpack_fixed(f.get(6, []), "<f8", 8)
    elif dtype == 8:
        value = _unpack_fixed(f.get(9, []), "<f4", 4).view("<c8")
    elif dtype == 18:
        value = _unpack_fixed(f.get(12, []), "<f8", 8).view("<c16")
    elif dtype in (19, 14):
        bits = np.array(_unpack_varints(f.get(13, [])), dtype=np.uint32).astype(np.uint16)
        value = bits.view("<f2").astype(np.float32) if dtype == 19 else \
            (bits.astype(np.uint32) << 16).view("<f4")
    elif dtype == 9:
        value = np.array([_int64(v) for v in _unpack_varints(f.get(10, []))], dtype=np.int64)
    elif dtype == 10:
        value = np.array(_unpack_varints(f.get(11, [])), dtype=bool)
    elif dtype == 4:
        ints = _unpack_varints(f.get(7, [])) or _unpack_varints(f.get(16, []))
        value = np.array(ints, dtype=np.uint8)
    else:
        value = np.array([_int64(v) for v in _unpack_varints(f.get(7, []))],
                         dtype=_np_dtype(dtype) if dtype in _DT_NP else np.int64)
    if shape and value.size == int(np.prod(shape)):
        value = value.reshape(shape)
    return Tensor(dtype, shape, value)


def _np_dtype(dt: int) -> np.dtype:
    name = _DT_NP.get(dt)
    if name is None:
        raise DecodeError(f"unsupported tensor dtype {dt}")
    if name == "bfloat16":
        return np.dtype("<u2")
    return np.dtype(name)


def parse_value(buf: bytes) -> Value:
    f = fields(buf)
    tag = bytes(_first(f, 1, b"")).decode("utf-8")  # type: ignore[arg-type]
    v = Value(tag=tag, kind="empty")
    if 9 in f:
        md = fields(f[9][-1])  # type: ignore[arg-type]
        if 1 in md:
            pd = fields(md[1][-1])  # type: ignore[arg-type]
            v.plugin_name = bytes(_first(pd, 1, b"")).decode()  # type: ignore[arg-type]
            v.plugin_content = bytes(_first(pd, 2, b""))  # type: ignore[arg-type]
    if 2 in f:
        v.kind, v.scalar = "scalar", struct.unpack("<f", f[2][-1])[0]  # type: ignore[arg-type]
    elif 5 in f:
        h = fields(f[5][-1])  # type: ignore[arg-type]
        v.kind = "histogram"
        mn, mx, num, total, squares = (_double(_first(h, i, b"")) for i in range(1, 6))
        v.histogram = Histogram(mn, mx, num, total, squares,
                                bucket_limit=_unpack_fixed(h.get(6, []), "<f8", 8),
                                bucket=_unpack_fixed(h.get(7, []), "<f8", 8))
    elif 4 in f:
        im = fields(f[4][-1])  # type: ignore[arg-type]
        v.kind = "image"
        v.image = {"height": _first(im, 1), "width": _first(im, 2), "colorspace": _first(im, 3),
                   "encoded": bytes(_first(im, 4, b""))}  # type: ignore[arg-type]
    elif 6 in f:
        au = fields(f[6][-1])  # type: ignore[arg-type]
        v.kind = "audio"
        v.audio = {"sample_rate": struct.unpack("<f", _first(au, 1, b"\0\0\0\0"))[0],  # type: ignore[arg-type]
                   "num_channels": _first(au, 2), "length_frames": _first(au, 3),
                   "encoded": bytes(_first(au, 4, b"")),  # type: ignore[arg-type]
                   "content_type": bytes(_first(au, 5, b"")).decode()}  # type: ignore[arg-type]
    elif 8 in f:
        v.kind, v.tensor = "tensor", parse_tensor(f[8][-1])  # type: ignore[arg-type]
    return v


def parse_event(buf: bytes) -> Event:
    f = fields(buf)
    ev = Event(wall_time=_double(_first(f, 1, b"")), step=_int64(int(_first(f, 2))))
    if 3 in f:
        ev.file_version = bytes(f[3][-1]).decode()  # type: ignore[arg-type]
    if 7 in f:
        ev.session_log_status = int(_first(fields(f[7][-1]), 1))  # type: ignore[arg-type]
    ev.has_graph = 4 in f or 9 in f
    if 4 in f:
        ev.graph_def = bytes(f[4][-1])  # type: ignore[arg-type]
    if 8 in f:
        ev.run_metadata_tag = bytes(_first(fields(f[8][-1]), 1, b"")).decode("utf-8", "replace")  # type: ignore[arg-type]
    if 5 in f:
        ev.has_summary = True
        ev.values = [parse_value(b) for b in fields(f[5][-1]).get(1, [])]  # type: ignore[arg-type,misc]
    return ev
