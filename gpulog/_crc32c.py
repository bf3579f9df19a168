"""Masked CRC-32C as TFRecord framing needs it (host side, torch-free).

Uses google-crc32c's C extension (hardware CRC where available).  A pure-Python table version
is kept as the fallback and as an independent oracle for the tests; it is ~1000x slower, so the
fallback warns once.
"""
from __future__ import annotations

import warnings

_MASK_DELTA = 0xA282EAD8
_POLY = 0x82F63B78  # reflected Castagnoli polynomial


def _make_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ _POLY if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _make_table()


def crc32c_py(data: bytes) -> int:
    """Reference CRC-32C (init and final xor 0xFFFFFFFF)."""
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def _load_fast():  # type: ignore[no-untyped-def]
    try:
        import google_crc32c
        if google_crc32c.implementation == "c":
            return google_crc32c.value
    except ImportError:
        pass
    warnings.warn("gpulog: no C CRC32C implementation found (pip install google-crc32c); "
                  "using a slow pure-Python CRC", RuntimeWarning, stacklevel=2)
    return crc32c_py


crc32c = _load_fast()


def mask(crc: int) -> int:
    """TFRecord mask: rotate right by 15 bits, then add a constant (mod 2**32)."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + _MASK_DELTA) & 0xFFFFFFFF

