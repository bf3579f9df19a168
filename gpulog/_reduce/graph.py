"""Model graphs: a module and example inputs → a list of ``GraphNode`` (plain Python data).

Tracing runs the model, so it happens at the call (the model may change right after); the
``GraphDef`` is encoded on the writer thread from these nodes (``_encode/graph.py``).

Three ways to get the graph, tried in this order by ``method="auto"``:

- ``"jit"``: ``torch.jit.trace`` + inlining, parsed exactly as torch's writer parses it
  (``torch/utils/tensorboard/_pytorch_graph.py``: node names, scopes ``Net/Linear[fc]/...``, ops
  ``aten::linear``, inputs, ``_output_shapes`` and the ``attr`` string), so the graph reads back as
  torch's.  TorchScript is deprecated and fails on many modern models (data-dependent control
  flow, non-tensor outputs, some custom ops).
- ``"export"``: ``torch.export.export`` (non-strict): ATen ops with the shapes *and dtypes* of
  every value from the exported program's metadata, scopes from ``nn_module_stack``, parameters
  and buffers as ``Parameter`` nodes.
- ``"fx"``: ``torch.fx.symbolic_trace`` with shapes propagated from the inputs; module calls stay
  whole (``Linear``), for models that neither tracer takes.
"""
from __future__ import annotations

import contextlib
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch

METHODS = ("auto", "jit", "export", "fx")


@dataclass
class GraphNode:
    name: str
    op: str
    inputs: List[str] = field(default_factory=list)
    shape: Optional[List[int]] = None        # one output shape (torch writes one)
    attributes: str = ""                     # torch's free-text "attr"
    dtype: Optional[str] = None              # e.g. "float32" (export and fx paths)


@dataclass
class ModelGraph:
    nodes: List[GraphNode]
    method: str                              # the path that produced it


def _as_args(input_to_model: Any) -> Tuple[Any, ...]:
    if input_to_model is None:
        return ()
    if isinstance(input_to_model, list):
        return tuple(input_to_model)
    if isinstance(input_to_model, tuple):
        return input_to_model
    return (input_to_model,)


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    """Trace in eval mode (dropout, batch norm), restoring the mode after, as torch does."""
    if isinstance(model, torch.nn.Module):
        training = model.training
        model.train(False)
        try:
            yield
        finally:
            model.train(training)
    else:
        yield


def build(model: Any, input_to_model: Any, verbose: bool, use_strict_trace: bool,
          method: str) -> ModelGraph:
    """The graph of ``model`` on ``input_to_model`` by ``method`` (see the module docstring)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if not callable(model):
        raise TypeError(f"model must be a torch.nn.Module (or a scripted function), got "
                        f"{type(model).__name__}")
    args = _as_args(input_to_model)
    order = ("jit", "export", "fx") if method == "auto" else (method,)
    errors = []
    with _eval_mode(model):
        for how in order:
            try:
                nodes = {"jit": _jit_nodes, "export": _export_nodes, "fx": _fx_nodes}[how](
                    model, args, verbose, use_strict_trace)
                return ModelGraph(nodes, how)
            except Exception as err:  # noqa: BLE001 - next method; all reported if none works
                if method != "auto":
                    raise
                errors.append(f"{how}: {type(err).__name__}: {str(err).strip().splitlines()[0][:300]}")
    raise RuntimeError("add_graph: no method could trace this model:\n  " + "\n  ".join(errors) +
                       "\nPass input_to_model with the model's real input types, or log without a graph.")


# -- jit: torch's parser, reproduced -----------------------------------------------------------
def _jit_nodes(model: Any, args: Tuple[Any, ...], verbose: bool, strict: bool) -> List[GraphNode]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation and tracer warnings
        trace = torch.jit.trace(model, args, strict=strict)
    graph = trace.graph
    torch._C._jit_pass_inline(graph)
    if verbose:
        print(graph)
    return _parse_jit(graph, trace)


def _sizes(value: Any) -> Optional[List[int]]:
    return list(value.type().sizes()) if value.isCompleteTensor() else None


def _parse_jit(graph: Any, trace: Any) -> List[GraphNode]:
    """torch's ``_pytorch_graph.parse``, step for step, into ``GraphNode``s."""
    io: "OrderedDict[str, Dict[str, Any]]" = OrderedDict()   # debugName -> node fields
    ops: List[Dict[str, Any]] = []
    for value in graph.inputs():
        if len(value.uses()) == 0:
            continue
        if value.type().kind() != "ClassType":
            try:
                size = list(value.type().sizes())
            except RuntimeError:
                size = [1]
            io[value.debugName()] = {"name": value.debugName(), "inputs": [], "size": size,
                                     "kind": "IO Node", "attributes": "", "io": "input"}
    attr_to_scope: Dict[str, str] = {}
    for node in graph.nodes():
        op = _jit_op(node)
        if node.kind() == "prim::GetAttr":
            attr_name = node.s("name")
            key = node.output().debugName()
            parent = node.input().node()
            if parent.kind() == "prim::GetAttr":
                parent_scope = attr_to_scope[parent.output().debugName()]
                attr_to_scope[key] = f"{parent_scope}/{parent_scope.split('/')[-1]}.{attr_name}"
            else:
                attr_to_scope[key] = f"__module.{attr_name}"
            if node.output().type().kind() != "ClassType":
                op["scope"] = attr_to_scope[key]
                ops.append(op)
        else:
            ops.append(op)
    for i, value in enumerate(graph.outputs()):
        try:
            size = list(value.type().sizes())
        except RuntimeError:
            size = [1]
        io[f"output.{i + 1}"] = {"name": f"output.{i + 1}", "inputs": [value.debugName()],
                                 "size": size, "kind": "IO Node", "attributes": "", "io": "output"}

    def traced_name(module: Any) -> str:
        if isinstance(module, torch.jit.TracedModule):
            return module._name
        return getattr(module, "original_name", "Module")

    alias_to_name = {}
    base = traced_name(trace)
    for name, module in trace.named_modules(prefix="__module"):
        alias_to_name[name] = f"{traced_name(module)}[{name.split('.')[-1]}]"
    for op in ops:
        parts = [alias_to_name.get(a, a.split(".")[-1]) for a in op["scope"].split("/")]
        op["scope"] = base + ("/" + "/".join(parts) if any(parts) else "")

    # populate_namespace_from_OP_to_IO
    appeared = []
    for op in ops:
        for out, size in zip(op["outputs"], op["output_sizes"]):
            appeared.append(op["scope"])
            io[out] = {"name": out, "inputs": op["inputs"], "scope": op["scope"], "size": size,
                       "kind": op["kind"], "attributes": op["attributes"]}
    shallowest = "default"
    for full in appeared:
        if full:
            shallowest = full.split("/")[0]
    scoped: Dict[str, str] = {}
    for op in ops:
        for i in op["inputs"]:
            scoped[i] = op["scope"] + "/" + i
    for key, n in io.items():
        if "io" in n:  # graph inputs and outputs: "input/x", "output/output.1"
            scoped[key] = n["io"] + "/" + n["name"]
        else:  # op outputs: under their op's scope (the shallowest one when it has none)
            scoped[key] = n["scope"] + "/" + n["name"]
            if n["scope"] == "" and shallowest:
                scoped[n["name"]] = shallowest + "/" + n["name"]
    out = []
    for key, n in io.items():
        inputs = [scoped[i] for i in n["inputs"]]
        name = scoped.get(n["name"], n["name"])
        out.append(GraphNode(name, n["kind"], inputs, n["size"], n["attributes"]))
    return out


def _jit_op(node: Any) -> Dict[str, Any]:
    outputs = list(node.outputs())
    return {"kind": node.kind(), "scope": node.scopeName(),
            "inputs": [v.debugName() for v in node.inputs()],
            "outputs": [v.debugName() for v in outputs],
            "output_sizes": [_sizes(v) for v in outputs],
            # torch replaces single quotes, which confuse TensorBoard's attribute display
            "attributes": str({k: getattr(node, node.kindOf(k))(k) for k in node.attributeNames()})
            .replace("'", " ")}


# -- torch.export ------------------------------------------------------------------------------
def _module_scope(base: str, stack: Any) -> str:
    """``Net/Sequential[body]/Linear[0]`` from an ``nn_module_stack`` entry list."""
    parts = [base]
    for path, kind in list(stack.values()) if stack else []:
        name = path.split(".")[-1] if path else ""
        if not name:
            continue
        cls = kind if isinstance(kind, str) else getattr(kind, "__name__", str(kind))
        parts.append(f"{cls.split('.')[-1]}[{name.split('@')[0]}]")
    return "/".join(parts)


def _path_scope(base: str, path: str, modules: Dict[str, Any]) -> str:
    """``Net/Sequential[body]/Linear[1]`` for the module at ``body.1``."""
    parts = [p for p in path.split(".") if p]
    out = [base]
    for i, p in enumerate(parts):
        mod = modules.get(".".join(parts[:i + 1]))
        out.append(f"{type(mod).__name__}[{p}]" if mod is not None else p)
    return "/".join(out)


def _meta_shape_dtype(val: Any) -> Tuple[Optional[List[int]], Optional[str]]:
    if isinstance(val, (list, tuple)) and val and isinstance(val[0], torch.Tensor):
        val = val[0]
    if isinstance(val, torch.Tensor):
        try:
            shape = [int(d) for d in val.shape]
        except TypeError:  # symbolic sizes
            shape = [-1 if not isinstance(d, int) else d for d in val.shape]
        return shape, str(val.dtype).replace("torch.", "")
    return None, None


def _export_nodes(model: Any, args: Tuple[Any, ...], verbose: bool, strict: bool) -> List[GraphNode]:
    ep = torch.export.export(model, args, strict=False)
    gm = ep.graph_module
    if verbose:
        print(gm.graph)
    base = type(model).__name__
    modules = dict(model.named_modules()) if isinstance(model, torch.nn.Module) else {}
    sig = ep.graph_signature
    params = {**sig.inputs_to_parameters, **sig.inputs_to_buffers}
    names: Dict[str, str] = {}
    nodes: List[GraphNode] = []
    users = set(sig.user_inputs)
    for n in gm.graph.nodes:
        shape, dtype = _meta_shape_dtype(n.meta.get("val"))
        if n.op == "placeholder":
            if n.name in params:
                target = params[n.name]
                owner, _, leaf = target.rpartition(".")
                names[n.name] = f"{_path_scope(base, owner, modules)}/{leaf}"
                nodes.append(GraphNode(names[n.name], "Parameter", [], shape, "", dtype))
            elif n.name in users:
                names[n.name] = f"input/{n.name}"
                nodes.append(GraphNode(names[n.name], "IO Node", [], shape, "", dtype))
            else:
                names[n.name] = f"input/{n.name}"
                nodes.append(GraphNode(names[n.name], "Constant", [], shape, "", dtype))
        elif n.op == "call_function":
            scope = _module_scope(base, n.meta.get("nn_module_stack"))
            names[n.name] = f"{scope}/{n.name}"
            inputs = [names[a.name] for a in n.all_input_nodes if a.name in names]
            consts = [a for a in n.args if not isinstance(a, torch.fx.Node)]
            nodes.append(GraphNode(names[n.name], str(n.target), inputs, shape,
                                   str({"args": consts, **dict(n.kwargs)}).replace("'", " ") if consts or
                                   n.kwargs else "", dtype))
        elif n.op == "output":
            outs = n.args[0] if isinstance(n.args[0], (list, tuple)) else [n.args[0]]
            for i, o in enumerate(outs):
                if isinstance(o, torch.fx.Node) and o.name in names:
                    oshape, odtype = _meta_shape_dtype(o.meta.get("val"))
                    nodes.append(GraphNode(f"output/output.{i + 1}", "IO Node", [names[o.name]],
                                           oshape, "", odtype))
    return nodes


# -- torch.fx ------------------------------------------------------------------------------------
def _fx_nodes(model: Any, args: Tuple[Any, ...], verbose: bool, strict: bool) -> List[GraphNode]:
    from torch.fx.passes.shape_prop import ShapeProp
    gm = torch.fx.symbolic_trace(model)
    if args:
        ShapeProp(gm).propagate(*args)
    if verbose:
        print(gm.graph)
    base = type(model).__name__
    modules = dict(model.named_modules()) if isinstance(model, torch.nn.Module) else dict(gm.named_modules())
    names: Dict[str, str] = {}
    nodes: List[GraphNode] = []
    for n in gm.graph.nodes:
        meta = n.meta.get("tensor_meta")
        shape = [int(d) for d in meta.shape] if meta is not None and hasattr(meta, "shape") else None
        dtype = str(meta.dtype).replace("torch.", "") if meta is not None and hasattr(meta, "dtype") else None
        inputs = [names[a.name] for a in n.all_input_nodes if a.name in names]
        if n.op == "placeholder":
            names[n.name] = f"input/{n.name}"
            nodes.append(GraphNode(names[n.name], "IO Node", [], shape, "", dtype))
        elif n.op == "get_attr":
            owner, _, leaf = str(n.target).rpartition(".")
            names[n.name] = f"{_path_scope(base, owner, modules)}/{leaf}"
            nodes.append(GraphNode(names[n.name], "Parameter", [], shape, "", dtype))
        elif n.op == "call_module":
            mod = modules.get(str(n.target))
            names[n.name] = f"{_path_scope(base, str(n.target), modules)}/{n.name}"
            nodes.append(GraphNode(names[n.name], type(mod).__name__, inputs, shape, "", dtype))
        elif n.op in ("call_function", "call_method"):
            target = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", str(n.target))
            names[n.name] = f"{base}/{n.name}"
            nodes.append(GraphNode(names[n.name], str(target), inputs, shape, "", dtype))
        elif n.op == "output":
            outs = n.args[0] if isinstance(n.args[0], (list, tuple)) else [n.args[0]]
            for i, o in enumerate(outs):
                if isinstance(o, torch.fx.Node) and o.name in names:
                    nodes.append(GraphNode(f"output/output.{i + 1}", "IO Node", [names[o.name]],
                                           shape, "", dtype))
    return nodes


