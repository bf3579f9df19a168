"""Shared launch helpers: Triton import on first use, device guard, grid sizes."""
from __future__ import annotations

import contextlib
from typing import Any, Iterator


def triton_modules() -> Any:
    import triton
    import triton.language as tl
    return triton, tl


@contextlib.contextmanager
def device_of(t: Any) -> Iterator[None]:
    """Launch on the tensor's device (a no-op for CPU tensors under TRITON_INTERPRET=1)."""
    if t.is_cuda:
        import torch
        with torch.cuda.device(t.device):
            yield
    else:
        yield
