"""The optional native extension (gpulog/_native.c) against numpy oracles: exact counts, and
results that do not depend on how many threads ran the pass or where its chunks end."""
from __future__ import annotations

import numpy as np
import pytest

from gpulog._reduce import histogram as r_hist
from gpulog._reduce._backend import _native_module

native = _native_module()
pytestmark = pytest.mark.skipif(native is None, reason="native extension not built")

CHUNK = 1 << 16      # elements a worker claims at a time (gpulog/_native.c)
MIN_PARALLEL = 1 << 18  # below this the pass runs on the calling thread only


def _hist(x: np.ndarray, nthreads: int):
    table = r_hist.cell_table("cpu")
    counts = np.zeros(len(r_hist.tensorflow_edges()) + 1, dtype=np.int64)
    stats = native.hist_tf(x, table.base.numpy(), table.threshold.numpy(), counts, nthreads)
    return counts, stats


@pytest.mark.parametrize("n", [1, CHUNK - 1, CHUNK + 1, MIN_PARALLEL, 5 * CHUNK + 3, 3 * MIN_PARALLEL - 1])
def test_histogram_same_result_for_every_thread_count(n):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal(n) * np.exp(rng.standard_normal(n) * 5)).astype(np.float32)
    x[rng.integers(0, n, size=min(n, 7))] = np.float32(1e-12)  # exactly on an edge
    edges = r_hist.tensorflow_edges()
    oracle = np.histogram(x.astype(np.float64), bins=edges)[0]
    first = None
    for nthreads in (1, 2, 3, 5):
        counts, stats = _hist(x, nthreads)
        assert np.array_equal(counts[1:len(edges)], oracle), f"counts differ with {nthreads} threads"
        assert counts[0] == 0 and counts[-1] == 0
        if first is None:
            first = stats
        assert stats == first, f"{nthreads} threads: {stats} != {first} (sums must not depend on threads)"
    x64 = x.astype(np.float64)
    mn, mx, s, ss, nans = first
    assert (mn, mx, nans) == (x64.min(), x64.max(), 0)
    np.testing.assert_allclose([s, ss], [x64.sum(), x64 @ x64], rtol=1e-12)


def test_histogram_nan_in_the_last_chunk_is_seen_by_every_thread_count():
    x = np.ones(3 * MIN_PARALLEL + 11, dtype=np.float32)
    x[-1] = np.nan
    for nthreads in (1, 2, 4):
        counts, (mn, mx, s, ss, nans) = _hist(x, nthreads)
        assert nans == 1 and np.isnan(s) and np.isnan(ss) and mn == mx == 1.0
        assert counts[1:-1].sum() == x.size - 1 and counts[-1] == 1  # last slot: NaN, never drawn


@pytest.mark.parametrize("bad_at", [0, CHUNK * 9 + 17, -1])
def test_pr_counts_declined_wherever_a_bad_label_is(bad_at):
    n, t = 3 * MIN_PARALLEL, 127
    rng = np.random.default_rng(1)
    pred = rng.random(n, dtype=np.float32)
    labels = rng.integers(0, 2, n).astype(np.int64)
    counts = np.zeros(2 * t, dtype=np.int64)
    assert native.pr_binary(pred, labels, counts, t, 3)
    k = np.floor(pred * np.float32(t - 1)).astype(np.int64)
    oracle = np.bincount(2 * k + labels, minlength=2 * t)
    assert np.array_equal(counts, oracle)
    for nthreads in (1, 2, 5):
        again = np.zeros(2 * t, dtype=np.int64)
        assert native.pr_binary(pred, labels, again, t, nthreads)
        assert np.array_equal(again, oracle)
    labels[bad_at] = 2
    untouched = np.zeros(2 * t, dtype=np.int64)
    for nthreads in (1, 3):
        assert not native.pr_binary(pred, labels, untouched, t, nthreads)
        assert not untouched.any(), "a declined pass must leave the counts untouched"
