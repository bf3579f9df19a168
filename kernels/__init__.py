"""Triton kernels, shipped as ``gpulog.kernels`` (never as a top-level ``kernels``).

Each module mirrors a ``gpulog/_reduce/<kind>.py`` of the same name, whose torch code is the
reference and the CPU/fallback path.  Nothing here imports Triton or queries CUDA at import time.
"""
if __name__ != "gpulog.kernels":
    raise ImportError(f"kernels/ must be imported as gpulog.kernels, not {__name__!r}")
