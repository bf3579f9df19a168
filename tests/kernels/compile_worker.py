"""Compile gpulog's kernels with Triton's CUDA compiler, no GPU needed (run by test_compile.py).

Reads a JSON list of variants on stdin, each {"id", "kernel": "<module in gpulog.kernels>",
"variant" (optional: a key of the module's ``_kernels()``), "signature", "constexprs",
"target": [backend, arch, warp size], "multiple_of_16": [int args]}, and prints one JSON object
id -> {"ok", "error", "ptx_ops"} (the variant's global loads, atomics and reductions).  Runs in
its own process because Triton's interpreter (TRITON_INTERPRET=1, used by the other kernel tests)
patches triton.language in ways that break real compilation in the same process.
"""
from __future__ import annotations

import importlib
import json
import re
import sys


def main() -> None:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    out = {}
    for v in json.load(sys.stdin):
        module = importlib.import_module(f"gpulog.kernels.{v['kernel']}")
        kernel = module._kernels()[v["variant"]] if "variant" in v else module._kernel()
        sig = dict(v["signature"], **{k: "constexpr" for k in v["constexprs"]})
        # as Triton's launcher specialises them: torch's allocations are 16-byte aligned, and so
        # are integer arguments whose value is a multiple of 16 (listed in "multiple_of_16")
        aligned = set(v.get("multiple_of_16", []))
        attrs = {(i,): [["tt.divisibility", 16]] for i, (k, t) in enumerate(sig.items())
                 if t.startswith("*") or k in aligned}
        try:
            c = triton.compile(ASTSource(fn=kernel, signature=sig, constexprs=v["constexprs"], attrs=attrs),
                               target=GPUTarget(*v["target"]))
            ops = sorted(set(re.findall(r"\b(?:red|atom|ld)\.global\.[\w.]+", c.asm["ptx"])))
            out[v["id"]] = {"ok": "cubin" in c.asm, "error": "", "ptx_ops": ops}
        except Exception as err:  # report every variant, not just the first failure
            out[v["id"]] = {"ok": False, "error": f"{type(err).__name__}: {err}"[-2000:], "ptx_ops": []}
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
