"""Where the host's time goes in one forward+backward of the context-parallel op with one
process (C=1), against the single op: ``perf_counter`` totals per step of the sharded path's
functions (nested totals overlap), steps issued back to back.

    torchrun --nproc-per-node 1 benchmarks/cp_host_breakdown.py --seq-len 65536 --out host.json

``--smoke`` runs a tiny case on the CPU (gloo) to check the script without a GPU.
"""

import json
import time

import torch
import torch.distributed as dist
from host_timing import one_process_parser, start_one_process, timed_functions

import lighthouse_attn.ops.triton.attention as triton_attention
import lighthouse_attn.ops.triton.one_node as one_node
import lighthouse_attn.parallel.attention as cp_attention
import lighthouse_attn.parallel.chunk_attention as chunk_attention
import lighthouse_attn.parallel.collectives as collectives
import lighthouse_attn.parallel.fused as fused
import lighthouse_attn.parallel.gathered as gathered
from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.parallel import lighthouse_attention_cp

TARGETS = [(cp_attention, n) for n in (
    "autocast_inputs", "check_inputs", "chunk_config", "_triton_layer", "_chunk_scores",
    "_causal_prefix", "from_batch")] + [
    (triton_attention, n) for n in ("map_and_means", "window_plans")] + [
    (fused, n) for n in ("sharded_layer", "inner_forward", "inner_backward", "add_incoming",
                         "tail_grad")] + [
    (one_node, n) for n in ("pool_windows", "spread_windows")] + [
    (gathered, n) for n in ("attend_own", "attend_past", "own_backward", "past_backward")] + [
    (chunk_attention, n) for n in ("attention_forward",
                                   "attention_backward", "merge", "_pieces_grad")] + [
    (collectives, n) for n in ("all_gather_into", "reduce_scatter_into")]


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def host_us(step, device: str, steps: int, targets=()) -> dict:
    """Host time per step, in total and in each of ``targets`` ``(module, name)``."""
    with timed_functions(targets) as acc:
        step()
        _sync(device)
        acc.clear()
        t = time.perf_counter()
        for _ in range(steps):
            step()
        total = time.perf_counter() - t
        _sync(device)
    out = {k: round(v / steps * 1e6, 1) for k, v in sorted(acc.items(), key=lambda kv: -kv[1])}
    return {"whole step": round(total / steps * 1e6, 1), **out}


def main() -> None:
    ap = one_process_parser("cp_host.json")
    ap.add_argument("--seq-len", type=int, default=65536)
    ap.add_argument("--topk", type=int, default=1024)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    device = start_one_process(args.smoke)
    N, K, D = (8192, 512, 16) if args.smoke else (args.seq_len, args.topk, 128)
    dtype = torch.float32 if args.smoke else torch.bfloat16
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, 8, N, D, device=device, dtype=dtype, generator=g)
               .requires_grad_() for _ in range(3))
    res = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
           "seq_len": N, "topk": K, "dtype": str(dtype), "steps": args.steps}
    for selection in ("paper", "causal"):
        cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=K, selection=selection)
        for name, fn, targets in (("single", lighthouse_attention, ()),
                                  ("cp_c1", lighthouse_attention_cp, TARGETS)):
            def step(fn=fn, cfg=cfg):
                torch.autograd.grad(fn(q, k, v, cfg).sum(), (q, k, v))

            res[f"{selection}_{name}_us"] = host_us(step, device, args.steps, targets)
            print(selection, name, json.dumps(res[f"{selection}_{name}_us"]))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
