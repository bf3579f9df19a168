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


def test_writer_logs_stable_tags_with_a_fake_source(tmp_path, monkeypatch):
    fake = lambda: {"gpu0/utilization_pct": 40.0, "gpu0/power_w": 300.0}  # noqa: E731
    monkeypatch.setattr(sm, "default_sources", lambda: [fake, sm.HostSource().sample])
    w = gpulog.SummaryWriter(tmp_path, system_metrics=True, system_metrics_interval=0.2)
    import time
    time.sleep(0.7)
    w.close()
    s = read_scalars(tmp_path)
    assert s["system/gpu0/utilization_pct"][0][1] == 40.0 and s["system/gpu0/power_w"][0][1] == 300.0
    assert "system/host/memory_used_pct" in s and 0 < s["system/host/memory_used_pct"][0][1] < 100
    assert len(s["system/gpu0/power_w"]) >= 2


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
    global step (not at seconds since start), with sub-second intervals."""
    import time
    monkeypatch.setattr(sm, "default_sources", lambda: [lambda: {"host/fake": 1.0}])
    w = gpulog.SummaryWriter(tmp_path, system_metrics=True, system_metrics_interval=0.1)
    for step in range(1000, 1030):
        w.add_scalar("loss", 1.0, step)
        time.sleep(0.02)
    w.close()
    s = read_scalars(tmp_path)
    steps = [st for st, _ in s["system/host/fake"]]
    assert len(steps) >= 3
    assert all(1000 <= st <= 1029 for st in steps) and steps == sorted(steps)
