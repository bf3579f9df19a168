"""The parts of distributed aggregation, each alone (no process group): schedule, protocol, packing."""
from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from gpulog.distributed import packing, protocol
from gpulog.distributed.schedule import MAX_PENDING, SyncSchedule


def _cuts(schedule: SyncSchedule, steps, adopt_every=None, proposals=()):
    """Drive a schedule like a rank does; the indices of the items a sync point falls before."""
    cuts, proposals = [], list(proposals)
    for i, step in enumerate(steps):
        if schedule.due(step):
            cuts.append(i)
            schedule.cut()
            if proposals:
                schedule.adopt(proposals.pop(0))
        schedule.queued(step)
    return cuts


def test_schedule_depends_on_calls_not_on_clocks():
    steps = [s for s in range(300) for _ in range(3)]   # three items a step
    fast = iter(range(10**6))
    slow_rng = random.Random(1)
    slow_t = [0.0]

    def slow_clock():
        slow_t[0] += slow_rng.random()
        return slow_t[0]
    a = _cuts(SyncSchedule(1.0, clock=lambda: float(next(fast))), steps, proposals=[5, 40, 7])
    b = _cuts(SyncSchedule(1.0, clock=slow_clock), steps, proposals=[5, 40, 7])
    assert a == b and len(a) > 10
    # every cut falls on a change of step, never inside one
    assert all(steps[i] != steps[i - 1] for i in a)


def test_schedule_every_step_and_cap():
    steps = [s for s in range(10) for _ in range(2)]
    assert _cuts(SyncSchedule(0), steps) == list(range(2, 20, 2))
    same_step = [7] * (MAX_PENDING * 2 + 1)
    assert _cuts(SyncSchedule(1.0), same_step) == [MAX_PENDING, 2 * MAX_PENDING]
    assert _cuts(SyncSchedule(1.0), [None] * 40) == [16, 32]  # no step: count alone


def test_schedule_proposal_follows_the_item_rate():
    t = [0.0]
    s = SyncSchedule(2.0, clock=lambda: t[0])
    for _ in range(50):
        s.queued(1)
    s.cut()
    t[0] = 0.5                       # 50 items in 0.5 s → 100 items/s → 200 items per 2 s
    assert s.propose() == 200
    assert SyncSchedule(0).propose() == 1
    with pytest.raises(ValueError, match="distributed_sync_secs"):
        SyncSchedule(-1)


def _max_reduce(*headers):
    return torch.stack(headers).max(0).values


def test_header_agreement_and_the_carried_proposal():
    sigs = [("scalar", "loss", 3, "mean", 1, 0)]
    h0, h1 = protocol.header(4, sigs, 37), protocol.header(4, sigs, 0)
    assert protocol.agrees(_max_reduce(h0, h1)) and protocol.proposal_of(_max_reduce(h0, h1)) == 37
    other = protocol.header(4, [("scalar", "acc", 3, "mean", 1, 0)], 0)
    assert not protocol.agrees(_max_reduce(h0, other))
    assert not protocol.agrees(_max_reduce(h0, protocol.header(5, sigs, 0)))   # another sync point
    assert not protocol.agrees(_max_reduce(h0, protocol.header(4, sigs * 2, 0)))


def test_mismatch_is_described_from_the_store():
    store = torch.distributed.HashStore()
    a = [("scalar", "loss", 0, "mean", 1, 0), ("scalar", "loss2", 0, "mean", 1, 0)]
    b = [("scalar", "loss", 0, "mean", 1, 0), ("scalar", "acc", 0, "mean", 1, 0)]
    protocol.exchange(store, "t", 1, 1, 2, b, timeout=0.1)   # rank 1 answers first
    gathered = protocol.exchange(store, "t", 1, 0, 2, a, timeout=5)
    text = protocol.describe(gathered)
    assert "item 1" in text and "'loss2'" in text and "'acc'" in text and "rank 1" in text
    silent = protocol.exchange(store, "t", 2, 0, 2, a, timeout=0.2)
    assert silent[1] is None and "rank 1 did not answer" in protocol.describe(silent)


def test_packing_round_trip_for_every_reduce_op():
    """Any kind packs by its MERGE declaration: scalars under each reduce= (tensors and floats
    mixed), reduced here by adding / taking the max of two ranks' buffers as gloo would."""
    from gpulog._encode import scalar as enc_scalar
    world = 2
    values = {0: [1.5, -2.0, 3.0, 0.25, 9.0], 1: [2.5, 4.0, -1.0, 0.75, 7.0]}
    ops = ["mean", "sum", "max", "min", None]
    sums, maxes = [], []
    for rank in range(world):
        entries = []
        for op, v in zip(ops, values[rank]):
            value = torch.tensor([v], dtype=torch.float64) if op == "max" else v
            entries.append(packing.entry("scalar", "add_scalar", str(op), 0, 1.0, enc_scalar.merge(op),
                                         [value], enc_scalar.from_array, (str(op), False, False), None,
                                         rank == 0))
        s, m = packing.pack(entries, torch.device("cpu"))
        sums.append(s)
        maxes.append(m)
    total, top = (sums[0] + sums[1]).numpy(), torch.maximum(maxes[0], maxes[1]).numpy()
    got = [float(packing.unpack(e, world, total, s_at, top, m_at)[0][0][0])
           for e, (s_at, m_at) in zip(entries, packing.offsets(entries))]
    v0, v1 = values[0], values[1]
    assert got == pytest.approx([(v0[0] + v1[0]) / 2, v0[1] + v1[1], max(v0[2], v1[2]),
                                 min(v0[3], v1[3]), v0[4]])


def test_histogram_parts_keep_nan_out_of_the_extremes():
    from gpulog._encode import histogram as enc_histogram
    from gpulog._reduce.histogram import merge_parts
    counts = torch.tensor([1, 2, 3])
    finite = torch.tensor([-1.0, 4.0, 6.0, 10.0, 30.0], dtype=torch.float64)
    with_nan = torch.tensor([math.nan, math.nan, 2.0, math.nan, math.nan], dtype=torch.float64)
    ranks = []
    for stats in (finite, with_nan):
        ranks.append(packing.entry("histogram", "add_histogram", "h", 0, 1.0, enc_histogram.MERGE,
                                   merge_parts(counts, stats), enc_histogram.from_merged, (), None, True))
    (s0, m0), (s1, m1) = packing.pack([ranks[0]], torch.device("cpu")), packing.pack([ranks[1]], torch.device("cpu"))
    assert m1.tolist() == [-math.inf, -math.inf] and s1[-1] == 1 and s0[-1] == 0
    assert torch.maximum(m0, m1).tolist() == [4.0, 1.0]   # max, -min of the finite rank
    assert np.array_equal(s0[:3].numpy(), [1, 2, 3])
    merged, _, _ = packing.unpack(ranks[0], 2, (s0 + s1).numpy(), 0, torch.maximum(m0, m1).numpy(), 0)
    edges = np.array([0.0, 1.0, 2.0, 3.0])
    # a NaN on any rank makes the merged min and max NaN, as numpy's are for the pooled values
    from gpulog._proto.decode import parse_value
    histo = parse_value(enc_histogram.from_merged("h", edges, None, *merged)[0]).histogram
    assert math.isnan(histo.min) and math.isnan(histo.max) and histo.num == 6 + 2
    edged = packing.entry("histogram", "add_histogram", "h", 0, 1.0, enc_histogram.MERGE_WITH_EDGES,
                          merge_parts(counts, finite, torch.from_numpy(edges)), enc_histogram.from_merged,
                          (), None, True)
    _, m = packing.pack([edged], torch.device("cpu"))
    assert m.tolist()[2:] == edges.tolist()


def test_common_prefix_of_the_ranks_signature_lists():
    a = [("scalar", "loss", 0, "mean", 1, 0), ("scalar", "loss", 1, "mean", 1, 0)]
    b = a[:1] + [("scalar", "acc", 1, "mean", 1, 0)]
    assert protocol.common_prefix([a, a]) == 2
    assert protocol.common_prefix([a, b]) == 1
    assert protocol.common_prefix([a, a[:1]]) == 1
    assert protocol.common_prefix([a, None]) == 0  # a rank that did not answer: nothing is safe
    assert protocol.common_prefix([b[1:], a]) == 0


def test_non_zero_ranks_file_writer_has_the_real_interface_only():
    """Issue #19, defect 7: NullFileWriter.__getattr__ answered any name with a no-op, so a typo
    on a non-zero rank passed silently there and failed on rank 0 only."""
    import pytest
    from gpulog.distributed.lifecycle import NullFileWriter
    fw = NullFileWriter("runs/x")
    assert fw.get_logdir() == "runs/x"
    fw.add_summary(object(), 1)
    fw.add_event(object())
    fw.flush()
    fw.close()
    with pytest.raises(AttributeError):
        fw.add_sumary(object(), 1)
