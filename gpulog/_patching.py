"""``gpulog.patch()``: make ``torch.utils.tensorboard.SummaryWriter`` resolve to gpulog's.

Code written for torch's writer — PyTorch Lightning's ``TensorBoardLogger``, Hugging Face's
``TensorBoardCallback``, your own — then uses gpulog unchanged, including Lightning's
``writer._get_file_writer().add_summary(...)`` path.  Patch before that code imports the writer
(``from torch.utils.tensorboard import SummaryWriter`` binds the name at import time).
Works without the ``tensorboard`` package: a stand-in ``torch.utils.tensorboard`` module is
registered then.  ``unpatch()`` restores the originals.
"""
from __future__ import annotations

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
    for mod, names in targets.items():
        for name, value in names.items():
            _saved.append((mod, name, getattr(mod, name, None)))
            setattr(mod, name, value)


def unpatch() -> None:
    """Undo :func:`patch`."""
    while _saved:
        mod, name, old = _saved.pop()
        if old is None:
            delattr(mod, name)
        else:
            setattr(mod, name, old)
    while _added:
        sys.modules.pop(_added.pop(), None)
