"""Why the C=1 sharded layer's host time exceeds the single op's at 64K (bf16, L=3, p=4,
K=1024, forward+backward with a random output weight): host time per step behind a GPU sleep
with Python's garbage collector on and off, the synced step, and ``perf_counter`` totals per
step of the sharded path's collectives and exchanges.

    torchrun --nproc-per-node 1 benchmarks/cp_host_probe.py --out probe.json

``--no-spill`` runs the sharded path without the spill exchange (``exchange_spill=False``,
the control that gives different outputs after chunk boundaries): what the exchange costs.
``--note`` is stored in the JSON. ``--smoke`` checks the script on the CPU (gloo).
"""

import functools
import gc
import json
import time

import torch
import torch.distributed as dist
from host_timing import median_host_ms, one_process_parser, start_one_process, timed_functions

import lighthouse_attn.parallel.collectives as collectives
import lighthouse_attn.parallel.fused as fused
import lighthouse_attn.parallel.gathered as gathered
from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.bench.common import sleep_cycles, time_ms
from lighthouse_attn.parallel import lighthouse_attention_cp

TARGETS = [(collectives, "all_gather_into"), (collectives, "reduce_scatter_into"),
           (fused, "add_incoming"), (fused, "tail_grad"), (gathered, "attend_own"),
           (gathered, "attend_past"), (gathered, "own_backward"), (gathered, "past_backward"),
           (fused, "inner_forward"), (fused, "inner_backward")]


def main() -> None:
    ap = one_process_parser("cp_host_probe.json")
    ap.add_argument("--no-spill", action="store_true")
    ap.add_argument("--note", default="")
    args = ap.parse_args()
    device = start_one_process(args.smoke)
    cuda = device == "cuda"
    N, K, D = (8192, 512, 16) if args.smoke else (65536, 1024, 128)
    dtype = torch.bfloat16 if cuda else torch.float32
    g = torch.Generator(device=device).manual_seed(0)
    q, k, v = (torch.randn(1, 8, N, D, device=device, dtype=dtype, generator=g)
               .requires_grad_() for _ in range(3))
    w = torch.randn(1, 8, N, D, device=device, dtype=dtype, generator=g)
    res = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
           "seq_len": N, "topk": K, "exchange_spill": not args.no_spill, "note": args.note}
    cycles = sleep_cycles(1.0) if cuda else 0

    def host(fn, reps=7, steps=20):
        if not cuda:  # --smoke: one call, just to run the script
            t = time.perf_counter()
            fn()
            return round((time.perf_counter() - t) * 1e3, 3)
        return median_host_ms(fn, cycles, reps, steps)

    for sel in ("paper", "causal"):
        cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=K, selection=sel)
        r = {}
        cp = functools.partial(lighthouse_attention_cp, exchange_spill=not args.no_spill)
        for name, op in (("single", lighthouse_attention), ("cp", cp)):
            def step(op=op):
                torch.autograd.grad((op(q, k, v, cfg) * w).sum(), (q, k, v))

            step()
            r[f"{name}_host_ms"] = host(step)
            gc.disable()
            r[f"{name}_host_gc_off_ms"] = host(step)
            gc.enable()
            r[f"{name}_sync_ms"] = round(time_ms(step, warmup=3, repeats=40)["median_ms"], 3)
            if name == "cp":
                with timed_functions(TARGETS) as acc:
                    host(step, reps=1)
                    acc.clear()
                    host(step, reps=1, steps=20)
                r["cp_us_per_step"] = {k: round(v / 20 * 1e6, 1) for k, v in
                                       sorted(acc.items(), key=lambda kv: -kv[1])}
        r["sync_ratio"] = round(r["cp_sync_ms"] / r["single_sync_ms"], 3)
        res[sel] = r
        print(sel, json.dumps(r), flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
