"""Packing: each item's small reduced result → slices of two flat float64 buffers → events.

Per item, a **sum part** (reduced with SUM across ranks) and a **max part** (MAX):

=============  =====================================================  ============================
kind           sum part                                               max part
=============  =====================================================  ============================
scalar mean    value (divided by the world size on rank 0)            —
scalar sum     value                                                  —
scalar max     —                                                      value
scalar min     —                                                      −value
scalar None    rank 0's value, 0 elsewhere                            —
histogram      bucket counts, num, sum, sum of squares, NaN flag      max, −min (NaN → −inf)
               ``bins=<int>``: the same                               ... then the shared edges
pr_curve       tp buckets, fp buckets                                 —
=============  =====================================================  ============================

Parts are host floats (Python numbers: no tensor per call) or tensors on the data's device; a
sync point packs them in order, host runs as one tensor, so one SUM and one MAX ``all_reduce``
carry everything.  Counts are exact in float64 up to 2**53.  This module never communicates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .._encode import histogram as enc_histogram
from .._encode import pr_curve as enc_pr_curve
from .._encode import scalar as enc_scalar
from .._proto.messages import event_with_summary, summary
from .._transfer import to_device

Part = Union[None, float, torch.Tensor]
from .._inputs import REDUCE_OPS  # noqa: E402,F401 - re-exported for gpulog.distributed


@dataclass
class Entry:
    kind: str                 # "scalar" | "histogram" | "pr_curve"
    tag: str
    step: Optional[int]
    wall: float
    reduce: Optional[str]
    sum_part: Part
    max_part: Part
    meta: Tuple[Any, ...]     # host-side encoding arguments
    target: Any = None        # rank 0: the sink (event file) the event goes to

    def signature(self) -> Tuple[Any, ...]:
        return (self.kind, self.tag, self.step, self.reduce, size(self.sum_part), size(self.max_part))


def size(part: Part) -> int:
    if part is None:
        return 0
    return 1 if isinstance(part, float) else part.numel()


def scalar_parts(value: Union[float, torch.Tensor], reduce: Optional[str], is_writer: bool
                 ) -> Tuple[Part, Part]:
    if reduce in ("mean", "sum"):
        return value, None
    if reduce == "max":
        return None, value
    if reduce == "min":
        return None, -value
    # None: rank 0's own value survives the SUM
    if is_writer:
        return value, None
    return (0.0 if isinstance(value, float) else torch.zeros_like(value)), None


def histogram_parts(counts: torch.Tensor, stats: torch.Tensor,
                    edges: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """``stats`` = [min, max, num, sum, sum_squares] (min/max NaN when a value is NaN)."""
    nan = torch.isnan(stats[0:2]).any().reshape(1)
    neg_inf = torch.full((2,), -math.inf, dtype=torch.float64, device=stats.device)
    extremes = torch.where(nan, neg_inf, torch.stack([stats[1], -stats[0]]))
    sum_part = torch.cat([counts.to(torch.float64), stats[2:5], nan.to(torch.float64)])
    max_part = extremes if edges is None else torch.cat([extremes, edges])
    return sum_part, max_part


def pr_parts(tp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    return torch.cat([tp.to(torch.float64), fp.to(torch.float64)])


def pack(parts: Sequence[Part], device: torch.device) -> Optional[torch.Tensor]:
    """One flat float64 buffer on ``device`` (host floats go up in one pinned copy)."""
    pieces: List[torch.Tensor] = []
    floats: List[float] = []
    for p in parts:
        if p is None:
            continue
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


def deliver(entries: List[Entry], world: int, sums: np.ndarray, maxes: np.ndarray
            ) -> List[Tuple[Any, bytes]]:
    """Writer thread, rank 0: split the reduced buffers back into one event per entry."""
    out = []
    si = mi = 0
    for e in entries:
        ns, nm = size(e.sum_part), size(e.max_part)
        s, m = sums[si:si + ns], maxes[mi:mi + nm]
        si, mi = si + ns, mi + nm
        if e.kind == "scalar":
            new_style, double_precision = e.meta
            value = {"mean": lambda: s[0] / world, "sum": lambda: s[0], "max": lambda: m[0],
                     "min": lambda: -m[0], None: lambda: s[0]}[e.reduce]()
            values = enc_scalar.from_array(e.tag, new_style, double_precision, np.array([value]))
        elif e.kind == "histogram":
            edges, max_bins = e.meta
            if edges is None:  # bins=<int>: the edges every rank counted with
                edges = m[2:]
            counts, num, total, squares, nans = s[:-4], s[-4], s[-3], s[-2], s[-1]
            mn, mx = (math.nan, math.nan) if nans > 0 else (-m[1], m[0])
            stats = np.array([mn, mx, num, total, squares])
            try:
                values = enc_histogram.histogram(e.tag, edges, max_bins,
                                                 np.rint(counts).astype(np.int64), stats)
            except ValueError as err:  # e.g. no finite value on any rank: skip this one, say so
                import warnings
                warnings.warn(f"gpulog: add_histogram({e.tag!r}, step={e.step}) skipped: {err}",
                              RuntimeWarning)
                continue
        else:
            num_thresholds, n = e.meta
            values = enc_pr_curve.pr_curve(e.tag, num_thresholds, s[:n], s[n:])
        out.append((e.target, event_with_summary(e.wall, e.step, summary(values))))
    return out
