"""System metrics: sampler logic with fake sources and clock; the no-NVML path; real NVML on GPUs."""
from __future__ import annotations

import sys
import types
import warnings

import pytest

import gpulog
from gpulog import system_metrics as sm
from gpulog.reader import read_scalars


def test_sampler_averages_each_interval():
    now = [0.0]
    values = iter([1.0, 3.0, 5.0, 7.0, 9.0])
    emitted = []
    s = sm.Sampler([lambda: {"gpu0/power_w": next(values)}], lambda step, m: emitted.append((step, m)),
                   interval=10, clock=lambda: now[0])
    s.sample_once()
    now[0] = 5.0
    s.sample_once()
    now[0] = 10.0
    s.publish()                       # mean of 1 and 3
    s.sample_once()
    s.sample_once()
    now[0] = 20.0
    s.publish()                       # mean of 5 and 7
    assert emitted == [(10, {"gpu0/power_w": 2.0}), (20, {"gpu0/power_w": 6.0})]


def test_failing_source_does_not_stop_the_sampler():
    def broken():
        raise RuntimeError("counter gone")
    out = []
    s = sm.Sampler([broken, lambda: {"host/cpu_pct": 50.0}], lambda st, m: out.append(m), interval=1)
    s.sample_once()
    s.publish()
    assert out == [{"host/cpu_pct": 50.0}]
    with pytest.raises(ValueError, match="system_metrics_interval"):
        sm.Sampler([], lambda *a: None, interval=0)


def _manual_sampler(monkeypatch):
    """Writers whose sampler thread does not run: the test drives sample_once()/publish()
    itself, so nothing depends on wall-clock sleeps (the thread's loop is tested alone below)."""
    monkeypatch.setattr(sm.Sampler, "start", lambda self: self)


def test_writer_logs_stable_tags_with_a_fake_source(tmp_path, monkeypatch):
    fake = lambda: {"gpu0/utilization_pct": 40.0, "gpu0/power_w": 300.0}  # noqa: E731
    monkeypatch.setattr(sm, "default_sources", lambda: [fake, sm.HostSource().sample])
    _manual_sampler(monkeypatch)
    w = gpulog.SummaryWriter(tmp_path, system_metrics=True, system_metrics_interval=0.2)
    for _ in range(2):
        w._sampler.sample_once()
        w._sampler.publish()
    w.close()  # stops the sampler: one last sample and publish
    s = read_scalars(tmp_path)
    assert [v for _, v in s["system/gpu0/power_w"]] == [300.0] * 3
    assert s["system/gpu0/utilization_pct"][0][1] == 40.0
    assert 0 < s["system/host/memory_used_pct"][0][1] < 100


def test_sampler_thread_publishes_every_interval_on_its_clock():
    """The thread's loop with an injected clock: a tick every interval/10, a mean every interval."""
    now = [0.0]
    emitted = []

    def wait(tick):  # advances the fake clock instead of sleeping; stops after 2.5 intervals
        now[0] += tick
        return now[0] > 25.0
    s = sm.Sampler([lambda: {"x": now[0]}], lambda step, m: emitted.append((step, m)), interval=10,
                   clock=lambda: now[0], step=lambda: 7, wait=wait)
    s._run()
    assert [step for step, _ in emitted] == [7, 7]
    assert emitted[0][1]["x"] == pytest.approx(sum(range(1, 11)) / 10)   # samples at t = 1 .. 10
    assert emitted[1][1]["x"] == pytest.approx(sum(range(11, 21)) / 10)


def test_no_nvml_warns_once_and_host_metrics_still_work(monkeypatch):
    fake = types.ModuleType("pynvml")

    class NVMLError(Exception):
        pass

    def init():
        raise NVMLError("NVML Shared Library Not Found")
    fake.nvmlInit = init
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sources = sm.default_sources()
    assert len([c for c in caught if "NVML unavailable" in str(c.message)]) == 1
    merged = {}
    for src in sources:
        merged.update(src())
    assert "host/process_rss_mib" in merged and not any(k.startswith("gpu") for k in merged)


def test_cuda_visible_devices_are_matched_by_uuid(monkeypatch):
    fake = types.ModuleType("pynvml")
    fake.nvmlInit = lambda: None
    fake.nvmlDeviceGetCount = lambda: 4
    fake.nvmlDeviceGetHandleByIndex = lambda i: f"idx{i}"
    fake.nvmlDeviceGetHandleByUUID = lambda u: f"uuid:{u}"
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-abc,2")
    assert sm.NvmlSource().handles == ["uuid:GPU-abc", "idx2"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert sm.NvmlSource().handles == ["idx0", "idx1", "idx2", "idx3"]


@pytest.mark.cuda
def test_real_nvml_values_in_range():
    src = sm.NvmlSource()
    assert src.available
    v = src.sample()
    assert 0 <= v["gpu0/utilization_pct"] <= 100
    assert 0 < v["gpu0/memory_used_mib"] <= v["gpu0/memory_total_mib"]
    assert 10 < v["gpu0/temperature_c"] < 100 and v["gpu0/power_w"] > 0


def test_samples_are_logged_at_the_training_step(tmp_path, monkeypatch):
    """System charts line up with the loss curve: each mean is logged at the writer's latest
    global step (not at seconds since start)."""
    monkeypatch.setattr(sm, "default_sources", lambda: [lambda: {"host/fake": 1.0}])
    _manual_sampler(monkeypatch)
    w = gpulog.SummaryWriter(tmp_path, system_metrics=True, system_metrics_interval=0.1)
    for step in range(1000, 1030):
        w.add_scalar("loss", 1.0, step)
        if step % 10 == 9:
            w._sampler.sample_once()
            w._sampler.publish()
    w.close()
    steps = [st for st, _ in read_scalars(tmp_path)["system/host/fake"]]
    assert steps == [1009, 1019, 1029, 1029]  # the last one from close()


def _no_proc(monkeypatch):
    """macOS/Windows as far as gpulog's own /proc reader goes: no such files (psutil, which
    reads /proc itself on Linux, is left alone)."""
    import builtins
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if str(path).startswith("/proc"):
            raise FileNotFoundError(2, "No such file or directory", str(path))
        return real_open(path, *args, **kwargs)
    monkeypatch.setattr(sm, "open", fake_open, raising=False)


def test_host_metrics_without_proc_come_from_psutil(monkeypatch):
    """Issue #18.15: host metrics were read from /proc only, so macOS and Windows got none."""
    psutil = pytest.importorskip("psutil")
    _no_proc(monkeypatch)
    src = sm.HostSource()
    v = src.sample()
    assert set(v) == {"host/cpu_pct", "host/memory_used_pct", "host/process_rss_mib"}
    assert 0 <= v["host/cpu_pct"] <= 100 and 0 < v["host/memory_used_pct"] < 100
    assert v["host/process_rss_mib"] == pytest.approx(psutil.Process().memory_info().rss / 2**20, rel=0.5)


def test_host_metrics_fall_back_to_proc_without_psutil(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # import psutil -> ImportError
    src = sm.HostSource()
    assert src.psutil is None
    v = src.sample()
    assert 0 < v["host/memory_used_pct"] < 100 and v["host/process_rss_mib"] > 1


def test_no_psutil_and_no_proc_warns_once_with_the_fix(monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)
    _no_proc(monkeypatch)
    with pytest.warns(RuntimeWarning, match=r"gpulog\[system\]"):
        src = sm.HostSource()
    assert src.sample() == {}
