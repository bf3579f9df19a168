"""Packing: every entry's reduced parts → two flat float64 buffers → the merged parts again.

A summary kind declares how its parts merge (``MERGE`` in ``_encode/<kind>.py``, like
torchmetrics' ``dist_reduce_fx``): a sequence of ``(name, op)`` with ``op`` one of

========  =====================================================================
``sum``   added across ranks (the SUM buffer)
``mean``  added, then divided by the world size on rank 0
``rank0`` rank 0's value (the SUM buffer, zeros from the other ranks)
``max``   the largest (the MAX buffer)
``min``   the smallest (negated into the MAX buffer, negated back)
========  =====================================================================

This module knows no kind: it packs any entry by its declaration, so one SUM and one MAX
``all_reduce`` carry a whole sync point, and unpacks them into the arrays the kind's
``from_merged``-style encoder takes, in declaration order.  Parts are host floats (Python
numbers: no tensor per call) or tensors on the data's device.  Counts are exact in float64 up to
2**53.  This module never communicates.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .._transfer import to_device

Part = Union[float, torch.Tensor]
_SUM_OPS = ("sum", "mean", "rank0")
OPS = _SUM_OPS + ("max", "min")


@dataclass
class Entry:
    """One summary waiting for a sync point: ``encode(*meta, *merged parts)`` on rank 0."""

    kind: str                          # "scalar" | "histogram" | "pr_curve" | ...
    method: str                        # the add_* that made it (for warnings)
    tag: str
    step: Optional[int]
    wall: float
    merge: Sequence[Tuple[str, str]]   # the kind's declaration: (part name, op)
    parts: Sequence[Part]              # one per declared part, on this rank
    encode: Callable[..., Any]         # _encode/<kind>.py: (*meta, *merged) -> Summary.Value bytes
    meta: Tuple[Any, ...] = ()         # host-side encoding arguments
    sink: Any = None                   # rank 0: the event file, resolved at the call

    def signature(self) -> Tuple[Any, ...]:
        """What every rank must agree on before the collectives (``protocol``)."""
        return (self.kind, self.tag, self.step, tuple(op for _, op in self.merge),
                tuple(size(p) for p in self.parts))


def size(part: Part) -> int:
    return 1 if isinstance(part, float) else part.numel()


def entry(kind: str, method: str, tag: str, step: Optional[int], wall: float,
          merge: Sequence[Tuple[str, str]], parts: Sequence[Any], encode: Callable[..., Any],
          meta: Tuple[Any, ...], sink: Any, is_writer: bool) -> Entry:
    """An entry whose parts follow ``merge``; on non-writer ranks ``rank0`` parts become zeros."""
    if len(parts) != len(merge):
        raise AssertionError(f"{kind}: {len(parts)} parts for a declaration of {len(merge)}")
    fixed = []
    for (_, op), p in zip(merge, parts):
        if op not in OPS:
            raise AssertionError(f"{kind}: unknown merge op {op!r}")
        if isinstance(p, (int, np.floating)) and not isinstance(p, bool):
            p = float(p)
        if op == "rank0" and not is_writer:
            p = 0.0 if isinstance(p, float) else torch.zeros_like(p)
        fixed.append(p)
    return Entry(kind, method, tag, step, wall, tuple(merge), tuple(fixed), encode, meta, sink)


def pack(entries: Sequence[Entry], device: torch.device) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor]]:
    """(SUM buffer, MAX buffer) on ``device``, float64, None where empty."""
    sums: List[Part] = []
    maxes: List[Part] = []
    for e in entries:
        for (_, op), p in zip(e.merge, e.parts):
            if op in _SUM_OPS:
                sums.append(p)
            else:
                maxes.append(-p if op == "min" else p)
    return _flat(sums, device), _flat(maxes, device)


def unpack(e: Entry, world: int, sums: np.ndarray, s_at: int, maxes: np.ndarray, m_at: int
           ) -> Tuple[List[np.ndarray], int, int]:
    """Entry ``e``'s merged parts (declaration order), read from the reduced buffers at the
    given offsets; returns them and the offsets of the next entry."""
    out = []
    for (_, op), p in zip(e.merge, e.parts):
        n = size(p)
        if op in _SUM_OPS:
            v = sums[s_at:s_at + n]
            s_at += n
            if op == "mean":
                v = v / world
        else:
            v = maxes[m_at:m_at + n]
            m_at += n
            if op == "min":
                v = -v
        out.append(v)
    return out, s_at, m_at


def offsets(entries: Sequence[Entry]) -> List[Tuple[int, int]]:
    """Where each entry's parts start in the SUM and MAX buffers."""
    at, s, m = [], 0, 0
    for e in entries:
        at.append((s, m))
        for (_, op), p in zip(e.merge, e.parts):
            if op in _SUM_OPS:
                s += size(p)
            else:
                m += size(p)
    return at


def _flat(parts: Sequence[Part], device: torch.device) -> Optional[torch.Tensor]:
    """One flat float64 buffer on ``device`` (runs of host floats go up in one pinned copy)."""
    pieces: List[torch.Tensor] = []
    floats: List[float] = []
    for p in parts:
        if isinstance(p, float):
            floats.append(p)
            continue
        if floats:
            pieces.append(to_device(torch.tensor(floats, dtype=torch.float64), device))
            floats = []
        pieces.append(to_device(p.reshape(-1).to(torch.float64), device))
    if floats:
        pieces.append(to_device(torch.tensor(floats, dtype=torch.float64), device))
    if not pieces:
        return None
    return pieces[0].clone() if len(pieces) == 1 else torch.cat(pieces)
