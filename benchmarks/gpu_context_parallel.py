"""The context-parallel op on one GPU with one process (C=1: two chunks, the spill exchanged
between them): against the single-device op, bf16 and fp32, both selections; and its time.

    torchrun --nproc-per-node 1 benchmarks/gpu_context_parallel.py --out cp_c1.json
"""

import argparse
import json

import torch
import torch.distributed as dist

from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.bench.common import environment, time_ms
from lighthouse_attn.parallel import lighthouse_attention_cp


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="cp_c1.json")
    args = ap.parse_args()
    dist.init_process_group("nccl")
    torch.cuda.set_device(0)
    rows = []
    for dtype in (torch.float32, torch.bfloat16):
        for selection in ("paper", "causal"):
            cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=1024,
                                   selection=selection)
            g = torch.Generator(device="cuda").manual_seed(0)
            q, k, v = (torch.randn(1, 8, 65536, 128, device="cuda", dtype=dtype, generator=g)
                       .requires_grad_() for _ in range(3))
            ref = lighthouse_attention(q, k, v, cfg)
            out = lighthouse_attention_cp(q, k, v, cfg)  # one rank: chunks 0 and 1 in order
            err = ((out.float() - ref.float()).norm() / ref.float().norm()).item()
            grads = torch.autograd.grad((out.float() ** 2).sum(), (q, k, v))
            ref_grads = torch.autograd.grad((ref.float() ** 2).sum(), (q, k, v))
            gerr = max(((a.float() - b.float()).norm() / b.float().norm()).item()
                       for a, b in zip(grads, ref_grads))
            row = {"dtype": str(dtype), "selection": selection, "rel_err_out": err,
                   "rel_err_grads": gerr,
                   "single_ms": time_ms(lambda: lighthouse_attention(q, k, v, cfg), 2,
                                        10)["median_ms"],
                   "cp_c1_ms": time_ms(lambda: lighthouse_attention_cp(q, k, v, cfg), 2,
                                       10)["median_ms"]}
            print(row, flush=True)
            rows.append(row)
    with open(args.out, "w") as f:
        json.dump({"benchmark": "context_parallel_c1", "environment": environment(),
                   "seq_len": 65536, "context_parallel": 1, "rows": rows}, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
