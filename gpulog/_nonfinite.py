"""``SummaryWriter(..., on_nonfinite=...)``: NaN and ±inf caught on the writer thread (torch-free).

The writer thread already holds every value it encodes on the host, so checking it costs the
training loop nothing: scalars (float, 0-d tensors, CUDA scalars after their copy, values of
compiled steps) and histograms (whose min/max are NaN or infinite when a value was).  The first
non-finite value of each tag is reported with its tag, step, wall time and rank:

* ``"warn"``: a ``RuntimeWarning``;
* ``"raise"``: a ``FloatingPointError`` raised on the training thread at its next ``add_*`` or
  ``flush()`` (after that call's own value was queued, like write errors), naming tag and step;
* a callable: called on the writer thread with a dict ``{tag, step, wall, rank, value}``; an
  exception it raises is raised on the training thread as above.

Values of ``watch()`` are reported by the watch itself (it names the tensor).
"""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, Optional, Sequence, Set

POLICIES = ("warn", "raise")


def check_policy(policy: Any) -> None:
    if not (policy is None or policy in POLICIES or callable(policy)):
        raise ValueError(f"on_nonfinite must be 'warn', 'raise', None or a callable(report), got {policy!r}")


class Sentinel:
    """One writer's policy, shared by its event files (main run and sub-runs)."""

    def __init__(self, policy: Any, rank: Optional[int]) -> None:
        check_policy(policy)
        self.policy = policy
        self.rank = rank
        self.seen: Set[str] = set()       # writer thread only: tags already reported
        self.first: Optional[Dict[str, Any]] = None

    def scalars(self, sink: Any, batch: Sequence[Any]) -> None:
        """Writer thread: a run of compact scalar items ``(sink, tag, value, step, wall)``."""
        isfinite = math.isfinite
        for _, tag, value, step, wall in batch:
            if not isfinite(value) and tag not in self.seen:
                self.report(sink, tag, step, wall, value)

    def report(self, sink: Any, tag: Optional[str], step: Any, wall: float, value: Any) -> None:
        tag = tag or "?"
        self.seen.add(tag)
        info = {"tag": tag, "step": step, "wall": wall, "rank": self.rank, "value": value}
        if self.first is None:
            self.first = info
        where = "" if self.rank is None else f" on rank {self.rank}"
        message = f"gpulog: first non-finite value of {tag!r}: {value} at step {step}{where}"
        policy = self.policy
        if policy == "warn":
            try:
                warnings.warn(message, RuntimeWarning, stacklevel=2)
            except Exception:  # noqa: BLE001 - a warnings filter set to "error" must not end this thread
                pass
        elif policy == "raise":
            sink.set_error(FloatingPointError(message + " (SummaryWriter(on_nonfinite='raise'))"))
        elif callable(policy):
            try:
                policy(dict(info))
            except Exception as err:  # noqa: BLE001 - raised on the training thread
                sink.set_error(err)
