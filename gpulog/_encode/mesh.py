"""Meshes: up to three DT_FLOAT [B, N, 3] tensors in one Summary, plugin ``mesh``.

Tags ``<tag>_VERTEX``, ``<tag>_FACE``, ``<tag>_COLOR``; MeshPluginData carries the instance name
(the tag), the content type, ``json_config`` (``"{}"`` without config, else sorted-key JSON), the
shape and the components bitmask (OR of ``1 << content_type`` of the parts present).
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._proto import messages as m

PLUGIN_NAME = "mesh"
VERTEX, FACE, COLOR = 1, 2, 3
_SUFFIX = {VERTEX: "_VERTEX", FACE: "_FACE", COLOR: "_COLOR"}


def json_config(config_dict: Optional[Dict[str, Any]]) -> str:
    return "{}" if config_dict is None else json.dumps(config_dict, sort_keys=True)


def mesh(tag: str, layout: Sequence[Tuple[int, Tuple[int, int, int]]], config: str,
         packed: np.ndarray) -> List[bytes]:
    components = 0
    for kind, _ in layout:
        components |= 1 << kind
    values, offset = [], 0
    for kind, shape in layout:
        n = int(np.prod(shape))
        part = packed[offset:offset + n]
        offset += n
        md = m.summary_metadata(PLUGIN_NAME, m.mesh_plugin_data(tag, kind, config, shape, components))
        values.append(m.summary_value(tag + _SUFFIX[kind], tensor=m.float_tensor(part, list(shape)),
                                      metadata=md))
    return values


def parse(value: Any) -> Dict[str, Any]:
    """One component (vertices, faces or colours) of a mesh: its name, shape and values."""
    from .._proto.decode import fields
    content_type = int((fields(value.plugin_content).get(3) or [0])[-1])  # type: ignore[arg-type]
    names = {VERTEX: "vertices", FACE: "faces", COLOR: "colors"}
    return {"component": names.get(content_type, "unknown"), "shape": list(value.tensor.shape),
            "values": np.asarray(value.tensor.value)}


def describe(parsed: Dict[str, Any]) -> str:
    return f"{parsed['component']} {parsed['shape']}"
