"""Model graphs → the two events torch's writer writes for ``add_graph``.

Data contract: ``nodes`` are ``GraphNode``-like records (``name``, ``op``, ``inputs``, ``shape``,
``attributes``, ``dtype``; see ``_reduce/graph.py``).  Event 1 holds ``graph_def`` (a ``GraphDef``
with one ``NodeDef`` per node: ``attr["attr"]`` = the attribute text, ``attr["_output_shapes"]`` =
one shape when known, ``attr["dtype"]`` when known; ``versions.producer`` = 22, torch's value).
Event 2 holds ``tagged_run_metadata`` with tag ``step1`` and a ``RunMetadata`` naming one device
``/device:CPU:0``, as torch writes it (TensorBoard's graph plugin reads the tag list from it).
Runs on the writer thread.
"""
from __future__ import annotations

from typing import Any, List, Sequence

from .._proto import messages as m
from .._proto.graph import message
from .._proto.wire import f_bytes, f_double, f_str

_DTYPES = {"float32": m.DT_FLOAT, "float64": m.DT_DOUBLE, "int32": m.DT_INT32, "uint8": m.DT_UINT8,
           "int16": m.DT_INT16, "int8": m.DT_INT8, "int64": m.DT_INT64, "bool": m.DT_BOOL,
           "bfloat16": m.DT_BFLOAT16, "float16": m.DT_HALF, "complex64": m.DT_COMPLEX64,
           "complex128": m.DT_COMPLEX128}


def graph_def(nodes: Sequence[Any]) -> bytes:
    GraphDef, NodeDef, AttrValue = message("GraphDef"), message("NodeDef"), message("AttrValue")
    Shape = message("TensorShapeProto")
    out = []
    for n in nodes:
        node = NodeDef(name=n.name, op=n.op, input=list(n.inputs))
        node.attr["attr"].CopyFrom(AttrValue(s=n.attributes.encode("utf-8")))
        if n.shape is not None:
            shape = Shape(dim=[Shape.Dim(size=int(d)) for d in n.shape])
            node.attr["_output_shapes"].CopyFrom(AttrValue(list=AttrValue.ListValue(shape=[shape])))
        if getattr(n, "dtype", None):
            dt = _DTYPES.get(n.dtype)
            node.attr["dtype"].CopyFrom(AttrValue(type=dt) if dt else AttrValue(s=n.dtype.encode()))
        out.append(node)
    return GraphDef(node=out, versions=message("VersionDef")(producer=22)).SerializeToString()


def run_metadata(device: str = "/device:CPU:0") -> bytes:
    RunMetadata, StepStats = message("RunMetadata"), message("StepStats")
    return RunMetadata(step_stats=StepStats(dev_stats=[message("DeviceStepStats")(device=device)])
                       ).SerializeToString()


def graph_events(wall: float, nodes: Sequence[Any]) -> List[bytes]:
    """``[graph event, run-metadata event]``, serialized (an ``out=EVENTS`` item)."""
    graph = f_double(1, wall) + f_bytes(4, graph_def(nodes))
    tagged = f_str(1, "step1") + f_bytes(2, run_metadata())
    return [graph, f_double(1, wall) + f_bytes(8, tagged)]


def onnx_graph_events(wall: float, graph: bytes) -> List[bytes]:
    return [f_double(1, wall) + f_bytes(4, graph)]


def onnx_graph_def(model: Any) -> bytes:
    """torch's ``_onnx_graph.parse`` of a loaded ONNX model (``onnx.ModelProto``): inputs and
    outputs as ``Variable`` nodes (dtype, shape), then one node per ONNX node named by its first
    output, with its attributes as text (torch prints every name; gpulog does not)."""
    import itertools
    GraphDef, NodeDef, AttrValue = message("GraphDef"), message("NodeDef"), message("AttrValue")
    Shape = message("TensorShapeProto")
    g = model.graph
    nodes = []
    for node in itertools.chain(g.input, g.output):
        dims = [Shape.Dim(size=d.dim_value) for d in node.type.tensor_type.shape.dim]
        n = NodeDef(name=node.name, op="Variable", input=[])
        n.attr["dtype"].CopyFrom(AttrValue(type=node.type.tensor_type.elem_type))
        n.attr["shape"].CopyFrom(AttrValue(shape=Shape(dim=dims)))
        nodes.append(n)
    for node in g.node:
        attr = ", ".join(" = ".join(str(f[1]) for f in a.ListFields()) for a in node.attribute)
        n = NodeDef(name=node.output[0], op=node.op_type, input=list(node.input))
        n.attr["parameters"].CopyFrom(AttrValue(s=attr.encode("utf-8")))
        nodes.append(n)
    return GraphDef(node=nodes, versions=message("VersionDef")(producer=22)).SerializeToString()
