"""Read event files back: events with CRC checks, scalars per tag, runs of a logdir.

Files are streamed (one record in memory at a time).  A truncated last record (a writer still
appending, or a killed process) ends a file silently; a damaged record, or one that does not
decode as an event, is skipped with a :class:`CorruptRecordWarning` naming the file and offset,
and everything around it is kept (a damaged length stops that file).  Torch-free.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Iterator, List, Tuple, Union

import numpy as np

from ._proto.decode import Event, parse_event
from ._record import CorruptRecordWarning, read_records

__all__ = ["CorruptRecordWarning", "event_files", "runs", "iter_events", "read_events", "read_scalars"]

PathLike = Union[str, "os.PathLike[str]"]


def event_files(path: PathLike) -> List[str]:
    """Event files of one run: ``path`` itself, or the ``*tfevents*`` files directly in it,
    in name order (the order TensorBoard reads them)."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [path]
    return sorted(os.path.join(path, f) for f in os.listdir(path)
                  if "tfevents" in f and os.path.isfile(os.path.join(path, f)))


def runs(logdir: PathLike) -> Dict[str, List[str]]:
    """``{run: event files}`` for every directory under ``logdir`` holding event files
    (run ``"."`` is ``logdir`` itself)."""
    out: Dict[str, List[str]] = {}
    root = os.fspath(logdir)
    for d, _, files in sorted(os.walk(root)):
        if any("tfevents" in f for f in files):
            out[os.path.relpath(d, root)] = event_files(d)
    return out


def iter_events(path: PathLike, check_crc: bool = True) -> Iterator[Event]:
    import warnings
    for f in event_files(path):
        with open(f, "rb") as fh:
            for offset, payload in read_records(fh, f, check_crc):
                try:
                    ev = parse_event(payload)
                except Exception as err:  # noqa: BLE001 - any malformed bytes: skip, say where
                    warnings.warn(f"{f}: record at offset {offset} is not a valid event "
                                  f"({type(err).__name__}: {err}); skipped", CorruptRecordWarning,
                                  stacklevel=2)
                    continue
                yield ev


def read_events(path: PathLike, check_crc: bool = True) -> List[Event]:
    """Every event of a file, or of the event files of one run directory."""
    return list(iter_events(path, check_crc))


def read_scalars(path: PathLike, as_frame: bool = False) -> Any:
    """``{tag: [(step, value), ...]}`` in file order, for simple_value and new_style scalars.

    ``as_frame=True``: a pandas DataFrame with columns ``tag, step, value`` (one row per value, in
    file order) instead; needs pandas (``ImportError`` saying so otherwise)."""
    if as_frame:
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("read_scalars(..., as_frame=True) needs pandas: pip install pandas") from err
        rows = [(tag, step, value) for tag, values in read_scalars(path).items() for step, value in values]
        return pd.DataFrame(rows, columns=["tag", "step", "value"])
    out: Dict[str, List[Tuple[int, float]]] = {}
    for ev in iter_events(path):
        for v in ev.values:
            if v.kind == "scalar":
                out.setdefault(v.tag, []).append((ev.step, float(v.scalar)))  # type: ignore[arg-type]
            elif v.kind == "tensor" and v.plugin_name == "scalars" and v.tensor is not None:
                out.setdefault(v.tag, []).append((ev.step, float(np.asarray(v.tensor.value).reshape(-1)[0])))
    return out
