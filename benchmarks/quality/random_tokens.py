"""Can a model beat the entropy floor on random tokens? Only by reading the future.

Every step draws fresh, independent, uniform tokens over V symbols, so no causal model can do
better than ln V nats per token. A 4-layer model with Lighthouse in every layer is trained
with the paper's selection, the causal selection, and dense attention; the mean training loss
of the last steps against ln V shows whether the selection leaks the future.

    python benchmarks/quality/random_tokens.py \
        --out benchmarks/results/cpu/quality/random_tokens.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from lighthouse_attn import LighthouseConfig
from lighthouse_attn.models import Llama, LlamaConfig


def run(mode: str, args) -> dict:
    torch.manual_seed(args.seed)
    lh = LighthouseConfig(num_levels=3, pooling_factor=4, topk=128,
                          selection="causal" if mode == "causal" else "paper")
    model = Llama(LlamaConfig(vocab_size=args.vocab, d_model=args.d_model, n_layers=4,
                              n_heads=4, n_kv_heads=4, ffn_hidden=3 * args.d_model,
                              dense_layers=(), lighthouse=lh)).to(args.device)
    model.set_attention("dense" if mode == "dense" else "lighthouse")
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95),
                            weight_decay=0.1)
    data = torch.Generator().manual_seed(1000 + args.seed)  # the same tokens in every mode
    losses, t0 = [], time.perf_counter()
    for step in range(args.steps):
        for g in opt.param_groups:
            g["lr"] = args.lr * min(1.0, (step + 1) / 20)
        x = torch.randint(0, args.vocab, (args.batch, args.seq_len + 1), generator=data)
        x = x.to(args.device)
        loss = F.cross_entropy(model(x[:, :-1]).flatten(0, 1), x[:, 1:].flatten())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if (step + 1) % 50 == 0:
            print(f"{mode:>7} step {step + 1:4d} loss {statistics.fmean(losses[-50:]):.4f}",
                  flush=True)
    tail = losses[-args.tail:]
    return {"mode": mode, "final_mean_loss": statistics.fmean(tail),
            "final_sd_of_mean": statistics.stdev(tail) / math.sqrt(len(tail)),
            "below_floor": math.log(args.vocab) - statistics.fmean(tail),
            "losses": losses, "seconds": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--modes", default="dense,paper,causal")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--tail", type=int, default=100, help="steps averaged at the end")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--vocab", type=int, default=16)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", default="random_tokens.json")
    args = ap.parse_args()
    results = [run(m, args) for m in args.modes.split(",")]
    floor = math.log(args.vocab)
    print(f"entropy floor ln {args.vocab} = {floor:.4f}; mean loss of the last {args.tail} "
          "steps:")
    for r in results:
        print(f"  {r['mode']:>7}: {r['final_mean_loss']:.4f} +- {r['final_sd_of_mean']:.4f} "
              f"({r['below_floor']:+.4f} below the floor)")
    device = (torch.cuda.get_device_name(0) if args.device == "cuda" else
              f"cpu ({platform.machine()}, {torch.get_num_threads()} threads)")
    with open(args.out, "w") as f:
        json.dump({"benchmark": "random_tokens", "device": device, "torch": torch.__version__,
                   "settings": vars(args), "entropy_floor": floor, "results": results}, f,
                  indent=1)


if __name__ == "__main__":
    main()
