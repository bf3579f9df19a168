"""Pytest set-up: CUDA auto-skip, the ``twin`` fixture for differential tests, and
``event_file_reads`` (the reads of event files, for streaming tests)."""
from __future__ import annotations

import os
import sys
from typing import Any, Callable, List

import pytest
import torch

# Without a GPU, Triton kernels run in its interpreter on CPU tensors (set before triton imports).
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Remote log dirs stage their segments here, not in the user's ~/.cache (children inherit it).
if "GPULOG_STAGING_DIR" not in os.environ:
    import tempfile
    os.environ["GPULOG_STAGING_DIR"] = tempfile.mkdtemp(prefix="gpulog-test-staging-")

# Helpers (tbcompare.py) sit beside the tests; only this folder is put on sys.path, never the
# repository root, so `import kernels` keeps failing as it must.
sys.path.insert(0, os.path.dirname(__file__))


def pytest_collection_modifyitems(config: Any, items: Any) -> None:
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


@pytest.fixture
def twin(tmp_path: Any) -> Callable[..., Any]:
    """Run the same calls through torch's writer and gpulog's; return both snapshots per run."""
    def run(calls: Callable[[Any], None], **kwargs: Any) -> Any:
        from torch.utils.tensorboard import SummaryWriter as TorchWriter
        import gpulog
        dirs = {}
        for name, cls in (("torch", TorchWriter), ("gpulog", gpulog.SummaryWriter)):
            d = str(tmp_path / name)
            w = cls(d, **kwargs)
            calls(w)
            w.close()
            dirs[name] = d
        return dirs
    return run




@pytest.fixture
def event_file_reads(monkeypatch: Any) -> List[int]:
    """The sizes asked for by every ``read`` of an event file opened through ``open`` (the
    reader's local filesystem), in order: how a test sees that files are streamed."""
    import builtins
    real_open, sizes = builtins.open, []

    class Spy:
        def __init__(self, fh: Any) -> None:
            self.fh = fh

        def read(self, n: int = -1) -> bytes:
            sizes.append(n)
            return self.fh.read(n)

        def __enter__(self) -> "Spy":
            return self

        def __exit__(self, *a: Any) -> None:
            self.fh.close()

    def spying_open(p: Any, mode: str = "r", *a: Any, **k: Any) -> Any:
        fh = real_open(p, mode, *a, **k)
        return Spy(fh) if "tfevents" in str(p) else fh
    monkeypatch.setattr(builtins, "open", spying_open)
    return sizes
