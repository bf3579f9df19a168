"""Bad input raises ValueError/TypeError at the call, says what was wrong, and loses nothing."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import gpulog
from gpulog.reader import read_scalars

BAD_CALLS = [
    ("add_scalar", ("x", torch.ones(3), 1), ValueError, "exactly one element"),
    ("add_scalar", ("x", np.ones(2), 1), ValueError, "exactly one element"),
    ("add_scalar", ("x", "1.0", 1), TypeError, "add_text"),
    ("add_scalar", ("x", None, 1), TypeError, "must be a number"),
    ("add_scalar", (3, 1.0, 1), TypeError, "tag must be a str"),
    ("add_scalar", ("x", 1.0, "one"), TypeError, "global_step"),
    ("add_scalar", ("x", 1.0, 1.5), ValueError, "whole number"),
    ("add_scalar", ("x", 1.0, 1, "now"), TypeError, "walltime"),
    ("add_scalars", ("m", [1, 2], 1), TypeError, "tag_scalar_dict must be a dict"),
    ("add_scalars", ("m", {"a": "b"}, 1), TypeError, "tag_scalar_dict['a']"),
    ("add_text", ("t", 3), TypeError, "text_string must be a str"),
    ("add_hparams", ([1], {}), TypeError, "must be dicts"),
    ("add_hparams", ({"a": [1, 2]}, {}), ValueError, "hparam_dict['a']"),
    ("add_hparams", ({"a": 1}, {"m": 1}, {"a": ["x"]}), TypeError, "hparam_domain_discrete['a']"),
    ("add_histogram_raw", ("h", 0, 1, 2, 1, 1, [1, 2, 3], [1, 1]), ValueError, "len(bucket_limits)"),
    ("add_pr_curve_raw", ("p", [1], [1], [1], [1], [1], [1, 2]), ValueError, "same length"),
    ("add_pr_curve_raw", ("p", [1], [1], [1], [1], [1], [1], 0, 1), ValueError, "num_thresholds"),
    ("add_custom_scalars", ([1],), TypeError, "layout must be a dict"),
    ("add_custom_scalars", ({"c": {"t": ["Margin", ["a"]]}},), ValueError, "exactly 3 tags"),
    ("add_custom_scalars_marginchart", (["a", "b"],), ValueError, "exactly 3 tags"),
    ("add_tensor", ("t", np.array(["a"])), TypeError, "unsupported dtype"),
    ("add_tensor", ("t", "abc"), TypeError, "array or tensor"),
]


@pytest.mark.parametrize("method,args,exc,msg", BAD_CALLS, ids=[f"{c[0]}-{i}" for i, c in enumerate(BAD_CALLS)])
def test_bad_input_raises_and_writer_keeps_working(tmp_path, method, args, exc, msg):
    w = gpulog.SummaryWriter(tmp_path)
    w.add_scalar("before", 1.0, 1)
    with pytest.raises(exc) as info:
        getattr(w, method)(*args)
    assert msg in str(info.value)
    w.add_scalar("after", 2.0, 2)
    w.close()
    s = read_scalars(tmp_path)
    assert s["before"] == [(1, 1.0)] and s["after"] == [(2, 2.0)]


def test_unusable_log_dir_fails_in_constructor(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(NotADirectoryError, match="not a directory"):  # I/O failures are OSErrors
        gpulog.SummaryWriter(f)
    with pytest.raises(OSError, match="cannot create log_dir"):
        gpulog.SummaryWriter(f / "sub")
    with pytest.raises(TypeError, match="log_dir"):
        gpulog.SummaryWriter(log_dir=3.5)
    with pytest.raises(ValueError, match="max_queue"):
        gpulog.SummaryWriter(tmp_path, max_queue=0)
