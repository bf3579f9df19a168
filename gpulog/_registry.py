"""Live writers by number (host side, torch-free, no gpulog imports).

Graphs compiled around ``add_*`` carry a writer's number as a constant and find the writer
through this registry when they run (``_compiled``); ``SummaryWriter`` registers itself at
construction.  Numbers are never reused (``id()`` is, after garbage collection), and the registry
holds writers weakly, so a dropped writer is not kept alive by a graph that once logged to it.
"""
from __future__ import annotations

import itertools
import weakref
from typing import Any, Optional

_numbers = itertools.count(1)
_live: "weakref.WeakValueDictionary[int, Any]" = weakref.WeakValueDictionary()


def register(writer: Any) -> int:
    """A new number for ``writer``, under which :func:`lookup` finds it while it is alive."""
    number = next(_numbers)
    _live[number] = writer
    return number


def lookup(number: int) -> Optional[Any]:
    return _live.get(number)
