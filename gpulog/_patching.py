"""``gpulog.patch()``: make ``torch.utils.tensorboard.SummaryWriter`` resolve to gpulog's.

Code written for torch's writer — PyTorch Lightning's ``TensorBoardLogger``, Hugging Face's
``TensorBoardCallback``, your own — then uses gpulog unchanged, including Lightning's
``writer._get_file_writer().add_summary(...)`` path.  Patch before that code imports the writer
(``from torch.utils.tensorboard import SummaryWriter`` binds the name at import time).
Works without the ``tensorboard`` package: a stand-in ``torch.utils.tensorboard`` module is
registered then.  ``tensorboardX.SummaryWriter`` is pointed at gpulog's too when tensorboardX is
installed (ignite, for one, prefers it).  ``unpatch()`` restores the originals.

Child processes: ``patch()`` sets ``GPULOG_PATCH=1``, which children inherit; ``import gpulog``
in a process with ``GPULOG_PATCH=1`` patches that process.  Spawned workers (``spawn`` start
method, Lightning's ``ddp_spawn``) re-import the main script's top level, so an ``import gpulog``
there (outside ``if __name__ == "__main__":``) is enough; forked workers inherit the patch.
"""
from __future__ import annotations

import os
import sys
import types
from typing import Any, Dict, List, Tuple

_saved: List[Tuple[Any, str, Any]] = []
_added: List[str] = []


def _module(name: str) -> types.ModuleType:
    try:
        import importlib
        return importlib.import_module(name)
    except ImportError:
        mod = types.ModuleType(name)
        mod.__doc__ = "stand-in registered by gpulog.patch() (tensorboard is not installed)"
        sys.modules[name] = mod
        _added.append(name)
        return mod


def patch() -> None:
    """Point ``torch.utils.tensorboard.SummaryWriter`` (and ``.writer.SummaryWriter``/``FileWriter``)
    at gpulog's classes in this process.  Idempotent."""
    if _saved or _added:
        return
    from .file_writer import FileWriter
    from .writer import SummaryWriter
    import torch.utils
    tb = _module("torch.utils.tensorboard")
    writer_mod = _module("torch.utils.tensorboard.writer")
    setattr(torch.utils, "tensorboard", tb)
    targets: Dict[Any, Dict[str, Any]] = {tb: {"SummaryWriter": SummaryWriter},
                                          writer_mod: {"SummaryWriter": SummaryWriter, "FileWriter": FileWriter}}
    try:
        import tensorboardX
        import tensorboardX.writer
        targets[tensorboardX] = {"SummaryWriter": SummaryWriter}
        targets[tensorboardX.writer] = {"SummaryWriter": SummaryWriter}
    except ImportError:  # not installed: nothing to cover (no stand-in: code checks for it)
        pass
    for mod, names in targets.items():
        for name, value in names.items():
            _saved.append((mod, name, getattr(mod, name, None)))
            setattr(mod, name, value)
    os.environ["GPULOG_PATCH"] = "1"  # children patch themselves at `import gpulog`


def unpatch() -> None:
    """Undo :func:`patch` (and stop children from patching themselves)."""
    os.environ.pop("GPULOG_PATCH", None)
    while _saved:
        mod, name, old = _saved.pop()
        if old is None:
            delattr(mod, name)
        else:
            setattr(mod, name, old)
    while _added:
        sys.modules.pop(_added.pop(), None)
