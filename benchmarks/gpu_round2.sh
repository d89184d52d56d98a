#!/usr/bin/env bash
# One device call: pool-kernel variants and dispatch overheads, then training throughput of
# the paper-530m preset at 98K (stage 1 Lighthouse vs dense).
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
python3 benchmarks/kernel_variants.py --out "$OUT/variants.json" 2>&1 | tail -8
python3 -m pytest tests/train/test_train_gpu.py -x -q -p no:cacheprovider -p no:logging 2>&1 | tail -3
python3 -m lighthouse_attn.cli bench train --preset paper-530m --seq-len 98304 \
  --out "$OUT/train_98k.json" 2>&1 | tee "$OUT/bench_train.log" | tail -15
