"""Lifecycle: the handshake that starts a distributed writer, and the hooks that end one.

* **Handshake** (construction): every rank adds itself to a counter in the process group's store
  and waits, at most ``timeout`` seconds, for all ranks.  A writer built on some ranks only (the
  rank-0-only loggers of Lightning, HF and accelerate) fails here with a clear error instead of
  hanging in its first collective; store keys, not collectives, so nothing pairs with the
  training loop's own collectives.
* **Exit**: a script that ends without ``close()`` still gets its pending reductions written:
  every rank settles its last sync point in ``destroy_process_group()`` (which every rank calls at
  the same point) or, failing that, at interpreter exit.
"""
from __future__ import annotations

import itertools
import time
import warnings
from typing import Any, Callable, Dict, List

from .. import _lifecycle
from ..errors import GpulogError


class DistributedError(GpulogError):
    """A collective failed or timed out: another rank died, diverged or stopped logging."""


DistributedError.__module__ = "gpulog.distributed"  # where users import it from


_writer_numbers = itertools.count()


def handshake(store: Any, rank: int, world: int, timeout: float) -> str:
    """Wait until every rank has built its n-th distributed writer; returns the store prefix
    they share.  Raises :class:`DistributedError` naming the missing ranks after ``timeout``."""
    prefix = f"gpulog/w{next(_writer_numbers)}"
    store.set(f"{prefix}/rank{rank}", "1")
    joined = store.add(f"{prefix}/joined", 1)
    deadline = time.monotonic() + timeout
    pause = 0.001
    while joined < world:
        if time.monotonic() >= deadline:
            missing = [r for r in range(world) if not store.check([f"{prefix}/rank{r}"])]
            present = [r for r in range(world) if r not in missing]
            raise DistributedError(
                f"SummaryWriter(distributed=True) was created on rank{'s' if len(present) > 1 else ''} "
                f"{_ranks(present)} but not on rank{'s' if len(missing) > 1 else ''} {_ranks(missing)} "
                f"within {timeout:g} s (distributed_timeout). Every rank must create it at the same "
                "point of the script. Where only rank 0 logs (PyTorch Lightning's TensorBoardLogger, "
                "Hugging Face's TensorBoardCallback, accelerate's trackers), pass distributed=False "
                "(the default): those frameworks reduce metrics across ranks themselves.")
        time.sleep(pause)
        pause = min(pause * 2, 0.05)
        joined = store.add(f"{prefix}/joined", 0)
    return prefix


def _ranks(ranks: List[int]) -> str:
    return ", ".join(str(r) for r in ranks) if len(ranks) <= 8 else f"{ranks[:8]}... ({len(ranks)})"


class NullFileWriter:
    """What non-zero ranks hold instead of a FileWriter: torch's FileWriter API, creating and
    writing nothing.  Only the real methods exist, so a misspelt one fails on every rank."""

    def __init__(self, log_dir: Any) -> None:
        self._log_dir = str(log_dir)

    def get_logdir(self) -> str:
        return self._log_dir

    def add_event(self, event: Any, step: Any = None, walltime: Any = None) -> None:
        pass

    def add_summary(self, summary: Any, global_step: Any = None, walltime: Any = None) -> None:
        pass

    def add_graph(self, *args: Any, **kwargs: Any) -> None:
        pass

    def add_onnx_graph(self, *args: Any, **kwargs: Any) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def reopen(self) -> None:
        pass

    def close_async(self) -> None:
        pass


_unsettled: Dict[int, Any] = {}  # id -> (settle function) of distributed writers not yet closed


def _settle_all() -> None:
    for settle in list(_unsettled.values()):
        settle()


def settle_at_exit(dist: Any, pending: Callable[[], bool], flush: Callable[[], None]) -> Callable[[], None]:
    """Register ``flush`` to run at ``destroy_process_group()`` or interpreter exit (the "ranks"
    phase of ``_lifecycle``: after the compiled-step rings, before the writer drains), once.  Failures there
    become warnings: an exit path must not raise.  Returns the function that unregisters it."""
    key = object()

    def settle() -> None:
        unregister()
        if not pending():
            return
        if not dist.is_initialized():
            warnings.warn("gpulog: the process group was destroyed before the distributed "
                          "SummaryWriter was closed; its last pending reductions are lost. "
                          "Call writer.close() before destroy_process_group().", RuntimeWarning)
            return
        try:
            flush()
        except (DistributedError, ValueError) as err:
            warnings.warn(f"gpulog: the last distributed reductions could not be written: {err}",
                          RuntimeWarning)

    def unregister() -> None:
        _unsettled.pop(id(key), None)
        remove()

    _lifecycle.wrap_destroy_process_group(dist, _settle_all)
    _unsettled[id(key)] = settle
    remove = _lifecycle.at_exit("ranks", settle)
    return unregister
