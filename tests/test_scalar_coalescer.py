"""The device-scalar coalescer, exercised on CPU tensors (the same code path minus pinned memory)."""
from __future__ import annotations

import threading

import pytest
import torch

from gpulog._reduce import scalar as red


def test_values_at_call_time_in_order_across_batches():
    c = red.Coalescer()
    t = torch.zeros(())
    refs = []
    for i in range(red.SLOTS * 2 + 7):
        t.fill_(float(i))
        refs.append(c.stage(t))   # t is mutated right after every call
    batches = {id(r._args[0]) for r in refs}  # (batch, slot) until the value is read
    assert [float(r.result()[0][0]) for r in refs] == [float(i) for i in range(len(refs))]
    assert len(batches) == 3


def test_writer_may_seal_a_batch_while_the_producer_continues():
    """A consumer (the writer's role) reads each value as soon as it is staged, which seals
    batches early, while the producer keeps staging: every value is the one given at its call.
    The consumer blocks on a queue (no busy-wait competing with the producer for the cores)."""
    import queue
    c = red.Coalescer()
    staged: "queue.Queue" = queue.Queue()

    def producer():
        for i in range(5000):
            staged.put(c.stage(torch.tensor(float(i), dtype=torch.float64 if i % 2 else torch.float32)))

    th = threading.Thread(target=producer)
    th.start()
    values = [float(staged.get(timeout=30).result()[0][0]) for _ in range(5000)]
    th.join()
    assert values == [float(i) for i in range(5000)]


def test_bad_scalars():
    c = red.Coalescer()
    with pytest.raises(ValueError, match="exactly one element"):
        c.stage(torch.ones(2))
    with pytest.raises(TypeError, match="real"):
        c.stage(torch.tensor(1 + 1j))


def test_many_producers_and_concurrent_seals_keep_every_value():
    """Issue #21: the slot write takes no lock; producers on 4 threads while another thread seals
    every open batch in a loop (what flush() and the writer do): each staged value reads back
    as the one given at its call — none lost to a seal that missed its slot."""
    import sys
    c = red.Coalescer()
    out = {}
    stop = threading.Event()
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible: hit the races

    def producer(t: int) -> None:
        refs = []
        for i in range(3000):
            refs.append((t * 10000 + i, c.stage(torch.tensor(float(t * 10000 + i), dtype=torch.float64))))
        out[t] = refs

    def sealer() -> None:
        while not stop.is_set():
            c.seal_all()

    try:
        s = threading.Thread(target=sealer)
        s.start()
        ps = [threading.Thread(target=producer, args=(t,)) for t in range(4)]
        for p in ps:
            p.start()
        for p in ps:
            p.join()
        stop.set()
        s.join()
    finally:
        sys.setswitchinterval(old)
    c.seal_all()
    for t, refs in out.items():
        assert [float(r.result()[0][0]) for _, r in refs] == [float(v) for v, _ in refs], t
