"""Every ``add_*`` path for CUDA inputs, on a machine without a GPU: no call may make the host wait
for the device, and every call logs exactly what the same call logs with CPU tensors.

The detector (``syncprobe.py``) presents CPU data as ``cuda:0`` tensors and fails on any operation
that would synchronise on a real GPU (see its docstring for the list).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import pytest
import torch

import gpulog
import syncprobe
from syncprobe import fake
from tbcompare import assert_same, run_snapshots

Case = Callable[[Any, Callable[[torch.Tensor], torch.Tensor]], None]


def _data() -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    x = torch.randn(5000, generator=g)
    return {
        "x": x, "x16": x.half(), "xbf": x.bfloat16(), "x64": x.double(), "xi": (x * 20).int(),
        "xb": x > 0, "s": x[:1].reshape(()), "pred": torch.rand(5000, generator=g),
        "lab": (torch.rand(5000, generator=g) > 0.5).int(), "w": torch.rand(5000, generator=g),
        "img": torch.rand(3, 12, 10, generator=g), "imgs": torch.rand(5, 3, 8, 8, generator=g),
        "u8": (torch.rand(12, 10, 3, generator=g) * 255).to(torch.uint8),
        "boxes": torch.tensor([[1.0, 1.0, 6.0, 8.0], [2.0, 0.0, 9.0, 5.0]]),
        "vid": torch.rand(3, 4, 3, 8, 8, generator=g), "snd": torch.rand(800, generator=g) * 2 - 1,
        "verts": torch.rand(1, 20, 3, generator=g), "faces": torch.randint(0, 20, (1, 10, 3), generator=g),
        "cols": torch.randint(0, 255, (1, 20, 3), generator=g), "mat": torch.randn(12, 5, generator=g),
        "label_img": torch.rand(12, 3, 4, 4, generator=g),
        "rows": torch.rand(6, 9, generator=g).double(),
    }


D = _data()


def _hist_cases() -> List[Tuple[str, Case]]:
    out: List[Tuple[str, Case]] = []
    for key in ("x", "x16", "xbf", "x64", "xi", "xb"):
        out.append((f"histogram-tensorflow-{key}", lambda w, T, k=key: w.add_histogram("h", T(D[k]), 1)))
    for bins in (10, 1, "auto", "fd", "doane", "scott", "stone", "rice", "sturges", "sqrt"):
        out.append((f"histogram-bins-{bins}", lambda w, T, b=bins: w.add_histogram("h", T(D["x"]), 1, bins=b)))
    out += [
        ("histogram-int-values-int-bins", lambda w, T: w.add_histogram("h", T(D["xi"]), 1, bins=7)),
        ("histogram-edges-list", lambda w, T: w.add_histogram("h", T(D["x"]), 1, bins=[-1.0, 0.0, 0.5, 2.0])),
        ("histogram-edges-array", lambda w, T: w.add_histogram("h", T(D["x"]), 1, bins=np.linspace(-2, 2, 9))),
        ("histogram-edges-tensor", lambda w, T: w.add_histogram("h", T(D["x"]), 1,
                                                                 bins=T(torch.linspace(-2, 2, 9).double()))),
        ("histogram-max-bins", lambda w, T: w.add_histogram("h", T(D["x"]), 1, max_bins=20)),
        ("histogram-raw", lambda w, T: w.add_histogram_raw(
            "hr", T(D["x"].min()), T(D["x"].max()), T(torch.tensor(5000.0)), T(D["x"].sum()),
            T((D["x"] ** 2).sum()), T(torch.tensor([-1.0, 0.0, 1.0, 9.0])), T(torch.tensor([3.0, 4.0, 5.0, 6.0])), 2)),
    ]
    return out


CASES: List[Tuple[str, Case]] = [
    ("scalar", lambda w, T: w.add_scalar("s", T(D["s"]), 1)),
    ("scalar-new-style", lambda w, T: w.add_scalar("s", T(D["s"]), 1, new_style=True)),
    ("scalar-double", lambda w, T: w.add_scalar("s", T(D["s"].double()), 1, new_style=True,
                                                double_precision=True)),
    ("scalar-int-tensor", lambda w, T: w.add_scalar("s", T(torch.tensor(3)), 1)),
    ("scalars", lambda w, T: w.add_scalars("m", {"a": T(D["s"]), "b": T(D["s"] * 2), "c": 1.5}, 1)),
    *_hist_cases(),
    ("pr-curve", lambda w, T: w.add_pr_curve("pr", T(D["lab"]), T(D["pred"]), 1)),
    ("pr-curve-bool-labels", lambda w, T: w.add_pr_curve("pr", T(D["lab"].bool()), T(D["pred"]), 1)),
    ("pr-curve-float-labels", lambda w, T: w.add_pr_curve("pr", T(D["lab"].float()), T(D["pred"]), 1,
                                                          num_thresholds=33)),
    ("pr-curve-weights", lambda w, T: w.add_pr_curve("pr", T(D["lab"]), T(D["pred"]), 1, weights=T(D["w"]))),
    ("pr-curve-cpu-weights", lambda w, T: w.add_pr_curve("pr", T(D["lab"]), T(D["pred"]), 1, weights=D["w"])),
    ("pr-curve-half", lambda w, T: w.add_pr_curve("pr", T(D["lab"]), T(D["pred"].bfloat16()), 1)),
    ("pr-curve-raw", lambda w, T: w.add_pr_curve_raw("prr", *(T(D["rows"][i] * 10) for i in range(4)),
                                                     T(D["rows"][4]), T(D["rows"][5]), 1, num_thresholds=9)),
    ("image-chw", lambda w, T: w.add_image("i", T(D["img"]), 1)),
    ("image-hwc-uint8", lambda w, T: w.add_image("i", T(D["u8"]), 1, dataformats="HWC")),
    ("image-hw", lambda w, T: w.add_image("i", T(D["img"][0]), 1, dataformats="HW")),
    ("images-nchw", lambda w, T: w.add_images("i", T(D["imgs"]), 1)),
    ("images-nhwc", lambda w, T: w.add_images("i", T(D["imgs"].permute(0, 2, 3, 1)), 1, dataformats="NHWC")),
    ("image-boxes", lambda w, T: w.add_image_with_boxes("b", T(D["img"]), T(D["boxes"]), 1)),
    ("image-boxes-labels-rescale", lambda w, T: w.add_image_with_boxes(
        "b", T(D["img"]), T(D["boxes"]), 1, rescale=2, labels=["a", "b"])),
    ("image-cpu-boxes", lambda w, T: w.add_image_with_boxes("b", T(D["img"]), D["boxes"], 1)),
    ("video", lambda w, T: w.add_video("v", T(D["vid"]), 1)),
    ("video-uint8", lambda w, T: w.add_video("v", T((D["vid"] * 255).to(torch.uint8)), 1, fps=2)),
    ("audio", lambda w, T: w.add_audio("a", T(D["snd"]), 1, sample_rate=8000)),
    ("audio-loud", lambda w, T: w.add_audio("a", T(D["snd"] * 3), 1)),
    ("mesh", lambda w, T: w.add_mesh("m", T(D["verts"]), colors=T(D["cols"]), faces=T(D["faces"]),
                                     global_step=1)),
    ("tensor", lambda w, T: w.add_tensor("t", T(D["x"][:50]), 1)),
    ("tensor-bf16", lambda w, T: w.add_tensor("t", T(D["xbf"][:50]), 1)),
    ("tensor-int", lambda w, T: w.add_tensor("t", T(D["xi"][:50].long()), 1)),
    ("hparams", lambda w, T: w.add_hparams({"lr": T(torch.tensor(0.5)), "n": 3}, {"acc": T(torch.tensor(0.25))},
                                           run_name="hp")),
    ("embedding", lambda w, T: w.add_embedding(T(D["mat"]), metadata=list(range(12)),
                                               label_img=T(D["label_img"]), global_step=1)),
    ("embedding-cpu-mat", lambda w, T: w.add_embedding(D["mat"], label_img=T(D["label_img"]), global_step=1)),
]


def _run(tmp_path: Any, name: str, case: Case, T: Callable[[torch.Tensor], torch.Tensor]) -> str:
    d = str(tmp_path / name)
    w = gpulog.SummaryWriter(d)
    case(w, T)
    syncprobe.PROBE.local.strict = False  # close() waits for the writer (a thread, not the device)
    w.close()
    return d


def _files(d: str) -> Dict[str, bytes]:
    import os
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            if f.endswith((".tsv", ".png", ".pbtxt")):
                with open(os.path.join(root, f), "rb") as fh:
                    out[os.path.relpath(os.path.join(root, f), d)] = fh.read()
    return out


@pytest.mark.parametrize("name,case", CASES, ids=[c[0] for c in CASES])
def test_no_host_wait_and_same_values_as_cpu(tmp_path, monkeypatch, name, case):
    want = _run(tmp_path, "cpu", case, lambda t: t)
    with syncprobe.installed(monkeypatch) as probe:
        got = _run(tmp_path, "cuda", case, fake)
        syncs = list(probe.syncs)
        foreign = list(probe.foreign_enqueues)
    assert not syncs, f"{len(syncs)} host waits in {name}; first:\n{syncs[0]}"
    assert not foreign, f"the writer thread queued work on a user stream: {foreign[:3]}"
    a, b = _comparable(run_snapshots(want)), _comparable(run_snapshots(got))
    assert a.keys() == b.keys() and a
    for run in a:
        assert_same(a[run], b[run])
    assert _files(want) == _files(got)


def _comparable(runs: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Histogram sums differ in the last bits between summation orders (the CPU path sums in one
    fused pass, the device path chunk by chunk); everything else must match exactly."""
    out = {}
    for run, snap in runs.items():
        snap = dict(snap)
        for k, events in snap.items():
            if k.startswith("histo/"):
                snap[k] = [(step, h.min, h.max, h.num, float(f"{h.sum:.12g}"), float(f"{h.sum_squares:.12g}"),
                            list(h.bucket_limit), list(h.bucket)) for step, h in events]
        out[run] = snap
    return out


@pytest.mark.parametrize("name,case", CASES[::3], ids=[c[0] for c in CASES[::3]])
def test_other_accelerators_log_the_same_values(tmp_path, monkeypatch, name, case):
    """Tensors on a non-CUDA accelerator (here an 'xpu' stand-in) take the host path at the call:
    the same values as CPU tensors, never a deferred failure on the writer thread."""
    want = _run(tmp_path, "cpu", case, lambda t: t)
    with syncprobe.installed(monkeypatch, strict=False):
        with _no_skipped_warning():
            got = _run(tmp_path, "xpu", case, lambda t: fake(t, "xpu"))
    a, b = _comparable(run_snapshots(want)), _comparable(run_snapshots(got))
    assert a.keys() == b.keys() and a
    for run in a:
        assert_same(a[run], b[run])
    assert _files(want) == _files(got)


@pytest.mark.parametrize("name,case", CASES, ids=[c[0] for c in CASES])
def test_meta_tensors_are_rejected_at_the_call(tmp_path, name, case):
    w = gpulog.SummaryWriter(str(tmp_path))
    with pytest.raises(ValueError, match="meta"):
        case(w, lambda t: torch.empty_like(t, device="meta"))
    w.add_scalar("after", 1.0, 1)  # the writer keeps working
    w.close()
    assert run_snapshots(str(tmp_path))["."]["scalar/after"] == [(1, 1.0)]


def _no_skipped_warning() -> Any:
    import contextlib
    import warnings

    @contextlib.contextmanager
    def check() -> Any:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            yield
        bad = [str(w.message) for w in seen if "skipped" in str(w.message) or "failed" in str(w.message)]
        assert not bad, bad
    return check()


def test_kernels_compile_off_the_training_thread(tmp_path, monkeypatch):
    """The first call with a new specialisation is served by the torch reference while the kernel
    is launched (compiled) on a background thread; later calls use the kernel."""
    import sys
    import threading
    import types

    from gpulog._reduce import _backend

    calls = []

    def fake_kernel(x):
        calls.append(("kernel", threading.current_thread().name))
        return x * 2

    def reference(x):
        calls.append(("reference", threading.current_thread().name))
        return x * 2

    monkeypatch.setitem(_backend.kernels(), "probe_only.run", fake_kernel)
    monkeypatch.setattr(_backend, "_triton_available", lambda: True)
    with syncprobe.installed(monkeypatch) as probe:
        monkeypatch.setenv("GPULOG_BACKEND", "auto")
        x = fake(torch.arange(32.0))
        fn = _backend.kernel_or(x, "probe_only.run", reference)
        first = fn(x)
        _backend.wait_compiled()
        second = fn(x)
        third = fn(fake(torch.arange(33.0)))  # a new specialisation (size not a multiple of 16)
        _backend.wait_compiled()
        syncs = list(probe.syncs)
    main = threading.current_thread().name
    on_main = [kind for kind, thread in calls if thread == main]
    elsewhere = [(kind, thread) for kind, thread in calls if thread != main]
    assert on_main == ["reference", "kernel", "reference"]
    assert [kind for kind, _ in elsewhere] == ["kernel", "kernel"]
    assert all(thread.startswith("gpulog-compile") for _, thread in elsewhere)
    assert torch.equal(first.elem, second.elem) and third.shape == (33,)
    assert not syncs


def test_writer_makes_no_cuda_call_while_a_graph_is_captured(tmp_path, monkeypatch):
    """While any thread captures a CUDA graph (capture_error_mode='global' forbids other threads'
    event queries and frees), the writer waits; it finishes the work once the capture ended."""
    import threading
    import time

    from gpulog._transfer import GATE
    with syncprobe.installed(monkeypatch) as probe:
        w = gpulog.SummaryWriter(str(tmp_path))
        GATE.install()
        with GATE.lock:  # what the wrapped CUDAGraph.capture_begin does
            GATE.capturing += 1
        try:
            w.add_histogram("h", fake(D["x"]), 1)  # another thread captures: this one may log
            w.add_scalar("s", fake(D["s"]), 1)
            probe.local.strict = False
            flusher = threading.Thread(target=w.flush, name="gpulog-test-flush")  # probed
            flusher.start()
            time.sleep(0.5)
            assert flusher.is_alive(), "the writer finished staged work during a capture"
            assert all(n == 0 for _, n in probe.queries), probe.queries
        finally:
            with GATE.lock:
                GATE.capturing -= 1
        flusher.join(10)
        assert not flusher.is_alive()
        w.close()
    snap = run_snapshots(str(tmp_path))["."]
    assert snap["histo/h"][0][1].num == 5000 and snap["scalar/s"][0][1] == float(D["s"])


def test_logging_on_a_capturing_stream(tmp_path, monkeypatch):
    """During a CUDA-graph capture on this stream: add_scalar and add_histogram record ring writes
    (every replay logs, see test_compiled.py); the other calls raise at the call."""
    from gpulog import _compiled
    monkeypatch.setattr(_compiled, "POLL_S", 3600.0)
    with syncprobe.installed(monkeypatch) as probe:
        w = gpulog.SummaryWriter(str(tmp_path))
        w.add_histogram("warm-up", fake(D["x"]), 0)  # uploads the device's cell table
        wid = w._writer_id
        with syncprobe.capturing():
            w.add_scalar("s", fake(D["s"]), fake(torch.tensor(5)))
            w.add_histogram("h", fake(D["x"]), fake(torch.tensor(5)))
            for call in (lambda: w.add_image("i", fake(D["img"]), 1),
                         lambda: w.add_pr_curve("pr", fake(D["lab"]), fake(D["pred"]), 1),
                         lambda: w.add_tensor("t", fake(D["x"]), 1)):
                with pytest.raises(RuntimeError, match="captured into a CUDA graph"):
                    call()
        syncs = list(probe.syncs)
        w.add_scalar("after", fake(D["s"]), 2)
        syncprobe.PROBE.local.strict = False
        w.close()
    assert not syncs, syncs[0]
    snap = run_snapshots(str(tmp_path))["."]
    assert sorted(snap) == ["histo/h", "histo/warm-up", "scalar/after", "scalar/s"]
    assert {(ring.tag, ring.device.type) for ring in _compiled._RINGS.values() if ring.writer_id == wid} == {("s", "cuda"), ("h", "cuda")}
    assert snap["scalar/s"] == [(5, float(D["s"]))] and snap["histo/h"][0][0] == 5


@pytest.mark.parametrize("device", ["cpu", "cuda-standin"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_torch_fallback_histogram_matches_numpy(monkeypatch, device, dtype):
    """``_tf_reduce_chunked`` (the CUDA path when Triton is missing, the CPU path without the
    native extension) against numpy's histogram on torch's edges, exactly, over several chunks;
    values sit on the edges and one float32 step either side of them."""
    from gpulog._reduce import histogram as red
    edges = red.tensorflow_edges()
    e32 = torch.from_numpy(edges[::7].astype(np.float32))
    near = torch.cat([e32, torch.nextafter(e32, torch.tensor(np.inf)), torch.nextafter(e32, torch.tensor(-np.inf))])
    g = torch.Generator().manual_seed(11)
    x = torch.cat([near, torch.randn(20000, generator=g) * 10, torch.tensor([0.0, -0.0, np.nan, np.inf, -np.inf])])
    x = x.to(dtype)
    monkeypatch.setattr(red, "CHUNK", 4096)
    monkeypatch.setattr(red, "CUDA_CHUNK", 4096)
    if device == "cpu":
        counts, s, ss = red._tf_reduce_chunked(x, len(edges))
    else:
        with syncprobe.installed(monkeypatch) as probe:
            counts, s, ss = red._tf_reduce_chunked(fake(x), len(edges))
            counts, s, ss = counts.elem, s.elem, ss.elem
            assert not probe.syncs
    values = x.double().numpy()
    finite = values[np.isfinite(values)]
    want, _ = np.histogram(finite, bins=edges)
    assert counts[1:len(edges)].tolist() == want.tolist()
    assert int(counts.sum()) == x.numel()  # every value counted somewhere (outside bins included)
    np.testing.assert_allclose(float(s), float(np.sum(values)), rtol=1e-12)
    np.testing.assert_allclose(float(ss), float(np.dot(values, values)), rtol=1e-12)


DIST_CASES: List[Tuple[str, Case]] = [
    ("scalar", lambda w, T: [w.add_scalar("s", T(D["x"][i]), i) for i in range(5)]),
    ("scalar-reduce-max", lambda w, T: w.add_scalar("s", T(D["s"]), 1, reduce="max")),
    ("scalars", lambda w, T: w.add_scalars("m", {"a": T(D["s"]), "b": T(D["s"] * 2)}, 1)),
    ("histogram", lambda w, T: w.add_histogram("h", T(D["x"]), 1)),
    ("histogram-int-bins", lambda w, T: w.add_histogram("h", T(D["x"]), 1, bins=12)),
    ("histogram-edges", lambda w, T: w.add_histogram("h", T(D["x"]), 1, bins=[-1.0, 0.0, 2.0])),
    ("pr-curve", lambda w, T: w.add_pr_curve("pr", T(D["lab"]), T(D["pred"]), 1)),
]


@pytest.mark.parametrize("name,case", DIST_CASES, ids=[c[0] for c in DIST_CASES])
def test_distributed_cuda_path_has_no_host_wait(tmp_path, monkeypatch, name, case):
    """``distributed=True`` with an NCCL-like default group (one rank; NCCL's collectives are
    stream-ordered, so the stand-in completes them at once): no host wait from the call to the
    staged results, and the values of a single process."""
    import torch.distributed as dist

    class Done:
        def wait(self, *a: Any, **k: Any) -> bool:
            return True

        def is_completed(self) -> bool:
            return True

    want = _run(tmp_path, "cpu", case, lambda t: t)
    store = dist.HashStore()
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        real_all_reduce = dist.all_reduce

        device_collectives = []

        def all_reduce(t, *args, **kwargs):
            if isinstance(t, syncprobe.FakeCuda):  # one rank: the sum/max is the value itself
                device_collectives.append(t.numel())
                return Done() if kwargs.get("async_op") else None
            return real_all_reduce(t, *args, **kwargs)

        with syncprobe.installed(monkeypatch) as probe:
            monkeypatch.setattr(dist, "get_backend", lambda group=None: "nccl")
            monkeypatch.setattr(dist, "all_reduce", all_reduce)
            d = str(tmp_path / "cuda")
            w = gpulog.SummaryWriter(d, distributed=True)
            case(w, fake)
            w.add_scalar("next_step", 0.0, 99)  # a later step: a sync point inside the loop
            case(w, fake)
            syncs = list(probe.syncs)
            probe.local.strict = False
            w.close()
    finally:
        dist.destroy_process_group()
    assert not syncs, f"{len(syncs)} host waits; first:\n{syncs[0]}"
    assert device_collectives, "the data collectives did not run on the (stand-in) device"
    a, b = _comparable(run_snapshots(want)), _comparable(run_snapshots(d))
    for run in a:
        for tag, events in a[run].items():
            assert b[run][tag][:len(events)] == events, tag


def test_kernel_failing_to_compile_in_the_background_is_retired(monkeypatch):
    import sys
    import types

    from gpulog._reduce import _backend

    def broken(x):
        raise RuntimeError("PassManager::run failed")

    monkeypatch.setitem(_backend.kernels(), "probe_broken.run", broken)
    monkeypatch.setattr(_backend, "_triton_available", lambda: True)
    monkeypatch.setattr(_backend, "_FAILED", {})
    with syncprobe.installed(monkeypatch):
        monkeypatch.setenv("GPULOG_BACKEND", "auto")
        x = fake(torch.arange(16.0))
        fn = _backend.kernel_or(x, "probe_broken.run", lambda t: t + 1)
        with pytest.warns(RuntimeWarning, match="probe_broken.run failed to compile"):
            first = fn(x)
            _backend.wait_compiled()
        assert "PassManager" in _backend._FAILED["probe_broken.run"]
        assert torch.equal(fn(x).elem, first.elem)  # the reference from now on
        assert _backend.kernel_or(x, "probe_broken.run", abs) is abs


def test_in_step_ops_make_no_host_wait_on_cuda(tmp_path, monkeypatch):
    """What a compiled or captured step runs for add_scalar/add_histogram (the custom ops' bodies)
    on CUDA stand-ins: device work only; the pick-up waits on a private stream, not the caller."""
    from gpulog import _compiled
    monkeypatch.setattr(_compiled, "POLL_S", 3600.0)
    with syncprobe.installed(monkeypatch) as probe:
        w = gpulog.SummaryWriter(str(tmp_path))
        for i in range(3):
            _compiled.log_scalar(fake(D["x"][i]), fake(torch.tensor(i)), "s", w._writer_id,
                                          False, False)
            _compiled.log_histogram(fake(D["x"]), None, "h", w._writer_id, None)
        syncs = list(probe.syncs)
        probe.local.strict = False
        w.close()
    assert not syncs, syncs[0]
    snap = run_snapshots(str(tmp_path))["."]
    assert snap["scalar/s"] == [(i, float(D["x"][i])) for i in range(3)]
    assert [s for s, _ in snap["histo/h"]] == [0, 1, 2] and snap["histo/h"][2][1].num == 5000


def test_triton_launch_wrappers_host_code_makes_no_host_wait(monkeypatch):
    """The host side of every Triton wrapper (grids, buffers, tables) on CUDA stand-ins, with the
    launches themselves replaced by no-ops (the kernels are checked in tests/kernels)."""
    import contextlib

    from gpulog.kernels import _launch
    from gpulog.kernels import histogram as k_hist
    from gpulog.kernels import image as k_image
    from gpulog.kernels import pr_curve as k_pr
    from gpulog._reduce import histogram as red

    launches = []

    class Launch:
        def __init__(self, name):
            self.name = name

        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                launches.append((self.name, grid))
                assert not any(isinstance(a, torch.Tensor) and not isinstance(a, syncprobe.FakeCuda)
                               and a.dim() > 0 for a in args), f"{self.name}: a host tensor passed to the kernel"
            return launch

    fakes = {"slices": Launch("hist"), "finish": Launch("finish")}
    monkeypatch.setattr(k_hist, "_kernels", lambda: fakes)
    monkeypatch.setattr(k_hist, "_kernel", lambda: fakes["slices"])
    for mod, name in ((k_pr, "pr"), (k_image, "image")):
        monkeypatch.setattr(mod, "_kernel", lambda name=name: Launch(name))
    monkeypatch.setattr(_launch, "_sm_count", lambda device: 132)
    monkeypatch.setattr(torch.cuda, "device", lambda d: contextlib.nullcontext())
    with syncprobe.installed(monkeypatch) as probe:
        x = fake(D["x"])
        red.cell_table("cuda:0")  # uploaded once, as the first CUDA histogram does
        probe.syncs.clear()
        table = red.cell_table("cuda:0")
        k_hist.reduce(x, red.tensorflow_edges(), table=table)
        k_hist.reduce(fake(D["x16"]), red.tensorflow_edges(), table=table)
        k_pr.buckets(fake(D["pred"]), fake(D["lab"]), None, 127)
        k_pr.buckets(fake(D["pred"]), fake(D["lab"].bool()), fake(D["w"]), 33)
        k_image.grid_hwc_uint8(fake(D["imgs"]))
        k_image.grid_hwc_uint8(fake(D["imgs"][:, :1] > 0.5))
        syncs = list(probe.syncs)
    assert not syncs, syncs[0]
    assert {name for name, _ in launches} == {"hist", "finish", "pr", "image"}


def test_scalar_batch_sealed_by_the_writer_only_when_the_caller_is_idle(tmp_path, monkeypatch):
    """A lone CUDA scalar, then nothing: the writer seals its batch itself after IDLE_S (under the
    capture gate) and the value reaches the file without a flush.  While the caller keeps
    calling, the caller seals (the matrix above checks no gpulog thread queues work then)."""
    import time

    from gpulog import read_scalars
    from gpulog._reduce import scalar as red_scalar
    with syncprobe.installed(monkeypatch) as probe:
        w = gpulog.SummaryWriter(str(tmp_path))
        w.add_scalar("lone", fake(D["s"]), 3)
        probe.local.strict = False
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not read_scalars(str(tmp_path)).get("lone"):
            time.sleep(0.05)
        got = read_scalars(str(tmp_path)).get("lone")
        foreign = list(probe.foreign_enqueues)
        w.close()
    assert got == [(3, float(D["s"]))]
    assert any("copy_" in f for f in foreign), "the idle batch was not sealed by the writer"
    assert red_scalar.IDLE_S <= 0.5


def _probe_count(monkeypatch, fn) -> int:
    with syncprobe.installed(monkeypatch) as probe:
        fn()
        n = len(probe.syncs)
        probe.local.strict = False
    return n


@pytest.mark.parametrize("what,fn", [
    ("item", lambda: fake(torch.tensor(0.5)).item()),
    ("repr", lambda: repr(fake(torch.randn(4)))),
    ("str", lambda: str(fake(torch.randn(4)))),
    ("f-string", lambda: f"{fake(torch.tensor(0.5))}"),
    ("format-spec", lambda: f"{fake(torch.tensor(0.5)):.3f}"),
    ("linalg.inv", lambda: torch.linalg.inv(fake(torch.eye(3)))),
    ("linalg.cholesky", lambda: torch.linalg.cholesky(fake(torch.eye(3)))),
    ("linalg.solve", lambda: torch.linalg.solve(fake(torch.eye(3)), fake(torch.ones(3)))),
    ("linalg.svd", lambda: torch.linalg.svd(fake(torch.eye(3)))),
    ("linalg.eigh", lambda: torch.linalg.eigh(fake(torch.eye(3)))),
    ("linalg.pinv", lambda: torch.linalg.pinv(fake(torch.eye(3)))),
])
def test_the_detector_sees_what_synchronises_on_a_gpu(monkeypatch, what, fn):
    """Issue #18.11: printing/formatting a CUDA tensor and the torch.linalg functions documented
    to synchronise passed the detector unseen."""
    assert _probe_count(monkeypatch, fn) >= 1, what


def test_the_detector_stays_quiet_on_device_only_work(monkeypatch):
    assert _probe_count(monkeypatch, lambda: (fake(torch.randn(4)) * 2 + 1).sum()) == 0
    assert _probe_count(monkeypatch, lambda: torch.linalg.inv_ex(fake(torch.eye(3)))) == 0


class _CudaSteps:
    """The writer, with every integer global_step of every add_* turned into a cuda:0 int64
    tensor (a training loop's step counter kept on the device)."""

    def __init__(self, w: Any) -> None:
        self._w = w

    def __getattr__(self, name: str) -> Any:
        import inspect
        method = getattr(self._w, name)
        if not name.startswith("add_"):
            return method
        sig = inspect.signature(getattr(type(self._w), name))

        def call(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(self._w, *args, **kwargs)
            step = bound.arguments.get("global_step")
            if isinstance(step, int) and not isinstance(step, bool) and name != "add_embedding":
                bound.arguments["global_step"] = fake(torch.tensor(step))
            return getattr(type(self._w), name)(*bound.args, **bound.kwargs)
        return call


@pytest.mark.parametrize("name,case", CASES, ids=[c[0] for c in CASES])
def test_cuda_global_step_is_staged_like_the_value(tmp_path, monkeypatch, name, case):
    """Issue #18.11: a CUDA-tensor global_step was read with int() at the call (a device sync)
    and the matrix never passed one.  It is now staged with the values (no host wait) and the
    events carry the same steps as with a host int."""
    want = _run(tmp_path, "cpu", case, lambda t: t)
    with syncprobe.installed(monkeypatch) as probe:
        d = str(tmp_path / "cuda")
        w = gpulog.SummaryWriter(d)
        case(_CudaSteps(w), fake)
        syncs = list(probe.syncs)
        probe.local.strict = False
        w.close()
    assert not syncs, f"{len(syncs)} host waits in {name}; first:\n{syncs[0]}"
    a, b = _comparable(run_snapshots(want)), _comparable(run_snapshots(d))
    assert a.keys() == b.keys() and a
    for run in a:
        assert_same(a[run], b[run])


def test_cuda_steps_that_cannot_be_staged_are_refused_at_the_call(tmp_path, monkeypatch):
    with syncprobe.installed(monkeypatch) as probe:
        w = gpulog.SummaryWriter(str(tmp_path))
        with pytest.raises(TypeError, match="integer tensor"):
            w.add_scalar("s", 1.0, fake(torch.tensor(3.0)))
        with pytest.raises(ValueError, match="exactly one element"):
            w.add_scalar("s", 1.0, fake(torch.tensor([1, 2])))
        with pytest.raises(TypeError, match="host integer"):
            w.add_embedding(D["mat"], global_step=fake(torch.tensor(1)))
        w.add_scalar("after", 2.0, fake(torch.tensor(5)))
        syncs = list(probe.syncs)
        probe.local.strict = False
        w.close()
    assert not syncs
    assert run_snapshots(str(tmp_path))["."]["scalar/after"] == [(5, 2.0)]


def test_a_drain_from_gpulogs_threads_seals_scalar_batches_only_outside_a_capture(tmp_path, monkeypatch):
    """Issue #19, defect 5: the SIGTERM drain (a gpulog thread) sealed open CUDA scalar batches
    (pinned allocation and a copy on the user's stream) while another thread was capturing a
    CUDA graph.  It now waits for the capture to end, as every other CUDA call of gpulog's
    threads does."""
    import threading
    import time

    from gpulog._transfer import GATE
    with syncprobe.installed(monkeypatch) as probe:
        w = gpulog.SummaryWriter(str(tmp_path))
        w.add_scalar("s", fake(D["s"]), 1)          # an open batch
        probe.local.strict = False
        GATE.install()
        with GATE.lock:
            GATE.capturing += 1                      # another thread begins a capture
        try:
            drain = threading.Thread(target=w.flush, name="gpulog-sigterm")  # a gpulog thread
            drain.start()
            time.sleep(0.3)
            during = list(probe.foreign_enqueues)
        finally:
            with GATE.lock:
                GATE.capturing -= 1
        drain.join(10)
        w.close()
    assert not during, during
    assert run_snapshots(str(tmp_path))["."]["scalar/s"] == [(1, float(D["s"]))]


def test_an_unsealed_scalar_batch_does_not_hold_up_other_files(tmp_path, monkeypatch):
    """Issue #19, defect 4: the writer waited (up to IDLE_S) on a CUDA scalar batch the caller
    had not sealed yet, and every other file's records waited behind it.  Now the item waits,
    the writer goes on with the other files."""
    import time

    from gpulog import read_scalars
    from gpulog._reduce import scalar as red_scalar
    monkeypatch.setattr(red_scalar, "IDLE_S", 5.0)  # the caller stays away longer than this test
    with syncprobe.installed(monkeypatch) as probe:
        w = gpulog.SummaryWriter(str(tmp_path))
        w.add_scalar("cuda", fake(D["s"]), 1)        # main file: a batch nobody seals for 5 s
        w.add_scalars("m", {"a": 2.0}, 1)            # another file: plain floats
        probe.local.strict = False
        deadline = time.monotonic() + 3
        seen = None
        while time.monotonic() < deadline and not seen:
            time.sleep(0.05)
            seen = read_scalars(str(tmp_path / "m_a")).get("m")
        w.close()
    assert seen == [(1, 2.0)], "the other file waited behind the unsealed batch"
    assert read_scalars(str(tmp_path))["cuda"] == [(1, float(D["s"]))]


def _watched_model(T: Callable[[torch.Tensor], torch.Tensor]) -> torch.nn.Module:
    g = torch.Generator().manual_seed(11)
    model = torch.nn.Sequential(torch.nn.Linear(5, 7), torch.nn.Linear(7, 2))
    for module in model:
        for name, p in list(module._parameters.items()):
            new = torch.nn.Parameter(T(torch.randn(p.shape, generator=g)))  # a stand-in stays one
            new.grad = T(torch.randn(p.shape, generator=g))
            module._parameters[name] = new
    list(model.parameters())[1].grad[2] = float("nan")
    return model


def test_watch_pass_has_no_host_wait_and_logs_what_cpu_logs(tmp_path, monkeypatch):
    """Issue #20: the watch pass (fused statistics, histograms, one staged copy, the writer-side
    non-finite report) on CUDA stand-ins: no host wait, the same events as on CPU tensors."""
    def run(name: str, T: Callable[[torch.Tensor], torch.Tensor]) -> str:
        d = str(tmp_path / name)
        w = gpulog.SummaryWriter(d)
        model = _watched_model(T)
        h = w.watch(model, log="all", histograms=True, on_nonfinite=None, update_ratio=True,
                    activations=["0"])
        h.log(0)
        h.log(1)
        # a whole watched step through the hooks: activation, pass, the update, the ratio
        model.train()
        with torch.no_grad():  # (autograd through stand-in parameters aborts in torch's C++)
            model(T(torch.ones(3, 5)))
        params = [p for _, p in h._params]
        h._pre_step(h._watch_point())
        with torch.no_grad():
            for p in params:
                p.add_(T(torch.full(p.shape, 0.01)))
        h._post_step([p.detach() for p in params])
        syncprobe.PROBE.local.strict = False
        w.close()
        assert h.first_nonfinite is not None and h.first_nonfinite["name"] == "0.bias"
        return d
    want = run("cpu", lambda t: t)
    with syncprobe.installed(monkeypatch) as probe:
        got = run("cuda", fake)
        syncs = list(probe.syncs)
        foreign = list(probe.foreign_enqueues)
    assert not syncs, f"{len(syncs)} host waits in the watch pass; first:\n{syncs[0]}"
    assert not foreign, foreign[:3]
    a, b = _comparable(run_snapshots(want)), _comparable(run_snapshots(got))
    assert a.keys() == b.keys() and a
    for run_ in a:
        assert_same(a[run_], b[run_])


def test_watch_kernel_launch_code_has_no_host_wait(monkeypatch):
    """The host side of gpulog.kernels.watch.stats (pointer table, chunk groups, segment merge)
    with the launch replaced by a stub that fills the partial rows as the kernel would."""
    from gpulog.kernels import watch as k_watch
    from gpulog._reduce import watch as r_watch
    ts = [torch.randn(3000), torch.randn(50).half(), torch.randn(10)]
    table = r_watch.ChunkTable([t.numel() for t in ts], chunk=1024)
    ref = r_watch.reduce_torch(ts, table)

    class Stub:
        def __getitem__(self, grid):
            def launch(addr, chunks, part, DT, CHUNK, BLOCK):
                rows = chunks.elem if isinstance(chunks, syncprobe.FakeCuda) else chunks
                group = [t for t in ts if k_watch._CODES[t.dtype] == DT]
                out = []
                for i, start, n in rows.tolist():
                    out.append(r_watch.reduce_torch([group[i].reshape(-1)[start:start + n]])[0])
                target = part.elem if isinstance(part, syncprobe.FakeCuda) else part
                target.copy_(torch.stack(out))
            return launch
    import contextlib
    monkeypatch.setattr(k_watch, "_kernel", lambda: Stub())
    monkeypatch.setattr(k_watch, "device_of", lambda t: contextlib.nullcontext())  # torch.cuda.device
    with syncprobe.installed(monkeypatch) as probe:
        got = k_watch.stats([fake(t) for t in ts], table)
        syncs = list(probe.syncs)
    assert not syncs, f"{len(syncs)} host waits; first:\n{syncs[0]}"
    assert torch.equal(got.elem if isinstance(got, syncprobe.FakeCuda) else got, ref)


def test_a_watched_step_captured_into_a_cuda_graph_is_a_clear_error(tmp_path, monkeypatch):
    """watch() cannot yet serve a CUDA graph's replays: capturing a watched step raises at capture
    time, naming the way out, and nothing was queued on the captured stream."""
    with syncprobe.installed(monkeypatch):
        w = gpulog.SummaryWriter(str(tmp_path))
        h = w.watch(_watched_model(fake), log="all", on_nonfinite=None)
        with syncprobe.capturing():
            with pytest.raises(RuntimeError, match="captured into a CUDA graph.*handle.remove"):
                h._pre_step(h._watch_point())
        h.log(0)  # outside the capture: works
        syncprobe.PROBE.local.strict = False
        w.close()
    assert [step for step, _ in run_snapshots(str(tmp_path))["."]["scalar/grad_norm/0.weight"]] == [0]


def test_add_scalar_batch_of_a_cuda_tensor_is_one_copy_and_no_wait(tmp_path, monkeypatch):
    """Issue #21: many device scalars of one step cross in one asynchronous copy, no kernel."""
    want = str(tmp_path / "cpu")
    w = gpulog.SummaryWriter(want)
    vals = torch.randn(40)
    w.add_scalar_batch([f"m{i}" for i in range(40)], vals, 1)
    w.close()
    from gpulog import _transfer
    made = []
    real_init = _transfer.DeviceStaged.__init__

    def counting(self, values, stream=None):
        made.append([v for v in values if isinstance(v, torch.Tensor) and v.is_cuda])
        real_init(self, values, stream)
    monkeypatch.setattr(_transfer.DeviceStaged, "__init__", counting)
    with syncprobe.installed(monkeypatch) as probe:
        got = str(tmp_path / "cuda")
        w = gpulog.SummaryWriter(got)
        w.add_scalar_batch([f"m{i}" for i in range(40)], fake(vals), 1)
        assert [len(m) for m in made] == [1] and made[0][0].shape == (40,)  # one copy of the 40
        syncprobe.PROBE.local.strict = False
        w.close()
        syncs = list(probe.syncs)
    assert not syncs, syncs[:1]
    assert_same(run_snapshots(want)["."], run_snapshots(got)["."])
