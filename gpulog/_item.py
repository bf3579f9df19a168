"""What the writer thread receives (torch-free): an :class:`Item`, a :class:`Barrier` or :data:`STOP`.

Every stage (the plain path, the distributed merge on rank 0, the compiled-step rings, model
watching, system metrics) hands the writer the same thing: an ``Item`` naming its kind, the
method that produced it, tag, step, wall time and event file, and — when its data is not on the
host yet — a staged result (``_transfer``'s ``Staged`` protocol).  The writer thread dispatches on
the class, never on a position in a tuple.

A plain scalar (a host float with a host step: the hot path, ~1 µs a call in all) travels in its
compact form, the 5-tuple ``(sink key, tag, value, step, wall)`` — it *is* ``Item(kind="scalar",
method="add_scalar", ...)`` without the object: building a slotted object costs ~70 ns more per
value than a tuple (measured: 141 vs 74 ns per append), the native framer reads the tuple's
fields directly, and a tuple of a number, a str and floats is untracked by the cyclic GC after
its first collection (``Sink.key``, not the sink: the GC's passes over queued objects took ~40%
of a call).  Nothing else travels as a tuple.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Tuple

# Item.out: what ``encode(*meta, *staged.result())`` returns, and so what the writer frames.
SUMMARY = "summary"  # a list of serialized Summary.Value: one Event(wall, step, summary) is written
EVENTS = "events"    # a list of serialized Events, written as they are (graphs, raw events)
FILES = "files"      # nothing: side files were written (embeddings); errors are OSErrors


class Item:
    """One summary (or a few events) on its way to an event file.

    Data contract: ``staged`` is None or has ``result() -> tuple of numpy arrays`` (callable on the
    writer thread only) and ``ready() -> bool``; ``step`` is None, an int, or a ``DeviceStep``
    (``ready()``/``value()``); ``nbytes`` is the array payload counted against the hand-off's byte
    cap until the writer has encoded it.  ``sink`` is the event file, resolved at the call.
    """

    __slots__ = ("kind", "method", "tag", "step", "wall", "sink", "encode", "meta", "staged",
                 "nbytes", "out")

    def __init__(self, kind: str, method: str, tag: Optional[str], step: Any, wall: float,
                 sink: Any, encode: Callable[..., Any], meta: Sequence[Any] = (),
                 staged: Any = None, nbytes: int = 0, out: str = SUMMARY) -> None:
        self.kind, self.method, self.tag = kind, method, tag
        self.step, self.wall, self.sink = step, wall, sink
        self.encode, self.meta, self.staged = encode, tuple(meta), staged
        self.nbytes, self.out = nbytes, out

    def ready(self) -> bool:
        """Can the writer encode it now, without waiting (its data and step are on the host)?"""
        step = self.step
        if step is not None and step.__class__ is not int and not step.ready():
            return False
        staged = self.staged
        return staged is None or bool(staged.ready())

    def describe(self) -> str:
        """``add_histogram(tag='w', step=3)``: for warnings about this item."""
        return f"{self.method}(tag={self.tag!r}, step={self.step if self.step.__class__ in (int, type(None)) else '<device>'})"


class Barrier:
    """``flush()``/``close()``: ``done`` is set once the writer has written (and, if ``close``,
    closed) ``sink``'s records, or every file's when ``sink`` is None."""

    __slots__ = ("sink", "close", "done")

    def __init__(self, sink: Any, close: bool, done: Any) -> None:
        self.sink, self.close, self.done = sink, close, done


class _Stop:
    """The end of the writer thread (``Engine.stop``)."""

    __slots__ = ()
    sink = None


STOP = _Stop()

Scalar = Tuple[int, str, float, Any, float]  # the compact form of a plain scalar item (see above)
