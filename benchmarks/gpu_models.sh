#!/usr/bin/env bash
# One device call: GPU tests of the trainer, HF integration and eval, then training throughput
# of the paper-268m shapes at 98K, our model and the HF Llama (stage 1 Lighthouse vs dense).
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-bench-results}"
mkdir -p "$OUT"
python3 -m pytest tests/train tests/hf tests/eval -m gpu -o addopts="" -q -p no:cacheprovider -p no:logging \
  2>&1 | tee "$OUT/gpu_tests_models.log" | tail -4
python3 -m lighthouse_attn.cli bench train --preset paper-268m --seq-len 98304 \
  --out "$OUT/train_98k.json" 2>&1 | tee "$OUT/bench_train.log" | tail -6
python3 -m lighthouse_attn.cli bench hf --seq-len 98304 --out "$OUT/hf_98k.json" 2>&1 \
  | tee "$OUT/bench_hf.log" | tail -8
