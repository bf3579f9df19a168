"""Read event files back: events with CRC checks, scalars per tag, runs of a logdir.

Paths may be local or remote (``s3://``, ``gs://``, ``memory://``: any fsspec URL, as TensorBoard
reads them).  Files are streamed (one record in memory at a time).  A truncated last record (a writer still
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
    import warnings
    path = os.fspath(path)
    fs = _fs(path)
    for f in event_files(path):
        with fs.open(f, "rb") as fh:
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
    return {tag: [(step, parsed["value"]) for step, parsed in values]
            for tag, values in read_summaries(path, "scalars").items()}


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
