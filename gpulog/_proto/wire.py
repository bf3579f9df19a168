"""Protocol-buffer wire format, encoded by hand (host side, torch-free).

gpulog owns its wire format instead of registering .proto files: the descriptor pool then never
clashes with tensorboard's or tensorboardX's generated code, and no protobuf runtime version is
pinned.  Fields are emitted in field-number order and proto3 defaults (0, "", empty) are omitted,
which is exactly what the protobuf serializer does, so the bytes equal ``SerializeToString()``
(tests/test_wire.py checks this against tensorboard's own messages).
"""
from __future__ import annotations

import struct
from typing import Iterable, Sequence

import numpy as np

VARINT, I64, LEN, I32 = 0, 1, 2, 5

_pack_d = struct.Struct("<d").pack
_pack_f = struct.Struct("<f").pack


def varint(n: int) -> bytes:
    """Base-128 varint; negative numbers as 64-bit two's complement (10 bytes), as protobuf does."""
    if n < 0:
        n += 1 << 64
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def key(field: int, wire_type: int) -> bytes:
    return varint((field << 3) | wire_type)


def f_varint(field: int, n: int) -> bytes:
    return key(field, VARINT) + varint(int(n)) if n else b""


def f_double(field: int, x: float) -> bytes:
    # proto3 omits +0.0 only (-0.0 has a sign bit and is written).
    return key(field, I64) + _pack_d(x) if x or _pack_d(x) != b"\0" * 8 else b""


def f_float(field: int, x: float) -> bytes:
    return key(field, I32) + _pack_f(x) if x or _pack_f(x) != b"\0" * 4 else b""


def f_bytes(field: int, b: bytes) -> bytes:
    return key(field, LEN) + varint(len(b)) + b if b else b""


def f_str(field: int, s: str) -> bytes:
    return f_bytes(field, s.encode("utf-8")) if s else b""


def f_msg(field: int, body: bytes, always: bool = False) -> bytes:
    """A sub-message; ``always`` writes it even when empty (a set-but-empty message)."""
    if not body and not always:
        return b""
    return key(field, LEN) + varint(len(body)) + body


def f_repeated_bytes(field: int, items: Iterable[bytes]) -> bytes:
    k = key(field, LEN)
    return b"".join(k + varint(len(b)) + b for b in items)


def f_packed_doubles(field: int, values: np.ndarray | Sequence[float]) -> bytes:
    data = np.ascontiguousarray(values, dtype="<f8").tobytes()
    return f_bytes(field, data)


def f_packed_floats(field: int, values: np.ndarray | Sequence[float]) -> bytes:
    data = np.ascontiguousarray(values, dtype="<f4").tobytes()
    return f_bytes(field, data)


def f_packed_varints(field: int, values: Iterable[int]) -> bytes:
    return f_bytes(field, b"".join(varint(int(v)) for v in values))
