"""When ranks cut their pending lists: sync points every rank agrees on by construction.

A sync point falls *before* an item, once ``interval`` items are pending and the item starts a new
step (or has no step), or once ``max_pending`` items are pending.  Both conditions depend only on
the sequence of ``add_*`` calls, never on a clock, so ranks that make the same calls cut at the
same items whatever their timing.  ``interval`` itself adapts to the training speed: rank 0
measures its item rate over each sync period and proposes ``rate · sync_secs``; the proposal
travels in the header collective that every rank waits for anyway, and every rank adopts it at
the same point (when that header is settled), so the schedule stays shared.

Pure Python, no torch: unit-tested alone.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

INITIAL_INTERVAL = 16
MAX_PENDING = 1024
_NO_STEP = object()


class SyncSchedule:
    def __init__(self, sync_secs: float, max_pending: int = MAX_PENDING,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if isinstance(sync_secs, bool) or not isinstance(sync_secs, (int, float)) or sync_secs < 0:
            raise ValueError(f"distributed_sync_secs must be a number >= 0, got {sync_secs!r}")
        self.sync_secs = float(sync_secs)
        self.max_pending = max_pending
        self.interval = 1 if self.sync_secs == 0 else INITIAL_INTERVAL
        self.count = 0                 # items since the last cut
        self.last_step: Any = _NO_STEP
        self._clock = clock
        self._period_start = clock()
        self._period_items = 0

    def due(self, step: Optional[int]) -> bool:
        """Cut before queuing an item logged at ``step``?"""
        if self.count >= self.max_pending:
            return True
        return self.count >= self.interval and (step is None or step != self.last_step)

    def queued(self, step: Optional[int]) -> None:
        self.count += 1
        self.last_step = step

    def cut(self) -> None:
        """A sync point happened (scheduled, or flush()/close())."""
        self._period_items += self.count
        self.count = 0

    def propose(self) -> int:
        """Rank 0: the interval (in items) that makes the next periods last about ``sync_secs``."""
        now = self._clock()
        elapsed, items = now - self._period_start, self._period_items
        self._period_start, self._period_items = now, 0
        if self.sync_secs == 0:
            return 1
        if items == 0 or elapsed <= 0:
            return self.interval
        return max(1, min(self.max_pending, int(items / elapsed * self.sync_secs)))

    def adopt(self, interval: int) -> None:
        """Every rank, at the same settled header: the interval rank 0 proposed."""
        if interval >= 1:
            self.interval = min(int(interval), self.max_pending)
