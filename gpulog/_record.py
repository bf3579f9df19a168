"""TFRecord framing and event-file naming (host side, torch-free).

A record is ``uint64 length | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)``,
all little-endian.  Files are named exactly as torch names them,
``events.out.tfevents.<%010d time>.<host>.<pid>.<counter><suffix>``, where the counter is
process-global and increases for every event file created, so two writers never collide.
"""
from __future__ import annotations

import itertools
import os
import socket
import struct
import time
from typing import BinaryIO, Iterator, Tuple

from ._crc32c import crc32c, mask

_pack_q = struct.Struct("<Q").pack
_pack_i = struct.Struct("<I").pack
_unpack_q = struct.Struct("<Q").unpack_from
_unpack_i = struct.Struct("<I").unpack_from
_file_counter = itertools.count()


def frame(data: bytes) -> bytes:
    """One TFRecord around ``data``."""
    header = _pack_q(len(data))
    return header + _pack_i(mask(crc32c(header))) + data + _pack_i(mask(crc32c(data)))


def event_file_name(suffix: str = "", now: float | None = None) -> str:
    stamp = int(time.time() if now is None else now)
    return f"events.out.tfevents.{stamp:010d}.{socket.gethostname()}.{os.getpid()}.{next(_file_counter)}{suffix}"


class CorruptRecordWarning(RuntimeWarning):
    """A damaged record was met while reading; what came before it was kept."""


READ_STEP = 1 << 26  # the most one read of a record asks for


def read_records(fh: BinaryIO, path: str, check_crc: bool = True) -> Iterator[Tuple[int, bytes]]:
    """Stream ``(offset, payload)`` from an open event file, one record in memory at a time.

    Like TensorBoard's reader it never gives up on what it read: a truncated last record (a
    writer still appending) ends the file silently; a record whose data CRC fails is skipped with
    a :class:`CorruptRecordWarning` naming the file and offset (its length was intact, so the next
    record is found); a damaged length (its own CRC fails) cannot be stepped over, so the file
    stops there, with a warning.
    """
    import warnings
    pos = 0
    while True:
        header = fh.read(12)
        if len(header) < 12:
            return
        (length,) = _unpack_q(header, 0)
        if check_crc and _unpack_i(header, 8)[0] != mask(crc32c(header[:8])):
            warnings.warn(f"{path}: corrupt record length at offset {pos}; the rest of this file "
                          "is skipped", CorruptRecordWarning, stacklevel=3)
            return
        # Read in bounded steps: without the CRC check a damaged length (up to 2**64) must end the
        # file as a torn record does, not ask for that much memory at once.
        need = length + 4
        body = fh.read(min(need, READ_STEP))
        while len(body) < need:
            more = fh.read(min(need - len(body), READ_STEP))
            if not more:
                break
            body += more
        if len(body) < need:
            return  # truncated last record
        payload = body[:length]
        if check_crc and _unpack_i(body, length)[0] != mask(crc32c(payload)):
            warnings.warn(f"{path}: corrupt record at offset {pos} (data CRC mismatch); skipped",
                          CorruptRecordWarning, stacklevel=3)
        else:
            yield pos, payload
        pos += 12 + length + 4
