"""The context-parallel ops over C processes, one GPU each, against the single-device op on the
whole sequence: exactness across GPUs, then the time of one forward+backward.

    torchrun --nproc-per-node C benchmarks/gpu_context_parallel_ranks.py --out cp_ranks.json

Every rank draws the whole sequence from one seed, runs the single op on it (its own GPU, no
collectives), then its shard (``shard_sequence``) through the sharded op with the others; the
outputs and gradients of its shard are compared with the matching rows of the single op's.
Rows: Lighthouse at 128K (L=3, p=4, K=2048), 1M (L=4, K=4096) and 2M (L=4, K=8192) in bf16,
both selections; 64K in fp32 (the exactness check); the dense layer (``dense_attention_cp``
against causal SDPA) at 128K. Times are medians of synced steps (CUDA events on each rank; the
slowest rank's median is the step's), with a random output weight. ``speedup`` is the single
op's time over the sharded step's; ``efficiency`` is ``speedup / C``. ``--smoke`` runs tiny
cases on the CPU (gloo) to check the script without GPUs.
"""

import argparse
import json
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.bench.common import environment, time_ms
from lighthouse_attn.parallel import dense_attention_cp, lighthouse_attention_cp, shard_sequence

CASES = [  # (seq_len, num_levels, topk, dtype, selections)
    (65536, 3, 1024, torch.float32, ("paper", "causal")),
    (131072, 3, 2048, torch.bfloat16, ("paper", "causal")),
    (1048576, 4, 4096, torch.bfloat16, ("paper", "causal")),
    (2097152, 4, 8192, torch.bfloat16, ("paper",)),
]
SMOKE_CASES = [(8192, 3, 512, torch.float32, ("paper", "causal"))]


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def slowest(x: float, device: torch.device) -> float:
    """The largest ``x`` over the ranks."""
    t = torch.tensor([x], device=device, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


def compare(single, sharded, full: list[torch.Tensor], rank: int, world: int,
            repeats: int) -> dict:
    """Exactness of this rank's shard (largest over ranks) and the two ops' forward+backward
    times (the sharded step's on the slowest rank)."""
    device = full[0].device
    g = torch.Generator(device=device).manual_seed(7)
    ref = single(full)
    w = torch.randn(ref.shape, device=device, dtype=ref.dtype, generator=g)
    ref_grads = torch.autograd.grad((ref * w).sum(), full)
    mine = [shard_sequence(x.detach(), 2, rank, world).requires_grad_() for x in full]
    w_mine = shard_sequence(w, 2, rank, world)
    out = sharded(mine)
    grads = torch.autograd.grad((out * w_mine).sum(), mine)
    err_out = rel(out, shard_sequence(ref.detach(), 2, rank, world))
    err_grads = max(rel(a, shard_sequence(b, 2, rank, world)) for a, b in zip(grads, ref_grads))
    del ref, ref_grads, out, grads

    def step(fn, xs, weight):
        return lambda: torch.autograd.grad((fn(xs) * weight).sum(), xs)

    single_ms = time_ms(step(single, full, w), 2, repeats)["median_ms"]
    dist.barrier()
    cp_ms = time_ms(step(sharded, mine, w_mine), 2, repeats)["median_ms"]
    row = {"rel_err_out": slowest(err_out, device), "rel_err_grads": slowest(err_grads, device),
           "single_fwd_bwd_ms": slowest(single_ms, device), "cp_fwd_bwd_ms": slowest(cp_ms, device)}
    row["speedup"] = row["single_fwd_bwd_ms"] / row["cp_fwd_bwd_ms"]
    row["efficiency"] = row["speedup"] / world
    if device.type == "cuda":
        row["peak_gib_rank0"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
        torch.cuda.reset_peak_memory_stats()
    return row


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="cp_ranks.json")
    ap.add_argument("--smoke", action="store_true")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--max-seq-len", type=int, default=None,
                    help="skip cases longer than this")
    args = ap.parse_args()
    cuda = torch.cuda.is_available() and not args.smoke
    dist.init_process_group("nccl" if cuda else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0))) if cuda else \
        torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    rows = []
    cases = SMOKE_CASES if args.smoke else CASES
    for N, L, K, dtype, selections in cases:
        if args.max_seq_len and N > args.max_seq_len:
            continue
        g = torch.Generator(device=device).manual_seed(N)
        full = [torch.randn(1, 8, N, 128, device=device, dtype=dtype, generator=g)
                .requires_grad_() for _ in range(3)]
        for selection in selections:
            cfg = LighthouseConfig(num_levels=L, pooling_factor=4, topk=K, selection=selection)
            row = {"op": "lighthouse", "seq_len": N, "num_levels": L, "topk": K,
                   "dtype": str(dtype), "selection": selection,
                   **compare(lambda xs: lighthouse_attention(*xs, cfg),
                             lambda xs: lighthouse_attention_cp(*xs, cfg),
                             full, rank, world, args.repeats)}
            rows.append(row)
            if rank == 0:
                print(row, flush=True)
        del full
    N = 2048 if args.smoke else 131072
    dense_dtype = torch.float32 if args.smoke else torch.bfloat16
    g = torch.Generator(device=device).manual_seed(N)
    full = [torch.randn(1, 8, N, 128, device=device, dtype=dense_dtype, generator=g)
            .requires_grad_() for _ in range(3)]
    row = {"op": "dense", "seq_len": N, "dtype": str(dense_dtype),
           **compare(lambda xs: F.scaled_dot_product_attention(*xs, is_causal=True),
                     lambda xs: dense_attention_cp(*xs), full, rank, world, args.repeats)}
    rows.append(row)
    if rank == 0:
        print(row, flush=True)
        with open(args.out, "w") as f:
            json.dump({"benchmark": "context_parallel_ranks", "environment": environment(),
                       "context_parallel": world, "heads": 8, "head_dim": 128,
                       "batch_size": 1, "rows": rows}, f, indent=1)
        print(f"C={world}")
        print(f"{'op':<10} {'N':>8} {'dtype':<15} {'selection':<7} {'single':>9} {'cp':>9} "
              f"{'speedup':>7} {'eff':>5} {'err out':>8} {'err grads':>9}")
        for r in rows:
            print(f"{r['op']:<10} {r['seq_len']:>8} {r['dtype']:<15} "
                  f"{r.get('selection', '-'):<7} {r['single_fwd_bwd_ms']:>9.2f} "
                  f"{r['cp_fwd_bwd_ms']:>9.2f} {r['speedup']:>7.2f} {r['efficiency']:>5.2f} "
                  f"{r['rel_err_out']:>8.1e} {r['rel_err_grads']:>9.1e}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
