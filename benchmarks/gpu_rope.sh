#!/usr/bin/env bash
# One device call: every kernel compiled for the installed triton, the GPU tests of RoPE inside
# the op (single op, one-rank sharded op, models), then its kernel time and synced steps at
# 32K-1M (rope_in_layer.py), and stage-1 and dense training throughput of paper-268m at 98K
# (the models pass unrotated q and k to Lighthouse layers).
set -uo pipefail
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-bench-results}"
mkdir -p "$OUT"
python3 scripts/check_triton_compile.py 2>&1 | tee "$OUT/triton_compile.log" | tail -2
python3 -m pytest tests/ops/triton/test_rope.py tests/ops/triton/test_rope_in_op.py \
  tests/ops/triton/test_gpu.py tests/models tests/parallel/test_context_parallel_gpu.py -m gpu \
  -o addopts="" -q -p no:cacheprovider -p no:logging 2>&1 \
  | tee "$OUT/gpu_tests_rope_inside.log" | tail -4
python3 benchmarks/rope_in_layer.py --out "$OUT/rope_in_layer.json" 2>&1 \
  | tee "$OUT/rope_in_layer.log" | tail -5
python3 -m lighthouse_attn.cli bench train --preset paper-268m --seq-len 98304 \
  --out "$OUT/train_paper268m_98k_rope_inside.json" 2>&1 | tee "$OUT/bench_train.log" | tail -6
