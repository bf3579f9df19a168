"""Histograms: full bucket counts → torch's trimmed ``HistogramProto``.

Data contract: ``counts[i]`` counts values in ``[edges[i], edges[i+1])`` (the last bin closed),
``len(edges) == len(counts) + 1``.  ``trim`` keeps torch's support trimming: one leading zero
bucket whose limit is the left edge of the first non-empty bin, then every bin up to the last
non-empty one, each labelled by its right edge.  ``regroup`` is torch's ``max_bins`` merge.
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from .._proto import messages as m

PLUGIN_NAME = "histograms"  # TensorBoard's plugin for HistogramProto values (written without metadata)

# How the reduced parts of one histogram merge across ranks (``distributed.packing``): the parts
# ``_reduce.histogram.merge_parts`` produces, in this order, and the reduction of each.  NaN
# values make min and max NaN, which no MAX collective carries: a count of ranks that saw one
# travels instead (``nan``) and the extremes come as -inf/+inf from those ranks.
MERGE = (("counts", "sum"), ("num", "sum"), ("sum", "sum"), ("sum_squares", "sum"),
         ("nan", "sum"), ("max", "max"), ("min", "min"))
MERGE_WITH_EDGES = MERGE + (("edges", "max"),)  # bins=<int>: the (identical) global edges


def from_merged(tag: str, edges: Optional[np.ndarray], max_bins: Optional[int], counts: np.ndarray,
                num: np.ndarray, total: np.ndarray, squares: np.ndarray, nans: np.ndarray,
                mx: np.ndarray, mn: np.ndarray, merged_edges: Optional[np.ndarray] = None) -> List[bytes]:
    """The histogram of every rank's values, from the parts merged by :data:`MERGE`."""
    if edges is None:
        edges = merged_edges
    nan = float(nans[0]) > 0
    stats = np.array([math.nan if nan else float(mn[0]), math.nan if nan else float(mx[0]),
                      float(num[0]), float(total[0]), float(squares[0])])
    return histogram(tag, np.asarray(edges), max_bins, np.rint(counts).astype(np.int64), stats)


def regroup(counts: np.ndarray, edges: np.ndarray, max_bins: Optional[int]) -> Tuple[np.ndarray, np.ndarray]:
    num_bins = len(counts)
    if max_bins is None or num_bins <= max_bins:
        return counts, edges
    sub = num_bins // max_bins
    rem = num_bins % sub  # torch takes the remainder modulo `sub`, not `max_bins`; kept for parity
    if rem != 0:
        counts = np.pad(counts, pad_width=[[0, sub - rem]], mode="constant", constant_values=0)
    counts = counts.reshape(-1, sub).sum(axis=-1)
    new_edges = np.empty(counts.shape[0] + 1, dtype=edges.dtype)
    new_edges[:-1] = edges[:-1:sub][: counts.shape[0]]
    new_edges[-1] = edges[-1]
    return counts, new_edges


def trim(counts: np.ndarray, edges: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    nz = np.flatnonzero(counts)
    if nz.size == 0:
        raise ValueError("add_histogram: no value falls inside the bin edges (all values are NaN, "
                         "infinite or out of range); nothing to draw. Log finite values, or pass "
                         "explicit `bins` that cover them.")
    start, end = int(nz[0]), int(nz[-1]) + 1
    if start > 0:
        out_counts = counts[start - 1:end]
    else:
        out_counts = np.concatenate([[0], counts[:end]])
    return np.asarray(out_counts, dtype=np.float64), edges[start:end + 1]


def histogram(tag: str, edges: np.ndarray, max_bins: Optional[int], counts: np.ndarray,
              stats: np.ndarray) -> List[bytes]:
    """``stats`` = [min, max, num, sum, sum_squares] as float64."""
    counts, edges = regroup(np.asarray(counts), np.asarray(edges, dtype=np.float64), max_bins)
    bucket, limits = trim(counts, edges)
    mn, mx, num, s, ss = (float(x) for x in stats)
    return [m.summary_value(tag, histo=m.histogram_proto(mn, mx, num, s, ss, limits, bucket))]


def histogram_with_edges(tag: str, max_bins: Optional[int], counts: np.ndarray, stats: np.ndarray,
                         edges: np.ndarray) -> List[bytes]:
    """Edges computed with the data (on the device, or by an estimator on the writer thread)."""
    edges = np.asarray(edges, dtype=np.float64)
    if edges.size < 2 or np.any(np.diff(edges) < 0) or not np.all(np.isfinite(edges)):
        raise ValueError(f"add_histogram: the bin edges are not a finite, non-decreasing sequence "
                         f"(NaN or infinite values need explicit edges): {edges[:6]}...")
    return histogram(tag, edges, max_bins, counts, stats)


def histogram_raw(tag: str, stats: Tuple[float, ...], bucket_limits: np.ndarray,
                  bucket_counts: np.ndarray) -> List[bytes]:
    mn, mx, num, s, ss = stats
    return [m.summary_value(tag, histo=m.histogram_proto(mn, mx, num, s, ss, bucket_limits, bucket_counts))]


def histogram_raw_arrays(tag: str, mn: np.ndarray, mx: np.ndarray, num: np.ndarray, s: np.ndarray,
                         ss: np.ndarray, bucket_limits: np.ndarray, bucket_counts: np.ndarray) -> List[bytes]:
    """:func:`histogram_raw` from staged arrays (each statistic a one-element array)."""
    stats = tuple(float(np.asarray(v).reshape(-1)[0]) for v in (mn, mx, num, s, ss))
    return histogram_raw(tag, stats, np.asarray(bucket_limits, dtype=np.float64),
                         np.asarray(bucket_counts, dtype=np.float64))


def parse(value: Any) -> Dict[str, Any]:
    """A decoded ``HistogramProto`` value: statistics, ``bucket_limit`` (right edges) and
    ``bucket`` (counts), as TensorBoard reads them."""
    h = value.histogram
    return {"num": h.num, "min": h.min, "max": h.max, "sum": h.sum, "sum_squares": h.sum_squares,
            "bucket_limit": np.asarray(h.bucket_limit), "bucket": np.asarray(h.bucket)}


def describe(parsed: Dict[str, Any]) -> str:
    return f"n={parsed['num']:.6g} min={parsed['min']:.4g} max={parsed['max']:.4g}"
