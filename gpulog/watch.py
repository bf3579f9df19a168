"""``SummaryWriter.watch(model)``: statistics of every parameter and gradient, no sync, one pass.

The watch is a stage on the one pipeline: at a watch point it reduces every watched tensor where
it lives in one fused pass (``_reduce/watch.py``: the Triton multi-tensor kernel on CUDA, one
native call on CPU, the chunked torch reference elsewhere), stages the small result buffer with
one asynchronous copy (``_transfer.DeviceStaged``: pinned memory and an event), and queues one
``Item`` whose encoder (``_encode/watch.py``, on the writer thread) derives the statistics and
writes them as ordinary scalars and histograms.  Sharded parameters merge exactly through the
distributed stage (one packed SUM and one packed MAX collective), by the kind's ``MERGE``.

When: the pass runs in an optimizer **step pre-hook** — gradients are final there (after
gradient accumulation, after DDP's all-reduce and FSDP's reduce-scatter, after ``GradScaler``
unscaled them) and parameters are those the step is about to update.  A step given a closure
(``optimizer.step(closure)``: Lightning's automatic optimisation, LBFGS) computes its gradients
inside ``step()``: the pass then runs right after the closure's first call, still before the
update.  (``GradScaler`` skips
``optimizer.step()`` — and so this hook — on steps whose gradients are not finite; gpulog then
logs nothing for that step.)  ``every=N`` logs at optimizer steps 0, N, 2N, ...; other steps cost
one counter increment.  Without an optimizer, call :meth:`WatchHandle.log` where gradients are
final.
"""
from __future__ import annotations

import re
import threading
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ._encode import text as enc_text
from ._encode import watch as enc_watch
from ._reduce import watch as red

LOGS = ("gradients", "parameters", "all")
Filter = Union[None, str, Callable[[str, torch.Tensor], bool]]


class WatchHandle:
    """What ``SummaryWriter.watch`` returns.

    Attributes: ``steps`` (optimizer steps seen), ``names`` (the watched parameter names, model
    order), ``first_nonfinite`` (None, or ``{"what", "name", "count", "step", "wall"}`` of the
    first parameter, gradient or activation found with NaN/±inf values; set on the writer
    thread, from the copied statistics: nothing waits for the device).
    """

    def __init__(self, writer: Any, model: torch.nn.Module, *, log: str, every: int,
                 stats: Sequence[str], include: Filter, exclude: Filter, histograms: bool,
                 histogram_every: Optional[int], update_ratio: bool,
                 activations: Sequence[str], optimizer: Any, prefix: str, layout: bool,
                 on_nonfinite: Any, step: Optional[Callable[[], int]]) -> None:
        self._writer = writer
        self._every = every
        self._hist_every = histogram_every
        self._stats = tuple(stats)
        self._prefix = prefix
        self._whats = (("param",) if log in ("parameters", "all") else ()) + \
                      (("grad",) if log in ("gradients", "all") else ())
        self._histograms = histograms
        self._update_ratio = update_ratio
        self._on_nonfinite = on_nonfinite
        self._step_fn = step
        self._params = _select(model, include, exclude)
        self.names = [n for n, _ in self._params]
        self._param_set = {id(p) for _, p in self._params}
        self._tables: Dict[Tuple[int, ...], red.ChunkTable] = {}
        self._table_for([p for _, p in self._params])  # built once, here
        self._lock = threading.Lock()
        self.steps = 0
        self.first_nonfinite: Optional[Dict[str, Any]] = None
        self._error: Optional[BaseException] = None
        self._owner: Dict[int, bool] = {}
        self._old: Optional[List[torch.Tensor]] = None
        self._acts: Dict[str, List[torch.Tensor]] = {}
        self._hooks: List[Any] = []
        from . import _registry
        self._id = _registry.register(self)  # compiled steps find the handle by this number
        modules = dict(model.named_modules())
        for name in activations:
            self._hooks.append(modules[name].register_forward_hook(self._activation_hook(name)))
        if optimizer is not None:
            self._hooks.append(optimizer.register_step_pre_hook(self._pre_hook))
            if update_ratio:
                self._hooks.append(optimizer.register_step_post_hook(self._post_hook))
        else:
            from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                               register_optimizer_step_pre_hook)
            self._hooks.append(register_optimizer_step_pre_hook(self._pre_hook))
            if update_ratio:
                self._hooks.append(register_optimizer_step_post_hook(self._post_hook))

    # -- public --------------------------------------------------------------------------------
    def remove(self) -> None:
        """Stop watching: every hook gpulog registered is removed (idempotent)."""
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def log(self, step: Optional[int] = None) -> None:
        """Run the pass now (a watch point of your choosing: gradients must be final), whatever
        ``every`` says; ``step`` defaults to the watch's step counter."""
        self._raise_pending()
        self._pass(self._current_step() if step is None else int(step), with_hist=self._histograms)

    # -- hooks ---------------------------------------------------------------------------------
    def _owns(self, optimizer: Any) -> bool:
        if _compiling():  # no cache update under dynamo: a changed dict would be a recompile
            return any(id(p) in self._param_set for g in optimizer.param_groups for p in g["params"])
        got = self._owner.get(id(optimizer))
        if got is None:
            got = self._owner[id(optimizer)] = any(
                id(p) in self._param_set for g in optimizer.param_groups for p in g["params"])
        return got

    def _pre_hook(self, optimizer: Any, args: Any = (), kwargs: Any = None) -> Any:
        if not self._owns(optimizer):
            return None
        closure = _closure_of(args, kwargs)
        if closure is not None:
            # step(closure) computes the gradients inside step() (Lightning's automatic
            # optimisation, LBFGS): the watch point is right after the closure's first call.
            return self._wrap_closure(closure, args, kwargs or {})
        if _compiling():
            # Inside a compiled step: one opaque op with the step's tensors (see _compiled); its
            # body runs _pre_step at every execution, so nothing here depends on the step count.
            from . import _compiled  # noqa: F401 - defines the ops
            torch.ops.gpulog.watch_pre(self._watch_point(), self._id)
            return
        if self.steps % self._every and self._error is None:
            self.steps += 1  # an off-step: a counter, nothing else
            return None
        self._pre_step(self._watch_point())
        return None

    def _wrap_closure(self, closure: Callable[[], Any], args: Any, kwargs: Dict[str, Any]) -> Any:
        first = [True]

        def watched() -> Any:
            out = closure()
            if first[0]:  # LBFGS calls the closure several times a step: watch the first
                first[0] = False
                self._pre_step(self._watch_point())
            return out
        if "closure" in kwargs:
            return args, dict(kwargs, closure=watched)
        args = tuple(args)
        return (args[0], watched, *args[2:]), kwargs

    def _post_hook(self, optimizer: Any, *args: Any) -> None:
        if not self._owns(optimizer):
            return
        params = [p for _, p in self._params]
        if _compiling():
            from . import _compiled  # noqa: F401
            torch.ops.gpulog.watch_post(params, self._id)
            return
        self._post_step([p.detach() for p in params])

    def _activation_hook(self, name: str) -> Callable[..., None]:
        def hook(module: torch.nn.Module, inputs: Any, output: Any) -> None:
            t = _first_tensor(output)
            if t is None or not module.training:
                return
            if _compiling():
                from . import _compiled  # noqa: F401
                torch.ops.gpulog.watch_act(t, self._id, name)
                return
            self._activation(name, t.detach())
        return hook

    def _watch_point(self) -> List[Optional[torch.Tensor]]:
        """The watched tensors in pass order (None for a missing gradient)."""
        return [p if what == "param" else p.grad for what in self._whats for _, p in self._params]

    # -- what the hooks (or their compiled ops) do, at every execution --------------------------
    def _pre_step(self, tensors: List[Optional[torch.Tensor]]) -> None:
        self._raise_pending()
        _not_capturing(tensors)
        k = self.steps
        self.steps += 1
        if k % self._every:
            return
        hist_every = self._hist_every or self._every
        self._pass(self._current_step(k), with_hist=self._histograms and k % hist_every == 0,
                   given=tensors)
        if self._update_ratio:
            # The stated cost: one copy of the watched parameters, on log steps only, freed in
            # the post-hook (the update is new parameters minus these).
            self._old = [p.detach().clone() for _, p in self._params]

    def _post_step(self, params: List[torch.Tensor]) -> None:
        old, self._old = self._old, None
        if old is None:
            return
        param_sq = torch.stack([torch.linalg.vector_norm(o, dtype=torch.float64) ** 2 for o in old])
        torch._foreach_sub_(old, params)  # old - new = -update, in place: no second copy
        delta_sq = torch.stack([torch.linalg.vector_norm(d, dtype=torch.float64) ** 2 for d in old])
        del old
        step = self._current_step(self.steps - 1)
        self._submit_parts("update_ratio", [delta_sq, param_sq], enc_watch.RATIO_MERGE,
                           enc_watch.ratio_values, (self._prefix, list(self.names)), step)

    def _activation(self, name: str, t: torch.Tensor) -> None:
        """A watched module's output on a log step (the step the next optimizer step logs)."""
        if self.steps % self._every:
            return
        rows = red.reduce([t], self._table_for([t]))
        self._acts.setdefault(name, []).append(rows)

    # -- the pass ------------------------------------------------------------------------------
    def _current_step(self, k: Optional[int] = None) -> int:
        if self._step_fn is not None:
            return int(self._step_fn())
        return self.steps if k is None else k

    def _table_for(self, tensors: Sequence[torch.Tensor]) -> red.ChunkTable:
        key = tuple(t.numel() for t in tensors)
        table = self._tables.get(key)
        if table is None:
            table = self._tables[key] = red.ChunkTable(key)
        return table

    def _pass(self, step: int, with_hist: bool, given: Optional[List[Optional[torch.Tensor]]] = None
              ) -> None:
        """The fused pass over ``given`` (the watch point's tensors, :meth:`_watch_point` order;
        default: read them from the model now)."""
        if given is None:
            given = self._watch_point()
        names: List[Tuple[str, str]] = []
        tensors: List[torch.Tensor] = []
        counts: List[bool] = []
        sharded = False
        points = iter(given)
        for what in self._whats:
            for name, p in self._params:
                t = next(points)
                if t is None:
                    continue
                local, counted = red.local_part(t.detach())
                sharded = sharded or getattr(t, "placements", None) is not None
                names.append((what, name))
                tensors.append(local)
                counts.append(counted)
        rows = self._rows(tensors, counts)
        act_names, act_rows = self._activation_rows()
        if act_rows is not None:
            names += act_names
            rows = torch.cat([rows, act_rows.to(rows.device)]) if rows.numel() else act_rows
        hist_names = [n for n in names if n[0] != "act"] if with_hist else []
        if with_hist:
            hist = red.histograms([t for t, c in zip(tensors, counts) if c] if not sharded else
                                  tensors)
            if sharded:  # a replicated shard counted once: the others contribute zeros
                from ._transfer import to_device
                width = len(_edges()) - 1
                mask = torch.tensor(counts, dtype=torch.float64).repeat_interleave(width)
                hist = hist * to_device(mask, hist.device)
            else:
                hist_names = [n for n, c in zip(hist_names, counts) if c]
        else:
            hist = torch.zeros(0, dtype=torch.float64, device=rows.device)
        meta = (names, self._stats, self._prefix, hist_names, _edges() if hist_names else None,
                self._report, step)
        self._submit_parts("watch", red.pack(rows, hist), enc_watch.MERGE, enc_watch.from_merged,
                           meta, step, sharded=sharded)

    def _rows(self, tensors: List[torch.Tensor], counts: List[bool]) -> torch.Tensor:
        """Rows in ``tensors`` order, one fused pass per device (watched tensors normally share
        one); tensors another rank counts (replicated shards) merge as nothing."""
        if not tensors:
            return torch.zeros(0, 8, dtype=torch.float64)
        by_device: Dict[torch.device, List[int]] = {}
        for i, t in enumerate(tensors):
            by_device.setdefault(t.device, []).append(i)
        parts = []
        for device, idx in by_device.items():
            group = [tensors[i] for i in idx]
            parts.append((idx, red.reduce(group, self._table_for(group))))
        if len(parts) == 1:
            rows = parts[0][1]
        else:
            device = tensors[0].device
            rows = torch.empty(len(tensors), 8, dtype=torch.float64, device=device)
            for idx, r in parts:
                rows[torch.tensor(idx, device=device)] = r.to(device)
        if not all(counts):
            from ._transfer import to_device
            keep = to_device(torch.tensor(counts, dtype=torch.bool), rows.device).unsqueeze(1)
            rows = torch.where(keep, rows, red.empty_rows(len(tensors), rows.device))
        return rows

    def _activation_rows(self) -> Tuple[List[Tuple[str, str]], Optional[torch.Tensor]]:
        """One merged row per activation seen since the last pass (micro-batches merge exactly)."""
        acts, self._acts = self._acts, {}
        if not acts:
            return [], None
        names, rows = [], []
        for name, got in acts.items():
            r = torch.cat(got)
            merged = torch.cat([r[:, :5].sum(0), r[:, 5:7].amax(0), r[:, 7:8].amin(0)])
            names.append(("act", name))
            rows.append(merged)
        return names, torch.stack(rows)

    def _submit_parts(self, tag: str, parts: List[torch.Tensor], merge: Any, encode: Any,
                      meta: Tuple[Any, ...], step: int, sharded: bool = False) -> None:
        """One item: through the distributed merge when shards must be combined, else staged in
        one asynchronous copy and written by the process that writes (rank 0)."""
        writer = self._writer
        stage = writer._stage
        fw = writer._get_file_writer()
        if sharded and not stage.local:
            stage.merged(fw, "watch", "watch", self._prefix + tag, step, time.time(), merge, parts,
                         encode, meta)
            return
        if not stage.writes:
            return  # replicated (DDP): rank 0 logs alone, no collective
        flat = torch.cat([p.reshape(-1).to(torch.float64) for p in parts])
        sizes = [p.numel() for p in parts]
        from ._transfer import DeviceStaged
        staged = DeviceStaged([flat])  # the one asynchronous copy of this log step
        fw.submit(_split_then, (encode, meta, sizes), step, time.time(), staged.nbytes, staged,
                  method="watch")

    # -- non-finite values -------------------------------------------------------------------------
    def _report(self, what: str, name: str, count: int, step: Any, wall: float) -> List[bytes]:
        """Writer thread: the first non-finite tensor; returns summary values to write with it."""
        if self.first_nonfinite is not None:
            return []
        self.first_nonfinite = {"what": what, "name": name, "count": count, "step": step, "wall": wall}
        kind = {"param": "parameter", "grad": "gradient", "act": "activation"}[what]
        message = (f"gpulog.watch: first non-finite values at step {step}: the {kind} of "
                   f"{name!r} has {count} NaN/inf element(s)")
        mode = self._on_nonfinite
        if callable(mode):
            try:
                mode(dict(self.first_nonfinite))
            except Exception as err:  # noqa: BLE001 - raised on the training thread instead
                self._error = err
        elif mode == "raise":
            self._error = FloatingPointError(message + " (watch(on_nonfinite='raise'))")
        elif mode == "warn":
            try:
                warnings.warn(message, RuntimeWarning, stacklevel=2)
            except Exception:  # noqa: BLE001 - a warnings filter set to "error" must not end the writer
                pass
        return enc_text.text(f"{self._prefix}first_nonfinite", message)

    def _raise_pending(self) -> None:
        err, self._error = self._error, None
        if err is not None:
            raise err


def _not_capturing(tensors: Sequence[Optional[torch.Tensor]]) -> None:
    """A watched step captured into a CUDA graph: a clear error at capture time.  The pass stages
    its result from the host (pinned memory, an event), which a replay would not repeat; a
    device-gated pass that one graph could serve for log and off steps is not built yet."""
    t = next((t for t in tensors if t is not None), None)
    if t is not None and t.is_cuda:
        from ._transfer import capturing
        if capturing():
            raise RuntimeError("SummaryWriter.watch: the watched optimizer step is being captured into "
                               "a CUDA graph, which watch does not support yet (a replay would not "
                               "log); watch the step outside the graph, or call handle.remove() "
                               "before capturing")


def _closure_of(args: Any, kwargs: Any) -> Optional[Callable[[], Any]]:
    """The closure an ``optimizer.step(closure)`` call was given, if any (torch passes the
    hooks ``args`` with the optimizer itself first)."""
    c = (kwargs or {}).get("closure")
    if c is None and len(args) > 1:
        c = args[1]
    return c if callable(c) else None


def _compiling() -> bool:
    return bool(torch.compiler.is_compiling())


def _split_then(encode: Any, meta: Tuple[Any, ...], sizes: List[int], flat: np.ndarray) -> List[bytes]:
    """Writer thread: the staged buffer back into its parts, then the kind's encoder."""
    parts, at = [], 0
    for n in sizes:
        parts.append(flat[at:at + n])
        at += n
    return list(encode(*meta, *parts))


def _edges() -> np.ndarray:
    from ._reduce.histogram import tensorflow_edges
    return tensorflow_edges()


def _first_tensor(output: Any) -> Optional[torch.Tensor]:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (list, tuple)):
        for o in output:
            if isinstance(o, torch.Tensor):
                return o
    if isinstance(output, dict):
        for o in output.values():
            if isinstance(o, torch.Tensor):
                return o
    return None


def _matcher(f: Filter, arg: str) -> Optional[Callable[[str, torch.Tensor], bool]]:
    if f is None:
        return None
    if isinstance(f, str):
        try:
            rx = re.compile(f)
        except re.error as err:
            raise ValueError(f"{arg}={f!r} is not a valid regular expression: {err}") from None
        return lambda name, p: rx.search(name) is not None
    if callable(f):
        return f
    raise TypeError(f"{arg} must be a regular expression (str), a callable(name, parameter) -> "
                    f"bool or None, got {type(f).__name__}")


def _select(model: torch.nn.Module, include: Filter, exclude: Filter) -> List[Tuple[str, torch.Tensor]]:
    inc, exc = _matcher(include, "include"), _matcher(exclude, "exclude")
    out: List[Tuple[str, torch.Tensor]] = []
    for name, p in model.named_parameters():
        if inc is not None and not inc(name, p):
            continue
        if exc is not None and exc(name, p):
            continue
        out.append((name, p))
    return out


def watch(writer: Any, model: Any, *, log: str = "gradients", every: int = 100,
          stats: Sequence[str] = enc_watch.STATS, include: Filter = None, exclude: Filter = None,
          histograms: bool = False, histogram_every: Optional[int] = None,
          update_ratio: bool = False, activations: Sequence[str] = (), optimizer: Any = None,
          prefix: str = "", layout: bool = True, on_nonfinite: Any = "warn",
          step: Optional[Callable[[], int]] = None) -> WatchHandle:
    """See ``SummaryWriter.watch``; validates every argument at the call."""
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if log not in LOGS:
        raise ValueError(f"log must be one of {', '.join(map(repr, LOGS))}, got {log!r}")
    for name, v in (("every", every), ("histogram_every", histogram_every)):
        if v is None and name == "histogram_every":
            continue
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an int >= 1 (log every that many optimizer steps), got {v!r}")
    if isinstance(stats, str) or not all(isinstance(s, str) for s in stats):
        raise TypeError(f"stats must be a sequence of statistic names, got {stats!r}")
    unknown = [s for s in stats if s not in enc_watch.STATS]
    if unknown:
        raise ValueError(f"unknown statistic(s) {unknown}: stats may name {', '.join(enc_watch.STATS)}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if isinstance(activations, str) or not all(isinstance(a, str) for a in activations):
        raise TypeError("activations must be a sequence of module names (model.named_modules())")
    modules = dict(model.named_modules())
    missing = [a for a in activations if a not in modules]
    if missing:
        raise ValueError(f"activations: no module named {missing} in the model; names are those of "
                         f"model.named_modules(), e.g. {list(modules)[1:4]}")
    if optimizer is not None and not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer or None, got {type(optimizer).__name__}")
    if not (on_nonfinite in (None, "warn", "raise") or callable(on_nonfinite)):
        raise ValueError(f"on_nonfinite must be 'warn', 'raise', None or a callable, got {on_nonfinite!r}")
    if step is not None and not callable(step):
        raise TypeError(f"step must be a callable returning the step to log at, or None, got {type(step).__name__}")
    handle = WatchHandle(writer, model, log=log, every=every, stats=stats, include=include,
                         exclude=exclude, histograms=histograms, histogram_every=histogram_every,
                         update_ratio=update_ratio, activations=activations, optimizer=optimizer,
                         prefix=prefix, layout=layout, on_nonfinite=on_nonfinite, step=step)
    if not handle.names and not activations:
        handle.remove()
        raise ValueError("no parameter of the model matches include/exclude: nothing to watch "
                         f"(parameters: {[n for n, _ in model.named_parameters()][:5]}...)")
    sharded = [n for n, p in handle._params if getattr(p, "placements", None) is not None]
    if sharded and update_ratio:
        handle.remove()
        raise ValueError(f"update_ratio=True is not supported for sharded parameters yet ({sharded[:3]} "
                         "are DTensors); watch them without it")
    if sharded and writer._stage.local:
        handle.remove()
        raise ValueError(f"parameters {sharded[:3]} are DTensors (sharded): their statistics need every "
                         "rank's shard; build the writer with SummaryWriter(..., distributed=True)")
    if layout and writer._stage.writes:  # only once every check passed: a refused watch writes nothing
        whats = handle._whats + (("act",) if activations else ())
        writer.add_custom_scalars(enc_watch.layout(prefix, whats, handle._stats))
    return handle
