"""``SummaryWriter(on_nonfinite=...)``: the first NaN/inf of each tag, found on the writer thread,
reported as a warning, raised on the training thread at its next call, or given to a callback;
the values are written as they are (TensorBoard reads them back)."""
from __future__ import annotations

import math
import warnings

import pytest
import torch

import gpulog
from gpulog import _worker
from tbcompare import accumulate


@pytest.fixture(params=["native", "python"])
def framing(request, monkeypatch):
    if request.param == "python":
        monkeypatch.setattr(_worker, "_native_framer", lambda: None)
    return request.param


def _log(w) -> None:
    w.add_scalar("loss", 1.0, 0)
    w.add_scalar("loss", math.nan, 1)
    w.add_scalar("loss", math.inf, 2)           # the same tag: reported once
    w.add_scalar("t", torch.tensor(-math.inf), 3)  # a 0-d tensor
    w.add_scalar("ok", 2.0, 3)
    w.add_histogram("h", torch.tensor([1.0, 2.0]), 4)
    w.add_histogram("h_bad", torch.tensor([1.0, math.nan]), 5)
    w.add_scalars("grp", {"a": math.nan, "b": 1.0}, 6)


def test_warn_names_each_tags_first_nonfinite_value_and_writes_everything(tmp_path, framing):
    w = gpulog.SummaryWriter(str(tmp_path), on_nonfinite="warn")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _log(w)
        w.close()
    msgs = sorted(str(c.message) for c in caught if "non-finite" in str(c.message))
    assert msgs == sorted([
        "gpulog: first non-finite value of 'loss': nan at step 1",
        "gpulog: first non-finite value of 't': -inf at step 3",
        "gpulog: first non-finite value of 'h_bad': nan at step 5",
        "gpulog: first non-finite value of 'grp': nan at step 6",
    ]), msgs
    acc = accumulate(str(tmp_path))
    vals = [e.value for e in acc.Scalars("loss")]
    assert vals[0] == 1.0 and math.isnan(vals[1]) and vals[2] == math.inf  # written as given


def test_raise_at_the_next_call_after_it_is_queued(tmp_path, framing):
    w = gpulog.SummaryWriter(str(tmp_path), on_nonfinite="raise")
    w.add_scalar("loss", math.nan, 7)
    with pytest.raises(FloatingPointError, match=r"'loss': nan at step 7"):
        for i in range(10000):  # found on the writer thread: raised at a later call
            w.add_scalar("after", float(i), i)
            if i % 100 == 99:
                w.flush()
    w.add_scalar("later", 1.0, 0)  # nothing is lost and the writer goes on
    w.close()
    acc = accumulate(str(tmp_path))
    assert [e.value for e in acc.Scalars("later")] == [1.0]
    got = [e.step for e in acc.Scalars("after")]
    assert got == list(range(len(got))) and len(got) >= 1  # the raising call's value was kept


def test_a_callback_gets_tag_step_wall_and_rank(tmp_path):
    reports = []
    w = gpulog.SummaryWriter(str(tmp_path), on_nonfinite=reports.append)
    w.add_scalar("x", math.inf, 3, walltime=123.5)
    w.add_histogram("h", torch.tensor([0.5, math.nan]), 4, walltime=124.0, bins=[0.0, 1.0])
    w.close()
    assert reports == [{"tag": "x", "step": 3, "wall": 123.5, "rank": None, "value": math.inf},
                       {"tag": "h", "step": 4, "wall": 124.0, "rank": None, "value": reports[1]["value"]}]
    assert math.isnan(reports[1]["value"])


def test_default_reports_nothing_and_bad_policies_fail_at_the_call(tmp_path):
    w = gpulog.SummaryWriter(str(tmp_path / "a"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        w.add_scalar("x", math.nan, 0)
        w.close()
    with pytest.raises(ValueError, match="on_nonfinite must be"):
        gpulog.SummaryWriter(str(tmp_path / "b"), on_nonfinite="ignore")
