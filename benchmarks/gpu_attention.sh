#!/usr/bin/env bash
# The GPU pass of the fast path, in two commands that each fit ten minutes on an H100:
#   OUT=/some/dir bash benchmarks/gpu_attention.sh checks   # GPU tests, then at 32K: the
#                                                           # host/GPU timeline, each kernel's
#                                                           # time inside the layer, and GPU
#                                                           # time with the host always ahead
#   OUT=/some/dir bash benchmarks/gpu_attention.sh bench    # attention benchmark: up to 128K
#                                                           # with deterministic mode, CUDA
#                                                           # graphs and the causal selection;
#                                                           # 512K and 1M with deterministic
#                                                           # mode, dense cuDNN only
# (dense flash at 512K alone takes minutes, so the long cases time dense SDPA with cuDNN only)
# The probes share one layer case (benchmarks/layer_case.py).
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-bench-results}"
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
if [ "${1:-checks}" = checks ]; then
  python3 -m pytest tests/ops/triton -o addopts="" -q -p no:cacheprovider -p no:logging -s \
    --junitxml="$OUT/gpu_tests.xml" 2>&1 | tee "$OUT/gpu_tests.log" \
    | grep -E "passed|failed|bitwise|Error|^[.sF]+$" | tail -8
  echo "pytest exit status ${PIPESTATUS[0]}" | tee -a "$OUT/gpu_tests.log"
  python3 benchmarks/timeline.py --out "$OUT/timeline_32k.json" 2>&1 | grep -E "^(layer|inner)"
  python3 benchmarks/layer_kernels.py --out "$OUT/layer_kernels_32k.json" | tail -3
  python3 benchmarks/host_bound_probe.py --out "$OUT/host_bound_32k.json" | tail -3
else  # bench: 6.5 minutes on an H100
  python3 -m lighthouse_attn.cli bench attention --out "$OUT/attention_short" \
    --cases 32768:512,32768:2048,131072:2048 --deterministic --cuda-graphs --causal --repeats 15 \
    2>&1 \
    | tee "$OUT/bench_attention_short.log" | tail -6
  python3 -m lighthouse_attn.cli bench attention --out "$OUT/attention_long" \
    --cases 524288:2048,524288:8192,1048576:4096:4:4 --dense-backends cudnn --deterministic \
    --repeats 15 2>&1 | tee "$OUT/bench_attention_long.log" | tail -6
fi
