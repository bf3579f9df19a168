"""Every kernel compiles with Triton's real CUDA compiler (Triton IR → PTX → cubin with the ptxas
bundled with Triton), for the argument types gpulog launches it with — no GPU needed.

The interpreter (test_kernels.py) checks what the kernels compute but accepts code the compiler
rejects (types, loop-carried values, shared memory over the limit); this catches that on
CPU-only machines, before a GPU user meets it.  Compilation runs in a subprocess without
TRITON_INTERPRET (see compile_worker.py).
"""
from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from typing import Any, Dict, List

import pytest

pytest.importorskip("triton")
from gpulog.kernels import histogram as k_hist, image as k_img, pr_curve as k_pr  # noqa: E402

HOPPER, AMPERE = ["cuda", 90, 32], ["cuda", 80, 32]


def _variants() -> List[Dict[str, Any]]:
    out: List[Dict[str, Any]] = []

    def add(id_: str, kernel: str, signature: Dict[str, str], constexprs: Dict[str, Any], target=HOPPER,
            multiple_of_16=(), **extra: Any):
        out.append(dict(id=id_, kernel=kernel, signature=signature, constexprs=constexprs, target=target,
                        multiple_of_16=list(multiple_of_16), **extra))

    for dtype, n, target, m16 in itertools.product(["fp32", "fp16", "bf16"], ["i32", "i64"], [HOPPER, AMPERE],
                                                   [True, False]):
        add(f"histogram-{dtype}-{n}-sm{target[1]}" + ("-n16" if m16 else ""), "histogram",
            {"x_ptr": f"*{dtype}", "n": n, "base_ptr": "*i32", "thr_ptr": "*fp32", "slices_ptr": "*i32",
             "part_ptr": "*fp64"}, {"BLOCK": k_hist.BLOCK, "SLICE": k_hist.SLICE}, target, ["n"] if m16 else [])
    finish = {"SLICE": k_hist.SLICE, "COLS": k_hist.FINISH_COLS, "ROWS": k_hist.FINISH_ROWS,
              "PROGS": k_hist.FINISH_PROGS}
    for num in ("i32", "i64"):
        add(f"histogram_finish-{num}", "histogram",
            {"slices_ptr": "*i32", "part_ptr": "*fp64", "counts_ptr": "*i64", "stats_ptr": "*fp64",
             "programs": "i32", "nbins": "i32", "num": num}, finish, variant="finish")
    # Triton turns integer arguments equal to 1 into constants: one element, one program
    add("histogram_finish-one", "histogram",
        {"slices_ptr": "*i32", "part_ptr": "*fp64", "counts_ptr": "*i64", "stats_ptr": "*fp64", "nbins": "i32"},
        dict(finish, programs=1, num=1), variant="finish")
    for pred, label, weights, mode in [("fp32", "u8", False, 0), ("fp32", "i64", True, 0),
                                       ("fp16", "fp32", False, 1), ("fp64", "i8", True, 2)]:
        add(f"pr_curve-{pred}-{label}-w{int(weights)}", "pr_curve",
            {"pred_ptr": f"*{pred}", "label_ptr": f"*{label}", "weight_ptr": "*fp64", "slices_ptr": "*fp64",
             "n": "i32"}, {"T": 127, "HAS_WEIGHTS": weights, "MODE": mode, "BLOCK": k_pr.BLOCK})
    from gpulog.kernels import watch as k_watch
    for dt, code in (("fp32", 0), ("fp16", 1), ("bf16", 2)):
        for target in (HOPPER, AMPERE):
            add(f"watch-{dt}-sm{target[1]}", "watch",
                {"addr_ptr": "*i64", "chunk_ptr": "*i64", "out_ptr": "*fp64"},
                {"DT": code, "CHUNK": 1 << 18, "BLOCK": k_watch.BLOCK}, target, variant="chunks")
    ints = {k: "i32" for k in ("N", "H", "W", "sN", "sC", "sH", "sW")}
    for src, c_in, c_out, total in [("fp32", 3, 3, "i32"), ("u8", 1, 3, "i32"), ("fp16", 4, 4, "i64"),
                                    ("i16", 3, 3, "i32"), ("bf16", 1, 3, "i64")]:
        add(f"image-{src}-c{c_in}-{total}", "image", {"src_ptr": f"*{src}", "out_ptr": "*u8", "total": total, **ints},
            {"COLS": 8, "C_IN": c_in, "C_OUT": c_out, "SCALE": 1.0 if src == "u8" else 255.0, "BLOCK": k_img.BLOCK})
    return out


VARIANTS = _variants()


@pytest.fixture(scope="module")
def compiled() -> Dict[str, Dict[str, Any]]:
    try:
        from triton.backends import backends
    except ImportError:
        pytest.skip("this Triton has no backends registry")
    if "nvidia" not in backends:
        pytest.skip("Triton's NVIDIA backend is not installed")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # Triton 3.9 warns when unset
    worker = os.path.join(os.path.dirname(__file__), "compile_worker.py")
    proc = subprocess.run([sys.executable, worker], input=json.dumps(VARIANTS), capture_output=True,
                          text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("variant", [v["id"] for v in VARIANTS])
def test_kernel_compiles_for_cuda(compiled, variant):
    result = compiled[variant]
    assert result["ok"], result["error"]
    if variant.startswith("histogram_finish"):  # no global atomics at all
        assert not any(op.startswith(("red.", "atom.")) for op in result["ptx_ops"]), result["ptx_ops"]
    elif variant.startswith("watch"):  # partial rows per chunk: no atomics, deterministic
        assert not any(op.startswith(("red.", "atom.")) for op in result["ptx_ops"]), result["ptx_ops"]
    elif variant.startswith(("histogram", "pr_curve")):
        ops = result["ptx_ops"]
        # counters are updated with relaxed, result-free reductions: no fences, no value returned
        updates = [op for op in ops if not op.startswith("ld.")]
        assert updates and all(op.startswith("red.global") and "relaxed" in op for op in updates), ops
        if variant.startswith("histogram") and variant.endswith("-n16"):  # a length that is a multiple of 16 (e.g. 128M): vector loads
            assert any(op.startswith("ld.global.v") for op in ops), f"data loads not vectorised: {ops}"
