"""Audio: int16 samples → 16-bit mono WAV (Python's ``wave``) → ``Summary.Audio``."""
from __future__ import annotations

import io
import warnings
import wave
from typing import Any, Dict, List

import numpy as np

from .._proto import messages as m

PLUGIN_NAME = "audio"


def wav(samples: np.ndarray, sample_rate: float) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(samples.astype("<i2").tobytes())
    return out.getvalue()


def audio(tag: str, sample_rate: float, samples: np.ndarray, out_of_range: np.ndarray) -> List[bytes]:
    if bool(out_of_range.reshape(-1)[0]):
        warnings.warn(f"add_audio({tag!r}): amplitude beyond [-1, 1] was clipped", RuntimeWarning)
    data = wav(samples, sample_rate)
    return [m.summary_value(tag, audio=m.audio(float(sample_rate), 1, samples.shape[-1], data, "audio/wav"))]


def parse(value: Any) -> Dict[str, Any]:
    a = value.audio
    return {"sample_rate": float(a["sample_rate"]), "frames": int(a["length_frames"]),
            "channels": int(a["num_channels"]), "content_type": a["content_type"], "encoded": a["encoded"]}


def describe(parsed: Dict[str, Any]) -> str:
    return f"{parsed['frames']} frames at {parsed['sample_rate']:g} Hz"
