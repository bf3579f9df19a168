"""PR curves: a [6, n] DT_FLOAT tensor (tp, fp, tn, fn, precision, recall), plugin ``pr_curves``.

``from_buckets`` finishes torch's ``compute_curve`` on the host from per-bucket weighted
true/false counts: reverse cumulative sums, tn/fn, and precision/recall with the 1e-7 floor.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from .._proto import messages as m

PLUGIN_NAME = "pr_curves"
MAX_THRESHOLDS = 127  # torch clamps silently; PrCurvePluginData stores the clamped value
_MINIMUM_COUNT = 1e-7

# Across ranks (``distributed.packing``): the weighted per-bucket counts add up.
MERGE = (("tp_buckets", "sum"), ("fp_buckets", "sum"))


def pr_curve_raw(tag: str, data: np.ndarray, num_thresholds: int) -> List[bytes]:
    """``data`` is the [6, k] stack of the six rows (any float dtype)."""
    data = np.asarray(data, dtype=np.float64)
    md = m.summary_metadata(PLUGIN_NAME, m.pr_curve_plugin_data(min(num_thresholds, MAX_THRESHOLDS)))
    tensor = m.float_tensor(data.astype(np.float32), list(data.shape))
    return [m.summary_value(tag, tensor=tensor, metadata=md)]


def from_buckets(tp_buckets: np.ndarray, fp_buckets: np.ndarray) -> np.ndarray:
    """[6, n] curve from weighted per-bucket counts (float64), as torch's compute_curve."""
    tp = np.cumsum(np.asarray(tp_buckets, dtype=np.float64)[::-1])[::-1]
    fp = np.cumsum(np.asarray(fp_buckets, dtype=np.float64)[::-1])[::-1]
    tn = fp[0] - fp
    fn = tp[0] - tp
    precision = tp / np.maximum(_MINIMUM_COUNT, tp + fp)
    recall = tp / np.maximum(_MINIMUM_COUNT, tp + fn)
    return np.stack((tp, fp, tn, fn, precision, recall))


def pr_curve(tag: str, num_thresholds: int, tp_buckets: np.ndarray, fp_buckets: np.ndarray) -> List[bytes]:
    return pr_curve_raw(tag, from_buckets(tp_buckets, fp_buckets), num_thresholds)


def pr_curve_raw_arrays(tag: str, num_thresholds: int, *rows: np.ndarray) -> List[bytes]:
    """:func:`pr_curve_raw` from the six rows staged separately."""
    return pr_curve_raw(tag, np.stack([np.asarray(r, dtype=np.float64) for r in rows]), num_thresholds)


def parse(value: Any) -> Dict[str, Any]:
    """The [6, n] curve (tp, fp, tn, fn, precision, recall) and the stored ``num_thresholds``."""
    from .._proto.decode import fields
    data = np.asarray(value.tensor.value, dtype=np.float64).reshape(6, -1)
    n = int((fields(value.plugin_content).get(2) or [data.shape[1]])[-1])  # type: ignore[arg-type]
    return {"num_thresholds": n, "curve": data, "precision": data[4], "recall": data[5]}


def describe(parsed: Dict[str, Any]) -> str:
    p, r = parsed["precision"], parsed["recall"]
    mid = len(p) // 2
    return f"{parsed['num_thresholds']} thresholds, precision {p[mid]:.3g} recall {r[mid]:.3g} at 0.5"
