"""Protobuf classes for model graphs: ``GraphDef`` and the ``RunMetadata`` torch writes beside it.

Graphs are written once per run, so speed does not matter here and the messages are real
protobuf classes (hot paths stay hand-encoded in ``messages.py``).  They are generated at first
use from the descriptor below, in a private pool, under gpulog's own package name
(``gpulog.proto``): TensorBoard's or TensorFlow's classes of the same names can be imported in the
same process without a clash, and no ``protoc`` step or generated-code/runtime version pairing is
needed (works with protobuf 3.20 and later).  Field numbers and types are TensorBoard's
(``tensorboard/compat/proto/{graph,node_def,attr_value,tensor_shape,versions,config,step_stats}
.proto``), so the bytes are what TensorBoard parses; only the fields gpulog writes are declared
(TensorBoard's parser skips nothing it needs).  ``DataType`` fields are declared ``int32``: the
same varint on the wire.
"""
from __future__ import annotations

import functools
from typing import Any, Dict, List, Tuple

from google.protobuf import descriptor_pb2, descriptor_pool

PACKAGE = "gpulog.proto"

_F = descriptor_pb2.FieldDescriptorProto
_TYPES = {"string": _F.TYPE_STRING, "bytes": _F.TYPE_BYTES, "int64": _F.TYPE_INT64,
          "int32": _F.TYPE_INT32, "uint32": _F.TYPE_UINT32, "float": _F.TYPE_FLOAT,
          "bool": _F.TYPE_BOOL}

# message -> [(field, number, type or message name, repeated?)]; "map<k,v>" declares a map field.
_MESSAGES: Dict[str, List[Tuple[str, int, str, bool]]] = {
    "TensorShapeProto.Dim": [("size", 1, "int64", False), ("name", 2, "string", False)],
    "TensorShapeProto": [("dim", 2, "TensorShapeProto.Dim", True), ("unknown_rank", 3, "bool", False)],
    "AttrValue.ListValue": [("s", 2, "bytes", True), ("i", 3, "int64", True), ("f", 4, "float", True),
                            ("b", 5, "bool", True), ("type", 6, "int32", True),
                            ("shape", 7, "TensorShapeProto", True)],
    "AttrValue": [("list", 1, "AttrValue.ListValue", False), ("s", 2, "bytes", False),
                  ("i", 3, "int64", False), ("f", 4, "float", False), ("b", 5, "bool", False),
                  ("type", 6, "int32", False), ("shape", 7, "TensorShapeProto", False)],
    "NodeDef": [("name", 1, "string", False), ("op", 2, "string", False), ("input", 3, "string", True),
                ("device", 4, "string", False), ("attr", 5, "map<string,AttrValue>", False)],
    "VersionDef": [("producer", 1, "int32", False), ("min_consumer", 2, "int32", False),
                   ("bad_consumers", 3, "int32", True)],
    "GraphDef": [("node", 1, "NodeDef", True), ("version", 3, "int32", False),
                 ("versions", 4, "VersionDef", False)],
    "AllocatorMemoryUsed": [("allocator_name", 1, "string", False), ("total_bytes", 2, "int64", False),
                            ("peak_bytes", 3, "int64", False)],
    "NodeExecStats": [("node_name", 1, "string", False), ("all_start_micros", 2, "int64", False),
                      ("op_start_rel_micros", 3, "int64", False), ("op_end_rel_micros", 4, "int64", False),
                      ("all_end_rel_micros", 5, "int64", False),
                      ("memory", 6, "AllocatorMemoryUsed", True)],
    "DeviceStepStats": [("device", 1, "string", False), ("node_stats", 2, "NodeExecStats", True)],
    "StepStats": [("dev_stats", 1, "DeviceStepStats", True)],
    "RunMetadata": [("step_stats", 1, "StepStats", False)],
}
# AttrValue's members share one oneof, as in TensorBoard's definition.
_ONEOF = {"AttrValue": ("value", ("list", "s", "i", "f", "b", "type", "shape"))}


def _file() -> descriptor_pb2.FileDescriptorProto:
    fdp = descriptor_pb2.FileDescriptorProto(name="gpulog/proto/graph.proto", package=PACKAGE,
                                             syntax="proto3")
    made: Dict[str, Any] = {}
    for full in _MESSAGES:  # parents are listed after their nested types: create in two passes
        if "." not in full:
            made[full] = fdp.message_type.add(name=full)
    for full in _MESSAGES:
        if "." in full:
            parent, name = full.split(".")
            made[full] = made[parent].nested_type.add(name=name)
    for full, fields in _MESSAGES.items():
        msg = made[full]
        oneof = _ONEOF.get(full)
        if oneof:
            msg.oneof_decl.add(name=oneof[0])
        for name, number, kind, repeated in fields:
            field = msg.field.add(name=name, number=number, json_name=name)
            field.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
            if kind.startswith("map<"):
                key, value = kind[4:-1].split(",")
                entry = msg.nested_type.add(name=name.capitalize() + "Entry")
                entry.options.map_entry = True
                entry.field.add(name="key", number=1, label=_F.LABEL_OPTIONAL, type=_TYPES[key])
                entry.field.add(name="value", number=2, label=_F.LABEL_OPTIONAL, type=_F.TYPE_MESSAGE,
                                type_name=f".{PACKAGE}.{value}")
                field.label = _F.LABEL_REPEATED
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{full}.{entry.name}"
            elif kind in _TYPES:
                field.type = _TYPES[kind]
            else:
                field.type = _F.TYPE_MESSAGE
                field.type_name = f".{PACKAGE}.{kind}"
            if oneof and name in oneof[1]:
                field.oneof_index = 0
    return fdp


@functools.lru_cache(maxsize=None)
def _classes() -> Dict[str, Any]:
    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file())
    try:
        from google.protobuf.message_factory import GetMessageClass

        def make(desc: Any) -> Any:
            return GetMessageClass(desc)
    except ImportError:  # protobuf < 4.22
        from google.protobuf import message_factory
        factory = message_factory.MessageFactory(pool)

        def make(desc: Any) -> Any:
            return factory.GetPrototype(desc)
    return {name: make(pool.FindMessageTypeByName(f"{PACKAGE}.{name}"))
            for name in _MESSAGES if "." not in name}


def message(name: str) -> Any:
    """The class of message ``name`` (``GraphDef``, ``NodeDef``, ``AttrValue``, ``RunMetadata``, ...)."""
    return _classes()[name]
