"""``SummaryWriter``: drop-in for ``torch.utils.tensorboard.SummaryWriter``.

Every ``add_*`` validates its input here (``ValueError``/``TypeError`` naming the argument), starts
the reduction of tensor data where the data lives (``_reduce``), and queues the result for the
background writer.  Nothing in this module encodes protobufs or touches files.
"""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
from datetime import datetime
from typing import Any, Dict, List, Optional, Sequence, Union, cast

import numpy as np

from . import _inputs, _registry
from ._encode import custom_scalars as enc_custom_scalars
from ._encode import hparams as enc_hparams
from ._encode import histogram as enc_histogram
from ._encode import pr_curve as enc_pr_curve
from ._encode import scalar as enc_scalar
from ._encode import tensor as enc_tensor
from ._encode import text as enc_text
from ._inputs import INT64_MAX, INT64_MIN, to_step, to_walltime
from ._stage import LocalStage
from .file_writer import FileWriter

Number = Union[int, float]
_FLOAT_MAX = 1.7976931348623157e308
_MEAN = "mean"
REDUCE_OPS = _inputs.REDUCE_OPS
_bad_reduce = _inputs.bad_reduce


class SummaryWriter:
    """Writes TensorBoard event files from the training loop, designed not to stall it (on CUDA:
    asynchronous copies and a background writer; README "CUDA tensors" says what is verified).

    Same constructor and methods as ``torch.utils.tensorboard.SummaryWriter``; ``logdir`` is
    accepted as an alias of ``log_dir`` (tensorboardX spelling).
    """

    def __init__(self, log_dir: Optional[Union[str, os.PathLike]] = None, comment: str = "",
                 purge_step: Optional[int] = None, max_queue: int = 10, flush_secs: float = 120,
                 filename_suffix: str = "", *, logdir: Optional[Union[str, os.PathLike]] = None,
                 distributed: bool = False, distributed_sync_secs: float = 1.0,
                 distributed_timeout: float = 60.0, system_metrics: bool = False,
                 system_metrics_interval: float = 10.0, flush_timeout: float = 60.0) -> None:
        if log_dir is None:
            log_dir = logdir
        if not log_dir:
            if not isinstance(comment, str):
                raise TypeError(f"comment must be a str, got {type(comment).__name__}")
            if "/" in comment or os.sep in comment or (os.altsep and os.altsep in comment):
                raise ValueError(f"comment {comment!r} contains a path separator: it is appended to "
                                 "the run folder's name under runs/; pass log_dir for another place")
            stamp = datetime.now().strftime("%b%d_%H-%M-%S")
            log_dir = os.path.join("runs", stamp + "_" + socket.gethostname() + str(comment))
        self.log_dir = log_dir
        _bind_is_compiling()  # torch may have been imported after this module
        self.purge_step = to_step(purge_step, device_ok=False)
        self.max_queue, self.flush_secs, self.filename_suffix = max_queue, flush_secs, filename_suffix
        self.flush_timeout = flush_timeout  # remote log dirs: how long flush()/close() wait for uploads
        self.file_writer: Optional[FileWriter] = None
        self.all_writers: Optional[Dict[str, FileWriter]] = None
        self._fw_lock = threading.Lock()
        self._exit_hook: Any = None
        # A constant that graphs compiled around add_* carry to find this writer at run time.
        self._writer_id = _registry.register(self)
        # Where data is reduced and who writes it: this process, or rank 0 of a merge (_stage).
        self._stage: Any = LocalStage()
        if distributed:
            from .distributed import RankContext
            self._stage = RankContext(distributed_sync_secs, distributed_timeout, self._submit_reduced)
        self._get_file_writer()
        self._sampler = None
        if system_metrics:
            from .system_metrics import start_sampler, track_steps
            track_steps(self)
            self._sampler = start_sampler(self, system_metrics_interval)

    # -- plumbing ------------------------------------------------------------------------------
    def _get_file_writer(self) -> FileWriter:
        """The main run's FileWriter; recreated (new event file) after ``close()``, as torch does.
        Callers on several threads (the training loop, the compiled-step pump, the metrics
        sampler) may find it closed at once: one of them opens the new file, under the lock."""
        fw = self.file_writer
        if fw is not None:
            return fw
        with self._fw_lock:
            return self._open_file_writer()

    def _open_file_writer(self) -> FileWriter:
        fw = self.file_writer
        if fw is None:
            fw = self._new_file_writer(self.log_dir, self.purge_step)
            self.purge_step = None
            self.file_writer = fw
            self.all_writers = {fw.get_logdir(): fw}
            if self._exit_hook is None:
                self._exit_hook = self._stage.exit_hook(self.flush)
        return fw

    def _new_file_writer(self, path: Any, purge_step: Optional[int] = None) -> FileWriter:
        if not self._stage.writes:
            # Processes that do not write (ranks > 0): a stand-in with FileWriter's methods
            # that creates nothing.
            from .distributed.lifecycle import NullFileWriter
            return cast(FileWriter, NullFileWriter(path))
        return FileWriter(path, self.max_queue, self.flush_secs, self.filename_suffix,
                          flush_timeout=self.flush_timeout, _purge_step=purge_step)

    def _submit_reduced(self, items: List[Any]) -> None:
        """Rank 0: queue one sync point's reduced items (for this run's files and sub-runs)."""
        self._get_file_writer().submit_urgent(items)

    def get_logdir(self) -> str:
        """The directory event files are written to, as given."""
        return str(self.log_dir)

    @property
    def default_bins(self) -> np.ndarray:
        from ._reduce.histogram import tensorflow_edges
        return tensorflow_edges()

    # -- scalars -------------------------------------------------------------------------------
    def add_scalar(self, tag: str, scalar_value: Any, global_step: Optional[int] = None,
                   walltime: Optional[float] = None, new_style: bool = False,
                   double_precision: bool = False, *, reduce: Optional[str] = _MEAN) -> None:
        """Log one number.  A CUDA tensor is copied asynchronously (no device sync).  Inside
        ``torch.compile`` (and CUDA graphs) this is one opaque op: README, "Logging in compiled
        steps"."""
        if reduce is not _MEAN and reduce not in REDUCE_OPS:
            _bad_reduce(reduce)
        t = type(scalar_value)
        # Inside a compiled step (Python numbers too: the learning rate), and for a CUDA tensor on
        # a capturing stream, the call is one opaque op / a ring write that every replay repeats.
        if _IS_COMPILING() or (t is not float and t is not int and _inputs.is_cuda_tensor(scalar_value)
                               and _capturing()):
            from . import _compiled
            return _compiled.add_scalar(self, tag, scalar_value, global_step, walltime, new_style,
                                        double_precision, reduce)
        if type(tag) is not str or not tag.isascii():
            tag = _inputs.check_tag(tag)
        if global_step is not None and (type(global_step) is not int
                                        or not INT64_MIN <= global_step <= INT64_MAX):
            global_step = to_step(global_step)
        wall = time.time() if walltime is None else to_walltime(walltime)
        fw = self.file_writer or self._get_file_writer()
        stage = self._stage
        if t is float and not new_style and stage.local:
            # The hot path, inline: a host float written by this process (~70 ns saved a call).
            fw.submit_scalar(tag, scalar_value, global_step, wall)
        else:
            stage.scalar(fw, tag, scalar_value, global_step, wall, reduce, new_style, double_precision)

    def add_scalars(self, main_tag: str, tag_scalar_dict: Dict[str, Any],
                    global_step: Optional[int] = None, walltime: Optional[float] = None,
                    *, reduce: Optional[str] = _MEAN) -> None:
        """One sub-run per key, ``<log_dir>/<main_tag with '/'→'_'>_<key>``, as torch names them."""
        main_tag = _inputs.check_tag(main_tag, "main_tag")
        if reduce is not _MEAN and reduce not in REDUCE_OPS:
            _bad_reduce(reduce)
        if not isinstance(tag_scalar_dict, dict):
            raise TypeError(f"tag_scalar_dict must be a dict of {{name: number}}, got "
                            f"{type(tag_scalar_dict).__name__}")
        step, wall = to_step(global_step), to_walltime(walltime)
        values = {}
        for key, v in tag_scalar_dict.items():
            key = _check_sub_run(_inputs.check_tag(key, "tag_scalar_dict key"), "tag_scalar_dict key")
            values[key] = v if _inputs.is_tensor(v) else _inputs.scalar(v, f"tag_scalar_dict[{key!r}]")
        fw_logdir = self._get_file_writer().get_logdir()
        for key, v in values.items():
            path = os.path.join(fw_logdir, main_tag.replace("/", "_") + "_" + key)
            self._stage.scalar(self._sub_writer(path), main_tag, v, step, wall, reduce, False, False)

    def _sub_writer(self, path: str) -> FileWriter:
        self._get_file_writer()
        assert self.all_writers is not None
        fw = self.all_writers.get(path)
        if fw is None:
            with self._fw_lock:  # one file per sub-run, whichever threads log to it first
                fw = self.all_writers.get(path)
                if fw is None:
                    fw = self._new_file_writer(path)
                    self.all_writers[path] = fw
        return fw

    # -- text, tensors, layouts ----------------------------------------------------------------
    def add_text(self, tag: str, text_string: str, global_step: Optional[int] = None,
                 walltime: Optional[float] = None) -> None:
        """Markdown text under ``<tag>/text_summary``."""
        tag = _inputs.check_tag(tag)
        if not isinstance(text_string, str):
            raise TypeError(f"text_string must be a str, got {type(text_string).__name__}")
        _inputs.check_text(text_string, "text_string")
        if not self._stage.writes:  # checked on every process; written by the one that writes
            return
        self._get_file_writer().submit(enc_text.text, (tag, text_string), to_step(global_step),
                                       to_walltime(walltime))

    def add_tensor(self, tag: str, tensor: Any, global_step: Optional[int] = None,
                   walltime: Optional[float] = None) -> None:
        """Any numeric tensor, readable back by ``make_ndarray`` for every dtype.  A CUDA tensor
        is copied asynchronously into pinned memory (the whole tensor is the summary) and encoded
        on the writer thread: the call does not wait for the device."""
        tag = _inputs.check_tag(tag)
        step, wall = to_step(global_step), to_walltime(walltime)
        if _inputs.is_cuda_tensor(tensor):
            t = tensor.detach()
            dtype = str(t.dtype).replace("torch.", "")
            if dtype not in enc_tensor.SUPPORTED and dtype != "bfloat16":
                raise TypeError(f"add_tensor: unsupported dtype {t.dtype}; use one of "
                                f"{', '.join(enc_tensor.SUPPORTED)}")
            if t.numel() * t.element_size() >= 2**31:
                raise ValueError(f"add_tensor: tensor of {t.numel() * t.element_size()} bytes exceeds the "
                                 "2 GiB protobuf limit; log a slice or a summary of it")
            if not self._stage.writes:
                return
            from ._transfer import DeviceStaged
            from ._transfer import widen_bf16_for_numpy
            staged = DeviceStaged([widen_bf16_for_numpy(t)])  # as to_numpy widens it
            self._get_file_writer().submit(enc_tensor.tensor, (tag,), step, wall, staged.nbytes, staged)
            return
        arr = _inputs.to_numpy(tensor, "tensor")
        if arr.dtype.name not in enc_tensor.SUPPORTED:
            raise TypeError(f"add_tensor: unsupported dtype {arr.dtype}; use one of "
                            f"{', '.join(enc_tensor.SUPPORTED)}")
        if arr.nbytes >= 2**31:
            raise ValueError(f"add_tensor: tensor of {arr.nbytes} bytes exceeds the 2 GiB protobuf "
                             "limit; log a slice or a summary of it")
        if not self._stage.writes:
            return
        arr = np.array(arr, copy=True)  # the value at call time, whatever the caller does next
        self._get_file_writer().submit(enc_tensor.tensor, (tag, arr), step, wall, arr.nbytes)

    def add_custom_scalars(self, layout: Dict[str, Dict[str, List[Any]]]) -> None:
        """Custom-scalars dashboard layout: ``{category: {title: ['Multiline'|'Margin', tags]}}``."""
        _check_layout(layout)
        if not self._stage.writes:
            return
        self._get_file_writer().submit(enc_custom_scalars.custom_scalars, (layout,), None, time.time())

    def add_custom_scalars_multilinechart(self, tags: List[str], category: str = "default",
                                          title: str = "untitled") -> None:
        self.add_custom_scalars({category: {title: ["Multiline", tags]}})

    def add_custom_scalars_marginchart(self, tags: List[str], category: str = "default",
                                       title: str = "untitled") -> None:
        if not isinstance(tags, (list, tuple)) or len(tags) != 3:
            raise ValueError(f"a margin chart needs exactly 3 tags (value, lower, upper), got {tags!r}")
        self.add_custom_scalars({category: {title: ["Margin", list(tags)]}})

    # -- hparams -------------------------------------------------------------------------------
    def add_hparams(self, hparam_dict: Dict[str, Any], metric_dict: Dict[str, Any],
                    hparam_domain_discrete: Optional[Dict[str, List[Any]]] = None,
                    run_name: Optional[str] = None, global_step: Optional[int] = None) -> None:
        """Hyperparameters and metrics in the sub-run ``<log_dir>/<run_name or time.time()>``."""
        hparams = _check_hparams(hparam_dict, metric_dict, hparam_domain_discrete)
        metrics = {_inputs.check_tag(k, "metric_dict key"):
                   _device_number(v, f"metric_dict[{k!r}]") if _inputs.is_cuda_tensor(v)
                   else _inputs.scalar(v, f"metric_dict[{k!r}]") for k, v in metric_dict.items()}
        step = to_step(global_step)
        if not self._stage.writes:
            return
        if not run_name:
            run_name = str(time.time())
        _check_sub_run(run_name, "run_name")
        logdir = os.path.join(self._get_file_writer().get_logdir(), run_name)
        fw = FileWriter(logdir, self.max_queue, self.flush_secs, self.filename_suffix,
                        flush_timeout=self.flush_timeout)
        now = time.time()
        # Tensor values on a CUDA device are staged in one asynchronous copy and filled in on the
        # writer thread (no wait here); everything else is encoded now.
        from_device = [(d, k) for d in (hparams, metrics) for k, v in d.items() if _inputs.is_tensor(v)]
        if from_device:
            from ._transfer import DeviceStaged
            staged = DeviceStaged([d[k] for d, k in from_device])
            for part in range(3):
                fw.submit(_hparams_part, (part, hparams, metrics, hparam_domain_discrete, from_device),
                          step, now, 0, staged)
            for i, (d, k) in enumerate(from_device):
                if d is metrics:
                    fw.submit(_scalar_from_staged, (k, i), step, time.time(), 0, staged)
        else:
            for values in enc_hparams.hparams(hparams, metrics, hparam_domain_discrete):
                fw.submit(_constant, (values,), step, now)
        for k, v in metrics.items():
            if not _inputs.is_tensor(v):
                fw.submit_scalar(k, v, step, time.time())
        fw.close_async()

    # -- raw summaries -------------------------------------------------------------------------
    def add_histogram_raw(self, tag: str, min: Number, max: Number, num: Number, sum: Number,
                          sum_squares: Number, bucket_limits: Any, bucket_counts: Any,
                          global_step: Optional[int] = None, walltime: Optional[float] = None) -> None:
        """A histogram from precomputed statistics; ``bucket_limits[i]`` is bucket i's right edge."""
        tag = _inputs.check_tag(tag)
        names = ("min", "max", "num", "sum", "sum_squares")
        stats = (min, max, num, sum, sum_squares)
        if any(_inputs.is_cuda_tensor(v) for v in (*stats, bucket_limits, bucket_counts)):
            return self._add_raw_from_device(
                enc_histogram.histogram_raw_arrays, tag, list(zip(stats, names)),
                [(bucket_limits, "bucket_limits"), (bucket_counts, "bucket_counts")], (),
                global_step, walltime)
        host_stats = tuple(_inputs.scalar(v, n) for v, n in zip(stats, names))
        limits = _inputs.to_numpy(bucket_limits, "bucket_limits").astype(np.float64).ravel()
        counts = _inputs.to_numpy(bucket_counts, "bucket_counts").astype(np.float64).ravel()
        if len(limits) != len(counts):
            raise ValueError(f"len(bucket_limits) ({len(limits)}) != len(bucket_counts) "
                             f"({len(counts)}); pass one limit per bucket")
        if not self._stage.writes:
            return
        self._get_file_writer().submit(enc_histogram.histogram_raw, (tag, host_stats, limits, counts),
                                       to_step(global_step), to_walltime(walltime))

    def _add_raw_from_device(self, encode: Any, tag: str, scalars: List[Any], rows: List[Any],
                             extra: tuple, global_step: Any, walltime: Any) -> None:
        """Raw summaries with CUDA arguments: checked by shape at the call, staged to the host
        in one asynchronous copy (no wait), encoded on the writer thread."""
        from ._transfer import DeviceStaged
        step, wall = to_step(global_step), to_walltime(walltime)
        values = []
        for v, name in scalars:
            if _inputs.is_cuda_tensor(v):
                _inputs.one_element(v, name)
                values.append(v.detach().reshape(1).double())
            else:
                values.append(np.array([_inputs.scalar(v, name)]))
        lengths = {}
        for v, name in rows:
            if _inputs.is_cuda_tensor(v):
                values.append(v.detach().reshape(-1).double())
            else:
                values.append(_inputs.to_numpy(v, name).astype(np.float64).ravel())
            lengths[name] = values[-1].shape[0]
        if len(set(lengths.values())) != 1:
            raise ValueError(f"{tag}: every row must have the same length, got {lengths}; pass one "
                             "value per bucket")
        if not self._stage.writes:
            return
        staged = DeviceStaged(values)
        self._get_file_writer().submit(encode, (tag, *extra), step, wall, staged.nbytes, staged)

    def add_pr_curve_raw(self, tag: str, true_positive_counts: Any, false_positive_counts: Any,
                         true_negative_counts: Any, false_negative_counts: Any, precision: Any,
                         recall: Any, global_step: Optional[int] = None, num_thresholds: int = 127,
                         weights: Any = None, walltime: Optional[float] = None) -> None:
        """A PR curve from precomputed rows (all of one length)."""
        tag = _inputs.check_tag(tag)
        names = ("true_positive_counts", "false_positive_counts", "true_negative_counts",
                 "false_negative_counts", "precision", "recall")
        given = (true_positive_counts, false_positive_counts, true_negative_counts,
                 false_negative_counts, precision, recall)
        _check_thresholds(num_thresholds)
        if any(_inputs.is_cuda_tensor(v) for v in given):
            return self._add_raw_from_device(enc_pr_curve.pr_curve_raw_arrays, tag, [],
                                             list(zip(given, names)), (num_thresholds,),
                                             global_step, walltime)
        rows = [_inputs.to_numpy(v, n).astype(np.float64).ravel() for v, n in zip(given, names)]
        lengths = {n: len(r) for n, r in zip(names, rows)}
        if len(set(lengths.values())) != 1:
            raise ValueError(f"add_pr_curve_raw: all six rows must have the same length, got {lengths}")
        if not self._stage.writes:
            return
        self._get_file_writer().submit(enc_pr_curve.pr_curve_raw, (tag, np.stack(rows), num_thresholds),
                                       to_step(global_step), to_walltime(walltime))

    # -- tensor-valued summaries (reduced where the data lives) ---------------------------------
    def add_histogram(self, tag: str, values: Any, global_step: Optional[int] = None,
                      bins: Any = "tensorflow", walltime: Optional[float] = None,
                      max_bins: Optional[int] = None) -> None:
        """Histogram of ``values``; counts are exact, reduced on the tensor's device.

        For CUDA ``values`` nothing waits for the device, whatever ``bins`` is; numpy's estimator
        strings ('auto', 'fd', ...) need the data's quantiles, so with those the data is copied
        asynchronously to the host and binned on the writer thread (README: "CUDA tensors")."""
        if _IS_COMPILING() or _inputs.is_cuda_tensor(values) and _capturing():
            from . import _compiled  # one opaque op / a ring write that every replay repeats
            return _compiled.add_histogram(self, tag, values, global_step, bins, walltime, max_bins)
        from ._reduce import histogram as red
        tag = _inputs.check_tag(tag)
        step, wall = to_step(global_step), to_walltime(walltime)
        self._stage.histogram(self._get_file_writer(), tag, values, step, wall, bins, max_bins)

    def add_pr_curve(self, tag: str, labels: Any, predictions: Any, global_step: Optional[int] = None,
                     num_thresholds: int = 127, weights: Any = None,
                     walltime: Optional[float] = None) -> None:
        """PR curve from binary labels and predictions in [0, 1] (torch's compute_curve)."""
        from ._reduce import pr_curve as red
        tag = _inputs.check_tag(tag)
        _check_thresholds(num_thresholds)
        step, wall = to_step(global_step), to_walltime(walltime)
        self._stage.pr_curve(self._get_file_writer(), tag, labels, predictions, step, wall,
                             num_thresholds, weights)

    def add_image(self, tag: str, img_tensor: Any, global_step: Optional[int] = None,
                  walltime: Optional[float] = None, dataformats: str = "CHW") -> None:
        """One image; floats are scaled by 255 and clipped, uint8 is taken as is."""
        from ._reduce import image as red
        self._submit_prepared(tag, global_step, walltime,
                              lambda t: red.prepare_image(t, img_tensor, dataformats))

    def add_images(self, tag: str, img_tensor: Any, global_step: Optional[int] = None,
                   walltime: Optional[float] = None, dataformats: str = "NCHW") -> None:
        """A batch of images tiled into one grid (8 per row), as torch does."""
        from ._reduce import image as red
        self._submit_prepared(tag, global_step, walltime,
                              lambda t: red.prepare_images(t, img_tensor, dataformats))

    def add_image_with_boxes(self, tag: str, img_tensor: Any, box_tensor: Any,
                             global_step: Optional[int] = None, walltime: Optional[float] = None,
                             rescale: float = 1, dataformats: str = "CHW",
                             labels: Optional[List[str]] = None) -> None:
        """An image with red boxes ``[x1, y1, x2, y2]`` (and optional labels) drawn on it."""
        from ._reduce import image as red
        self._submit_prepared(tag, global_step, walltime, lambda t: red.prepare_image_with_boxes(
            t, img_tensor, box_tensor, rescale, dataformats, labels))

    def add_figure(self, tag: str, figure: Any, global_step: Optional[int] = None,
                   close: bool = True, walltime: Optional[float] = None) -> None:
        """A matplotlib figure (or list of figures) rendered to an image."""
        from ._reduce import image as red
        self._submit_prepared(tag, global_step, walltime, lambda t: red.prepare_figure(t, figure, close))

    def add_video(self, tag: str, vid_tensor: Any, global_step: Optional[int] = None,
                  fps: Union[int, float] = 4, walltime: Optional[float] = None) -> None:
        """A batch of videos [N, T, C, H, W] as one animated GIF (no moviepy needed)."""
        from ._reduce import video as red
        self._submit_prepared(tag, global_step, walltime, lambda t: red.prepare(t, vid_tensor, fps))

    def add_audio(self, tag: str, snd_tensor: Any, global_step: Optional[int] = None,
                  sample_rate: int = 44100, walltime: Optional[float] = None) -> None:
        """Mono audio in [-1, 1] as 16-bit WAV (values beyond are clipped with a warning)."""
        from ._reduce import audio as red
        self._submit_prepared(tag, global_step, walltime,
                              lambda t: red.prepare(t, snd_tensor, sample_rate))

    def add_mesh(self, tag: str, vertices: Any, colors: Any = None, faces: Any = None,
                 config_dict: Optional[Dict[str, Any]] = None, global_step: Optional[int] = None,
                 walltime: Optional[float] = None) -> None:
        """A 3-D mesh or point cloud; each tensor shaped [B, N, 3]."""
        from ._reduce import mesh as red
        self._submit_prepared(tag, global_step, walltime,
                              lambda t: red.prepare(t, vertices, colors, faces, config_dict))

    def add_embedding(self, mat: Any, metadata: Optional[Sequence[Any]] = None, label_img: Any = None,
                      global_step: Optional[int] = None, tag: str = "default",
                      metadata_header: Optional[Sequence[str]] = None) -> None:
        """Projector files (tensors.tsv, metadata.tsv, sprite.png, projector_config.pbtxt)."""
        from . import _remote, embedding
        tag = _inputs.check_tag(tag)
        if _remote.is_remote(str(self.log_dir)):
            raise ValueError("add_embedding writes projector files (tensors.tsv, sprite.png, ...) that "
                             "are not supported in a remote log_dir yet; log embeddings to a local "
                             "directory and copy it")
        step = to_step(global_step, device_ok=False)  # it names the embedding's folder
        job = embedding.prepare(mat, metadata, label_img, step, tag, metadata_header)
        if not self._stage.writes:
            return
        fw = self._get_file_writer()
        if not hasattr(self, "_projector"):
            self._projector = embedding.ProjectorConfig()
        fw.submit_files("add_embedding", embedding.write, (fw.get_logdir(), job, self._projector),
                        job.nbytes)

    # -- graphs --------------------------------------------------------------------------------
    def add_graph(self, model: Any, input_to_model: Any = None, verbose: bool = False,
                  use_strict_trace: bool = True, *, method: str = "auto") -> None:
        """The model's graph for TensorBoard's Graphs tab, as torch writes it.

        ``method``: ``"jit"`` (``torch.jit.trace``, torch's own graph: same node names, ops,
        attributes and shapes), ``"export"`` (``torch.export``: ATen ops with shapes and dtypes)
        or ``"fx"`` (``torch.fx.symbolic_trace`` with propagated shapes); ``"auto"`` tries them in
        that order, so models TorchScript cannot trace still get a graph.  The model runs once,
        in eval mode (restored after), at the call; the ``GraphDef`` is encoded on the writer
        thread.  Tracing errors raise ``RuntimeError`` naming each method's failure.
        """
        from ._encode import graph as enc_graph
        from ._reduce import graph as red_graph
        wall = time.time()
        graph = red_graph.build(model, input_to_model, verbose, use_strict_trace, method)
        if not self._stage.writes:
            return
        self._get_file_writer().submit_events("add_graph", enc_graph.graph_events, (wall, graph.nodes), wall)

    def add_onnx_graph(self, prototxt: Any) -> None:
        """An ONNX model file's graph (needs the ``onnx`` package), as torch writes it."""
        try:
            import onnx
        except ImportError as err:
            raise ImportError("add_onnx_graph needs the onnx package: pip install onnx") from err
        from ._encode import graph as enc_graph
        wall = time.time()
        graph = enc_graph.onnx_graph_def(_load_onnx(onnx, prototxt))  # read at the call: it may change
        if not self._stage.writes:
            return
        self._get_file_writer().submit_events("add_onnx_graph", enc_graph.onnx_graph_events, (wall, graph), wall)

    def _submit_prepared(self, tag: str, global_step: Any, walltime: Any, prepare: Any) -> None:
        tag = _inputs.check_tag(tag)
        step, wall = to_step(global_step), to_walltime(walltime)
        self._stage.prepared(self._get_file_writer(), tag, step, wall, prepare)

    # -- lifecycle -----------------------------------------------------------------------------
    def flush(self) -> None:
        """Barrier: when it returns, everything logged before is in the event files."""
        self._drain_compiled()
        self._stage.sync(final=True)
        for fw in list((self.all_writers or {}).values()):
            fw.flush()

    def close(self) -> None:
        """Flush and close every event file of this writer; idempotent.

        A later ``add_*`` opens a new event file, as torch's writer does.
        """
        self._drain_compiled()
        if self._sampler is not None:
            self._sampler.stop()
            self._sampler = None
        if self.all_writers is not None:
            try:
                self._stage.sync(final=True)
            finally:  # settled, or failed and reported here: nothing for the exit hook to do
                if self._exit_hook is not None:
                    self._exit_hook()
                    self._exit_hook = None
        writers, self.all_writers, self.file_writer = self.all_writers or {}, None, None
        errors = []
        for fw in writers.values():
            try:
                fw.close()
            except Exception as err:  # close every file before reporting
                errors.append(err)
        if errors:
            raise errors[0]

    def _drain_compiled(self) -> None:
        """Values logged inside compiled steps (device rings) join the queue first."""
        compiled = sys.modules.get("gpulog._compiled")
        if compiled is not None:
            compiled.drain(self._writer_id, wait=True)

    def __enter__(self) -> "SummaryWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _load_onnx(onnx: Any, prototxt: Any) -> Any:
    """The ONNX model at ``prototxt`` (a path, or a binary file object), checked at the call: an
    int is not a path (``onnx.load`` would read that file descriptor), an empty or undecodable
    file is not a model."""
    if isinstance(prototxt, (str, os.PathLike)):
        try:
            with open(prototxt, "rb") as f:
                data = f.read()
        except OSError as err:
            raise type(err)(err.errno, f"add_onnx_graph cannot read prototxt ({err.strerror})",
                            os.fspath(prototxt)) from err
    elif hasattr(prototxt, "read") and not isinstance(prototxt, (int, bool)):
        data = prototxt.read()
    else:
        raise TypeError(f"prototxt must be the path of an .onnx file (or a binary file object), "
                        f"got {type(prototxt).__name__} ({prototxt!r:.40})")
    if not data:
        raise ValueError(f"prototxt {prototxt!r:.80} is empty: export the model first "
                         "(torch.onnx.export) and pass that file")
    try:
        model = onnx.load_model_from_string(data)
    except Exception as err:  # noqa: BLE001 - protobuf's DecodeError and friends
        raise ValueError(f"prototxt {prototxt!r:.80} is not an ONNX model ({type(err).__name__}: "
                         f"{err}); pass a file written by torch.onnx.export or onnx.save") from err
    g = model.graph
    if not (len(g.node) or len(g.input) or len(g.output)):
        raise ValueError(f"prototxt {prototxt!r:.80} holds no graph (no node, input or output); pass "
                         "a file written by torch.onnx.export or onnx.save")
    return model


def _check_sub_run(name: Any, what: str) -> str:
    """A sub-run folder name stays inside the log dir: no separators, no '..', not absolute."""
    if not isinstance(name, str):
        raise TypeError(f"{what} must be a str, got {type(name).__name__}")
    if name in ("", "..") or "/" in name or os.sep in name or (os.altsep and os.altsep in name) \
            or os.path.isabs(name) or "\0" in name:
        raise ValueError(f"{what} {name!r} must name a sub-run inside the log dir: no path separator, "
                         "no '..', not absolute (use '_' instead of '/')")
    return name


def _not_compiling() -> bool:
    return False


def _bind_is_compiling() -> None:
    """Point ``_IS_COMPILING`` at ``torch.compiler.is_compiling`` once torch is loaded (this module
    never imports it).  Dynamo folds that very function object to True while it traces, so the
    check costs one call in eager code and nothing in a compiled graph."""
    global _IS_COMPILING
    torch = sys.modules.get("torch")
    if torch is not None and _IS_COMPILING is _not_compiling:
        _IS_COMPILING = torch.compiler.is_compiling


_IS_COMPILING: Any = _not_compiling
_bind_is_compiling()


def _capturing() -> bool:
    from ._transfer import capturing
    return capturing()


def _constant(values: List[bytes]) -> List[bytes]:
    return values


def _device_number(v: Any, name: str) -> Any:
    """A one-element CUDA tensor kept on the device (read on the writer thread), as float64."""
    _inputs.one_element(v, name)
    if v.is_complex():
        raise TypeError(f"{name} must be real, got a {v.dtype} tensor")
    return v.detach().reshape(1).double()


def _hparams_part(part: int, hparams: Dict[str, Any], metrics: Dict[str, Any], domain: Any,
                  from_device: List[Any], *arrays: np.ndarray) -> List[bytes]:
    """Writer thread: one of the three hparams events, with the staged device values filled in."""
    filled = {id(hparams): dict(hparams), id(metrics): dict(metrics)}
    for (d, k), arr in zip(from_device, arrays):
        filled[id(d)][k] = float(arr.reshape(-1)[0])
    return enc_hparams.hparams(filled[id(hparams)], filled[id(metrics)], domain)[part]


def _scalar_from_staged(tag: str, index: int, *arrays: np.ndarray) -> List[bytes]:
    return enc_scalar.from_array(tag, False, False, arrays[index].reshape(-1)[:1])


def _check_thresholds(num_thresholds: Any) -> None:
    if not isinstance(num_thresholds, (int, np.integer)) or isinstance(num_thresholds, bool) \
            or num_thresholds < 2:
        raise ValueError(f"num_thresholds must be an int >= 2, got {num_thresholds!r}")


def _check_layout(layout: Any) -> None:
    if not isinstance(layout, dict):
        raise TypeError(f"layout must be a dict {{category: {{title: [type, tags]}}}}, got "
                        f"{type(layout).__name__}")
    for cat, charts in layout.items():
        if not isinstance(cat, str) or not isinstance(charts, dict):
            raise TypeError(f"layout[{cat!r}] must map chart titles to [type, tags]")
        for title, spec in charts.items():
            if not isinstance(spec, (list, tuple)) or len(spec) != 2 \
                    or not isinstance(spec[1], (list, tuple)) \
                    or not all(isinstance(t, str) for t in spec[1]):
                raise TypeError(f"layout[{cat!r}][{title!r}] must be [chart_type, [tag, ...]], got {spec!r}")
            if spec[0] == "Margin" and len(spec[1]) != 3:
                raise ValueError(f"layout[{cat!r}][{title!r}]: a Margin chart needs exactly 3 tags "
                                 f"(value, lower, upper), got {len(spec[1])}")


def _check_hparams(hparam_dict: Any, metric_dict: Any, domain: Any) -> Dict[str, Any]:
    if not isinstance(hparam_dict, dict) or not isinstance(metric_dict, dict):
        raise TypeError("hparam_dict and metric_dict must be dicts, got "
                        f"{type(hparam_dict).__name__} and {type(metric_dict).__name__}")
    out: Dict[str, Any] = {}
    for k, v in hparam_dict.items():
        k = _inputs.check_tag(k, "hparam_dict key")
        if _inputs.is_cuda_tensor(v):
            v = _device_number(v, f"hparam_dict[{k!r}]")  # read on the writer thread: no wait here
        elif _inputs.is_tensor(v):
            v = float(_inputs.local(v.detach(), f"hparam_dict[{k!r}]").reshape(-1)[0].item())
        elif isinstance(v, np.generic):
            v = v.item()
        elif callable(v) and not isinstance(v, (int, float, str, bool)):
            v = getattr(v, "__name__", repr(v))
        if v is not None and not isinstance(v, (int, float, str, bool)) and not _inputs.is_tensor(v):
            raise ValueError(f"hparam_dict[{k!r}] must be an int, float, str, bool or tensor, "
                             f"got {type(v).__name__}")
        out[k] = v
    if domain is not None:
        if not isinstance(domain, dict):
            raise TypeError(f"hparam_domain_discrete must be a dict, got {type(domain).__name__}")
        for k, values in domain.items():
            if k not in out or not isinstance(values, list) or \
                    not all(isinstance(d, float if _inputs.is_tensor(out[k]) else type(out[k]))
                            for d in values):
                raise TypeError(f"hparam_domain_discrete[{k!r}] must be a list of values of the "
                                f"same type as hparam_dict[{k!r}]")
    return out
