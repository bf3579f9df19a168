"""``add_embedding``: the projector's files, laid out as torch lays them out.

``<logdir>/<step:05d>/<encoded tag>/tensors.tsv`` (+ ``metadata.tsv`` with optional header row,
+ ``sprite.png``) and ``<logdir>/projector_config.pbtxt`` listing every embedding this writer
logged (rewritten whole each time, as torch does).  Tags are encoded ``%``→``%25``, ``/``→``%2f``,
``\\``→``%5c``.  The sprite (a square grid, ``ceil(sqrt(N))`` images per row, black padding,
``uint8(clip(x * 255))`` in float64) is built where ``label_img`` lives; the files are written on
the writer thread, in order with the events.
"""
from __future__ import annotations

import math
import os
import threading
from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import numpy as np

from . import _inputs


def encode_tag(tag: str) -> str:
    return tag.replace("%", "%25").replace("/", "%2f").replace("\\", "%5c")


@dataclass
class Job:
    subdir: str
    tensor_name: str
    metadata: Optional[List[Any]]
    header: Optional[List[str]]
    sprite_dims: Optional[List[int]]  # [W, H]
    staged: Any                        # result() -> (mat,) or (mat, sprite)
    nbytes: int


def _sprite_torch(label_img: Any) -> Any:
    import torch
    x = label_img.detach()
    n, c, h, w = x.shape
    nrow = math.ceil(n ** 0.5)
    if c == 1:
        x = x.expand(n, 3, h, w)
    canvas = torch.zeros(nrow * nrow, 3, h, w, dtype=torch.float64, device=x.device)
    canvas[:n] = x.to(torch.float64)
    grid = canvas.reshape(nrow, nrow, 3, h, w).permute(0, 3, 1, 4, 2).reshape(nrow * h, nrow * w, 3)
    # torch pads the grid to a square of side (grid width); rows beyond the grid stay black
    side = nrow * w
    square = torch.zeros(side, side, 3, dtype=torch.float64, device=x.device)
    rows = min(side, grid.shape[0])
    square[:rows] = grid[:rows]
    return (square * 255).clamp_(0, 255).to(torch.uint8)


def prepare(mat: Any, metadata: Optional[Sequence[Any]], label_img: Any, step: Optional[int],
            tag: str, metadata_header: Optional[Sequence[str]]) -> Job:
    import torch
    from ._transfer import DeviceStaged
    m = _inputs.local(mat.detach(), "mat") if isinstance(mat, torch.Tensor) else torch.from_numpy(
        np.array(_inputs.to_numpy(mat, "mat")))
    if m.dim() != 2:
        raise ValueError(f"mat must be 2-D [N, D] (one row per point), got shape {tuple(m.shape)}")
    if metadata is not None:
        metadata = list(metadata)
        if len(metadata) != m.shape[0]:
            raise ValueError(f"metadata has {len(metadata)} entries but mat has {m.shape[0]} rows")
        if metadata_header is not None:
            if not metadata or len(metadata_header) != len(metadata[0]):
                raise ValueError("metadata_header must have one name per metadata column")
    sprite = None
    dims = None
    if label_img is not None:
        img = _inputs.local(label_img.detach(), "label_img") if isinstance(label_img, torch.Tensor) \
            else torch.from_numpy(
            np.array(_inputs.to_numpy(label_img, "label_img")))
        if img.dim() != 4 or img.shape[1] not in (1, 3):
            raise ValueError(f"label_img must be [N, C, H, W] with C = 1 or 3, got {tuple(img.shape)}")
        if img.shape[0] != m.shape[0]:
            raise ValueError(f"label_img has {img.shape[0]} images but mat has {m.shape[0]} rows")
        from ._transfer import to_device
        # The sprite is built where the images are (a CPU batch goes up to a CUDA mat's device).
        sprite = _sprite_torch(to_device(img, m.device) if m.is_cuda else img)
        dims = [int(img.shape[3]), int(img.shape[2])]
    step = step or 0
    if len(encode_tag(tag).encode("utf-8")) > 200:
        raise ValueError(f"tag is {len(tag)} characters: the projector stores each embedding in a "
                         "folder named after it, and file systems allow 255 bytes; use a shorter tag")
    subdir = f"{str(step).zfill(5)}/{encode_tag(tag)}"
    tensors = [m] + ([sprite] if sprite is not None else [])
    # CUDA tensors are copied asynchronously; a CPU mat is snapshotted now (the caller may
    # change it); a CPU sprite is new, built above.
    staged: Any = DeviceStaged(tensors if m.is_cuda else [m.clone(), *tensors[1:]])
    nbytes = sum(t.numel() * t.element_size() for t in tensors)
    return Job(subdir, f"{tag}:{str(step).zfill(5)}", metadata,
               None if metadata_header is None else list(metadata_header), dims, staged, nbytes)


class ProjectorConfig:
    """The embeddings one writer has logged, as protobuf text format (2-space indent)."""

    def __init__(self) -> None:
        self.entries: List[str] = []
        self.lock = threading.Lock()

    def text(self) -> str:
        return "".join(self.entries)


def _quote(s: str) -> str:
    out = []
    for b in s.encode("utf-8"):
        ch = chr(b)
        if ch in "\"'\\":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif 32 <= b < 127:
            out.append(ch)
        else:
            out.append(f"\\{b:03o}")
    return '"' + "".join(out) + '"'


def write(logdir: str, job: Job, config: ProjectorConfig) -> None:
    """Writer thread: the embedding's files, then the updated projector_config.pbtxt."""
    from PIL import Image
    arrays = job.staged.result()
    mat = np.asarray(arrays[0])
    path = os.path.join(logdir, job.subdir)
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "tensors.tsv"), "w", encoding="utf-8") as f:
        f.writelines("\t".join(str(v) for v in row) + "\n" for row in mat.tolist())
    entry = f"embeddings {{\n  tensor_name: {_quote(job.tensor_name)}\n"
    if job.metadata is not None:
        rows = [str(x) for x in job.metadata] if not job.header else \
            ["\t".join(str(e) for e in r) for r in [job.header] + job.metadata]
        with open(os.path.join(path, "metadata.tsv"), "w", encoding="utf-8") as f:
            f.write("\n".join(rows) + "\n")
        entry += f"  metadata_path: {_quote(job.subdir + '/metadata.tsv')}\n"
    if job.sprite_dims is not None:
        Image.fromarray(np.asarray(arrays[1])).save(os.path.join(path, "sprite.png"), format="PNG")
        w, h = job.sprite_dims
        entry += (f"  sprite {{\n    image_path: {_quote(job.subdir + '/sprite.png')}\n"
                  f"    single_image_dim: {w}\n    single_image_dim: {h}\n  }}\n")
    entry += f"  tensor_path: {_quote(job.subdir + '/tensors.tsv')}\n}}\n"
    with config.lock:
        config.entries.append(entry)
        text = config.text()
    tmp = os.path.join(logdir, ".projector_config.pbtxt.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, os.path.join(logdir, "projector_config.pbtxt"))
