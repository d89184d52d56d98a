#!/usr/bin/env bash
# The device pass of the fast path, in three calls that each fit the 10-minute limit:
#   OUT=/some/dir bash benchmarks/gpu_attention.sh checks   # GPU tests, host/GPU timeline and
#                                                           # host profile at 32K, stage
#                                                           # kernels (VARIANTS=1: and their
#                                                           # span/warp variants)
#   OUT=/some/dir bash benchmarks/gpu_attention.sh bench    # attention benchmark, eager and
#                                                           # deterministic
#   OUT=/some/dir bash benchmarks/gpu_attention.sh graphs   # the same replayed as CUDA graphs
# (kept apart so that each fits the limit; the graphs call of the committed results ran with
# LIGHTHOUSE_TRITON_LAUNCH=jit, before the benchmark turned the garbage collector off while
# capturing, which fixed its capture failures: benchmarks/NOTES.md)
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-benchmarks/results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
if [ "${1:-checks}" = checks ]; then
  python3 -m pytest tests/ops/triton -q -p no:cacheprovider -p no:logging -s \
    --junitxml="$OUT/gpu_tests.xml" 2>&1 | tee "$OUT/gpu_tests.log" \
    | grep -E "passed|failed|bitwise|Error|^[.sF]+$" | tail -8
  echo "pytest exit status ${PIPESTATUS[0]}" | tee -a "$OUT/gpu_tests.log"
  python3 benchmarks/timeline.py --out "$OUT/timeline_32k.json" 2>&1 | grep -E "^(layer|inner)"
  python3 benchmarks/host_profile.py --out "$OUT/host_profile_32k.txt" | head -1
  python3 benchmarks/stage_probe.py ${VARIANTS:+--variants} --out "$OUT/stages.json" > /dev/null
elif [ "$1" = bench ]; then
  python3 -m lighthouse_attn.cli bench attention --out "$OUT/attention" --deterministic \
    --repeats 15 2>&1 | tee "$OUT/bench_attention.log" | tail -12
else
  python3 -m lighthouse_attn.cli bench attention --out "$OUT/attention_graphs" --cuda-graphs \
    --repeats 15 2>&1 | tee "$OUT/bench_attention_graphs.log" | tail -12
fi
