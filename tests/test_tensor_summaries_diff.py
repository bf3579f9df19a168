"""Differential tests of the tensor-valued summaries against torch's writer, via TensorBoard."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import gpulog
from tbcompare import accumulate, run_snapshots, _eq


def compare(tmp_path, calls, rel_hist_sums=False):
    from torch.utils.tensorboard import SummaryWriter as T
    for name, cls in (("t", T), ("g", gpulog.SummaryWriter)):
        w = cls(str(tmp_path / name))
        calls(w)
        w.close()
    a, b = run_snapshots(tmp_path / "t"), run_snapshots(tmp_path / "g")
    assert sorted(a) == sorted(b)
    for run in a:
        assert sorted(a[run]) == sorted(b[run])
        for k in a[run]:
            x, y = a[run][k], b[run][k]
            if k.startswith("histo/"):
                assert len(x) == len(y), f"{k}: {len(x)} events != {len(y)}"
                for (s1, h1), (s2, h2) in zip(x, y):
                    assert s1 == s2 and list(h1.bucket_limit) == list(h2.bucket_limit)
                    assert list(h1.bucket) == list(h2.bucket), k
                    assert _eq([h1.min, h1.max, h1.num], [h2.min, h2.max, h2.num]), k
                    np.testing.assert_allclose([h1.sum, h1.sum_squares], [h2.sum, h2.sum_squares], rtol=1e-12)
            else:
                assert _eq(x, y), f"{k}: {x!r:.300} != {y!r:.300}"
    return a, b


G = torch.Generator().manual_seed(0)


@pytest.mark.parametrize("values", [
    torch.randn(20000, generator=G), torch.randn(999, generator=G).half(),
    torch.randn(500, generator=G).to(torch.bfloat16), torch.randn(500, generator=G).double() * 1e6,
    torch.randint(-50, 50, (777,), generator=G), torch.full((10,), 3.0), torch.tensor([1.5]),
    torch.tensor([1.0, float("nan"), float("inf"), -2.0, 1e21]),
    torch.randn(30, 40, generator=G).t(),  # non-contiguous
    np.random.default_rng(0).normal(size=300).astype(np.float32),
], ids=["randn", "fp16", "bf16", "f64-wide", "int", "constant", "one", "nan-inf", "noncontig", "numpy"])
def test_histogram_matches_torch(tmp_path, values):
    def calls(w):
        w.add_histogram("h", values, 1)
        w.add_histogram("h", values, 2, max_bins=20)
    compare(tmp_path, calls)


@pytest.mark.parametrize("bins", [10, "auto", "fd", "sturges", [-3.0, -1.0, 0.0, 0.5, 4.0]])
def test_histogram_other_bins(tmp_path, bins):
    x = torch.randn(2000, generator=torch.Generator().manual_seed(3))
    compare(tmp_path, lambda w: w.add_histogram("h", x, 1, bins=bins))


def test_histogram_bad_input(tmp_path):
    w = gpulog.SummaryWriter(tmp_path)
    with pytest.raises(ValueError, match="empty"):
        w.add_histogram("h", torch.tensor([]), 1)
    with pytest.raises(ValueError, match="NaN, infinite or out of range"):
        w.add_histogram("h", torch.tensor([float("nan"), float("inf")]), 1)
    from gpulog._reduce._backend import native
    if native() is not None:  # float32 CPU data is counted at the call: the error comes at once
        with pytest.raises(ValueError, match="out of range"):
            w.add_histogram("h", torch.tensor([1e30]), 1)
    # counted on the writer thread, so found there: a warning naming the call; no later call pays
    with pytest.warns(RuntimeWarning, match=r"add_histogram\(tag='h', step=1\).*skipped.*out of range"):
        w.add_histogram("h", torch.tensor([1e30], dtype=torch.float64), 1)
        w.flush()
    w.flush()
    with pytest.raises(TypeError, match="real numbers"):
        w.add_histogram("h", torch.tensor([1 + 1j]), 1)
    with pytest.raises(ValueError, match="max_bins"):
        w.add_histogram("h", torch.ones(3), 1, max_bins=0)
    w.add_histogram("ok", torch.ones(3), 1)
    w.close()
    assert accumulate(tmp_path).Histograms("ok")[0].histogram_value.num == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_pr_curve_matches_torch(tmp_path, dtype):
    g = torch.Generator().manual_seed(4)
    labels = torch.randint(0, 2, (5000,), generator=g)
    preds = torch.rand(5000, generator=g).to(dtype)
    weights = torch.randint(1, 3, (5000,), generator=g).float().numpy()

    def calls(w):
        w.add_pr_curve("pr", labels, preds, 1)
        w.add_pr_curve("pr_small", labels[:4], preds[:4], 2, num_thresholds=5)
        w.add_pr_curve("pr_w", labels, preds, 3, weights=weights)
        w.add_pr_curve("pr_clamp", labels, preds, 4, num_thresholds=500)
    compare(tmp_path, calls)


def test_pr_curve_tensor_weights_and_bad_input(tmp_path):
    w = gpulog.SummaryWriter(tmp_path)
    w.add_pr_curve("p", torch.tensor([1, 0]), torch.tensor([0.9, 0.2]), 1, weights=torch.tensor([2.0, 1.0]))
    with pytest.raises(ValueError, match="shape"):
        w.add_pr_curve("p", torch.tensor([1, 0, 1]), torch.tensor([0.9, 0.2]), 1)
    with pytest.raises(ValueError, match="empty"):
        w.add_pr_curve("p", torch.tensor([]), torch.tensor([]), 1)
    w.close()
    from tensorboard.util.tensor_util import make_ndarray
    data = make_ndarray(accumulate(tmp_path).Tensors("p")[0].tensor_proto)
    assert data[0, 0] == 2.0 and data[1, 0] == 1.0  # weighted tp and fp at threshold 0


IMG = torch.rand(3, 17, 23, generator=torch.Generator().manual_seed(5))


@pytest.mark.parametrize("img,fmt", [
    (IMG, "CHW"), (IMG.permute(1, 2, 0), "HWC"), (IMG[0], "HW"), (IMG[:1], "CHW"),
    ((IMG * 255).to(torch.uint8), "CHW"), (IMG * 2 - 0.5, "CHW"), (IMG.double(), "CHW"),
    (IMG.half(), "CHW"), (torch.randint(0, 300, (3, 4, 4)), "CHW"), (IMG.numpy(), "CHW"),
    (torch.rand(4, 9, 9), "CHW"),
], ids=["chw", "hwc", "hw", "grey", "uint8", "out-of-range", "f64", "f16", "int", "numpy", "rgba"])
def test_add_image_matches_torch(tmp_path, img, fmt):
    compare(tmp_path, lambda w: w.add_image("img", img, 1, dataformats=fmt))


@pytest.mark.parametrize("n", [1, 3, 9, 17])
def test_add_images_grid_matches_torch(tmp_path, n):
    x = torch.rand(n, 3, 6, 5, generator=torch.Generator().manual_seed(n))
    compare(tmp_path, lambda w: (w.add_images("imgs", x, 1),
                                 w.add_images("nhwc", x.permute(0, 2, 3, 1), 1, dataformats="NHWC"),
                                 w.add_images("grey", x[:, :1], 1)))


def test_image_with_boxes_and_figure_match_torch(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def calls(w):
        w.add_image_with_boxes("b", IMG, torch.tensor([[1, 2, 10, 12], [3, 3, 20, 15]]), 1, labels=["cat", "dog"])
        w.add_image_with_boxes("b2", IMG, np.array([[1, 2, 10, 12]]), 2, rescale=2)
        fig = plt.figure(figsize=(2, 2))
        plt.plot([1, 2, 3])
        w.add_figure("fig", fig, 1)
    compare(tmp_path, calls)


def test_image_bad_input(tmp_path):
    w = gpulog.SummaryWriter(tmp_path)
    for args, exc in [((torch.rand(3, 4, 4), "CHWN"), ValueError), ((torch.rand(3, 4, 4), "CCW"), ValueError),
                      ((torch.rand(5, 4, 4), "CHW"), ValueError), ((torch.rand(2, 3, 4, 4), "CHW"), ValueError),
                      ((torch.rand(3, 0, 4), "CHW"), ValueError), ((torch.rand(3, 4, 4), 3), TypeError)]:
        with pytest.raises(exc):
            w.add_image("i", args[0], 1, dataformats=args[1])
    with pytest.raises(ValueError, match="box_tensor"):
        w.add_image_with_boxes("b", IMG, torch.ones(2, 3), 1)
    w.add_image("ok", IMG, 1)
    w.close()
    assert len(accumulate(tmp_path).Images("ok")) == 1


@pytest.mark.parametrize("n", [1, 3, 4, 5])
def test_add_video_layout_as_torch(tmp_path, n):
    from PIL import Image
    import io
    v = torch.rand(n, 4, 3, 8, 6, generator=torch.Generator().manual_seed(n))
    with gpulog.SummaryWriter(tmp_path) as w:
        w.add_video("v", v, 1, fps=5)
        w.add_video("u8", (v * 255).to(torch.uint8), 1)
    acc = accumulate(tmp_path)
    ev = acc.Images("v")[0]
    padded = n if n & (n - 1) == 0 else 1 << n.bit_length()
    rows = 2 ** ((n.bit_length() - 1) // 2)
    assert (ev.height, ev.width) == (rows * 8, padded // rows * 6)
    gif = Image.open(io.BytesIO(ev.encoded_image_string))
    assert gif.format == "GIF" and gif.n_frames == 4 and gif.info["duration"] == 200
    with pytest.raises(ValueError, match="5 dimensions"):
        gpulog.SummaryWriter(tmp_path).add_video("v", torch.rand(3, 8, 6), 1)


def _torch_video_pixels(v: torch.Tensor) -> np.ndarray:
    """torch's writer up to the encoder (summary.video without moviepy): [T, H, W, C] uint8."""
    from torch.utils.tensorboard import summary
    t = summary._prepare_video(v.numpy())
    scale = summary._calc_scale_factor(t)
    return (t.astype(np.float32) * scale).clip(0, 255).astype(np.uint8)


@pytest.mark.parametrize("n", [1, 3, 4, 5])
@pytest.mark.parametrize("dtype", ["float", "uint8"])
def test_video_pixels_match_torch(tmp_path, n, dtype):
    """The frames gpulog encodes are torch's pixels; with at most 256 colours (GIF's palette) the
    decoded GIF gives them back exactly."""
    from PIL import Image, ImageSequence
    import io
    from gpulog._reduce.video import frames_torch
    g = torch.Generator().manual_seed(n)
    v = torch.randint(0, 3, (n, 4, 3, 8, 6), generator=g).float() / 2  # 27 colours at most
    if dtype == "uint8":
        v = (v * 255).to(torch.uint8)
    want = _torch_video_pixels(v)
    assert np.array_equal(frames_torch(v)[0].numpy(), want)
    smooth = torch.rand(n, 2, 3, 5, 7, generator=g)  # every value: the layout and scaling alone
    assert np.array_equal(frames_torch(smooth)[0].numpy(), _torch_video_pixels(smooth))
    with gpulog.SummaryWriter(tmp_path) as w:
        w.add_video("v", v, 1, fps=5)
    gif = Image.open(io.BytesIO(accumulate(tmp_path).Images("v")[0].encoded_image_string))
    frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(gif)]
    assert len(frames) == want.shape[0]
    for got, exp in zip(frames, want):
        assert np.array_equal(got, exp[..., :3])


def test_audio_matches_torch(tmp_path):
    x = torch.rand(1000, generator=torch.Generator().manual_seed(6)) * 2 - 1
    compare(tmp_path, lambda w: (w.add_audio("a", x, 1, sample_rate=8000),
                                 w.add_audio("a2", x[None].double(), 2)))


def test_audio_clipping_warns_and_bad_input(tmp_path):
    w = gpulog.SummaryWriter(tmp_path)
    with pytest.warns(RuntimeWarning, match="clipped"):
        w.add_audio("loud", torch.tensor([0.5, 2.0, -3.0]), 1)
        w.flush()
    with pytest.raises(ValueError, match="mono"):
        w.add_audio("st", torch.rand(2, 10), 1)
    w.close()


def test_mesh_matches_torch(tmp_path):
    g = torch.Generator().manual_seed(7)
    v, c = torch.rand(1, 100, 3, generator=g), torch.randint(0, 255, (1, 100, 3), generator=g)
    f = torch.randint(0, 100, (1, 50, 3), generator=g, dtype=torch.int32)
    compare(tmp_path, lambda w: (w.add_mesh("m", v, colors=c, faces=f, global_step=1),
                                 w.add_mesh("p", v, config_dict={"camera": {"fov": 75}}, global_step=2)))
    w = gpulog.SummaryWriter(tmp_path / "bad")
    with pytest.raises(ValueError, match=r"\[B, N, 3\]"):
        w.add_mesh("m", torch.rand(100, 3))
    w.close()


def test_embedding_files_match_torch(tmp_path):
    g = torch.Generator().manual_seed(8)
    mat, imgs = torch.rand(20, 5, generator=g), torch.rand(20, 3, 6, 6, generator=g)
    meta = [[i, f"n{i}"] for i in range(20)]
    from torch.utils.tensorboard import SummaryWriter as T
    for name, cls in (("t", T), ("g", gpulog.SummaryWriter)):
        w = cls(str(tmp_path / name))
        w.add_embedding(mat, metadata=meta, label_img=imgs, global_step=3, tag="my/tag%1",
                        metadata_header=["idx", "name"])
        w.add_embedding(mat[:4], metadata=list("abcd"), global_step=4)
        w.close()
    for root, _, files in os.walk(tmp_path / "t"):
        for f in files:
            if "tfevents" in f:
                continue
            rel = os.path.relpath(os.path.join(root, f), tmp_path / "t")
            a = open(tmp_path / "t" / rel, "rb").read()
            b = open(tmp_path / "g" / rel, "rb").read()
            if f.endswith(".png"):
                from PIL import Image
                import io
                assert np.array_equal(np.asarray(Image.open(io.BytesIO(a))), np.asarray(Image.open(io.BytesIO(b)))), rel
            else:
                assert a == b, rel
    assert (tmp_path / "g" / "00003" / "my%2ftag%251" / "sprite.png").exists()


def test_value_at_call_time_is_logged(tmp_path):
    x = torch.zeros(1000)
    img = torch.zeros(3, 4, 4)
    with gpulog.SummaryWriter(tmp_path) as w:
        w.add_histogram("h", x, 1)
        w.add_image("i", img, 1)
        x += 5.0  # mutate right after the call
        img += 1.0
    acc = accumulate(tmp_path)
    assert acc.Histograms("h")[0].histogram_value.max == 0.0
    from PIL import Image
    import io
    assert np.asarray(Image.open(io.BytesIO(acc.Images("i")[0].encoded_image_string))).max() == 0
