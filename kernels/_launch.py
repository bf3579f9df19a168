"""Shared launch helpers: Triton import on first use, device guard, grid sizes."""
from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

PROGRAMS_PER_SM = 8           # resident programs per SM for the strided kernels: loads in flight
MAX_PER_PROGRAM = 1 << 30     # elements one program may count (its int32 counters cannot overflow)


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


@functools.lru_cache(maxsize=16)
def _sm_count(device: str) -> int:
    """Streaming multiprocessors of a CUDA device (torch caches the properties: no sync)."""
    import torch
    return torch.cuda.get_device_properties(torch.device(device)).multi_processor_count


def programs_for(x: Any, block: int) -> int:
    """Grid of a kernel whose programs stride over ``x`` in ``block``-element steps: a few programs
    per SM, no more than there are blocks, and enough that none counts over MAX_PER_PROGRAM
    elements.  (4 under the CPU interpreter, so the tests run the loop more than once.)"""
    n = x.numel()
    cap = _sm_count(str(x.device)) * PROGRAMS_PER_SM if x.is_cuda else 4
    return max(1, min(cap, (n + block - 1) // block), (n + MAX_PER_PROGRAM - 1) // MAX_PER_PROGRAM)
