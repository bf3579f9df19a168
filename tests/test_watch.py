"""``SummaryWriter.watch``: statistics of parameters, gradients and activations, read back by
TensorBoard, against numpy float64 computed from copies of the tensors taken where gpulog reads
them (an optimizer step pre-hook registered beside gpulog's)."""
from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import torch

import gpulog
from gpulog._reduce import watch as red
from tbcompare import accumulate


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16),
                               torch.nn.Tanh(), torch.nn.Linear(16, 3))


def _oracle(x: np.ndarray) -> Dict[str, float]:
    """The statistics as documented (all but nonfinite over the finite values), numpy float64."""
    x = x.astype(np.float64).ravel()
    f = x[np.isfinite(x)]
    return {"norm": float(np.sqrt((f * f).sum())), "mean": float(f.mean()) if f.size else math.nan,
            "std": float(np.std(f, ddof=1)) if f.size > 1 else math.nan,
            "min": float(f.min()) if f.size else math.nan, "max": float(f.max()) if f.size else math.nan,
            "absmax": float(np.abs(f).max()) if f.size else math.nan,
            "nonfinite": float(x.size - f.size), "zero_frac": float((f == 0).sum() / f.size) if f.size else math.nan}


def _train(model: torch.nn.Module, steps: int, seen: List[Dict[str, np.ndarray]], poison: Any = None,
           accumulate_steps: int = 1) -> torch.optim.Optimizer:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)

    def record(optimizer: Any, *args: Any) -> None:
        snap = {}
        for name, p in model.named_parameters():
            snap["param/" + name] = p.detach().numpy().copy()
            snap["grad/" + name] = p.grad.detach().numpy().copy()
        seen.append(snap)
    opt.register_step_pre_hook(record)
    g = torch.Generator().manual_seed(1)
    for step in range(steps):
        opt.zero_grad()
        for _ in range(accumulate_steps):
            loss = model(torch.randn(32, 6, generator=g)).pow(2).mean()
            loss.backward()
        if poison is not None:
            poison(step, model)
        opt.step()
    return opt


def test_every_statistic_of_every_parameter_and_gradient_matches_numpy(tmp_path):
    model = _model()
    w = gpulog.SummaryWriter(str(tmp_path))
    w.watch(model, log="all", every=3)
    seen: List[Dict[str, np.ndarray]] = []
    _train(model, 8, seen)
    w.close()
    acc = accumulate(str(tmp_path))
    tags = set(acc.Tags()["scalars"])
    names = [n for n, _ in model.named_parameters()]
    for what in ("param", "grad"):
        for name in names:
            for stat in ("norm", "mean", "std", "min", "max", "absmax", "nonfinite", "zero_frac"):
                tag = f"{what}_{stat}/{name}"
                assert tag in tags, tag
                got = acc.Scalars(tag)
                assert [e.step for e in got] == [0, 3, 6]  # every=3: optimizer steps 0, 3, 6
                for e in got:
                    want = _oracle(seen[e.step][f"{what}/{name}"])[stat]
                    assert e.value == pytest.approx(want, rel=1e-6, abs=1e-7), (tag, e.step)
    for what in ("grad", "param"):
        for e in acc.Scalars(f"total_{what}_norm"):
            want = math.sqrt(sum((seen[e.step][f"{what}/{n}"].astype(np.float64) ** 2).sum() for n in names))
            assert e.value == pytest.approx(want, rel=1e-6)


def test_histograms_are_numpys_counts_on_tensorboards_buckets(tmp_path):
    from gpulog._reduce.histogram import tensorflow_edges
    model = _model()
    w = gpulog.SummaryWriter(str(tmp_path))
    w.watch(model, log="all", every=2, histograms=True, histogram_every=4)
    seen: List[Dict[str, np.ndarray]] = []
    _train(model, 6, seen)
    w.close()
    acc = accumulate(str(tmp_path))
    edges = tensorflow_edges()
    for what in ("param", "grad"):
        for name, _ in model.named_parameters():
            events = acc.Histograms(f"{what}_hist/{name}")
            assert [e.step for e in events] == [0, 4]
            for e in events:
                x = seen[e.step][f"{what}/{name}"].astype(np.float64).ravel()
                counts = np.histogram(x, bins=edges)[0]
                h = e.histogram_value
                nz = np.nonzero(counts)[0]
                assert h.num == x.size and h.min == pytest.approx(x.min()) and h.max == pytest.approx(x.max())
                assert list(h.bucket)[1:] == counts[nz[0]:nz[-1] + 1].tolist()
                assert h.sum == pytest.approx(x.sum(), rel=1e-9, abs=1e-12)


def test_update_ratio_and_activations_with_gradient_accumulation(tmp_path):
    model = _model()
    acts: List[np.ndarray] = []
    model[1].register_forward_hook(lambda m, i, o: acts.append(o.detach().numpy().copy()))
    w = gpulog.SummaryWriter(str(tmp_path))
    w.watch(model, log="parameters", every=2, update_ratio=True, activations=["1"])
    seen: List[Dict[str, np.ndarray]] = []
    _train(model, 4, seen, accumulate_steps=2)
    after = {n: p.detach().numpy().copy() for n, p in model.named_parameters()}
    w.close()
    acc = accumulate(str(tmp_path))
    names = [n for n, _ in model.named_parameters()]
    for e in acc.Scalars(f"update_ratio/{names[0]}"):
        old = seen[e.step][f"param/{names[0]}"].astype(np.float64)
        new = seen[e.step + 1][f"param/{names[0]}"] if e.step + 1 < len(seen) else after[names[0]]
        want = np.linalg.norm(new.astype(np.float64) - old) / np.linalg.norm(old)
        assert e.value == pytest.approx(want, rel=1e-5)
    assert [e.step for e in acc.Scalars(f"update_ratio/{names[0]}")] == [0, 2]
    # the activation of steps 0 and 2: both micro-batches of the step, merged exactly
    for e in acc.Scalars("act_mean/1"):
        both = np.concatenate([acts[2 * e.step], acts[2 * e.step + 1]])
        assert e.value == pytest.approx(_oracle(both)["mean"], rel=1e-6)
    for e in acc.Scalars("act_zero_frac/1"):
        both = np.concatenate([acts[2 * e.step], acts[2 * e.step + 1]])
        assert e.value == pytest.approx(_oracle(both)["zero_frac"], rel=1e-7)
    assert not any(t.startswith("grad_") for t in acc.Tags()["scalars"])  # log="parameters"


def _poison_at(step_bad: int, name: str):
    def poison(step: int, model: torch.nn.Module) -> None:
        if step >= step_bad:
            p = dict(model.named_parameters())[name]
            p.grad[0, 0] = float("nan")
            p.grad[0, 1] = float("inf")
    return poison


def test_first_nonfinite_gradient_is_named_with_its_step_without_a_sync(tmp_path):
    model = _model()
    w = gpulog.SummaryWriter(str(tmp_path))
    h = w.watch(model, every=1)
    seen: List[Dict[str, np.ndarray]] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        _train(model, 5, seen, poison=_poison_at(3, "2.weight"))
        w.flush()
    assert h.first_nonfinite is not None
    assert (h.first_nonfinite["what"], h.first_nonfinite["name"], h.first_nonfinite["step"],
            h.first_nonfinite["count"]) == ("grad", "2.weight", 3, 2)
    msgs = [str(c.message) for c in caught if "non-finite" in str(c.message)]
    assert len(msgs) == 1 and "'2.weight'" in msgs[0] and "step 3" in msgs[0]
    w.close()
    acc = accumulate(str(tmp_path))
    bad = {e.step: e.value for e in acc.Scalars("grad_nonfinite/2.weight")}
    # step 4: the NaN has spread through the update to everything (numpy counts the same)
    assert bad == {k: float((~np.isfinite(seen[k]["grad/2.weight"])).sum()) for k in range(5)}
    assert bad[3] == 2 and bad[2] == 0
    # the other statistics stay those of the finite values
    e3 = [e for e in acc.Scalars("grad_absmax/2.weight") if e.step == 3][0]
    g = seen[3]["grad/2.weight"]
    assert e3.value == pytest.approx(np.abs(g[np.isfinite(g)]).max(), rel=1e-6)
    text = acc.Tensors("first_nonfinite/text_summary")
    assert len(text) == 1 and text[0].step == 3


def test_on_nonfinite_raise_stops_the_next_step_naming_the_tensor(tmp_path):
    model = _model()
    w = gpulog.SummaryWriter(str(tmp_path))
    w.watch(model, every=1, on_nonfinite="raise")
    with pytest.raises(FloatingPointError, match=r"step 1: the gradient of '0.weight' has 2"):
        seen: List[Dict[str, np.ndarray]] = []
        for _ in range(40):  # the error is found on the writer thread, raised at a later step
            _train(model, 2, seen, poison=_poison_at(1, "0.weight"))
            w.flush()
    w.close()


def test_off_steps_do_no_work_and_remove_stops_logging(tmp_path, monkeypatch):
    calls = []
    real = red.reduce
    monkeypatch.setattr(red, "reduce", lambda ts, table: calls.append(len(ts)) or real(ts, table))
    model = _model()
    w = gpulog.SummaryWriter(str(tmp_path))
    h = w.watch(model, every=5)
    seen: List[Dict[str, np.ndarray]] = []
    opt = _train(model, 11, seen)
    assert calls == [6, 6, 6]  # steps 0, 5, 10: one fused pass over the 6 gradients each
    assert h.steps == 11
    h.remove()
    h.remove()  # idempotent
    for _ in range(10):
        opt.step()
    assert calls == [6, 6, 6] and h.steps == 11
    w.close()
    assert [e.step for e in accumulate(str(tmp_path)).Scalars("grad_norm/0.weight")] == [0, 5, 10]


def test_include_exclude_and_a_custom_scalars_layout(tmp_path):
    model = _model()
    w = gpulog.SummaryWriter(str(tmp_path))
    w.watch(model, every=1, include=r"weight$", exclude=lambda name, p: name.startswith("4."),
            stats=("norm", "nonfinite"))
    _train(model, 1, [])
    w.close()
    acc = accumulate(str(tmp_path))
    tags = {t for t in acc.Tags()["scalars"] if "/" in t}
    assert tags == {f"grad_{s}/{n}" for s in ("norm", "nonfinite") for n in ("0.weight", "2.weight")}
    from tensorboard.plugins.custom_scalar import layout_pb2
    raw = acc.Tensors("custom_scalars__config__")[0].tensor_proto.string_val[0]
    layout = layout_pb2.Layout.FromString(raw)
    charts = {c.title: list(c.multiline.tag) for cat in layout.category for c in cat.chart}
    assert charts == {"grad_norm": ["grad_norm/.*"], "grad_nonfinite": ["grad_nonfinite/.*"]}


@pytest.mark.parametrize("kwargs,exc,needle", [
    (dict(model=3), TypeError, "model must be a torch.nn.Module"),
    (dict(every=0), ValueError, "every must be an int >= 1"),
    (dict(every=2.5), ValueError, "every"),
    (dict(histogram_every=0), ValueError, "histogram_every"),
    (dict(stats=("norm", "median")), ValueError, "unknown statistic"),
    (dict(stats="norm"), TypeError, "stats must be a sequence"),
    (dict(include="conv"), ValueError, "no parameter of the model matches"),
    (dict(include="(["), ValueError, "include="),
    (dict(exclude=5), TypeError, "exclude must be"),
    (dict(log="weights"), ValueError, "log must be one of"),
    (dict(activations=["nope"]), ValueError, "no module named"),
    (dict(optimizer="sgd"), TypeError, "optimizer must be"),
    (dict(on_nonfinite="ignore"), ValueError, "on_nonfinite"),
])
def test_bad_arguments_raise_at_the_call_and_nothing_is_hooked(tmp_path, kwargs, exc, needle):
    model = kwargs.pop("model", _model())
    w = gpulog.SummaryWriter(str(tmp_path))
    from torch.optim.optimizer import _global_optimizer_pre_hooks
    before = len(_global_optimizer_pre_hooks)
    with pytest.raises(exc, match=needle):
        w.watch(model, **kwargs)
    assert len(_global_optimizer_pre_hooks) == before
    w.add_scalar("after", 1.0, 0)  # the writer keeps working
    w.close()
    acc = accumulate(str(tmp_path))
    assert [e.value for e in acc.Scalars("after")] == [1.0]
    assert "custom_scalars__config__" not in acc.Tags()["tensors"]  # a refused watch wrote nothing


def test_three_implementations_agree_with_numpy():
    """The native pass, the chunked torch reference (several chunks per tensor) and numpy."""
    g = torch.Generator().manual_seed(3)
    ts = [torch.randn(5000, generator=g), torch.tensor([1.0, math.nan, 0.0, -3.0, math.inf, -math.inf]),
          torch.randn(3000, generator=g).half(), (torch.randn(700, generator=g) * 1e3).bfloat16(),
          torch.zeros(0), torch.zeros(7), torch.randn(40, generator=g).double(), torch.full((9,), math.nan)]
    table = red.ChunkTable([t.numel() for t in ts], chunk=1024)
    ref = red.reduce_torch(ts, table).numpy()
    for t, row in zip(ts, ref):
        x = t.double().numpy()
        f = x[np.isfinite(x)]
        assert row[0] == x.size and row[3] == x.size - f.size and row[4] == (f == 0).sum()
        assert row[1] == pytest.approx(f.sum(), rel=1e-12, abs=1e-12)
        assert row[2] == pytest.approx((f * f).sum(), rel=1e-12)
        assert row[5] == (f.max() if f.size else -math.inf) and row[7] == (f.min() if f.size else math.inf)
        assert row[6] == (np.abs(f).max() if f.size else -math.inf)
    if red.native() is not None:
        got = red.reduce_native(ts).numpy()
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
        assert np.array_equal(got[:, [0, 3, 4, 5, 6, 7]], ref[:, [0, 3, 4, 5, 6, 7]])  # exact columns


def test_vectorised_statistics_and_fast_values_match_the_reference_encoder():
    """The writer thread derives all rows at once and frames values from cached tag prefixes:
    the same numbers as derive() and the same bytes as the protobuf encoder, ±inf beyond float32."""
    from gpulog._encode import watch as enc
    from gpulog._proto import messages as m
    rng = np.random.default_rng(0)
    rows = []
    for n, bad in ((10, 0), (5, 5), (1, 0), (0, 0), (1000, 3)):
        f = rng.normal(size=n - bad) * 1e20
        rows.append([n, f.sum(), (f * f).sum(), bad, 0, f.max() if f.size else -math.inf,
                     np.abs(f).max() if f.size else -math.inf, f.min() if f.size else math.inf])
    rows = np.array(rows)
    derived = enc.derive_all(rows)
    for i, row in enumerate(rows):
        one = enc.derive(row)
        for stat in enc.STATS:
            a, b = derived[stat][i], one[stat]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, rel=1e-12), (i, stat)
    tags = ["grad_norm/a", "param_std/ünï", "x" * 200]
    vals = np.array([1.5, 1e39, -math.inf])
    from gpulog._encode import scalar as enc_scalar
    assert enc_scalar.simple_values(tags, vals) == [m.summary_value(t, simple_value=float(np.float32(v) if abs(v) < 3.5e38 else math.copysign(math.inf, v)))
                                              for t, v in zip(tags, vals)]


@pytest.mark.parametrize("opt_name", ["sgd", "lbfgs"])
def test_a_step_with_a_closure_is_watched_after_the_closure(tmp_path, opt_name):
    """optimizer.step(closure) (Lightning's automatic optimisation, LBFGS) computes gradients
    inside step(): watched after the closure's first call, before the update (the gradient of
    the parameters the step started from, computed here by numpy)."""
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.05) if opt_name == "sgd" else \
        torch.optim.LBFGS(model.parameters(), lr=0.1, max_iter=3)
    w = gpulog.SummaryWriter(str(tmp_path))
    w.watch(model, every=1, log="all")
    g = torch.Generator().manual_seed(4)
    want = []
    for step in range(3):
        x = torch.randn(32, 6, generator=g)
        probe = _model()
        probe.load_state_dict(model.state_dict())
        probe(x).pow(2).mean().backward()
        want.append(float(np.linalg.norm(probe[0].weight.grad.double().numpy())))

        def closure():
            opt.zero_grad()
            loss = model(x).pow(2).mean()
            loss.backward()
            return loss
        opt.step(closure)
    w.close()
    got = [e.value for e in accumulate(str(tmp_path)).Scalars("grad_norm/0.weight")]
    assert got == pytest.approx(want, rel=1e-5)


def test_inspect_shows_the_largest_gradient_norms_and_the_first_nonfinite(tmp_path):
    import subprocess
    import sys
    model = _model()
    w = gpulog.SummaryWriter(str(tmp_path))
    w.watch(model, every=1)
    seen: List[Dict[str, np.ndarray]] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _train(model, 3, seen, poison=_poison_at(2, "4.weight"))
    w.close()
    r = subprocess.run([sys.executable, "-c", "import sys; from gpulog.cli import main; sys.exit(main())",
                        "inspect", str(tmp_path)], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    tail = r.stdout.split("watched model, run '.':")[1]
    norms = {n: float(np.linalg.norm(seen[2][f"grad/{n}"][np.isfinite(seen[2][f"grad/{n}"])].astype(np.float64)))
             for n, _ in model.named_parameters()}
    largest = max(norms, key=norms.get)
    listed = [line.split(":")[0].strip() for line in tail.splitlines() if line.endswith(" at step 2")]
    assert listed[0] == largest and len(listed) == 5
    assert "first non-finite: gpulog.watch: first non-finite values at step 2: the gradient of '4.weight'" in tail
