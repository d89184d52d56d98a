#!/usr/bin/env bash
# "Does Lighthouse pay off?" at 128K tokens per sequence, on one GPU: the 32K protocol's model
# (8 layers, d_model 512, bytes) at seq_len 131,072 x batch 1, stage 1 with L=3 p=4 K=2048
# (gathered length 24,576 = N/5.3, as the paper's 98K with K=1536), four arms per seed:
# Lighthouse (paper selection, 250 + 150 steps), dense (400), causal selection (250 + 150), and
# dense planned to end when the Lighthouse arm ends (dshort, planned from the finished runs).
#
# A call trains for at most LIMIT seconds (default 530), then stops the arm in training with
# SIGTERM (it writes a checkpoint), so that calls of under ten minutes continue one another
# on the same machine; finished arms are skipped, and each is evaluated as soon as it ends.
# ARMS=causal trains only that arm (with lighthouse, dense and dshort, which the verdict needs
# and which are skipped once finished) of the phase's seed; the report always covers every arm.
#   OUT=dir bash benchmarks/quality/gpu_quality_128k.sh seed0     # or seed1, seed2
#   OUT=dir bash benchmarks/quality/gpu_quality_128k.sh report    # report over every seed
# Finished arms committed under benchmarks/results/h200/quality/128k/runs/ are restored first. Each
# call writes OUT/runs.tar.gz (every run's metrics, config, summary, log and final evaluation,
# no weights), OUT/compare.md and OUT/compare.json.
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-bench-results/quality128k}"
PHASE="${1:-seed0}"
LIMIT="${LIMIT:-530}"
ROOT=runs_quality/${SMOKE:+smoke-}128k  # SMOKE runs apart from the real ones
COMMITTED=benchmarks/results/h200/quality/128k
mkdir -p "$OUT" "$ROOT/runs"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

# training text: transformers' and pandas' source (70.5M bytes; 400 steps x 131,072 = 52.4M are
# read, none twice); held out: sympy's source (26.6M bytes >= 32 x 131,072)
if [ -n "${SMOKE:-}" ]; then  # the CPU check of this script: the standard library's source
  TRAIN=("$(python3 -c "import os; print(os.path.dirname(os.__file__) + '/email')")")
else
  mapfile -t TRAIN < <(python3 -c "import os, pandas, transformers
for m in (transformers, pandas): print(os.path.dirname(m.__file__))")
fi
HELD=$(python3 -c "import os, sympy; print(os.path.dirname(sympy.__file__))")
echo "training data: ${TRAIN[*]}; held out: $HELD"

# finished arms of earlier sessions (no weights: metrics, config and final evaluation)
for d in "$COMMITTED"/runs/*/; do
  [ -z "${SMOKE:-}" ] && [ -f "$d/compare_eval.json" ] || continue
  [ -e "$ROOT/runs/$(basename "$d")" ] || cp -r "$d" "$ROOT/runs/"
done

source benchmarks/quality/protocol.sh
ARGS=("${PROTOCOL[@]}" --topk 2048 --seq-len 131072 --batch-size 1 --eval-every 100
      --eval-sequences 32 --ckpt-every 25 --passkey-trials 1 --schedules wsd
      --arm dshort:equal_time=lighthouse --out "$ROOT")
ALL=lighthouse,dense,causal
with_baselines() {  # ARMS plus lighthouse and dense, which dshort is planned from
  local a out=lighthouse,dense
  for a in ${1//,/ }; do [[ ",$out," == *",$a,"* ]] || out+=",$a"; done
  echo "$out"
}

if [ -n "${SMOKE:-}" ]; then  # a tiny run of the same phases, to check this script on a CPU
  ARGS+=("${SMOKE_ARGS[@]}" --seq-len 4096)
fi

case "$PHASE" in
  seed0|seed1|seed2)
    timeout -k 60 -s TERM "$LIMIT" python3 -m lighthouse_attn compare "${ARGS[@]}" \
      --arms "$(with_baselines "${ARMS:-$ALL}")" --seeds "${PHASE#seed}" 2>&1 | grep --line-buffered -v "^step \|checkpoint" \
      | tee -a "$OUT/$PHASE.log" | tail -30
    ;;
  report)
    python3 -m lighthouse_attn compare "${ARGS[@]}" --arms "$ALL" --seeds 0,1,2 --report-only 2>&1 \
      | tee "$OUT/report.log" | tail -30
    ;;
  *) echo "unknown phase $PHASE (seed0, seed1, seed2 or report)"; exit 2 ;;
esac
python3 -m lighthouse_attn compare "${ARGS[@]}" --arms "$ALL" --seeds 0,1,2 --report-only >/dev/null 2>&1
cp "$ROOT"/compare.md "$ROOT"/compare.json "$OUT"/ 2>/dev/null
( cd "$ROOT" && find . -path '*/checkpoints' -prune -o -path '*/final' -prune -o -type f \
    \( -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.png' -o -name '*.log' \) \
    -print | tar -czf "$OUT/runs.tar.gz" -T - ) 2>/dev/null
for d in "$ROOT"/runs/*/; do
  printf '%s: ' "$(basename "$d")"; tail -1 "$d/metrics.jsonl" 2>/dev/null | cut -c1-60
  [ -f "$d/compare_eval.json" ] && echo "   (finished, evaluated)"
done
ls -la "$OUT"
