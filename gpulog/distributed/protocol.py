"""The signature protocol: do all ranks hold the same pending items?

Each sync point's items are summarised by a *signature* (kind, tag, step, reduce, packed sizes).
The **header** is one int64 MAX ``all_reduce`` on gpulog's own gloo group of
``[seq, -seq, h, -h, n, -n, interval]`` (``h`` a 56-bit hash of the signatures, ``n`` their count,
``interval`` rank 0's schedule proposal, 0 on other ranks): the ranks agree iff each value's max
equals its min.  When they do not, every rank sees it in the same header, and the full signature
lists are exchanged through the process group's **store** (keys, not a collective, so nothing
can pair with the training loop's own collectives), with a timeout; every rank then raises the
same ``ValueError`` naming the first mismatch.
"""
from __future__ import annotations

import hashlib
import pickle
from datetime import timedelta
from typing import Any, List, Optional, Sequence, Tuple

import torch

Signature = Tuple[Any, ...]
HEADER_LEN = 7
MAX_DESCRIBED = 4096  # signatures sent for a mismatch report (the first difference is what counts)


def header(seq: int, sigs: Sequence[Signature], proposal: int) -> torch.Tensor:
    digest = hashlib.sha1(repr(list(sigs)).encode()).digest()
    h = int.from_bytes(digest[:7], "little")
    n = len(sigs)
    return torch.tensor([seq, -seq, h, -h, n, -n, proposal], dtype=torch.int64)


def agrees(reduced: torch.Tensor) -> bool:
    v = reduced.tolist()
    return v[0] == -v[1] and v[2] == -v[3] and v[4] == -v[5]


def proposal_of(reduced: torch.Tensor) -> int:
    return int(reduced[6])


def exchange(store: Any, prefix: str, seq: int, rank: int, world: int, sigs: Sequence[Signature],
             timeout: float) -> List[Optional[List[Signature]]]:
    """Every rank's signature list for sync point ``seq``, through the store (bounded wait).
    A rank that does not answer within ``timeout`` seconds shows as ``None``."""
    key = f"{prefix}/mismatch/{seq}/"
    store.set(key + str(rank), pickle.dumps(list(sigs)[:MAX_DESCRIBED]))
    out: List[Optional[List[Signature]]] = []
    for r in range(world):
        try:
            store.wait([key + str(r)], timedelta(seconds=timeout))
            out.append(pickle.loads(store.get(key + str(r))))
        except Exception:  # noqa: BLE001 - store timeouts surface as several error types
            out.append(None)
    return out


def common_prefix(gathered: Sequence[Optional[Sequence[Signature]]]) -> int:
    """How many leading signatures every rank's list shares (0 if a rank did not answer)."""
    if not gathered or any(g is None for g in gathered):
        return 0
    lists = [list(g) for g in gathered if g is not None]
    n = 0
    while all(n < len(g) for g in lists) and all(g[n] == lists[0][n] for g in lists[1:]):
        n += 1
    return n


def describe(gathered: Sequence[Optional[Sequence[Signature]]]) -> str:
    """The first difference between rank 0's list and another rank's, in words."""
    fmt = lambda s: "nothing" if s is None else f"{s[0]} {s[1]!r} at step {s[2]} (reduce={s[3]!r})"  # noqa: E731
    ref = gathered[0] or []
    for rank, sigs in enumerate(gathered[1:], start=1):
        if sigs is None:
            return (f"distributed logging diverged: rank {rank} did not answer with its items. Every "
                    "rank must make the same add_* calls in the same order.")
        for i in range(max(len(ref), len(sigs))):
            a = ref[i] if i < len(ref) else None
            b = sigs[i] if i < len(sigs) else None
            if a != b:
                return (f"distributed logging diverged: item {i} since the last sync is {fmt(a)} on "
                        f"rank 0 but {fmt(b)} on rank {rank}. Every rank must make the same add_* "
                        "calls in the same order.")
    return "distributed logging diverged between ranks (same items, different sync points)"
