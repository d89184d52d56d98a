#!/usr/bin/env bash
# Recipe ablations at 32K (the README's 32K protocol, wsd schedule, seeds 0, 1, 2), against the
# paper's recipe (lighthouse), dense (400 steps) and dense planned for the recipe's time
# (dshort, 285 steps, as in the 32K equal-time comparison), all paired by seed:
#   rec100 / rec200   recovery 100 or 200 of the 400 steps (the recipe: 150)
#   dlnone / dltwo    no always-dense layers, or layers 0, 1, 6, 7 (the recipe: 0 and 7)
#   ramp              a staggered switch: layers turn dense one at a time over the last 50
#                     stage-1 steps (--switch-ramp 50)
#   caffinity         the causal selection with the experimental affinity scorer (each key
#                     against the mean query of the coarsest window before its own)
# The same phases complete the 32K comparison's third seed (dense, lighthouse, causal, dshort).
# Each call trains for at most LIMIT seconds (default 530) and stops the arm in training with a
# checkpoint; the next call on the same machine continues it. Finished arms committed under
# benchmarks/results/h200/quality/runs/ (32K seeds 0 and 1) and .../ablations/runs/ are
# restored first, so only what is missing trains:
#   ARMS=dense,lighthouse,causal,dshort SEEDS=2 OUT=dir bash benchmarks/quality/gpu_ablations.sh
#   ARMS=rec100,rec200 SEEDS=0,1,2 OUT=dir bash benchmarks/quality/gpu_ablations.sh
# `bash benchmarks/quality/gpu_ablations.sh report` only rebuilds the reports from the runs
# (on any machine: it reads no data and trains nothing).
# Every call writes OUT/runs.tar.gz (metrics, configs, summaries, final evaluations, the
# report's plots; no weights), OUT/compare.md|json over every arm and seed finished, and
# OUT/ablations.md|json.
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-bench-results/ablations}"
LIMIT="${LIMIT:-530}"
ROOT=runs_quality/${SMOKE:+smoke-}ablations  # SMOKE runs apart from the real ones
mkdir -p "$OUT" "$ROOT/runs"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

if [ -n "${SMOKE:-}" ]; then  # the CPU check of this script: the standard library's source
  TRAIN=("$(python3 -c "import os; print(os.path.dirname(os.__file__) + '/email')")")
  HELD=$(python3 -c "import os; print(os.path.dirname(os.__file__) + '/json')")
elif [ "${1:-run}" = report ]; then  # reads no data: the paths the committed runs recorded
  mapfile -t TRAIN < <(python3 -c "import json; c = json.load(open(
'benchmarks/results/h200/quality/runs/dense-wsd-s0/config.json'))['train']
print('\n'.join(c['data'])); print(c['eval_data'][0])")
  HELD=${TRAIN[-1]} && unset 'TRAIN[-1]'
else
  mapfile -t TRAIN < <(python3 -c "import os, pandas, transformers
for m in (transformers, pandas): print(os.path.dirname(m.__file__))")
  HELD=$(python3 -c "import os, sympy; print(os.path.dirname(sympy.__file__))")
fi
echo "training data: ${TRAIN[*]}; held out: $HELD"

for d in benchmarks/results/h200/quality/runs/*-wsd-s*/ benchmarks/results/h200/quality/ablations/runs/*/; do
  [ -z "${SMOKE:-}" ] && [ -f "$d/compare_eval.json" ] || continue
  [ -e "$ROOT/runs/$(basename "$d")" ] || cp -r "$d" "$ROOT/runs/"
done

source benchmarks/quality/protocol.sh
ARGS=("${PROTOCOL_32K[@]}" --schedules wsd --out "$ROOT")
declare -A DEF=([dshort]=lighthouse_steps=0,dense_steps=285 [rec100]=lighthouse_steps=300
                [rec200]=lighthouse_steps=200 [dlnone]=dense_layers=none
                [dltwo]="dense_layers=0;1;-2;-1" [ramp]=switch_ramp=50
                [caffinity]=selection=causal,scorer=affinity)
ALL=dense,lighthouse,causal,dshort,rec100,rec200,dlnone,dltwo,ramp,caffinity

if [ -n "${SMOKE:-}" ]; then  # a tiny run of the same arms, to check this script on a CPU
  ARGS+=("${SMOKE_ARGS[@]}" --n-layers 4 --seq-len 2048 --batch-size 2)
  DEF[dshort]=lighthouse_steps=0,dense_steps=7 DEF[rec100]=lighthouse_steps=8
  DEF[rec200]=lighthouse_steps=4 DEF[ramp]=switch_ramp=2
fi

arms() {  # "--arms BUILTINS --arm NAME:DEF ..." for a comma-separated list (dense always in)
  local builtins=dense a
  ARM_ARGS=()
  for a in ${1//,/ }; do
    if [ -n "${DEF[$a]:-}" ]; then ARM_ARGS+=(--arm "$a:${DEF[$a]}")
    elif [ "$a" != dense ]; then builtins+=",$a"; fi
  done
  ARM_ARGS+=(--arms "$builtins")
}

if [ "${1:-run}" != report ]; then
  arms "${ARMS:-$ALL}"
  timeout -k 60 -s TERM "$LIMIT" python3 -m lighthouse_attn compare "${ARGS[@]}" \
    "${ARM_ARGS[@]}" --seeds "${SEEDS:-0,1,2}" 2>&1 \
    | grep --line-buffered -v "^step \|checkpoint" | tee -a "$OUT/ablations.log" | tail -20
fi
arms "$ALL"
python3 -m lighthouse_attn compare "${ARGS[@]}" "${ARM_ARGS[@]}" --seeds 0,1,2 --report-only \
  > "$ROOT/report.log" 2>&1
cp "$ROOT"/compare.md "$ROOT"/compare.json "$OUT"/ 2>/dev/null
python3 benchmarks/quality/ablation_report.py "$ROOT/compare.json" "$OUT/ablations.md" \
  "$OUT/ablations.json" | tail -15
# few files in OUT: the plots and the report's log travel inside runs.tar.gz with the runs
( cd "$ROOT" && { ls compare_*.png report.log 2>/dev/null; find runs -path '*/checkpoints' \
    -prune -o -path '*/final' -prune -o -type f \( -name '*.json' -o -name '*.jsonl' -o -name \
    '*.md' -o -name '*.png' -o -name '*.log' \) -print; } | tar -czf "$OUT/runs.tar.gz" -T - ) \
    2>/dev/null
ls -la "$OUT"
