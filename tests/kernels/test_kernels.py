"""Kernels vs their torch references vs numpy oracles: counts exact, on CPU (TRITON_INTERPRET=1,
small sizes) and on a GPU at full size when one is present."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

triton = pytest.importorskip("triton")
from gpulog.kernels import histogram as k_hist, image as k_img, pr_curve as k_pr  # noqa: E402
from gpulog._reduce import histogram as r_hist, image as r_img, mesh as r_mesh, pr_curve as r_pr  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def test_native_extension_built_where_a_compiler_exists():
    import shutil
    from gpulog._reduce._backend import _native_module
    if shutil.which("cc") is None:
        pytest.skip("no C compiler: the optional native extension is not built")
    assert _native_module() is not None, "gpulog._native should have been built by pip install"
if DEV == "cpu" and os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("no GPU and not in Triton's interpreter", allow_module_level=True)
N = 1 << 22 if DEV == "cuda" else 6000

SPECIAL = [0.0, -0.0, 1e-12, -1e-12, 1.1e-12, 1e-13, -1e-13, float("inf"), -float("inf"),
           float("nan"), 9.92e19, -9.92e19, 3e38, -3e38, 1e-45, -1e-45]


def _edge_values() -> torch.Tensor:
    e = r_hist.tensorflow_edges()
    pick = e[::37]
    near = np.concatenate([pick, np.nextafter(pick.astype(np.float32), np.inf), np.nextafter(pick.astype(np.float32), -np.inf)])
    return torch.from_numpy(near.astype(np.float32))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("data", ["randn", "wide", "special", "edges", "constant"])
def test_histogram_three_way(dtype, data):
    g = torch.Generator().manual_seed(0)
    if data == "randn":
        x = torch.randn(N, generator=g)
    elif data == "wide":
        x = torch.randn(N, generator=g) * torch.exp(torch.randn(N, generator=g) * 20)
    elif data == "special":
        x = torch.tensor(SPECIAL * 10)
    elif data == "edges":
        x = _edge_values()
    else:
        x = torch.full((N,), 0.5)
    x = x.to(dtype)
    edges = r_hist.tensorflow_edges()
    oracle = np.histogram(x.float().double().numpy(), bins=edges)[0]
    ref_c, ref_s = r_hist.reduce_torch(x.to(DEV), edges, True)
    ker_c, ker_s = k_hist.reduce(x.to(DEV), edges, table=r_hist.cell_table(DEV))
    np_c, np_s = r_hist.reduce_torch(x, edges, True)  # CPU path (native or chunked torch)
    np_c, np_s = np_c.numpy(), np_s.numpy()
    if r_hist.native() is not None:
        c_c, c_s = r_hist.reduce_native(x, len(edges))
        assert np.array_equal(c_c.numpy(), oracle)
        np.testing.assert_allclose(c_s.numpy(), np_s, rtol=1e-9, equal_nan=True)
    assert np.array_equal(ref_c.cpu().numpy(), oracle)
    assert np.array_equal(ker_c.cpu().numpy(), oracle)
    assert np.array_equal(np_c, oracle)
    x64 = x.double().numpy()
    want = np.array([x64.min(), x64.max(), x64.size, x64.sum(), x64.dot(x64)])
    for got in (ref_s.cpu().numpy(), ker_s.cpu().numpy(), np_s):
        np.testing.assert_allclose(got[:3], want[:3], equal_nan=True)
        np.testing.assert_allclose(got[3:], want[3:], rtol=1e-9, equal_nan=True)


def test_histogram_kernel_loops_over_many_tiles():
    """More tiles than programs: each program's loop runs several times (and ends on a part tile)."""
    n = 20 * k_hist.BLOCK + 7 if DEV == "cpu" else (1 << 24) + 7
    x = torch.randn(n, generator=torch.Generator().manual_seed(3)) * 100
    x[::997] = float("nan")
    edges = r_hist.tensorflow_edges()
    counts, stats = k_hist.reduce(x.to(DEV), edges, table=r_hist.cell_table(DEV))
    assert np.array_equal(counts.cpu().numpy(), np.histogram(x.double().numpy(), bins=edges)[0])
    assert np.isnan(stats.cpu().numpy()[[0, 1, 3, 4]]).all() and stats[2] == n


@pytest.mark.parametrize("programs", [1, 37, 300])
def test_histogram_finish_kernel_sums_every_slice(programs):
    """The finishing kernel against torch, with more slices and partials than one step reads."""
    g = torch.Generator().manual_seed(programs)
    slices = torch.randint(0, 1000, (programs, k_hist.SLICE), generator=g, dtype=torch.int32)
    part = torch.randn(programs, 5, generator=g, dtype=torch.float64)
    part[:, 4] = 0.0
    nbins, n = 1548, 123456789
    c = torch.empty(nbins, dtype=torch.int64, device=DEV)
    st = torch.empty(5, dtype=torch.float64, device=DEV)

    def finish(part: torch.Tensor) -> None:
        k_hist._kernels()["finish"][((nbins + k_hist.FINISH_COLS - 1) // k_hist.FINISH_COLS,)](
            slices.to(DEV), part.to(DEV), c, st, programs, nbins, n, SLICE=k_hist.SLICE,
            COLS=k_hist.FINISH_COLS, ROWS=k_hist.FINISH_ROWS, PROGS=k_hist.FINISH_PROGS)
    finish(part)
    assert torch.equal(c.cpu(), slices.sum(0, dtype=torch.int64)[1:nbins + 1])
    want = [part[:, 0].min(), part[:, 1].max(), float(n), part[:, 2].sum(), part[:, 3].sum()]
    np.testing.assert_allclose(st.cpu().numpy(), np.array([float(v) for v in want]), rtol=1e-12)
    part[programs // 2, 4] = 1.0  # a NaN somewhere: min and max become NaN, as numpy's
    finish(part)
    assert np.isnan(st.cpu().numpy()[:2]).all()


def _pr_oracle(labels, preds, n, weights=None):
    idx = np.int32(np.floor(preds * (n - 1)))
    lab = labels.astype(np.float64)
    w = 1.0 if weights is None else weights
    tp = np.histogram(idx, bins=n, range=(0, n - 1), weights=lab * w)[0]
    fp = np.histogram(idx, bins=n, range=(0, n - 1), weights=(1.0 - lab) * w)[0]
    return tp, fp


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_pr_buckets_three_way(dtype, weighted):
    g = torch.Generator().manual_seed(1)
    preds = torch.cat([torch.rand(N, generator=g), torch.tensor([0.0, 1.0, -0.1, 1.1, float("nan")])]).to(dtype)
    labels = torch.randint(0, 2, preds.shape, generator=g)
    weights = torch.randint(1, 4, preds.shape, generator=g).double() if weighted else None
    n = 127
    o_tp, o_fp = _pr_oracle(labels.numpy(), preds.numpy(), n, None if weights is None else weights.numpy())
    r = r_pr.buckets_torch(preds.to(DEV), labels.to(DEV), None if weights is None else weights.to(DEV), n)
    k = k_pr.buckets(preds.to(DEV), labels.to(DEV), None if weights is None else weights.to(DEV), n)
    h = r_pr.buckets_chunked(preds, labels, weights, n)  # CPU path (native or 0/1 torch fast path)
    h = (h[0].numpy(), h[1].numpy())
    for tp, fp in (r, k):
        assert np.array_equal(tp.cpu().numpy(), o_tp) and np.array_equal(fp.cpu().numpy(), o_fp)
    assert np.array_equal(h[0], o_tp) and np.array_equal(h[1], o_fp)


def _image_oracle(nchw: np.ndarray) -> np.ndarray:
    """torch's make_grid + scaling, transcribed in numpy."""
    i = nchw
    if i.shape[1] == 1:
        i = np.concatenate([i, i, i], 1)
    n, c, h, w = i.shape
    cols = min(n, 8)
    rows = int(np.ceil(n / cols))
    canvas = np.zeros((c, h * rows, w * cols), dtype=i.dtype)
    for k in range(n):
        y, x = divmod(k, cols)
        canvas[:, y * h:(y + 1) * h, x * w:(x + 1) * w] = i[k]
    hwc = canvas.transpose(1, 2, 0)
    scale = 1 if hwc.dtype == np.uint8 else 255
    with np.errstate(invalid="ignore"):
        return (hwc.astype(np.float32) * scale).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("shape,dtype", [((9, 3, 5, 7), torch.float32), ((1, 1, 6, 4), torch.float64),
                                         ((3, 4, 4, 4), torch.uint8), ((10, 3, 3, 2), torch.float16),
                                         ((2, 3, 4, 4), torch.int32)])
def test_image_three_way(shape, dtype):
    g = torch.Generator().manual_seed(2)
    if dtype == torch.uint8 or dtype == torch.int32:
        x = torch.randint(0, 256, shape, generator=g).to(dtype)
    else:
        x = (torch.rand(shape, generator=g) * 1.4 - 0.2).to(dtype)
    if dtype == torch.float32:
        x.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), 0.999])
    nhwc = x.permute(0, 2, 3, 1).contiguous()  # exercise strided (non-contiguous) NCHW views
    xs = nhwc.permute(0, 3, 1, 2)
    oracle = _image_oracle(x.numpy())
    assert np.array_equal(r_img.grid_hwc_uint8_torch(xs.to(DEV)).cpu().numpy(), oracle)
    assert np.array_equal(k_img.grid_hwc_uint8(xs.to(DEV)).cpu().numpy(), oracle)


def test_mesh_pack_matches_numpy():
    parts = [torch.rand(1, 50, 3), torch.randint(0, 50, (1, 20, 3), dtype=torch.int32),
             torch.randint(0, 255, (1, 50, 3), dtype=torch.uint8)]
    ref = r_mesh.pack_torch([p.to(DEV) for p in parts])[0]
    oracle = np.concatenate([p.numpy().astype(np.float32).ravel() for p in parts])
    assert np.array_equal(ref.cpu().numpy(), oracle)


def test_native_pr_declines_non_binary_labels():
    if r_pr.native() is None:
        pytest.skip("native extension not built")
    preds = torch.rand(1000)
    assert r_pr.buckets_native(preds, torch.randint(0, 3, (1000,)), 127, 1) is None
    tp, fp = r_pr.buckets_native(preds, torch.randint(0, 2, (1000,)).bool(), 127, 2)
    assert float(tp.sum() + fp.sum()) == 1000


def test_failing_kernel_falls_back_to_the_reference_once(monkeypatch):
    """A kernel that cannot compile or launch is replaced by its torch reference, with one warning."""
    import warnings

    from gpulog._reduce import _backend
    monkeypatch.setattr(_backend, "use_triton", lambda x: True)
    monkeypatch.setattr(_backend, "_FAILED", {})
    monkeypatch.setenv("GPULOG_COMPILE", "inline")  # background compilation: test_sync_probe.py
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise RuntimeError("PassManager::run failed")  # what a Triton compile failure looks like
    monkeypatch.setattr(k_hist, "reduce", broken)
    x = torch.randn(1000)
    edges = r_hist.tensorflow_edges()
    fn = _backend.kernel_or(x, "histogram.reduce", r_hist.reduce_torch)
    with pytest.warns(RuntimeWarning, match="histogram.reduce failed .*PassManager"):
        counts, _ = fn(x, edges, True)
    assert np.array_equal(counts.numpy(), np.histogram(x.double().numpy(), bins=edges)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning, and the kernel is not tried again
        again = _backend.kernel_or(x, "histogram.reduce", r_hist.reduce_torch)
        assert again is r_hist.reduce_torch
        fn(x, edges, True)
    assert len(calls) == 1
    monkeypatch.setattr(_backend, "_FAILED", {})
    monkeypatch.setenv("GPULOG_BACKEND", "triton")
    with pytest.raises(RuntimeError, match="PassManager"):  # forced Triton: the error is the user's
        _backend.kernel_or(x, "histogram.reduce", r_hist.reduce_torch)(x, edges, True)


@pytest.mark.parametrize("chunk", [1024, 3072])
def test_watch_kernel_matches_the_reference_and_numpy(chunk):
    """The multi-tensor kernel (one launch per dtype over the chunk table) vs the chunked torch
    reference vs numpy: counts and extremes exact, sums to float64 rounding."""
    import math
    from gpulog.kernels import watch as k_watch
    from gpulog._reduce import watch as r_watch
    g = torch.Generator().manual_seed(5)
    ts = [torch.randn(5000, generator=g), torch.tensor(SPECIAL * 3), torch.randn(2500, generator=g).half(),
          (torch.randn(3000, generator=g) * 1e3).bfloat16(), torch.zeros(0), torch.zeros(5),
          torch.full((7,), math.nan), torch.randn(4100, generator=g) * torch.exp(torch.randn(4100, generator=g) * 5)]
    ts = [t.to(DEV) for t in ts]
    table = r_watch.ChunkTable([t.numel() for t in ts], chunk=chunk)
    got = k_watch.stats(ts, table).cpu().numpy()
    ref = r_watch.reduce_torch(ts, table).cpu().numpy()
    exact = [0, 3, 4, 5, 6, 7]
    assert np.array_equal(got[:, exact], ref[:, exact])
    np.testing.assert_allclose(got[:, 2], ref[:, 2], rtol=1e-12, atol=0)
    for t, row, ref_row in zip(ts, got, ref):
        x = t.float().double().cpu().numpy()
        f = x[np.isfinite(x)]
        # sums in another order: equal to float64 rounding of the sum of magnitudes
        assert abs(row[1] - ref_row[1]) <= 1e-15 * np.abs(f).sum() * max(1, f.size) ** 0.5
        assert row[0] == x.size and row[3] == x.size - f.size and row[4] == (f == 0).sum()
        assert row[5] == (f.max() if f.size else -math.inf) and row[7] == (f.min() if f.size else math.inf)
        assert row[2] == pytest.approx((f * f).sum(), rel=1e-12, abs=0)
