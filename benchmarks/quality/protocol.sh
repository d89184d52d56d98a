# The quality protocol, sourced by the comparison scripts after they set TRAIN and HELD: an
# 8-layer, d_model 512 byte-level Llama; stage 1 with Lighthouse (L=3, p=4; layers 0 and 7
# dense) for 250 steps, then 150 dense steps; AdamW lr 2e-3, 40 warm-up steps, decay over the
# last 80 (wsd).
#   PROTOCOL      the model and the recipe
#   PROTOCOL_32K  + the README's 32K run: 4 x 32,768 tokens per step, K=512, 16 held-out
#                 sequences scored every 50 steps, 3 passkey trials
# With SMOKE set, SMOKE_ARGS shrinks either to toy size, to check a script on a CPU.
PROTOCOL=(--preset demo --d-model 512 --n-layers 8 --n-heads 8 --n-kv-heads 8 --ffn-hidden 1536
          --num-levels 3 --pooling-factor 4 --dense-layers=0,-1
          --lighthouse-steps 250 --dense-steps 150
          --lr 2e-3 --warmup-steps 40 --min-lr-ratio 0.1 --decay-steps 80 --no-progress
          --data "${TRAIN[@]}" --eval-data "$HELD" --keep-ckpts 1)
PROTOCOL_32K=("${PROTOCOL[@]}" --topk 512 --seq-len 32768 --batch-size 4 --eval-every 50
              --eval-sequences 16 --ckpt-every 50 --passkey-trials 3)
SMOKE_ARGS=(--d-model 64 --n-layers 3 --topk 128 --eval-sequences 2 --lighthouse-steps 6
            --dense-steps 4 --warmup-steps 2 --decay-steps 2 --eval-every 5 --ckpt-every 2
            --passkey-trials 1 --threads 2)
