"""hparams plugin summaries: experiment, session start (the values) and session end.

Values: bool → bool_value / DATA_TYPE_BOOL (torch writes 1.0 / FLOAT64 because its int branch
catches bools first; we log what the user passed); int/float → number_value / FLOAT64;
str → string_value / STRING.  Callers convert tensors and callables before this point.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from .._proto import messages as m
from .._proto.wire import f_msg, f_str, f_varint

PLUGIN_NAME = "hparams"
EXPERIMENT_TAG = "_hparams_/experiment"
SESSION_START_INFO_TAG = "_hparams_/session_start_info"
SESSION_END_INFO_TAG = "_hparams_/session_end_info"
DATA_TYPE_STRING, DATA_TYPE_BOOL, DATA_TYPE_FLOAT64 = 1, 2, 3
STATUS_SUCCESS = 1


def data_type(v: Any) -> int:
    if isinstance(v, bool):
        return DATA_TYPE_BOOL
    if isinstance(v, str):
        return DATA_TYPE_STRING
    return DATA_TYPE_FLOAT64


def _value(tag: str, plugin_content: bytes) -> bytes:
    return m.summary_value(tag, metadata=m.summary_metadata(PLUGIN_NAME, plugin_content))


def hparams(hparam_dict: Dict[str, Any], metric_dict: Dict[str, Any],
            domain_discrete: Optional[Dict[str, List[Any]]]) -> List[List[bytes]]:
    """Three single-value summaries: experiment, session_start_info, session_end_info."""
    domain_discrete = domain_discrete or {}
    infos, entries = [], []
    for k, v in hparam_dict.items():
        if v is None:
            continue
        entries.append(f_msg(1, f_str(1, k) + f_msg(2, m.struct_value(v), always=True), always=True))
        info = f_str(1, k) + f_varint(4, data_type(v))
        if k in domain_discrete:
            values = b"".join(f_msg(1, m.struct_value(d), always=True) for d in domain_discrete[k])
            info += f_msg(5, values, always=True)
        infos.append(f_msg(4, info, always=True))
    metrics = [f_msg(5, f_msg(1, f_str(2, k), always=True), always=True) for k in metric_dict]
    experiment = f_msg(2, b"".join(infos) + b"".join(metrics), always=True)
    start = f_msg(3, b"".join(entries), always=True)
    end = f_msg(4, f_varint(1, STATUS_SUCCESS), always=True)
    return [[_value(EXPERIMENT_TAG, experiment)], [_value(SESSION_START_INFO_TAG, start)],
            [_value(SESSION_END_INFO_TAG, end)]]


def parse(value: Any) -> Dict[str, Any]:
    part = {EXPERIMENT_TAG: "experiment", SESSION_START_INFO_TAG: "session start",
            SESSION_END_INFO_TAG: "session end"}.get(value.tag, "unknown")
    return {"part": part, "content": value.plugin_content}


def describe(parsed: Dict[str, Any]) -> str:
    return str(parsed["part"])
