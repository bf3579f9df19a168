"""add_graph / add_onnx_graph against torch's writer, read back by TensorBoard's own loader."""
from __future__ import annotations

import os

import pytest
import torch

import gpulog
from tbcompare import accumulate


class MLP(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(4, 8)
        self.body = torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Linear(8, 2))

    def forward(self, x):
        return self.body(self.fc1(x)).softmax(-1)


class CNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)
        self.head = torch.nn.Linear(4, 5)

    def forward(self, x):
        y = torch.nn.functional.adaptive_avg_pool2d(self.bn(self.conv(x)).relu(), 1).flatten(1)
        return self.head(y)


class TwoInputs(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = torch.nn.Linear(3, 2), torch.nn.Linear(5, 2)

    def forward(self, x, y):
        return self.a(x) + self.b(y), x.sum()


class DictOut(torch.nn.Module):
    """TorchScript's tracer rejects the None in the output; torch.export takes it."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 2)

    def forward(self, x):
        return {"logits": self.fc(x), "aux": None}


CASES = {
    "mlp": (MLP, lambda: torch.randn(3, 4), True),
    "cnn": (CNN, lambda: torch.randn(2, 3, 8, 8), True),
    "two-inputs": (TwoInputs, lambda: (torch.randn(2, 3), torch.randn(2, 5)), True),
    "list-input-non-strict": (TwoInputs, lambda: [torch.randn(2, 3), torch.randn(2, 5)], False),
}


def _graphs(tmp_path, calls):
    from torch.utils.tensorboard import SummaryWriter as TorchWriter
    out = []
    for name, cls in (("torch", TorchWriter), ("gpulog", gpulog.SummaryWriter)):
        d = str(tmp_path / name)
        w = cls(d)
        calls(w)
        w.close()
        out.append(accumulate(d))
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_add_graph_is_torchs_graph(tmp_path, case):
    cls, make_input, strict = CASES[case]
    torch.manual_seed(0)
    model, x = cls(), make_input()
    model.train()
    a, b = _graphs(tmp_path, lambda w: w.add_graph(model, x, use_strict_trace=strict))
    ga, gb = a.Graph(), b.Graph()
    assert len(ga.node) > 3
    assert [n.name for n in ga.node] == [n.name for n in gb.node]
    assert ga == gb  # ops, inputs, attributes, shapes, versions: everything
    assert a.RunMetadata("step1") == b.RunMetadata("step1")
    assert model.training  # eval during the trace, restored after


@pytest.mark.parametrize("method", ["export", "fx"])
def test_graph_from_export_and_fx_has_shapes_and_dtypes(tmp_path, method):
    w = gpulog.SummaryWriter(str(tmp_path))
    w.add_graph(MLP(), torch.randn(3, 4), method=method)
    w.close()
    g = accumulate(str(tmp_path)).Graph()
    by_name = {n.name: n for n in g.node}
    assert by_name["output/output.1"].input  # connected to the last op
    linear = [n for n in g.node if "Linear[fc1]" in n.name and n.op != "Parameter"]
    assert linear, [n.name for n in g.node]
    shape = [d.size for d in linear[0].attr["_output_shapes"].list.shape[0].dim]
    assert shape == [3, 8]
    assert linear[0].attr["dtype"].type == 1  # DT_FLOAT
    for n in g.node:  # every input names a node of the graph
        assert all(i in by_name for i in n.input), (n.name, list(n.input))


def test_models_torchscript_cannot_trace_still_get_a_graph(tmp_path):
    with pytest.raises(Exception):
        torch.jit.trace(DictOut(), torch.randn(2, 4))
    w = gpulog.SummaryWriter(str(tmp_path))
    w.add_graph(DictOut(), torch.randn(2, 4))
    w.add_scalar("after", 1.0, 1)
    w.close()
    acc = accumulate(str(tmp_path))
    ops = {n.op for n in acc.Graph().node}
    assert "aten.linear.default" in ops
    assert acc.Scalars("after")[0].value == 1.0


def test_add_graph_errors_are_clear_and_lose_nothing(tmp_path):
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise KeyError("no such layer")

    w = gpulog.SummaryWriter(str(tmp_path))
    w.add_scalar("before", 1.0, 1)
    with pytest.raises(ValueError, match="method"):
        w.add_graph(MLP(), torch.randn(3, 4), method="onnx")
    with pytest.raises(TypeError, match="model"):
        w.add_graph("not a model", torch.randn(3, 4))
    with pytest.raises(RuntimeError, match="jit: .*\n.*export: .*\n.*fx: "):
        w.add_graph(Broken(), torch.randn(3, 4))
    w.add_scalar("after", 2.0, 2)
    w.close()
    acc = accumulate(str(tmp_path))
    assert acc.Scalars("before")[0].value == 1.0 and acc.Scalars("after")[0].value == 2.0


def test_add_onnx_graph_is_torchs(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])
    w_init = helper.make_tensor("w", TensorProto.FLOAT, [4, 2], [0.5] * 8)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["h"]),
             helper.make_node("Softmax", ["h"], ["y"], axis=1)]
    model = helper.make_model(helper.make_graph(nodes, "g", [x], [y], [w_init]))
    path = str(tmp_path / "m.onnx")
    onnx.save(model, path)
    a, b = _graphs(tmp_path, lambda w: w.add_onnx_graph(path))
    assert a.Graph() == b.Graph() and len(b.Graph().node) == 4


def test_inspect_lists_the_graph(tmp_path):
    from gpulog.cli import main
    import contextlib
    import io
    w = gpulog.SummaryWriter(str(tmp_path))
    w.add_graph(MLP(), torch.randn(3, 4))
    w.close()
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        main(["inspect", str(tmp_path)])
    assert "(graph)" in out.getvalue() and "step1" in out.getvalue()
    n = len(accumulate(str(tmp_path)).Graph().node)
    assert f"{n} nodes" in out.getvalue()
    assert os.listdir(str(tmp_path))
