"""Model watching: per-tensor raw moments → the statistics users read, as scalars and histograms.

Data contract: the reduction (``_reduce/watch.py``) gives, per watched tensor, the row
``RAW = (count, sum, sum_squares, nonfinite, zeros, max, absmax, min)`` in float64 (counts exact to
2**53), computed over the tensor's **finite** values (non-finite ones are counted in
``nonfinite`` and left out of every other column, so one bad element does not hide the rest); and,
on histogram steps, counts over TensorBoard's default edges.  Rows of one tensor's shards or
micro-batches merge exactly by ``MERGE``; this module derives the statistics from merged rows:

======================  ===================================================================
``norm``                sqrt(sum_squares): L2 norm of the finite values
``mean``                sum / n, n = count - nonfinite (NaN when n = 0)
``std``                 sqrt((sum_squares - sum**2 / n) / (n - 1)), unbiased like torch.std
``min`` / ``max``       of the finite values (NaN where there are none)
``absmax``              max |x| of the finite values
``nonfinite``           count of NaN and ±inf
``zero_frac``           zeros / n
======================  ===================================================================

Tags: ``<prefix><what>_<stat>/<name>`` (``grad_norm/fc1.weight``, ``param_std/fc1.weight``), so
TensorBoard draws one section per statistic with one chart per tensor, and the custom-scalars
layout (:func:`layout`) puts every tensor of a statistic on one chart; totals
``<prefix>total_grad_norm`` / ``total_param_norm``; histograms ``<prefix><what>_hist/<name>``.
The values are ordinary scalars and histograms: the reader needs no plugin of its own.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._proto import messages as m
from . import histogram as enc_histogram
from . import scalar as enc_scalar

RAW = ("count", "sum", "sum_squares", "nonfinite", "zeros", "max", "absmax", "min")
N_SUM = 5   # the first five columns add up across shards; then two maxima and one minimum
MERGE = (("sums", "sum"), ("maxima", "max"), ("minima", "min"))
STATS = ("norm", "mean", "std", "min", "max", "absmax", "nonfinite", "zero_frac")


def derive(row: np.ndarray) -> Dict[str, float]:
    """The statistics of one merged raw row (see the module docstring)."""
    n, s, ss, bad, zeros, mx, amax, mn = (float(v) for v in row)
    nf = n - bad  # finite values: every statistic but ``nonfinite`` is over them
    out = {"norm": math.sqrt(max(ss, 0.0)), "nonfinite": bad}
    if nf > 0:
        var = (ss - s * s / nf) / (nf - 1) if nf > 1 else math.nan
        out.update(mean=s / nf, std=math.sqrt(max(var, 0.0)) if var == var else math.nan,
                   zero_frac=zeros / nf, min=mn, max=mx, absmax=amax)
    else:
        out.update(mean=math.nan, std=math.nan, zero_frac=math.nan, min=math.nan, max=math.nan,
                   absmax=math.nan)
    return out


def split(merged: Sequence[np.ndarray], n_rows: int) -> Tuple[np.ndarray, np.ndarray]:
    """(raw rows [n_rows, 8], histogram counts flat) from the merged parts of :data:`MERGE`."""
    sums, maxima, minima = (np.asarray(p, dtype=np.float64) for p in merged)
    head = sums[:n_rows * N_SUM].reshape(n_rows, N_SUM)
    rows = np.concatenate([head, maxima.reshape(n_rows, 2), minima.reshape(n_rows, 1)], axis=1)
    return rows, sums[n_rows * N_SUM:]


def from_merged(names: Sequence[Tuple[str, str]], stats: Sequence[str], prefix: str,
                hist_names: Sequence[Tuple[str, str]], edges: Optional[np.ndarray],
                report: Optional[Callable[..., List[bytes]]], step: Any, sums: np.ndarray,
                maxima: np.ndarray, minima: np.ndarray) -> List[bytes]:
    """Summary values of one log step from the parts of :data:`MERGE` (one rank's, or every
    rank's merged).  ``names[i] = (what, tensor name)`` for row ``i`` (what: ``param``, ``grad``,
    ``act``); ``hist_names`` likewise for the histogram rows (counts over ``edges``);
    ``report(what, name, count, step, wall)`` is told of the first non-finite row and returns
    values to write with it."""
    rows, hist_counts = split((sums, maxima, minima), len(names))
    out = values(names, stats, prefix, rows)
    if hist_names:
        out += histograms(names, hist_names, prefix, edges, rows, hist_counts)
    bad = first_nonfinite(names, rows)
    if bad is not None and report is not None:
        import time
        out += report(*bad, step, time.time())
    return out


def derive_all(rows: np.ndarray) -> Dict[str, np.ndarray]:
    """:func:`derive` of every row at once (numpy, float64): the same formulas, vectorised."""
    rows = np.asarray(rows, dtype=np.float64).reshape(-1, 8)
    n, s, ss, bad, zeros, mx, amax, mn = rows.T
    nf = n - bad
    with np.errstate(divide="ignore", invalid="ignore"):
        some = nf > 0
        mean = np.where(some, s / nf, np.nan)
        var = np.where(nf > 1, (ss - s * s / nf) / (nf - 1), np.nan)
        std = np.sqrt(np.where(np.isnan(var), np.nan, np.maximum(var, 0.0)))
        return {"norm": np.sqrt(np.maximum(ss, 0.0)), "mean": mean, "std": std,
                "min": np.where(some, mn, np.nan), "max": np.where(some, mx, np.nan),
                "absmax": np.where(some, amax, np.nan), "nonfinite": bad,
                "zero_frac": np.where(some, zeros / nf, np.nan)}


def values(names: Sequence[Tuple[str, str]], stats: Sequence[str], prefix: str,
           rows: np.ndarray) -> List[bytes]:
    """The scalar statistics of each row, then the total norms of parameters and gradients."""
    out: List[bytes] = []
    if len(names):
        derived = derive_all(rows)
        for stat in stats:
            out += enc_scalar.simple_values([f"{prefix}{what}_{stat}/{name}" for what, name in names],
                                            derived[stat])
    for what in ("grad", "param"):
        sq = [max(float(r[2]), 0.0) for (w, _), r in zip(names, rows) if w == what]
        if sq:
            out.append(m.summary_value(f"{prefix}total_{what}_norm", simple_value=math.sqrt(sum(sq))))
    return out


# The update-to-parameter ratio ||new - old|| / ||old|| per parameter: squared norms add up.
RATIO_MERGE = (("delta_sq", "sum"), ("param_sq", "sum"))


def ratio_values(prefix: str, names: Sequence[str], delta_sq: np.ndarray, param_sq: np.ndarray) -> List[bytes]:
    out = []
    for name, d, p in zip(names, delta_sq, param_sq):
        ratio = math.sqrt(float(d)) / math.sqrt(float(p)) if p > 0 else math.nan
        out.append(m.summary_value(f"{prefix}update_ratio/{name}", simple_value=ratio))
    return out


def histograms(names: Sequence[Tuple[str, str]], hist_names: Sequence[Tuple[str, str]], prefix: str,
               edges: Optional[np.ndarray], rows: np.ndarray, hist_counts: np.ndarray) -> List[bytes]:
    """One histogram per ``hist_names`` entry over ``edges`` (TensorBoard's default buckets)."""
    out: List[bytes] = []
    assert edges is not None
    width = len(edges) - 1
    for i, ((what, name), row) in enumerate(zip(hist_names, _hist_rows(names, hist_names, rows))):
        counts = np.rint(hist_counts[i * width:(i + 1) * width]).astype(np.int64)
        if counts.sum() == 0:
            continue  # no finite value: TensorBoard cannot draw an empty histogram
        n, s, ss = float(counts.sum()), float(row[1]), float(row[2])
        stats_ = np.array([row[7], row[5], n, s, ss])
        out.extend(enc_histogram.histogram(f"{prefix}{what}_hist/{name}", edges, None, counts, stats_))
    return out


def _hist_rows(names: Sequence[Tuple[str, str]], hist_names: Sequence[Tuple[str, str]],
               rows: np.ndarray) -> List[np.ndarray]:
    where = {key: i for i, key in enumerate(names)}
    return [rows[where[key]] for key in hist_names]


def first_nonfinite(names: Sequence[Tuple[str, str]], rows: np.ndarray) -> Optional[Tuple[str, str, int]]:
    """``(what, name, count)`` of the first row (in watch order: parameters before gradients,
    model order within) with non-finite values, or None."""
    for (what, name), row in zip(names, rows):
        if row[3] > 0:
            return what, name, int(row[3])
    return None


def layout(prefix: str, whats: Sequence[str], stats: Sequence[str]) -> Dict[str, Dict[str, List[Any]]]:
    """A custom-scalars layout: one chart per (what, statistic) with every tensor on it."""
    charts = {f"{what}_{stat}": ["Multiline", [f"{prefix}{what}_{stat}/.*"]] for what in whats for stat in stats}
    return {f"{prefix}watch" if prefix else "watch": charts}
