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
from ._encode import text as enc_text
from ._inputs import INT64_MAX, INT64_MIN, to_step, to_walltime
from ._stage import LocalStage
from .file_writer import FileWriter

Number = Union[int, float]
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
                 system_metrics_interval: float = 10.0, flush_timeout: float = 60.0,
                 on_nonfinite: Any = None) -> None:
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
        self._sentinel: Any = None
        if on_nonfinite is not None:
            from ._nonfinite import check_policy
            check_policy(on_nonfinite)
        # A constant that graphs compiled around add_* carry to find this writer at run time.
        self._writer_id = _registry.register(self)
        # Where data is reduced and who writes it: this process, or rank 0 of a merge (_stage).
        self._stage: Any = LocalStage()
        if distributed:
            from .distributed import RankContext
            self._stage = RankContext(distributed_sync_secs, distributed_timeout, self._submit_reduced)
        if on_nonfinite is not None:
            from ._nonfinite import Sentinel
            self._sentinel = Sentinel(on_nonfinite, _process_rank())
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
                          flush_timeout=self.flush_timeout, _purge_step=purge_step,
                          _sentinel=self._sentinel)

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
        if _IS_COMPILING() or (t is not float and t is not int and t is not _TENSOR
                               and _inputs.is_cuda_tensor(scalar_value) and _capturing()):
            from . import _compiled
            return _compiled.add_scalar(self, tag, scalar_value, global_step, walltime, new_style,
                                        double_precision, reduce)
        if t is _TENSOR:
            if scalar_value.is_cuda:
                if _capturing():
                    from . import _compiled
                    return _compiled.add_scalar(self, tag, scalar_value, global_step, walltime,
                                                new_style, double_precision, reduce)
            else:
                # A plain CPU tensor (a 0-d loss): one .item(), 0.3 us where the general checks
                # cost ~4 us; what .item() refuses or does not make a real number (several
                # elements, meta, complex) takes the general path, which names the problem.
                try:
                    v = scalar_value.item()
                except RuntimeError:
                    v = None
                if v.__class__ is float or v.__class__ is int or v.__class__ is bool:
                    scalar_value, t = float(v), float
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

    def add_scalar_batch(self, tags: Sequence[str], values: Any, global_step: Optional[int] = None,
                         walltime: Optional[float] = None) -> None:
        """Many scalars of one step from one tensor: ``values[i]`` is logged under ``tags[i]``,
        as ``add_scalar(tags[i], values[i], global_step)`` would log it (gpulog only; torch's
        writer has no such method).  A CUDA tensor crosses to the host in **one** asynchronous
        copy (no kernel, no sync): the way to log dozens of device metrics of a step with one
        device operation, e.g. ``w.add_scalar_batch(names, torch.stack(metrics), step)``.  (For
        host values separate ``add_scalar`` calls are cheaper: their path is framed in C.)

        Args:
            tags: one str per value.
            values: a 1-D tensor (any real dtype, CPU or CUDA), numpy array or sequence of numbers
                with ``len(tags)`` elements.
        """
        if isinstance(tags, str) or not isinstance(tags, (list, tuple)):
            raise TypeError(f"tags must be a list or tuple of str, got {type(tags).__name__}")
        tags = [_inputs.check_tag(t, f"tags[{i}]") for i, t in enumerate(tags)]
        if _IS_COMPILING() or not self._stage.local:
            for i, tag in enumerate(tags):  # one op each when compiling; merged per tag when distributed
                self.add_scalar(tag, values[i], global_step, walltime)
            return
        from ._reduce import scalar as red_scalar
        prep = red_scalar.prepare_batch(tags, values)
        self._get_file_writer().submit(prep.encode, prep.args, to_step(global_step), to_walltime(walltime),
                                       prep.nbytes, prep.staged, method="add_scalar_batch")

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
        from ._reduce import tensor as red
        self._submit_prepared(tag, global_step, walltime, lambda t: red.prepare(t, tensor))

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
        from ._reduce import hparams as red
        hparams, metrics = red.check(hparam_dict, metric_dict, hparam_domain_discrete)
        step = to_step(global_step)
        if not self._stage.writes:
            return
        if not run_name:
            run_name = str(time.time())
        _check_sub_run(run_name, "run_name")
        logdir = os.path.join(self._get_file_writer().get_logdir(), run_name)
        fw = FileWriter(logdir, self.max_queue, self.flush_secs, self.filename_suffix,
                        flush_timeout=self.flush_timeout, _sentinel=self._sentinel)
        red.submit(fw, hparams, metrics, hparam_domain_discrete, step)
        fw.close_async()

    # -- raw summaries -------------------------------------------------------------------------
    def add_histogram_raw(self, tag: str, min: Number, max: Number, num: Number, sum: Number,
                          sum_squares: Number, bucket_limits: Any, bucket_counts: Any,
                          global_step: Optional[int] = None, walltime: Optional[float] = None) -> None:
        """A histogram from precomputed statistics; ``bucket_limits[i]`` is bucket i's right edge."""
        from ._reduce import histogram as red
        self._submit_prepared(tag, global_step, walltime, lambda t: red.prepare_raw(
            t, (min, max, num, sum, sum_squares), bucket_limits, bucket_counts))

    def add_pr_curve_raw(self, tag: str, true_positive_counts: Any, false_positive_counts: Any,
                         true_negative_counts: Any, false_negative_counts: Any, precision: Any,
                         recall: Any, global_step: Optional[int] = None, num_thresholds: int = 127,
                         weights: Any = None, walltime: Optional[float] = None) -> None:
        """A PR curve from precomputed rows (all of one length)."""
        from ._reduce import pr_curve as red
        _check_thresholds(num_thresholds)
        rows = (true_positive_counts, false_positive_counts, true_negative_counts,
                false_negative_counts, precision, recall)
        self._submit_prepared(tag, global_step, walltime,
                              lambda t: red.prepare_raw(t, rows, num_thresholds))

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
        tag = _inputs.check_tag(tag)
        step, wall = to_step(global_step), to_walltime(walltime)
        self._stage.histogram(self._get_file_writer(), tag, values, step, wall, bins, max_bins)

    def add_pr_curve(self, tag: str, labels: Any, predictions: Any, global_step: Optional[int] = None,
                     num_thresholds: int = 127, weights: Any = None,
                     walltime: Optional[float] = None) -> None:
        """PR curve from binary labels and predictions in [0, 1] (torch's compute_curve)."""
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

    # -- model watching ------------------------------------------------------------------------
    def watch(self, model: Any, *, log: str = "gradients", every: int = 100,
              stats: Sequence[str] = ("norm", "mean", "std", "min", "max", "absmax", "nonfinite",
                                      "zero_frac"),
              include: Any = None, exclude: Any = None, histograms: bool = False,
              histogram_every: Optional[int] = None, update_ratio: bool = False,
              activations: Sequence[str] = (), optimizer: Any = None, prefix: str = "",
              layout: bool = True, on_nonfinite: Any = "warn", step: Any = None) -> Any:
        """Log statistics of the model's parameters and gradients every ``every`` optimizer steps,
        with no change to the training loop and no host-device sync (README: "Watching a model").

        Args:
            model: the ``torch.nn.Module`` whose ``named_parameters()`` are watched.
            log: ``"gradients"`` (default), ``"parameters"`` or ``"all"``.
            every: log at optimizer steps 0, every, 2*every, ... (other steps: a counter).
            stats: any of ``norm, mean, std, min, max, absmax, nonfinite, zero_frac`` (all by
                default), over each tensor's finite values; ``nonfinite`` counts NaN/inf.
                Also logged: ``total_grad_norm`` / ``total_param_norm``.
            include, exclude: a regular expression (searched in the parameter name) or a
                ``callable(name, parameter) -> bool`` choosing what is watched.
            histograms: also log a histogram per tensor, on TensorBoard's default buckets (so
                shards merge exactly), every ``histogram_every`` steps (default: ``every``).
            update_ratio: also log ``||new - old|| / ||old||`` per parameter.  Costs one copy of
                the watched parameters, on log steps only, between the step's pre- and post-hook.
            activations: names of modules (``model.named_modules()``) whose first output tensor's
                statistics are logged on log steps (training mode; micro-batches merged).
            optimizer: hook this optimizer only; default: any optimizer holding a watched parameter.
            prefix: prepended to every tag (tags are ``<prefix><what>_<stat>/<name>``).
            layout: write a custom-scalars layout with one chart per statistic (all tensors).
            on_nonfinite: the first NaN/inf found: ``"warn"`` (default), ``"raise"``
                (``FloatingPointError`` at the next watched step), ``None``, or a callable given
                ``{"what", "name", "count", "step", "wall"}``; always written as text too.
            step: a callable giving the step to log at (default: the optimizer step count).

        Returns:
            a ``gpulog.watch.WatchHandle`` (``.remove()``, ``.log(step)``, ``.first_nonfinite``).

        Gradients are read in the optimizer's step pre-hook, where they are final (after
        accumulation, DDP's all-reduce and ``GradScaler.unscale_``).  Device memory of a pass: the
        ``[tensors, 8]`` float64 result and small per-chunk partials (plus 1548 counts per tensor
        on histogram steps) — never a copy of the watched tensors.  Example::

            handle = writer.watch(model, every=50, histograms=True)
        """
        from . import watch as _watch
        return _watch.watch(self, model, log=log, every=every, stats=stats, include=include,
                            exclude=exclude, histograms=histograms, histogram_every=histogram_every,
                            update_ratio=update_ratio, activations=activations, optimizer=optimizer,
                            prefix=prefix, layout=layout, on_nonfinite=on_nonfinite, step=step)

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


def _process_rank() -> Optional[int]:
    """This process's rank in torch.distributed, or None (for on_nonfinite's reports)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        return int(dist.get_rank())
    return None


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
    check costs one call in eager code and nothing in a compiled graph.  ``_TENSOR``: the exact
    ``torch.Tensor`` class, for add_scalar's CPU-tensor path (subclasses take the general one)."""
    global _IS_COMPILING, _TENSOR
    torch = sys.modules.get("torch")
    if torch is not None and _IS_COMPILING is _not_compiling:
        _IS_COMPILING = torch.compiler.is_compiling
        _TENSOR = torch.Tensor


class _NoTensor:
    """Stands in for torch.Tensor until torch is imported (no value has this class)."""


_IS_COMPILING: Any = _not_compiling
_TENSOR: Any = _NoTensor
_bind_is_compiling()


def _capturing() -> bool:
    from ._transfer import capturing
    return capturing()






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


