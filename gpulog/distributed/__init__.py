"""Rank-0 aggregation over ``torch.distributed``: ``SummaryWriter(..., distributed=True)``.

Every rank makes the same sequence of ``add_*`` calls; rank 0 alone writes files.

* Scalars (``reduce`` = ``"mean"`` | ``"sum"`` | ``"min"`` | ``"max"`` | ``None`` for rank 0's
  value), histograms (counts of all ranks' values, exact) and PR curves (bucket counts summed) are
  reduced where their data lives by the same per-kind reductions as without ``distributed``
  (Triton kernels, the native CPU pass, the torch reference), and queued, not communicated one
  by one.
* **Sync points** (:mod:`.schedule`) depend only on the sequence of calls, so every rank cuts its
  queue at the same items whatever its timing: after an interval of items that rank 0 adapts to
  about ``distributed_sync_secs`` (default 1 s; 0 = every change of step), at ``flush()``,
  ``close()``, or after 1024 pending items.
* At a sync point the queue becomes **at most three collectives, issued asynchronously**: a
  56-byte header on gpulog's own gloo group (:mod:`.protocol`), then — at the next sync point,
  once that header is known to agree — one packed SUM and one packed MAX ``all_reduce``
  (:mod:`.packing`; gpulog's gloo group for CPU data, the default NCCL group for CUDA data).
  Results come back to rank 0's writer thread through the usual staging (pinned, non-blocking
  copies and an event, ordered after the caller's stream).  Where the caller does wait: at the
  next sync point it waits for the previous header (issued a sync point earlier, normally done),
  and under gloo the int-bins and estimator histograms make blocking collectives at the call
  (see below).  Ranks may run one sync point apart.
* Ranks that diverge (other tags, order or count) fail the header check: every rank raises a
  ``ValueError`` naming the first mismatch (exchanged through the store, never an object
  collective).
* **Never a hang** (:mod:`.lifecycle`): construction is a handshake through the store that fails
  after ``distributed_timeout`` (default 60 s) with an error naming the missing ranks — the
  writer built on rank 0 only, as Lightning, HF and accelerate do; gpulog's collectives time out
  after the same ``distributed_timeout`` (a rank that died or stopped logging) and raise
  :class:`DistributedError`.
* Other summaries (images, text, audio, ...) are logged from rank 0's arguments; other ranks
  return at once.  Without ``distributed=True`` no collective is ever issued.
* Histogram bins: 'tensorflow' and explicit edges are fixed; int bins take the global range (one
  small MAX all_reduce at the call, stream-ordered under NCCL; the edges are built on the
  device); numpy's estimators ('auto', 'fd', ...) gather all ranks' values to the host at the call
  (a device→host copy for CUDA data: the one distributed path that waits for the device), so the
  edges equal those of one process on the concatenated data.
"""
from __future__ import annotations

from .context import RankContext
from .lifecycle import DistributedError
from .._inputs import REDUCE_OPS

__all__ = ["RankContext", "DistributedError", "REDUCE_OPS"]
