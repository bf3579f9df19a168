"""Text summaries: tag ``<tag>/text_summary``, DT_STRING tensor of shape [1], plugin ``text``."""
from __future__ import annotations

from typing import Any, Dict, List

from .._proto import messages as m

PLUGIN_NAME = "text"


def text(tag: str, text_string: str) -> List[bytes]:
    tensor = m.string_tensor([text_string.encode("utf-8")], [1])
    return [m.summary_value(tag + "/text_summary", tensor=tensor, metadata=m.summary_metadata(PLUGIN_NAME))]


def parse(value: Any) -> Dict[str, str]:
    raw = value.tensor.value.reshape(-1)[0]
    return {"text": raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)}


def describe(parsed: Dict[str, str]) -> str:
    text = parsed["text"].replace("\n", " ")
    return text if len(text) <= 40 else text[:39] + "…"
