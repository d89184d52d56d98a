"""GPU time of each kernel inside the layer's forward+backward (not alone): the profiler's
per-kernel device time, averaged over steps issued back to back.

    python benchmarks/layer_kernels.py --seq-len 32768 --topk 512 [--out kernels.json]
"""

import json
from collections import defaultdict

import torch
from layer_case import case_arguments, case_of
from torch.profiler import ProfilerActivity, profile

from lighthouse_attn.bench.common import warm_up_gpu


def kernel_us(step, steps: int) -> dict:
    """Mean device time per step of each kernel (by name) over ``steps`` steps."""
    step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    per = defaultdict(float)
    for e in prof.key_averages():
        if e.self_device_time_total > 0:
            per[e.key[:60]] += e.self_device_time_total / steps
    return {k: round(v, 1) for k, v in sorted(per.items(), key=lambda kv: -kv[1])}


def main() -> None:
    ap = case_arguments(None)
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    warm_up_gpu(1)
    c = case_of(args)
    res = {"device": torch.cuda.get_device_name(), "N": args.seq_len, "L": args.num_levels,
           "K": args.topk, "S": c.S,
           "layer_us": kernel_us(c.layer, args.steps), "inner_us": kernel_us(c.inner, args.steps)}
    for part in ("layer_us", "inner_us"):
        res[part]["total"] = round(sum(res[part].values()), 1)
    print(json.dumps(res, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
