"""System metrics: ``SummaryWriter(..., system_metrics=True, system_metrics_interval=10)``.

A daemon thread samples every ``interval / 10`` seconds (at least every 0.05 s; intervals below a
second work) and, every ``interval``, logs the mean of its samples as scalars at the writer's
**latest global step** (the last ``global_step`` given to ``add_scalar``/``add_scalars``/
``add_histogram``; 0 before any), so system charts line up with the training curves; each event's
wall time is the sampling time:

* ``system/gpu<i>/{utilization_pct, memory_used_mib, memory_total_mib, power_w, temperature_c,
  sm_clock_mhz}`` from NVML (nvidia-ml-py, imported as ``pynvml``) for the GPUs this process can
  see: ``CUDA_VISIBLE_DEVICES`` is honoured (indices or ``GPU-`` UUIDs, matched by UUID); ``i`` is
  the index as this process numbers it.
* ``system/gpu<i>/torch_{allocated,reserved,peak}_mib`` from torch's caching allocator, only once
  the process has initialised CUDA itself (the sampler never initialises CUDA).
* ``system/host/{cpu_pct, memory_used_pct, process_rss_mib}`` from psutil on every platform
  (``pip install 'gpulog[system]'``), else from ``/proc`` on Linux; elsewhere, without psutil,
  one warning says how to get them.

Without NVML (a CPU machine, a container without the driver, MIG devices) one warning is issued
and the host metrics are still logged.  Under ``distributed=True`` every rank samples its own
devices and publishes the means through the process group's store (no collective, so it cannot
interleave with the training thread's); rank 0 logs them as ``system/rank<r>/...``.
The sampler only reads counters: it never blocks the training loop.
"""
from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings
from typing import Any, Callable, Dict, List, Optional

Sample = Dict[str, float]
# NvmlSource() <- default_sources() <- start_sampler() <- SummaryWriter() <- the user's line
_USER_LEVEL = 5


class NvmlSource:
    """NVML readings for the visible GPUs; ``available`` is False (after one warning) without NVML."""

    def __init__(self) -> None:
        self.handles: List[Any] = []
        self.available = False
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nvml = pynvml
            self.handles = self._visible_handles()
            self.available = bool(self.handles)
            if not self.handles:
                warnings.warn("gpulog system metrics: NVML found no usable GPU; logging host metrics only",
                              RuntimeWarning, stacklevel=_USER_LEVEL)
        except Exception as err:  # ImportError, NVMLError (no driver), …
            warnings.warn(f"gpulog system metrics: NVML unavailable ({err}); logging host metrics only",
                          RuntimeWarning, stacklevel=_USER_LEVEL)

    def _visible_handles(self) -> List[Any]:
        nv = self.nvml
        spec = os.environ.get("CUDA_VISIBLE_DEVICES")
        if spec is None:
            return [nv.nvmlDeviceGetHandleByIndex(i) for i in range(nv.nvmlDeviceGetCount())]
        handles = []
        for item in (s.strip() for s in spec.split(",") if s.strip()):
            if item.startswith("MIG-"):
                warnings.warn(f"gpulog system metrics: MIG device {item} is not sampled", RuntimeWarning)
                continue
            if item.startswith("GPU-"):
                handles.append(nv.nvmlDeviceGetHandleByUUID(item))
            elif item.lstrip("-").isdigit():
                if int(item) < 0:
                    break  # CUDA stops at the first invalid index
                handles.append(nv.nvmlDeviceGetHandleByIndex(int(item)))
        return handles

    def sample(self) -> Sample:
        nv, out = self.nvml, {}
        for i, h in enumerate(self.handles):
            p = f"gpu{i}/"
            for name, read in (
                ("utilization_pct", lambda: nv.nvmlDeviceGetUtilizationRates(h).gpu),
                ("memory_used_mib", lambda: nv.nvmlDeviceGetMemoryInfo(h).used / 2**20),
                ("memory_total_mib", lambda: nv.nvmlDeviceGetMemoryInfo(h).total / 2**20),
                ("power_w", lambda: nv.nvmlDeviceGetPowerUsage(h) / 1000.0),
                ("temperature_c", lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU)),
                ("sm_clock_mhz", lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)),
            ):
                try:
                    out[p + name] = float(read())
                except Exception:  # a counter this GPU does not support
                    pass
        return out


def torch_allocator_sample() -> Sample:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_initialized():
        return {}
    out = {}
    for i in range(torch.cuda.device_count()):
        stats = torch.cuda.memory_stats(i)
        out[f"gpu{i}/torch_allocated_mib"] = stats.get("allocated_bytes.all.current", 0) / 2**20
        out[f"gpu{i}/torch_reserved_mib"] = stats.get("reserved_bytes.all.current", 0) / 2**20
        out[f"gpu{i}/torch_peak_mib"] = stats.get("allocated_bytes.all.peak", 0) / 2**20
    return out


class HostSource:
    """CPU use of the whole host, memory in use and this process's RSS: from psutil where it is
    installed (every platform), else from ``/proc`` (Linux); neither: one warning, no host keys."""

    def __init__(self) -> None:
        try:
            import psutil
            self.psutil: Any = psutil
            self._process = psutil.Process()
            psutil.cpu_percent(interval=None)  # primes the counter: later calls give the delta
        except ImportError:
            self.psutil = None
        self._last = None if self.psutil is not None else self._cpu_times()
        if self.psutil is None and self._last is None:
            warnings.warn("gpulog system metrics: host metrics need psutil on this platform "
                          "(pip install 'gpulog[system]'); logging GPU metrics only",
                          RuntimeWarning, stacklevel=_USER_LEVEL)

    @staticmethod
    def _cpu_times() -> Optional[List[int]]:
        try:
            with open("/proc/stat") as f:
                return [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None

    def sample(self) -> Sample:
        if self.psutil is not None:
            return {"host/cpu_pct": float(self.psutil.cpu_percent(interval=None)),
                    "host/memory_used_pct": float(self.psutil.virtual_memory().percent),
                    "host/process_rss_mib": self._process.memory_info().rss / 2**20}
        return self._sample_proc()

    def _sample_proc(self) -> Sample:
        out: Sample = {}
        now = self._cpu_times()
        if now and self._last:
            delta = [a - b for a, b in zip(now, self._last)]
            total = sum(delta)
            idle = delta[3] + (delta[4] if len(delta) > 4 else 0)
            if total > 0:
                out["host/cpu_pct"] = 100.0 * (total - idle) / total
        self._last = now
        try:
            info = {}
            with open("/proc/meminfo") as f:
                for line in f:
                    k, v = line.split(":", 1)
                    info[k] = int(v.split()[0])
            out["host/memory_used_pct"] = 100.0 * (1 - info["MemAvailable"] / info["MemTotal"])
            with open("/proc/self/statm") as f:
                out["host/process_rss_mib"] = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
        except (OSError, KeyError, ValueError):
            pass
        return out


def default_sources() -> List[Callable[[], Sample]]:
    nvml = NvmlSource()
    sources: List[Callable[[], Sample]] = [HostSource().sample, torch_allocator_sample]
    if nvml.available:
        sources.insert(0, nvml.sample)
    return sources


class Sampler:
    """Averages ``sources`` over each ``interval`` and hands the means to ``emit(step, means)``."""

    def __init__(self, sources: List[Callable[[], Sample]], emit: Callable[[int, Sample], None],
                 interval: float, clock: Callable[[], float] = time.monotonic,
                 step: Optional[Callable[[], int]] = None,
                 wait: Optional[Callable[[float], bool]] = None) -> None:
        if not isinstance(interval, (int, float)) or interval <= 0:
            raise ValueError(f"system_metrics_interval must be a positive number of seconds, got {interval!r}")
        self.sources, self.emit, self.interval, self.clock = sources, emit, float(interval), clock
        self._stop = threading.Event()
        self._wait = wait or self._stop.wait  # (tests inject one that advances a fake clock)
        self._sums: Dict[str, float] = {}
        self._counts: Dict[str, int] = {}
        self._start = clock()
        # The step each mean is logged at: the writer's latest global step; standalone, whole
        # seconds since the start.
        self.step = step if step is not None else (lambda: int(self.clock() - self._start))
        self._thread: Optional[threading.Thread] = None

    def sample_once(self) -> None:
        for source in self.sources:
            try:
                values = source()
            except Exception:  # a flaky counter must never take the sampler down
                continue
            for k, v in values.items():
                self._sums[k] = self._sums.get(k, 0.0) + v
                self._counts[k] = self._counts.get(k, 0) + 1

    def publish(self) -> None:
        if not self._sums:
            return
        means = {k: self._sums[k] / self._counts[k] for k in self._sums}
        self._sums, self._counts = {}, {}
        self.emit(self.step(), means)

    def _run(self) -> None:
        tick = max(0.05, self.interval / 10)
        next_publish = self._start + self.interval
        while not self._wait(tick):
            self.sample_once()
            if self.clock() >= next_publish:
                self.publish()
                next_publish += self.interval

    def start(self) -> "Sampler":
        self.sample_once()
        self._thread = threading.Thread(target=self._run, name="gpulog-system-metrics", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample_once()
        self.publish()


def start_sampler(writer: Any, interval: float,
                  sources: Optional[List[Callable[[], Sample]]] = None) -> Sampler:
    """Start sampling for ``writer``; logs ``system/...`` scalars (rank 0 under distributed)."""
    dist = None if writer._stage.local else writer._stage
    if sources is None:
        sources = default_sources()
    step = lambda: writer._latest_step  # noqa: E731 - tracked by the writer (see track_steps)
    if dist is None:
        def emit(step: int, means: Sample) -> None:
            fw = writer._get_file_writer()
            now = time.time()
            for k, v in sorted(means.items()):
                fw.submit_scalar("system/" + k, float(v), step, now)
        return Sampler(sources, emit, interval, step=step).start()
    return Sampler(sources, _distributed_emitter(writer, dist), interval, step=step).start()


def track_steps(writer: Any) -> None:
    """Make ``writer`` remember the latest ``global_step`` of its scalar and histogram calls.
    Instance attributes shadow the methods, so writers without system metrics pay nothing."""
    writer._latest_step = 0
    for name in ("add_scalar", "add_scalars", "add_histogram"):
        method = getattr(writer, name)

        def tracked(tag: Any, value: Any, global_step: Any = None, *args: Any, _m: Any = method,
                    **kwargs: Any) -> None:
            _m(tag, value, global_step, *args, **kwargs)
            if global_step is not None and getattr(getattr(global_step, "device", None), "type", "cpu") == "cpu":
                try:
                    writer._latest_step = int(global_step)
                except (TypeError, ValueError):
                    pass
        tracked.__doc__, tracked.__name__ = method.__doc__, name
        setattr(writer, name, tracked)


def _distributed_emitter(writer: Any, dist: Any) -> Callable[[int, Sample], None]:
    """Non-zero ranks publish to the store; rank 0 logs its own and every published series."""
    from torch.distributed import distributed_c10d
    store = distributed_c10d._get_default_store()
    seen: Dict[int, int] = {}
    published = [0]

    def emit(step: int, means: Sample) -> None:
        if not dist.is_writer:
            published[0] += 1  # several publications may share a training step: count them
            store.set(f"gpulog/system/{dist.rank}", json.dumps({"seq": published[0], "step": step,
                                                                 "means": means}))
            return
        series = {0: (step, means)}
        for r in range(1, dist.world):
            key = f"gpulog/system/{r}"
            if store.check([key]):
                data = json.loads(store.get(key))
                if seen.get(r) != data["seq"]:
                    seen[r] = data["seq"]
                    series[r] = (data["step"], data["means"])
        fw = writer._get_file_writer()
        now = time.time()
        for r, (s, values) in sorted(series.items()):
            for k, v in sorted(values.items()):
                fw.submit_scalar(f"system/rank{r}/{k}", float(v), s, now)
    return emit
