"""Text summaries: tag ``<tag>/text_summary``, DT_STRING tensor of shape [1], plugin ``text``."""
from __future__ import annotations

from typing import List

from .._proto import messages as m


def text(tag: str, text_string: str) -> List[bytes]:
    tensor = m.string_tensor([text_string.encode("utf-8")], [1])
    return [m.summary_value(tag + "/text_summary", tensor=tensor, metadata=m.summary_metadata("text"))]
