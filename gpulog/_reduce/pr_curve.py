"""PR-curve reduction: weighted true/false counts per threshold bucket (torch's compute_curve).

Data contract: bucket ``k = int32(floor(prediction * (n - 1)))`` computed in the predictions'
dtype (bfloat16 is first narrowed to float16, as torch's writer does); buckets outside [0, n-1]
(predictions < 0 or > 1, NaN) are dropped; ``tp[k] = Σ label·w``, ``fp[k] = Σ (1 - label)·w``
in float64.  Only these 2·n values cross to the host; the cumulative sums happen there.  On CPU the buckets
are counted on the writer thread from a snapshot taken at the call.
With integer labels and weights the sums are exact; fractional ones agree to float64 rounding.
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np
import torch

from .. import _inputs
from .._encode import pr_curve as enc
from .._encode.pr_curve import MAX_THRESHOLDS
from .._transfer import Ready, to_device
from ._backend import Prepared, finish, kernel_or, native, staged, threads


def buckets_torch(pred: torch.Tensor, labels: torch.Tensor, weights: Optional[torch.Tensor],
                  n: int, binary: Optional[bool] = None) -> Tuple[torch.Tensor, torch.Tensor]:
    """(tp, fp) float64 [n] on the input's device: the reference, CPU path and CUDA fallback."""
    idx = torch.floor(pred * (n - 1))
    keep = (idx >= 0) & (idx <= n - 1)
    k = torch.where(keep, idx, torch.full_like(idx, n)).long()  # dropped → spare bucket n
    if binary is None:
        binary = weights is None and not pred.is_cuda and _binary(labels)
    if binary:
        # 0/1 labels, no weights: one integer bincount over code = 2·bucket + label.
        counts = torch.bincount(k * 2 + labels.long(), minlength=2 * n + 2)[:2 * n]
        counts = counts.reshape(n, 2).double()
        return counts[:, 1].contiguous(), counts[:, 0].contiguous()
    lab = labels.double()
    w = torch.ones_like(lab) if weights is None else weights.double().expand_as(lab)
    tp = torch.zeros(n + 1, dtype=torch.float64, device=pred.device).index_add_(0, k, lab * w)
    fp = torch.zeros(n + 1, dtype=torch.float64, device=pred.device).index_add_(0, k, (1.0 - lab) * w)
    return tp[:n], fp[:n]


def buckets(pred: torch.Tensor, labels: torch.Tensor, weights: Optional[torch.Tensor],
            n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """:func:`buckets_torch`'s contract, run where the data lives by the fastest path there: the
    Triton kernel for CUDA data (else its torch reference), the fused native pass or chunked
    torch ops on CPU.  Queues device work only."""
    if pred.is_cuda:
        return kernel_or(pred, "pr_curve.buckets", buckets_torch)(pred, labels, weights, n)
    return buckets_chunked(pred, labels, weights, n)


def _integral(labels: torch.Tensor) -> bool:
    return labels.dtype in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def buckets_native(pred: torch.Tensor, labels: torch.Tensor, n: int, nthreads: int
                   ) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
    """float32 predictions, integer labels, no weights: one fused pass (gpulog/_native.c);
    None when a label is not 0 or 1."""
    counts = np.zeros(2 * n, dtype=np.int64)
    lab = labels.contiguous().numpy()
    if lab.dtype == np.bool_:
        lab = lab.view(np.uint8)
    if not native().pr_binary(pred.contiguous().numpy(), lab, counts, n, nthreads):
        return None
    both = counts.reshape(n, 2).astype(np.float64)
    return torch.from_numpy(both[:, 1].copy()), torch.from_numpy(both[:, 0].copy())


def _binary(labels: torch.Tensor) -> bool:
    if labels.is_floating_point() or labels.is_complex():
        return False
    if labels.dtype == torch.bool:
        return True
    mn, mx = torch.aminmax(labels)
    return bool(mn >= 0) and bool(mx <= 1)


def _tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return _inputs.local(x.detach(), name)
    return torch.from_numpy(np.array(_inputs.to_numpy(x, name)))


def validate(labels: Any, predictions: Any, weights: Any
             ) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
    """Checked (predictions, labels, weights) tensors; bfloat16 predictions narrowed to fp16."""
    pred, lab = _tensor(predictions, "predictions"), _tensor(labels, "labels")
    if pred.numel() == 0:
        raise ValueError("add_pr_curve: predictions is empty")
    if pred.shape != lab.shape:
        raise ValueError(f"add_pr_curve: labels shape {tuple(lab.shape)} != predictions shape "
                         f"{tuple(pred.shape)}; pass one label per prediction")
    if pred.dtype == torch.bool or (not pred.is_floating_point() and not pred.is_complex()):
        pred = pred.double()  # integer predictions (0/1 hard decisions), as torch accepts them
    if not pred.is_floating_point():
        raise TypeError(f"add_pr_curve: predictions must be real numbers in [0, 1], got {pred.dtype}")
    if lab.is_complex() or (lab.is_floating_point() is False and lab.dtype not in
                            (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)):
        raise TypeError(f"add_pr_curve: labels must be bool, int or float, got {lab.dtype}")
    w = None
    if weights is not None:
        w = to_device(_tensor(weights, "weights"), pred.device)
        try:
            w = w.expand(pred.shape)
        except RuntimeError as err:
            raise ValueError(f"add_pr_curve: weights of shape {tuple(w.shape)} do not broadcast to "
                             f"predictions {tuple(pred.shape)}") from err
    if lab.device != pred.device:
        raise ValueError(f"add_pr_curve: labels on {lab.device} but predictions on {pred.device}")
    pred = _inputs.narrow_bf16_as_torch(pred)  # the buckets follow torch's writer
    return pred, lab, w


def prepare(tag: str, labels: Any, predictions: Any, num_thresholds: int, weights: Any) -> Prepared:
    pred, lab, w = validate(labels, predictions, weights)
    n = min(int(num_thresholds), MAX_THRESHOLDS)
    args = (tag, num_thresholds)
    if pred.is_cuda:
        fn = kernel_or(pred, "pr_curve.buckets", buckets_torch)
        return finish(enc.pr_curve, args, (pred.reshape(-1), lab.reshape(-1), w if w is None else w.reshape(-1)),
                      lambda t: fn(t[0], t[1], t[2], n), snapshot=False)
    if w is None and pred.dtype == torch.float32 and native() is not None and _integral(lab):
        # A fused counting pass in the caller is cheaper than copying the inputs (see histogram);
        # it checks the labels are 0/1 itself, so no torch op runs first.
        counted = buckets_native(pred.reshape(-1), lab.reshape(-1), n, max(1, torch.get_num_threads()))
        if counted is not None:
            return Prepared(enc.pr_curve, args, 0, Ready(counted))
    host = (pred.reshape(-1), lab.reshape(-1), None if w is None else w.reshape(-1))
    return finish(enc.pr_curve, args, host, lambda t: buckets_chunked(t[0], t[1], t[2], n))


CHUNK = 1 << 18


def buckets_chunked(pred: torch.Tensor, labels: torch.Tensor, weights: Optional[torch.Tensor],
                    n: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """CPU path: :func:`buckets_torch` over cache-sized chunks (small, reused temporaries)."""
    binary = weights is None and _binary(labels)
    if binary and pred.dtype == torch.float32 and native() is not None:
        counted = buckets_native(pred, labels, n, threads())
        if counted is not None:
            return counted
    tp = torch.zeros(n, dtype=torch.float64)
    fp = torch.zeros(n, dtype=torch.float64)
    for i in range(0, pred.numel(), CHUNK):
        w = None if weights is None else weights[i:i + CHUNK]
        a, b = buckets_torch(pred[i:i + CHUNK], labels[i:i + CHUNK], w, n, binary)
        tp += a
        fp += b
    return tp, fp


_RAW_ROWS = ("true_positive_counts", "false_positive_counts", "true_negative_counts",
             "false_negative_counts", "precision", "recall")


def prepare_raw(tag: str, rows: Tuple[Any, ...], num_thresholds: int) -> Prepared:
    """``add_pr_curve_raw``: six rows of one length, host or CUDA (copied asynchronously)."""
    given = [_inputs.float64_row(v, n) for v, n in zip(rows, _RAW_ROWS)]
    lengths = {n: int(r.shape[0]) for n, r in zip(_RAW_ROWS, given)}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"add_pr_curve_raw: all six rows must have the same length, got {lengths}")
    return staged(enc.pr_curve_raw_arrays, (tag, num_thresholds), given)
