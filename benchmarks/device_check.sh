#!/usr/bin/env bash
# One GPU check (< 5 min): the CUDA tests (kernels at full size, sync-free add_*), then the GPU
# benchmarks; summary table last.  Run from the repository root on a machine with CUDA.
set -uo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || python3 -m pip install -q -e .
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
timeout 150 pytest -q -x tests/kernels tests/test_cuda.py 2>&1 | tee "$OUT/cuda_tests.log" | tail -5
timeout 120 python3 -m benchmarks --device cuda --quick --out "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu_bench.log" | tail -25
