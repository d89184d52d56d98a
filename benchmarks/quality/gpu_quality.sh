#!/usr/bin/env bash
# The quality comparison of README "Does Lighthouse pay off?", on one GPU, in phases of under
# ten minutes each (every arm is a resumable run directory; finished arms are skipped):
#   OUT=dir bash benchmarks/quality/gpu_quality.sh checks  # causality tests on the GPU,
#                                                          # causal vs paper layer time, data
#   OUT=dir bash benchmarks/quality/gpu_quality.sh seed0   # dense + Lighthouse, constant + wsd
#   OUT=dir bash benchmarks/quality/gpu_quality.sh seed1
#   OUT=dir bash benchmarks/quality/gpu_quality.sh final   # + causal arms, the full report
# and the question of time, against the wsd runs above (restored from benchmarks/results/h200/quality):
#   OUT=dir bash benchmarks/quality/gpu_quality.sh short   # dense planned to end when the
#                                                          # Lighthouse recipe ends (285 steps)
#   OUT=dir bash benchmarks/quality/gpu_quality.sh long    # Lighthouse for longer (385 + 150
#                                                          # steps), about dense's time; report
# Results of earlier phases found as .quality/*.tar.gz are restored first (they count as
# finished arms); each phase writes OUT/PHASE.tar.gz with every run's metrics and the report.
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-bench-results/quality}"
PHASE="${1:-checks}"
ROOT=runs_quality
mkdir -p "$OUT" "$ROOT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
# training text: transformers' source, then other packages until 400 steps x 4 x 32K tokens
# never repeat (data.txt); the short and long phases reuse what the others counted, transformers
# and pandas; held out: sympy's source
if [ "$PHASE" = short ] || [ "$PHASE" = long ]; then
  mapfile -t TRAIN < <(python3 -c "import os, pandas, transformers
for m in (transformers, pandas): print(os.path.dirname(m.__file__))")
else
  mapfile -t TRAIN < <(python3 - <<'PY'
import importlib, os
from lighthouse_attn.data import load_tokens
need, have = 400 * 4 * 32768 + 1, 0
for name in ("transformers", "pandas", "scipy"):
    path = os.path.dirname(importlib.import_module(name).__file__)
    print(path)
    have += len(load_tokens([path]))
    if have >= need:
        break
PY
)
fi
HELD=$(python3 -c "import os, sympy; print(os.path.dirname(sympy.__file__))")
echo "training data: ${TRAIN[*]}; held out: $HELD"

for t in .quality/*.tar.gz; do [ -e "$t" ] && tar -xzf "$t" -C "$ROOT" --skip-old-files; done

source benchmarks/quality/protocol.sh
ARGS=("${PROTOCOL_32K[@]}" --schedules constant,wsd --out "$ROOT/compare")
if [ -n "${SMOKE:-}" ]; then  # a tiny run of the same phases, to check this script on a CPU
  ARGS+=("${SMOKE_ARGS[@]}" --seq-len 2048 --batch-size 2)
fi

case "$PHASE" in
  checks)
    python3 - "${TRAIN[@]}" "$HELD" <<'PY' | tee "$OUT/data.txt"
import sys
from lighthouse_attn.data import load_tokens
for path in sys.argv[1:]:
    print(f"{path}: {len(load_tokens([path])):,} tokens")
PY
    python3 -m pytest tests/ops/test_causality.py tests/ops/triton/test_triton_path.py -o addopts="" -q \
      -p no:cacheprovider -k "causal or selection" 2>&1 | tee "$OUT/gpu_tests_causal.log" | tail -3
    timeout 300 python3 -m lighthouse_attn bench attention --causal --dense-backends "" \
      --cases 32768:512,131072:2048,524288:2048 --repeats 10 --out "$OUT/attention_causal" \
      2>&1 | tee "$OUT/bench_attention_causal.log" | tail -8
    ;;
  seed0|seed1)
    python3 -m lighthouse_attn compare "${ARGS[@]}" --arms dense,lighthouse \
      --seeds "${PHASE#seed}" 2>&1 | grep --line-buffered -v "^step \|checkpoint" > "$OUT/$PHASE.log"
    tail -25 "$OUT/$PHASE.log"
    ;;
  final)
    python3 -m lighthouse_attn compare "${ARGS[@]}" --arms dense,lighthouse,causal \
      --seeds 0,1 2>&1 | grep --line-buffered -v "^step \|checkpoint" > "$OUT/$PHASE.log"
    tail -40 "$OUT/$PHASE.log"
    ;;
  short|long)
    # the wsd arms of the comparison above count as finished (metrics and final evaluation,
    # no weights); the new arms see the same data in the same order (535 steps fit one epoch)
    mkdir -p "$ROOT/equal/runs"
    [ -n "${SMOKE:-}" ] || for d in benchmarks/results/h200/quality/runs/*-wsd-s*; do
      [ -e "$ROOT/equal/runs/$(basename "$d")" ] || cp -r "$d" "$ROOT/equal/runs/"
    done
    EXTRA=(--arm "dshort:lighthouse_steps=0,dense_steps=285")
    [ "$PHASE" = long ] && EXTRA+=(--arm "lhlong:lighthouse_steps=385,dense_steps=150")
    [ -n "${SMOKE:-}" ] && EXTRA=(--arm "dshort:lighthouse_steps=0,dense_steps=7"
                                  --arm "lhlong:lighthouse_steps=9,dense_steps=4")
    python3 -m lighthouse_attn compare "${ARGS[@]}" --schedules wsd --out "$ROOT/equal" \
      --arms dense,lighthouse,causal "${EXTRA[@]}" --seeds 0,1 2>&1 \
      | grep --line-buffered -v "^step \|checkpoint" > "$OUT/$PHASE.log"
    tail -40 "$OUT/$PHASE.log"
    ;;
esac
# every run's small files (not the weights) and the report
( cd "$ROOT" && find . -path '*/checkpoints' -prune -o -type f \( -name '*.json' -o \
    -name '*.jsonl' -o -name '*.md' -o -name '*.png' -o -name '*.log' \) -print \
    | tar -czf "$OUT/$PHASE.tar.gz" -T - ) 2>/dev/null
ls -la "$OUT"
