#!/usr/bin/env bash
# Issue 25's measurements on one GPU, with `lighthouse-attn eval recall`:
#   diagnose  the 32K protocol's model (8 layers, d_model 512, bytes; seq_len 32,768 x 4; L=3,
#             p=4, K=512; layers 0 and 7 dense; wsd, lr 2e-3), trained with the paper's and
#             with the causal selection (250 Lighthouse + 150 dense steps, seed 0); recall of
#             every Lighthouse layer at step 50 and at the end of stage 1 (step 250), for the
#             scorers in SCORERS (default norm, dilated and the experimental affinity) and
#             both selection rules, with the recall-against-K curve at
#             K = 512, 1024, 2048.
#   qwen3     a Qwen3-shaped model (QK-norm; 8 layers, hidden 512, 8 heads of 64, bytes) trained
#             briefly with Lighthouse (the dilated scorer, chosen for QK-norm models), then the
#             recall of the norm and the dilated scorers after step 1 (near initialization),
#             step 50 and the end of stage 1 (no dense stage: only stage 1 is measured, so the
#             wsd decay falls in its last 80 steps).
# Training stops once the end-of-stage-1 checkpoint is written (the recovery steps after it are
# never measured; the schedule, and so every checkpoint, is that of the full run). TRAINED
# picks the runs of diagnose (default "paper causal"), SCORERS the scorers.
# A phase may take more than one call of ten minutes: finished runs and recall results are kept
# under runs_recall/ while the machine stays warm, and a call skips them. Writes OUT/<phase>/
# (every recall JSON and plot, the runs' metrics and logs, no weights), OUT/<phase>.md (the
# table), OUT/<phase>.png (recall by checkpoint, scorer and rule, with the oracle and random)
# and OUT/<phase>-results.tar.gz (the recall results again, in one file).
#   OUT=dir bash benchmarks/quality/gpu_recall.sh diagnose     # or qwen3
set -uo pipefail
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT="${OUT:-bench-results/recall}"
PHASE="${1:-diagnose}"
ROOT=runs_recall
mkdir -p "$OUT/$PHASE" "$ROOT"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
LH=(python3 -m lighthouse_attn)

if [ -n "${SMOKE:-}" ]; then  # the CPU check of this script: tiny sizes, the stdlib's text
  TRAIN=("$(python3 -c "import os; print(os.path.dirname(os.__file__) + '/email')")")
  HELD="$(python3 -c "import os; print(os.path.dirname(os.__file__) + '/json')")"
  SIZE=(--d-model 64 --n-layers 3 --threads 2)
  SEQ=2048 BATCH=1 TOPK=128 KS=128,256 STEPS=(--lighthouse-steps 4 --dense-steps 2 --warmup-steps 1
                             --decay-steps 1) EARLY=2 END=4
else
  mapfile -t TRAIN < <(python3 -c "import os, pandas, transformers
for m in (transformers, pandas): print(os.path.dirname(m.__file__))")
  HELD=$(python3 -c "import os, sympy; print(os.path.dirname(sympy.__file__))")
  SIZE=(--d-model 512 --n-layers 8)
  SEQ=32768 BATCH=4 TOPK=512 KS=512,1024,2048 STEPS=(--lighthouse-steps 250 --dense-steps 150 --warmup-steps 40
                                    --decay-steps 80) EARLY=50 END=250
fi
echo "training data: ${TRAIN[*]}; held out: $HELD"

stop_after() {  # pid dir: wait for the training; once dir (the last checkpoint measured) is
  # written, stop it with SIGTERM: the steps after it are never measured
  while kill -0 "$1" 2>/dev/null; do
    [ -d "$2" ] && kill -TERM "$1" 2>/dev/null && break
    sleep 2
  done
  wait "$1"
}

RES="$ROOT/results/$PHASE"  # kept while the machine stays warm: a later call skips what is done
recall() {  # checkpoint label scorer [selection]
  local ckpt=$1 label=$2 scorer=$3 rule=${4:-}
  ls "$RES/$label"/recall_*_"$scorer"${rule:+_$rule}.json >/dev/null 2>&1 && return
  "${LH[@]}" eval recall --checkpoint "$ckpt" --data "$HELD" --sequences 2 --topks "$KS" \
    --no-progress --out "$RES/$label" --scorer "$scorer" ${rule:+--selection "$rule"} 2>&1 \
    | tail -12
}

case "$PHASE" in
  diagnose)
    for sel in ${TRAINED:-paper causal}; do
      run="$ROOT/diagnose-$sel"
      last="$run/checkpoints/$(printf 'step_%07d' "$END")"
      if [ ! -d "$last" ]; then
        "${LH[@]}" train --preset demo --n-heads 8 \
        --n-kv-heads 8 --ffn-hidden 1536 --num-levels 3 --pooling-factor 4 --topk "$TOPK" \
        --dense-layers=0,-1 "${SIZE[@]}" --seq-len "$SEQ" --batch-size "$BATCH" "${STEPS[@]}" --lr 2e-3 --min-lr-ratio 0.1 \
        --selection "$sel" --data "${TRAIN[@]}" --save-at "$EARLY" "$END" --keep-ckpts 1 \
        --ckpt-every 1000 --no-progress --run-dir "$run" --overwrite > "$run.log" 2>&1 &
        stop_after "$!" "$last"
        tail -4 "$run.log"
      fi
      for step in "$EARLY" "$END"; do
        ckpt="$run/checkpoints/$(printf 'step_%07d' "$step")"
        for scorer in ${SCORERS:-norm dilated affinity}; do
          for rule in paper causal; do
            recall "$ckpt" "trained-$sel/step$step" "$scorer" "$rule"
          done
        done
      done
    done
    ;;
  qwen3)
    cfg="$ROOT/qwen3/config.json"
    python3 - "$ROOT/qwen3" "${SMOKE:-}" <<'PY'
import sys
from transformers import Qwen3Config
small = bool(sys.argv[2])
Qwen3Config(vocab_size=257, hidden_size=64 if small else 512, intermediate_size=128 if small
            else 1536, num_hidden_layers=3 if small else 8, num_attention_heads=4 if small
            else 8, num_key_value_heads=4 if small else 8, head_dim=16 if small else 64,
            max_position_embeddings=65536, tie_word_embeddings=False, use_cache=False,
            rope_theta=10000.0).save_pretrained(sys.argv[1])
PY
    run="$ROOT/qwen3-run"
    [ -f "$run/final/config.json" ] || "${LH[@]}" train --hf-config "$cfg" --num-levels 3 \
      --pooling-factor 4 --topk "$TOPK" --dense-layers=0,-1 --seq-len "$SEQ" \
      --batch-size "$BATCH" "${STEPS[@]}" --dense-steps 0 --lr 2e-3 --min-lr-ratio 0.1 \
      --data "${TRAIN[@]}" --save-at 1 "$EARLY" "$END" --keep-ckpts 1 --ckpt-every 1000 \
      --no-progress --run-dir "$run" --overwrite ${SMOKE:+--threads 2} 2>&1 | tail -4
    for step in 1 "$EARLY" "$END"; do
      ckpt="$run/checkpoints/$(printf 'step_%07d' "$step")"
      for scorer in ${SCORERS:-norm dilated}; do
        recall "$ckpt" "qwen3/step$step" "$scorer"
      done
    done
    ;;
  *) echo "unknown phase $PHASE (diagnose or qwen3)"; exit 2 ;;
esac

mkdir -p "$RES" && cp -r "$RES"/. "$OUT/$PHASE"/
python3 benchmarks/quality/recall_report.py "$OUT/$PHASE" "$OUT/$PHASE.md" "$OUT/$PHASE.png"
tar -czf "$OUT/$PHASE-results.tar.gz" -C "$RES" .  # the same results in one file
( cd "$ROOT" && find . -path '*/checkpoints' -prune -o -path '*/final' -prune -o -type f \
    \( -name 'metrics.jsonl' -o -name 'summary.md' -o -name 'train.log' -o -name 'config.json' \
    \) -print | tar -czf "$OUT/$PHASE/runs.tar.gz" -T - ) 2>/dev/null
ls -la "$OUT"
