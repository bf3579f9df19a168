#!/usr/bin/env bash
# One GPU check (< 5 min): the CUDA tests (kernels at full size; no device sync inside any add_*
# under both backends; every add_* of the CPU sync-probe matrix returning while ~1 s of GPU work
# is queued; a tensor from another stream freed right after the call; a CUDA-graph capture while
# the writer is busy; a clear error for logging during capture; the first-call compile stall,
# printed as "[compile stall]"; logging inside mode="reduce-overhead" and a manual CUDA-graph
# capture; the watch pass without a sync), the 128M histogram work figures, the GPU benchmarks, a
# compiled training step with in-step logging against logging outside it, then model watching.
# Run from the repository root on a machine with CUDA.
#
# The device image (Python 3.12) lacks google-crc32c and tensorboardX; carry them as wheels in
# .whl/ (ignored by git), e.g. from the repository root here:
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d .whl google-crc32c tensorboardX
# and name .whl in the device tool's `carry`.  Without them gpulog falls back to a slow pure-Python
# CRC (it warns) and the benchmark table has no tbx column.
set -uo pipefail
export PYTHONUNBUFFERED=1
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null 2>&1 || python3 -m pip install -q -e .
OUT=${OUT:-benchmarks/out}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
# (test_compile.py is for GPU-less machines: here the kernels are compiled and run for real)
timeout 130 pytest -q -x -rs tests/kernels tests/test_cuda.py tests/test_system_metrics.py --ignore=tests/kernels/test_compile.py 2>&1 | tee "$OUT/cuda_tests.log" | tail -5
# 128M float32 histogram: Triton and torch-op work against one read, caller time against torch's writer
timeout 40 python3 -m benchmarks --device cuda --only work --out "$OUT/gpu_work.json" 2>&1 \
  | tee "$OUT/gpu_work.log" | tail -12
timeout 80 python3 -m benchmarks --device cuda --quick --only scalars --only tensors --only loop \
  --out "$OUT/gpu.json" 2>&1 | tee "$OUT/gpu_bench.log" | tail -30
timeout 50 python3 -m benchmarks.bench_compiled --device cuda --steps 200 --repeats 2 \
  --out "$OUT/gpu_compiled.json" 2>&1 | tee "$OUT/gpu_compiled.log" | tail -6
# model watching (issue #20): a log step's host time (no sync), its device time against one read
# of every watched byte, and the per-tensor .item() loop: 2400 parameters and their gradients
timeout 45 python3 -m benchmarks.bench_watch --device cuda --blocks 600 --repeats 5 2>&1 \
  | tee "$OUT/gpu_watch.log" | tail -6
