"""Read event files back: events with CRC checks, scalars per tag, runs of a logdir.

Paths may be local or remote (``s3://``, ``gs://``, ``memory://``: any fsspec URL, as TensorBoard
reads them).  Files are streamed (one record in memory at a time).  A truncated last record (a writer still
appending, or a killed process) ends a file silently; a damaged record, or one that does not
decode as an event, is skipped with a :class:`CorruptRecordWarning` naming the file and offset,
and everything around it is kept (a damaged length stops that file).  Torch-free.
"""
from __future__ import annotations

import os
import struct
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np

from ._proto.decode import Event, Value, parse_event
from ._record import READ_STEP, CorruptRecordWarning, read_records

__all__ = ["CorruptRecordWarning", "event_files", "runs", "iter_events", "read_events", "read_scalars",
           "read_summaries"]

PathLike = Union[str, "os.PathLike[str]"]


class _Local:
    """The four filesystem calls the reader makes, on local paths (fsspec's names)."""

    @staticmethod
    def isfile(path: str) -> bool:
        return os.path.isfile(path)

    @staticmethod
    def isdir(path: str) -> bool:
        return os.path.isdir(path)

    @staticmethod
    def listdir(path: str) -> List[str]:
        return [os.path.join(path, f) for f in os.listdir(path)]

    @staticmethod
    def open(path: str, mode: str = "rb") -> Any:
        return open(path, mode)


class _Remote:
    def __init__(self, url: str) -> None:
        from ._remote import filesystem
        self.fs = filesystem(url)
        self.scheme = url.partition("://")[0]

    def _url(self, path: str) -> str:
        return path if "://" in path else f"{self.scheme}://{path.lstrip('/') if self.scheme != 'memory' else path}"

    def isfile(self, path: str) -> bool:
        return bool(self.fs.isfile(path))

    def isdir(self, path: str) -> bool:
        return bool(self.fs.isdir(path))

    def listdir(self, path: str) -> List[str]:
        return [self._url(p) for p in self.fs.ls(path, detail=False)]

    def open(self, path: str, mode: str = "rb") -> Any:
        return self.fs.open(path, mode)


def _fs(path: str) -> Any:
    from ._remote import is_remote
    return _Remote(path) if is_remote(path) else _Local()


def event_files(path: PathLike) -> List[str]:
    """Event files of one run: ``path`` itself, or the ``*tfevents*`` files directly in it,
    in name order (the order TensorBoard reads them)."""
    path = os.fspath(path)
    fs = _fs(path)
    if fs.isfile(path):
        return [path]
    return sorted(p for p in fs.listdir(path) if "tfevents" in p.rsplit("/", 1)[-1] and fs.isfile(p))


def runs(logdir: PathLike) -> Dict[str, List[str]]:
    """``{run: event files}`` for every directory under ``logdir`` holding event files
    (run ``"."`` is ``logdir`` itself)."""
    root = os.fspath(logdir).rstrip("/") or "/"
    fs = _fs(root)
    out: Dict[str, List[str]] = {}
    todo = [root]
    while todo:
        d = todo.pop()
        entries = fs.listdir(d)
        if any("tfevents" in p.rsplit("/", 1)[-1] and fs.isfile(p) for p in entries):
            rel = "." if d == root else d[len(root):].strip("/").replace("/", os.sep)
            out[rel] = event_files(d)
        todo += [p for p in entries if fs.isdir(p)]
    return dict(sorted(out.items()))


def iter_events(path: PathLike, check_crc: bool = True) -> Iterator[Event]:
    """Every event of a file, or of the event files of one run directory, in file order
    (streamed: a file is read ``SCAN_CHUNK`` bytes at a time where the native extension is built,
    one record at a time otherwise)."""
    path = os.fspath(path)
    fs = _fs(path)
    scan = _native_event_scan()
    for f in event_files(path):
        with fs.open(f, "rb") as fh:
            if scan is not None:
                yield from _scan_events(scan, fh, f, check_crc)
                continue
            for offset, payload in read_records(fh, f, check_crc):
                ev = _decode(f, offset, payload)
                if ev is not None:
                    yield ev


def _decode(f: str, offset: int, payload: bytes) -> Optional[Event]:
    """The Python decoder on one record; None (and a warning naming the place) if it is not an event."""
    try:
        return parse_event(payload)
    except Exception as err:  # noqa: BLE001 - any malformed bytes: skip, say where
        import warnings
        warnings.warn(f"{f}: record at offset {offset} is not a valid event "
                      f"({type(err).__name__}: {err}); skipped", CorruptRecordWarning, stacklevel=4)
        return None


def _native_event_scan() -> Any:
    try:
        from . import _native
        return _native.scan_events
    except (ImportError, AttributeError):
        return None


def _event_context() -> Tuple[Any, ...]:
    """What the native scan builds scalar events from: the decoder's classes and the attribute
    values its parse functions give them (the dataclasses' defaults), so both decoders give
    equal objects (tests/test_reader_native.py)."""
    from ._proto.decode import Tensor
    ev = Event(wall_time=0.0, step=0, has_summary=True)
    simple = Value(tag="", kind="scalar", scalar=0.0)
    tensor = Value(tag="", kind="tensor", plugin_name="scalars")
    return (Event, Value, vars(ev), vars(simple), Tensor, vars(tensor), vars(Tensor(0, [], None)),  # type: ignore[arg-type]
            np.frombuffer, np.dtype("<f4"), np.dtype("<f8"))


def _read_more(fh: Any, buf: bytes) -> bytes:
    """The next read of a native scan, whose unconsumed ``buf`` starts at a record it could not
    finish: ``SCAN_CHUNK`` bytes, or that record's rest at once if it is longer (at most
    ``READ_STEP``, a damaged length may claim anything): growing a large record (an image, a
    graph) chunk by chunk would re-copy it once per chunk."""
    want = SCAN_CHUNK
    if len(buf) >= 8:
        (length,) = struct.unpack_from("<Q", buf)
        want = max(want, min(12 + length + 4 - len(buf), READ_STEP))
    return fh.read(want)


def _scan_events(scan: Any, fh: Any, f: str, check_crc: bool) -> Iterator[Event]:
    """One file by the native scan: scalar events built in C, every other record decoded by
    :func:`parse_event`; damaged records warned about as :func:`read_records` does."""
    import warnings
    ctx = _event_context()
    buf, base, more = b"", 0, True
    while more:
        chunk = _read_more(fh, buf)
        more = bool(chunk)
        buf += chunk
        items, others, problems, consumed = scan(buf, check_crc, ctx)
        for pos, kind in problems:
            warnings.warn(f"{f}: " + _PROBLEMS[kind].format(pos=base + pos), CorruptRecordWarning,
                          stacklevel=3)
        if others:
            for it in items:
                if it.__class__ is tuple:
                    it = _decode(f, base + it[0], it[1])
                    if it is None:
                        continue
                yield it
        else:
            yield from items
        if any(kind == 0 for _, kind in problems):
            return  # a damaged length: nothing after it can be found in this file
        base += consumed
        buf = buf[consumed:]


def read_events(path: PathLike, check_crc: bool = True) -> List[Event]:
    """Every event of a file, or of the event files of one run directory."""
    return list(iter_events(path, check_crc))


def read_scalars(path: PathLike, as_frame: bool = False) -> Any:
    """``{tag: [(step, value), ...]}`` in file order, for simple_value and new_style scalars.

    ``as_frame=True``: a pandas DataFrame with columns ``tag, step, value`` (one row per value,
    grouped by tag in first-seen order, then in file order) instead; needs pandas (``ImportError``
    saying so otherwise).  Where gpulog's native extension is built, each file is scanned in C
    straight into arrays (the Python decoder, :func:`read_summaries`, is the fallback); both skip
    damaged records with the same :class:`CorruptRecordWarning`."""
    if as_frame:
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError("read_scalars(..., as_frame=True) needs pandas: pip install pandas") from err
    columns = _scan_scalars(os.fspath(path))
    if columns is None:  # no native extension: the Python decoder
        scalars = {tag: [(step, parsed["value"]) for step, parsed in values]
                   for tag, values in read_summaries(path, "scalars").items()}
        if not as_frame:
            return scalars
        rows = [(tag, step, value) for tag, values in scalars.items() for step, value in values]
        return pd.DataFrame(rows, columns=["tag", "step", "value"])
    tags, ids, steps, values = columns
    order = np.argsort(ids, kind="stable")  # by tag (ids are first-seen order), then file order
    if as_frame:
        return pd.DataFrame({"tag": np.array(tags, dtype=object)[ids[order]], "step": steps[order],
                             "value": values[order]})
    counts = np.bincount(ids, minlength=len(tags))
    bounds = np.concatenate([[0], np.cumsum(counts)])
    steps_sorted, values_sorted = steps[order].tolist(), values[order].tolist()
    return {tag: list(zip(steps_sorted[bounds[i]:bounds[i + 1]], values_sorted[bounds[i]:bounds[i + 1]]))
            for i, tag in enumerate(tags)}


SCAN_CHUNK = 1 << 20  # bytes the native scan reads at a time: files are streamed, never read whole
_PROBLEMS = {0: "corrupt record length at offset {pos}; the rest of this file is skipped",
             1: "corrupt record at offset {pos} (data CRC mismatch); skipped",
             2: "record at offset {pos} is not a valid event; skipped"}


def _scan_scalars(path: str) -> Any:
    """(tags, tag ids, steps, values) of every scalar of the run at ``path``, by the native scan
    (``gpulog/_native.c``: ``scan_scalars``), or None without the extension."""
    return scan_files(event_files(path), _fs(path))


def scan_files(files: List[str], fs: Any, others: Optional[List[Tuple[str, bytes]]] = None) -> Any:
    """:func:`_scan_scalars` of the given event files; ``others``: a list that receives
    ``(file, event payload)`` of every event holding more than scalars (for ``gpulog inspect``,
    which decodes only those in Python).  None without the native extension."""
    try:
        from . import _native
        scan = _native.scan_scalars
    except (ImportError, AttributeError):
        return None
    import warnings
    index: Dict[str, int] = {}
    ids, steps, values = [], [], []
    for f in files:
        with fs.open(f, "rb") as fh:
            buf, base, more = b"", 0, True
            while more:
                chunk = _read_more(fh, buf)
                more = bool(chunk)
                buf += chunk
                found: Optional[List[bytes]] = [] if others is not None else None
                file_tags, tag_ids, file_steps, file_values, problems, consumed = scan(buf, True, found)
                if found:
                    others.extend((f, payload) for payload in found)  # type: ignore[union-attr]
                for pos, kind in problems:
                    warnings.warn(f"{f}: " + _PROBLEMS[kind].format(pos=base + pos), CorruptRecordWarning,
                                  stacklevel=3)
                if tag_ids:
                    remap = np.array([index.setdefault(t, len(index)) for t in file_tags], dtype=np.int64)
                    ids.append(remap[np.frombuffer(tag_ids, dtype=np.int32)])
                    steps.append(np.frombuffer(file_steps, dtype=np.int64))
                    values.append(np.frombuffer(file_values, dtype=np.float64))
                if any(kind == 0 for _, kind in problems):
                    break  # a damaged length: nothing after it can be found in this file
                base += consumed
                buf = buf[consumed:]
    tags = list(index)  # insertion order is id order: first seen, across the files in name order
    if not ids:
        return tags, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float64)
    return tags, np.concatenate(ids), np.concatenate(steps), np.concatenate(values)


def read_summaries(path: PathLike, plugin: str) -> Dict[str, List[Tuple[int, Dict[str, Any]]]]:
    """``{tag: [(step, values), ...]}`` in file order for one plugin: ``"scalars"``,
    ``"histograms"``, ``"images"`` (add_video's GIFs too), ``"audio"``, ``"text"``,
    ``"pr_curves"``, ``"mesh"``, ``"hparams"``, ``"custom_scalars"`` or ``"tensor"``.  ``values``
    is what the kind's module parses back (``gpulog._encode.<kind>.parse``): e.g. ``num``,
    ``min``, ``max``, ``bucket_limit``, ``bucket`` for histograms; ``curve``, ``precision``,
    ``recall`` for PR curves; ``width``, ``height``, ``format`` for images; ``text`` for text."""
    from ._encode import plugin_of, plugins
    module = plugins().get(plugin)
    if module is None:
        raise ValueError(f"plugin must be one of {', '.join(sorted(plugins()))}, got {plugin!r}")
    out: Dict[str, List[Tuple[int, Dict[str, Any]]]] = {}
    for ev in iter_events(path):
        for v in ev.values:
            if plugin_of(v) == plugin:
                out.setdefault(v.tag, []).append((ev.step, module.parse(v)))
    return out
