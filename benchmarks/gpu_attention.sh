#!/usr/bin/env bash
# One device call: GPU tests of the fast path, two profiles, the host-overhead probe at 32K and
# the attention benchmark (eager, deterministic and CUDA-graph timings).
# Usage (repo root, on the GPU machine): OUT=/some/dir bash benchmarks/gpu_attention.sh
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 -m pytest tests/ops/triton -x -q -p no:cacheprovider -p no:logging -s 2>&1 \
  | tee "$OUT/gpu_tests.log" | grep -E "passed|failed|bitwise|Error" | tail -8
for nk in 32768:512 131072:2048; do
  python3 benchmarks/profile_layer.py --seq-len "${nk%:*}" --topk "${nk#*:}" \
    --out "$OUT/profile_${nk%:*}.txt"
done
python3 benchmarks/host_overhead.py --out "$OUT/host_32k.json" | tail -3
python3 -m lighthouse_attn.cli bench attention --out "$OUT/attention" --deterministic \
  --cuda-graphs --repeats 15 "$@" \
  2>&1 | tee "$OUT/bench_attention.log"
