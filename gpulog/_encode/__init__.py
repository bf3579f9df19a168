"""Stage 4: host-side encoders, one module per summary kind (torch-free, numpy allowed).

Each encoder turns already-reduced host data into serialized ``Summary.Value`` messages; the
writer thread wraps them into an ``Event`` and a TFRecord.  As TensorBoard's plugins pair
``metadata.py`` with ``summary_v2.py``, every kind's module is also how gpulog reads its values
back: ``PLUGIN_NAME`` (what it writes into the value's metadata, or the plugin TensorBoard files
metadata-less histograms and images under), ``parse(value)`` (a decoded value -> a dict of what
was written) and ``describe(parsed)`` (one line for ``gpulog inspect``).  The reader and the CLI
dispatch on the plugin name through :func:`plugins`.
"""
from __future__ import annotations

import functools
from typing import Any, Dict

# Values written without plugin metadata: the field they fill names their plugin.
_BY_FIELD = {"scalar": "scalars", "histogram": "histograms", "image": "images", "audio": "audio"}


@functools.lru_cache(maxsize=1)
def plugins() -> Dict[str, Any]:
    """``{plugin name: the kind's module}`` (imported on first use)."""
    from . import (audio, custom_scalars, histogram, hparams, image, mesh, pr_curve, scalar, tensor,
                   text)
    kinds = (scalar, histogram, image, audio, text, pr_curve, mesh, hparams, custom_scalars, tensor)
    return {module.PLUGIN_NAME: module for module in kinds}


def plugin_of(value: Any) -> str:
    """The plugin a decoded ``Summary.Value`` belongs to ('' if none is known)."""
    return str(value.plugin_name or _BY_FIELD.get(value.kind, ""))
