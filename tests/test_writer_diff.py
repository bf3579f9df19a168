"""Differential tests: the same calls through torch's writer and gpulog, read back by TensorBoard."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tbcompare import assert_same, run_snapshots


def both(twin, calls, **kw):
    dirs = twin(calls, **kw)
    a, b = run_snapshots(dirs["torch"]), run_snapshots(dirs["gpulog"])
    assert sorted(a) == sorted(b)
    for run in a:
        assert_same(a[run], b[run])
    return a, b


def test_scalars_of_every_input_type(twin):
    def calls(w):
        for i in range(50):
            w.add_scalar("loss", 1.0 / (i + 1), i)
        w.add_scalar("int", 7, 1)
        w.add_scalar("np", np.float32(0.25), 2)
        w.add_scalar("np64", np.float64(1e300), 3)
        w.add_scalar("tensor", torch.tensor(3.5), 4)
        w.add_scalar("tensor1", torch.tensor([2.0]), 5)
        w.add_scalar("nan", float("nan"), 6)
        w.add_scalar("inf", float("inf"), 7)
        w.add_scalar("-inf", -math.inf, 8)
        w.add_scalar("nostep", 1.0)
        w.add_scalar("台股/0050", 123.5, 9)
        w.add_scalar("negstep", 1.0, -3)
        w.add_scalar("new", 2.5, 1, new_style=True)
    a, _ = both(twin, calls)
    assert a["."]["scalar/loss"][3] == (3, pytest.approx(0.25))
    assert "scalar/台股/0050" in a["."]


def test_add_scalars_sub_runs(twin):
    def calls(w):
        for i in range(3):
            w.add_scalars("run/14h", {"xsinx": i * 0.5, "xcosx": i * 2.0, "tanx": 1.5}, i)
    a, _ = both(twin, calls)
    assert set(a) == {".", "run_14h_xsinx", "run_14h_xcosx", "run_14h_tanx"}


def test_text_custom_scalars_tensor_raw(twin):
    layout = {"Taiwan": {"twse": ["Multiline", ["twse/0050", "twse/2330"]]},
              "USA": {"dow": ["Margin", ["dow/aaa", "dow/bbb", "dow/ccc"]],
                      "nasdaq": ["Margin", ["nasdaq/aaa", "nasdaq/bbb", "nasdaq/ccc"]]}}

    def calls(w):
        w.add_text("note", "hello **markdown**", 1)
        w.add_text("note", "unicode ✓ 台股", 2)
        w.add_custom_scalars(layout)
        w.add_tensor("f32", torch.arange(6, dtype=torch.float32).reshape(2, 3), 1)
        w.add_tensor("i64", torch.tensor([1, -2, 3]), 1)
        w.add_tensor("f64", torch.tensor([0.1, 0.2], dtype=torch.float64), 1)
        w.add_tensor("bool", torch.tensor([True, False]), 1)
        w.add_histogram_raw("raw", min=-1, max=3, num=6, sum=5, sum_squares=15,
                            bucket_limits=[0.0, 1.0, 2.0, 3.0], bucket_counts=[1, 2, 2, 1],
                            global_step=3)
        n = 5
        w.add_pr_curve_raw("prraw", [3, 3, 2, 1, 0], [1, 0, 0, 0, 0], [0, 1, 1, 1, 1],
                           [0, 0, 1, 2, 3], [0.75, 1, 1, 1, 0], [1, 1, 0.6667, 0.3333, 0], 2, n)
    both(twin, calls)


def test_multiline_and_margin_helpers(twin):
    def calls(w):
        w.add_custom_scalars_multilinechart(["a", "b"], category="c", title="t")
    both(twin, calls)

    def calls2(w):
        w.add_custom_scalars_marginchart(["a", "b", "c"])
    # a fresh pair of dirs for the second layout
    import tempfile, os
    with tempfile.TemporaryDirectory() as d:
        from torch.utils.tensorboard import SummaryWriter as T
        import gpulog
        for name, cls in (("t", T), ("g", gpulog.SummaryWriter)):
            w = cls(os.path.join(d, name))
            calls2(w)
            w.close()
        assert_same(run_snapshots(os.path.join(d, "t"))["."], run_snapshots(os.path.join(d, "g"))["."])


def test_hparams_matches_torch_except_bools(twin):

    def calls(w):
        w.add_hparams({"lr": 0.1, "bsize": 32, "opt": "adam", "none": None},
                      {"hparam/accuracy": 0.9, "hparam/loss": 0.1},
                      hparam_domain_discrete={"opt": ["adam", "sgd"]}, run_name="trial", global_step=3)
    a, b = both(twin, calls)
    ssi = b["trial"]["hparams/_hparams_/session_start_info"]["sessionStartInfo"]
    assert ssi["hparams"] == {"lr": 0.1, "bsize": 32, "opt": "adam"}
    assert b["trial"]["scalar/hparam/accuracy"] == [(3, pytest.approx(0.9))]


def test_hparams_bool_is_logged_as_bool(tmp_path):
    import gpulog
    from tensorboard.plugins.hparams import plugin_data_pb2
    from tbcompare import accumulate
    with gpulog.SummaryWriter(tmp_path) as w:
        w.add_hparams({"flag": True, "fn": torch.relu}, {"m": 1.0}, run_name="r")
    acc = accumulate(tmp_path / "r")
    ssi = plugin_data_pb2.HParamsPluginData.FromString(
        acc.SummaryMetadata("_hparams_/session_start_info").plugin_data.content).session_start_info
    assert ssi.hparams["flag"].bool_value is True and ssi.hparams["flag"].WhichOneof("kind") == "bool_value"
    assert ssi.hparams["fn"].string_value == "relu"
    exp = plugin_data_pb2.HParamsPluginData.FromString(
        acc.SummaryMetadata("_hparams_/experiment").plugin_data.content).experiment
    assert [i.type for i in exp.hparam_infos] == [2, 1]


def test_add_tensor_readable_for_fp16_bf16_uint8(tmp_path):
    import gpulog
    from tensorboard.util.tensor_util import make_ndarray
    from tbcompare import accumulate
    data = {"f16": torch.tensor([1.0, -2.5, 65504.0], dtype=torch.float16),
            "bf16": torch.tensor([1.0, 3.140625, -1e5], dtype=torch.bfloat16),
            "u8": torch.tensor([0, 7, 255], dtype=torch.uint8),
            "c64": torch.tensor([1 + 2j], dtype=torch.complex64),
            "np_i16": np.array([[1, -1]], dtype=np.int16)}
    with gpulog.SummaryWriter(tmp_path) as w:
        for k, v in data.items():
            w.add_tensor(k, v, 1)
    acc = accumulate(tmp_path)
    for k, v in data.items():
        got = make_ndarray(acc.Tensors(k)[0].tensor_proto)
        want = v.float().numpy() if k == "bf16" else np.asarray(v)
        np.testing.assert_array_equal(got, want)
        assert got.shape == want.shape


def test_purge_step_events(tmp_path):
    import gpulog
    from gpulog.reader import read_events
    from torch.utils.tensorboard import SummaryWriter as T
    seqs = []
    for name, cls in (("t", T), ("g", gpulog.SummaryWriter)):
        w = cls(str(tmp_path / name), purge_step=42)
        w.add_scalar("x", 1.0, 43)
        w.close()
        w.add_scalar("x", 2.0, 44)  # reopens a new file, without purge events
        w.close()
        evs = read_events(tmp_path / name)
        seqs.append([(e.step, e.file_version, e.session_log_status, [v.tag for v in e.values]) for e in evs])
    assert seqs[0] == seqs[1]
    assert seqs[1][1:3] == [(42, "brain.Event:2", 0, []), (42, "", 1, [])]
    assert len(list((tmp_path / "g").iterdir())) == 2
