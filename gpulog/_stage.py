"""The aggregation stage between ``SummaryWriter``'s checks and the event files.

``SummaryWriter`` validates every call (on every rank, the same way) and hands the validated
arguments to its stage; the stage decides where the data is reduced and which process writes it:

* :class:`LocalStage` — this process writes what it logs (the default);
* ``distributed.RankContext`` — ranks reduce their parts, merge them at sync points by each
  kind's ``MERGE`` declaration, and rank 0 writes (``distributed=True``).

Both offer the same methods, so ``writer.py`` has no rank branches.  Values logged inside
compiled steps come back through the same writer methods (on the CPU the op's body is the eager
call) or, from CUDA rings, as ordinary items (``_compiled``); model watching (``_watch``) logs
through the writer's methods too.  Data contract of every method: arguments are validated and
the step is an int, None or a ``DeviceStep``; ``fw`` is the event file the result goes to.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from . import _inputs
from ._encode import scalar as enc_scalar


class LocalStage:
    """Reduce here, write here."""

    writes = True   # this process writes event files
    local = True    # SummaryWriter may take its inline fast path for host floats

    def scalar(self, fw: Any, tag: str, value: Any, step: Any, wall: float, reduce: Optional[str],
               new_style: bool, double_precision: bool) -> None:
        if type(value) is not float:
            if _inputs.is_cuda_tensor(value):
                # Coalesced: one slot write per call, one copy per batch (``_reduce.scalar``).
                from ._reduce import scalar as red_scalar
                fw.submit(enc_scalar.from_array, (tag, new_style, double_precision), step, wall, 0,
                          red_scalar.stage(value))
                return
            value = _inputs.scalar(value)  # ints beyond float64, tensors, numpy: checked here
        if new_style:
            fw.submit(enc_scalar.new_style, (tag, value, double_precision), step, wall)
        else:
            fw.submit_scalar(tag, value, step, wall)

    def histogram(self, fw: Any, tag: str, values: Any, step: Any, wall: float, bins: Any,
                  max_bins: Optional[int]) -> None:
        from ._reduce import histogram as red
        prep = red.prepare(tag, values, bins, max_bins)
        fw.submit(prep.encode, prep.args, step, wall, prep.nbytes, prep.staged)

    def pr_curve(self, fw: Any, tag: str, labels: Any, predictions: Any, step: Any, wall: float,
                 num_thresholds: int, weights: Any) -> None:
        from ._reduce import pr_curve as red
        prep = red.prepare(tag, labels, predictions, num_thresholds, weights)
        fw.submit(prep.encode, prep.args, step, wall, prep.nbytes, prep.staged)

    def prepared(self, fw: Any, tag: str, step: Any, wall: float,
                 prepare: Callable[[str], Any]) -> None:
        """Kinds that are not merged across ranks (images, audio, video, meshes...)."""
        prep = prepare(tag)
        fw.submit(prep.encode, prep.args, step, wall, prep.nbytes, prep.staged)

    def emit(self, submit: Callable[[], None]) -> None:
        """Work whose checks the writer already ran on every rank: done by the writing process."""
        submit()

    def sync(self, final: bool = True) -> None:
        """A program-order point (``flush()``/``close()``): nothing to settle here."""

    def close(self) -> None:
        """End of the writer: nothing to settle here."""

    def exit_hook(self, flush: Callable[[], None]) -> Optional[Callable[[], None]]:
        return None
