"""Builders for the TensorBoard messages gpulog writes (host side, torch-free).

Each function returns the serialized message as ``bytes``.  Field numbers are those of
tensorboard's ``event.proto``, ``summary.proto``, ``tensor.proto`` and the plugin protos
(reference: tensorboard-format.md §7).  Names follow the proto messages so the mapping is obvious.
"""
from __future__ import annotations

import struct
from typing import Iterable, Optional, Sequence

import numpy as np

from .wire import (
    f_bytes, f_double, f_float, f_msg, f_packed_doubles, f_packed_floats,
    f_repeated_bytes, f_str, f_varint, key, varint, I64, LEN,
)

# DataType enum (tensorflow/core/framework/types.proto)
DT_FLOAT, DT_DOUBLE, DT_INT32, DT_UINT8, DT_INT16, DT_INT8, DT_STRING = 1, 2, 3, 4, 5, 6, 7
DT_COMPLEX64, DT_INT64, DT_BOOL, DT_BFLOAT16, DT_COMPLEX128, DT_HALF = 8, 9, 10, 14, 18, 19

SESSION_START = 1
FILE_VERSION = "brain.Event:2"
WRITER_NAME = "gpulog"


# --- Event -----------------------------------------------------------------------------------

def event(wall_time: float, step: Optional[int] = None, *, file_version: str = "",
          summary: Optional[bytes] = None, session_log_status: int = 0,
          source_writer: str = "") -> bytes:
    """Event{1 wall_time, 2 step, 3 file_version | 5 summary | 7 session_log, 10 source_metadata}."""
    out = f_double(1, wall_time) + (f_varint(2, step) if step else b"")
    if file_version:
        out += f_str(3, file_version)
    elif summary is not None:
        out += f_msg(5, summary, always=True)
    elif session_log_status:
        out += f_msg(7, f_varint(1, session_log_status), always=True)
    if source_writer:
        out += f_msg(10, f_str(1, source_writer), always=True)
    return out


def event_with_summary(wall_time: float, step: Optional[int], summary_bytes: bytes) -> bytes:
    """Hot path of :func:`event` for a summary event (no optional branches)."""
    head = key(1, I64) + _pack_d(wall_time) if wall_time else b""
    if step:
        head += b"\x10" + varint(step)
    return head + b"\x2a" + varint(len(summary_bytes)) + summary_bytes


_pack_d = struct.Struct("<d").pack


# --- Summary ---------------------------------------------------------------------------------

def summary(values: Iterable[bytes]) -> bytes:
    """Summary{repeated 1 value}; each item is a serialized Summary.Value."""
    return f_repeated_bytes(1, values)


def summary_value(tag: str, *, metadata: Optional[bytes] = None, simple_value: Optional[float] = None,
                  image: Optional[bytes] = None, histo: Optional[bytes] = None,
                  audio: Optional[bytes] = None, tensor: Optional[bytes] = None) -> bytes:
    """Summary.Value{1 tag, 9 metadata, oneof 2 simple_value | 4 image | 5 histo | 6 audio | 8 tensor}."""
    out = f_str(1, tag)
    if simple_value is not None:
        # A set oneof member is written even when it is 0.0.
        out += b"\x15" + np.float32(simple_value).astype("<f4").tobytes()
    elif image is not None:
        out += f_msg(4, image, always=True)
    elif histo is not None:
        out += f_msg(5, histo, always=True)
    elif audio is not None:
        out += f_msg(6, audio, always=True)
    if tensor is not None:
        out += f_msg(8, tensor, always=True)
    if metadata is not None:
        out += f_msg(9, metadata, always=True)
    return out


def summary_metadata(plugin_name: str = "", content: bytes = b"", display_name: str = "",
                     description: str = "", data_class: int = 0) -> bytes:
    """SummaryMetadata{1 plugin_data{1 plugin_name, 2 content}, 2 display_name, 3 summary_description, 4 data_class}."""
    plugin = f_str(1, plugin_name) + f_bytes(2, content)
    return (f_msg(1, plugin, always=bool(plugin_name)) + f_str(2, display_name)
            + f_str(3, description) + f_varint(4, data_class))


def histogram_proto(min_: float, max_: float, num: float, sum_: float, sum_squares: float,
                    bucket_limit: Sequence[float] | np.ndarray,
                    bucket: Sequence[float] | np.ndarray) -> bytes:
    """HistogramProto{1 min, 2 max, 3 num, 4 sum, 5 sum_squares, 6 bucket_limit, 7 bucket} (doubles, packed)."""
    return (f_double(1, min_) + f_double(2, max_) + f_double(3, num) + f_double(4, sum_)
            + f_double(5, sum_squares) + f_packed_doubles(6, bucket_limit) + f_packed_doubles(7, bucket))


def image(height: int, width: int, colorspace: int, encoded: bytes) -> bytes:
    """Summary.Image{1 height, 2 width, 3 colorspace, 4 encoded_image_string}."""
    return f_varint(1, height) + f_varint(2, width) + f_varint(3, colorspace) + f_bytes(4, encoded)


def audio(sample_rate: float, num_channels: int, length_frames: int, encoded: bytes,
          content_type: str) -> bytes:
    """Summary.Audio{1 sample_rate float, 2 num_channels, 3 length_frames, 4 encoded, 5 content_type}."""
    return (f_float(1, sample_rate) + f_varint(2, num_channels) + f_varint(3, length_frames)
            + f_bytes(4, encoded) + f_str(5, content_type))


def tensor_shape(dims: Sequence[int]) -> bytes:
    """TensorShapeProto{repeated 2 dim{1 size}}."""
    return b"".join(f_msg(2, f_varint(1, d), always=True) for d in dims)


def tensor_proto(dtype: int, shape: Optional[Sequence[int]], *, body: bytes = b"",
                 shape_always: bool = False) -> bytes:
    """TensorProto{1 dtype, 2 tensor_shape, <value field bytes already keyed>}.

    ``shape=None`` omits the shape (a rank-0 tensor as torch writes scalars); ``shape_always``
    writes an empty shape message (rank 0, as torch's custom_scalars does).
    """
    out = f_varint(1, dtype)
    if shape is not None:
        out += f_msg(2, tensor_shape(shape), always=shape_always or bool(shape))
    return out + body


def string_tensor(strings: Sequence[bytes], shape: Optional[Sequence[int]],
                  shape_always: bool = False) -> bytes:
    return tensor_proto(DT_STRING, shape, body=f_repeated_bytes(8, strings), shape_always=shape_always)


def float_tensor(values: np.ndarray, shape: Optional[Sequence[int]]) -> bytes:
    return tensor_proto(DT_FLOAT, shape, body=f_packed_floats(5, values.ravel()))


def double_tensor(values: np.ndarray, shape: Optional[Sequence[int]]) -> bytes:
    return tensor_proto(DT_DOUBLE, shape, body=f_packed_doubles(6, values.ravel()))


# --- plugin payloads -------------------------------------------------------------------------

def pr_curve_plugin_data(num_thresholds: int) -> bytes:
    return f_varint(2, num_thresholds)


def mesh_plugin_data(name: str, content_type: int, json_config: str, shape: Sequence[int],
                     components: int) -> bytes:
    """MeshPluginData{1 version, 2 name, 3 content_type, 5 json_config, 6 shape (packed), 7 components}."""
    from .wire import f_packed_varints
    return (f_str(2, name) + f_varint(3, content_type) + f_str(5, json_config)
            + f_packed_varints(6, shape) + f_varint(7, components))


def struct_value(v: object) -> bytes:
    """google.protobuf.Value{1 null, 2 number_value, 3 string_value, 4 bool_value, 6 list_value}."""
    if isinstance(v, bool):
        return key(4, 0) + (b"\x01" if v else b"\x00")
    if isinstance(v, (int, float)):
        return key(2, I64) + _pack_d(float(v))
    if isinstance(v, str):
        return key(3, LEN) + varint(len(v.encode("utf-8"))) + v.encode("utf-8")
    if isinstance(v, (list, tuple)):
        return f_msg(6, b"".join(f_msg(1, struct_value(x), always=True) for x in v), always=True)
    raise TypeError(f"unsupported hparam value {v!r}")

