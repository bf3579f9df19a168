"""``add_tensor``: any numeric array as a TensorProto readable by TensorBoard's ``make_ndarray``.

Values go to ``tensor_content`` (raw little-endian bytes), which ``make_ndarray`` reads for every
dtype.  Unlike torch's writer (float32 bit patterns in ``half_val``, uint8 in ``uint32_val``):
float16 is DT_HALF with its own 16-bit values; bfloat16, which TensorBoard cannot decode, is
widened losslessly to DT_FLOAT.  Plugin name ``tensor`` as torch writes it.
"""
from __future__ import annotations

from typing import Any, Dict, List

import numpy as np

from .._proto import messages as m
from .._proto.wire import f_bytes

_DTYPES = {
    np.dtype(np.float32): m.DT_FLOAT, np.dtype(np.float64): m.DT_DOUBLE,
    np.dtype(np.float16): m.DT_HALF, np.dtype(np.int8): m.DT_INT8, np.dtype(np.int16): m.DT_INT16,
    np.dtype(np.int32): m.DT_INT32, np.dtype(np.int64): m.DT_INT64, np.dtype(np.uint8): m.DT_UINT8,
    np.dtype(np.bool_): m.DT_BOOL, np.dtype(np.complex64): m.DT_COMPLEX64,
    np.dtype(np.complex128): m.DT_COMPLEX128,
}
SUPPORTED = tuple(str(d) for d in _DTYPES)
PLUGIN_NAME = "tensor"


def tensor(tag: str, array: np.ndarray) -> List[bytes]:
    dt = _DTYPES[array.dtype]
    content = np.ascontiguousarray(array).astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
    proto = m.tensor_proto(dt, list(array.shape), body=f_bytes(4, content), shape_always=True)
    return [m.summary_value(tag, tensor=proto, metadata=m.summary_metadata(PLUGIN_NAME))]


def parse(value: Any) -> Dict[str, Any]:
    return {"array": np.asarray(value.tensor.value)}


def describe(parsed: Dict[str, Any]) -> str:
    a = parsed["array"]
    return f"{a.dtype} {list(a.shape)}"
