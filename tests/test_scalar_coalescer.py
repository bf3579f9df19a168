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
    assert [float(r.result()[0][0]) for r in refs] == [float(i) for i in range(len(refs))]
    assert len({id(r.batch) for r in refs}) == 3


def test_writer_may_seal_a_batch_while_the_producer_continues():
    c = red.Coalescer()
    refs, stop = [], threading.Event()

    def producer():
        for i in range(5000):
            refs.append(c.stage(torch.tensor(float(i), dtype=torch.float64 if i % 2 else torch.float32)))
        stop.set()

    th = threading.Thread(target=producer)
    th.start()
    seen = 0
    while not stop.is_set() or seen < len(refs):
        if seen < len(refs):
            assert float(refs[seen].result()[0][0]) == float(seen)   # seals the batch early
            seen += 1
    th.join()
    assert seen == 5000


def test_bad_scalars():
    c = red.Coalescer()
    with pytest.raises(ValueError, match="exactly one element"):
        c.stage(torch.ones(2))
    with pytest.raises(TypeError, match="real"):
        c.stage(torch.tensor(1 + 1j))
