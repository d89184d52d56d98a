"""A/B of fast-path variants inside the layer, alternating: the norm kernel pooling q and k's
coarsest level off, or on with given warps per window and rows per load. Per variant and case: each
kernel's GPU time inside forward+backward steps (``layer_kernels.kernel_us``), steady time
per step, and checks that every variant selects the same entries and gives the same output
up to bf16 rounding. (Round 8 also alternated the cascade's radix search with and without
starting from the keys' shared digits: ``h100/history/r8_means_and_prefix_ab.json``.)

    python benchmarks/variants_ab.py --out variants_ab.json [--rounds 2]
"""

import argparse
import json
import statistics

import torch
from layer_case import layer_case
from layer_kernels import kernel_us

from lighthouse_attn.bench.common import steady_ms, warm_up_gpu
from lighthouse_attn.ops.triton import attention, scores

VARIANTS = {"base": (None, 16), "means w1": (1, 16), "means w1 rows8": (1, 8),
            "means w2 rows8": (2, 8)}  # name: means warps, rows loaded at a time
CASES = ((32768, 512, 3), (32768, 2048, 3), (131072, 2048, 3), (1048576, 4096, 4))
means_apply = attention.means_apply


def use(variant: str) -> None:
    warps, rows = VARIANTS[variant]
    attention.means_apply = means_apply if warps else (lambda *a: False)
    scores.MEANS_WARPS, scores.MEANS_ROWS = warps or 1, rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="variants_ab.json")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    warm_up_gpu(2)
    res = {"device": torch.cuda.get_device_name(), "cases": []}
    for N, K, L in CASES:
        c = layer_case(N, K, num_levels=L)
        steps = 20 if N <= 131072 else 4
        row = {"N": N, "K": K, "L": L, "S": c.S, "checks": {}}
        outs, maps = {}, {}
        for name in VARIANTS:
            use(name)
            with torch.no_grad():
                outs[name] = attention.lighthouse_triton(c.q, c.k, c.v, c.cfg, None, None, None)
                maps[name] = attention._select(c.q, c.k, c.v, c.cfg, False)[1]
        for name in VARIANTS:
            row["checks"][name] = {
                "same map": bool(torch.equal(maps[name], maps["base"])),
                "max abs diff": float((outs[name].float() - outs["base"].float()).abs().max())}
        outs = maps = None
        kern = {name: [] for name in VARIANTS}
        steady = {name: [] for name in VARIANTS}
        inner_steady = []
        for _ in range(args.rounds):
            for name in VARIANTS:
                use(name)
                kern[name].append(kernel_us(c.layer, steps))
                steady[name].append(steady_ms(c.layer, steps, 5)["median_ms"])
            inner_steady.append(steady_ms(c.inner, steps, 5)["median_ms"])
        inner = kernel_us(c.inner, steps)
        inner_total = sum(inner.values())
        row["inner_us"] = round(inner_total, 1)
        row["inner_steady_ms"] = round(statistics.median(inner_steady), 4)
        row["variants"] = {}
        for name in VARIANTS:
            totals = [sum(k.values()) for k in kern[name]]
            row["variants"][name] = {
                "kernel_us": [round(t, 1) for t in totals],
                "kernel_ratio": round(statistics.median(totals) / inner_total, 4),
                "steady_ratio": round(statistics.median(steady[name]) / row["inner_steady_ms"],
                                      4),
                "kernels_us": kern[name][-1]}
            print(N, K, name, row["variants"][name]["kernel_us"],
                  row["variants"][name]["kernel_ratio"], row["variants"][name]["steady_ratio"],
                  row["checks"][name], flush=True)
        res["cases"].append(row)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
        c = None
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
