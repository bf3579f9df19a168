"""Custom-scalars layout: one ``Layout`` proto under tag ``custom_scalars__config__``.

``layout`` is ``{category_title: {chart_title: [chart_type, tags]}}``; chart type ``"Margin"``
takes exactly three tags (value, lower, upper), anything else is a multiline chart of tag regexes.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from .._proto import messages as m
from .._proto.wire import f_msg, f_repeated_bytes, f_str

PLUGIN_NAME = "custom_scalars"
TAG = "custom_scalars__config__"


def _chart(title: str, kind: str, tags: Sequence[str]) -> bytes:
    if kind == "Margin":
        series = f_msg(1, f_str(1, tags[0]) + f_str(2, tags[1]) + f_str(3, tags[2]), always=True)
        body = f_msg(3, series, always=True)
    else:
        body = f_msg(2, f_repeated_bytes(1, (t.encode("utf-8") for t in tags)), always=True)
    return f_str(1, title) + body


def layout_bytes(layout: Dict[str, Dict[str, List]]) -> bytes:
    cats = []
    for cat_title, charts in layout.items():
        chart_msgs = b"".join(f_msg(2, _chart(t, spec[0], spec[1]), always=True) for t, spec in charts.items())
        cats.append(f_msg(2, f_str(1, cat_title) + chart_msgs, always=True))
    return b"".join(cats)


def custom_scalars(layout: Dict[str, Dict[str, List]]) -> List[bytes]:
    tensor = m.string_tensor([layout_bytes(layout)], [], shape_always=True)
    return [m.summary_value(TAG, tensor=tensor, metadata=m.summary_metadata(PLUGIN_NAME))]


def parse(value: Any) -> Dict[str, Any]:
    return {"layout": bytes(value.tensor.value.reshape(-1)[0])}


def describe(parsed: Dict[str, Any]) -> str:
    return f"layout ({len(parsed['layout'])} bytes)"
