"""Device-side experiment: pool/spread span sizes and the skip-empty-levels branch.

    python benchmarks/kernel_variants.py --out variants.json
"""

import argparse
import json

import torch

from lighthouse_attn import LighthouseConfig
from lighthouse_attn.bench.common import environment, time_ms, warm_up_gpu
from lighthouse_attn.ops.triton import window
from lighthouse_attn.ops.triton.scores import row_norms_pair
from lighthouse_attn.ops.triton.select import select_with_map


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="variants.json")
    args = ap.parse_args()
    warm_up_gpu()
    res = {"environment": environment(), "cases": []}
    for N, K, L, p in ((131072, 2048, 3, 4), (524288, 2048, 3, 4), (1048576, 4096, 4, 4)):
        cfg = LighthouseConfig(num_levels=L, pooling_factor=p, topk=K, backend="triton")
        q, k, v = (torch.randn(1, 8, N, 128, device="cuda", dtype=torch.bfloat16)
                   for _ in range(3))
        sel, pm = select_with_map(*row_norms_pair(q, k), cfg)
        S = sel.level.shape[2]
        g = window.pool([q, k, v], pm, S, [8] * 3, [1] * 3, [1] * 3, False, True, p, L)
        row = {"seq_len": N, "topk": K, "num_levels": L}
        for skip in (False, True):
            for pool_rows in (64, 128, 256):
                for spread_rows in (64, 128):
                    window.SKIP_EMPTY, window.POOL_ROWS, window.SPREAD_ROWS = (
                        skip, pool_rows, spread_rows)
                    key = f"skip{int(skip)}_pool{pool_rows}_spread{spread_rows}"
                    row[key] = {
                        "gather_fwd": time_ms(lambda: window.pool(
                            [q, k, v], pm, S, [8] * 3, [1] * 3, [1] * 3, False, True, p, L),
                            3, 15)["median_ms"],
                        "gather_bwd": time_ms(lambda: window.spread(
                            g, pm, N, [8] * 3, [1] * 3, [1] * 3, False, True, p, L),
                            3, 15)["median_ms"],
                        "scatter_fwd": time_ms(lambda: window.spread(
                            [g[0]], pm, N, [8], [1], [1], True, False, p, L), 3, 15)["median_ms"],
                        "scatter_bwd": time_ms(lambda: window.pool(
                            [q], pm, S, [8], [1], [1], True, False, p, L), 3, 15)["median_ms"],
                    }
                    row[key]["total"] = sum(row[key].values())
        best = min((kk for kk in row if kk.startswith("skip")), key=lambda kk: row[kk]["total"])
        print(N, K, "best", best, round(row[best]["total"], 3), "default",
              round(row["skip0_pool128_spread64"]["total"], 3), flush=True)
        res["cases"].append(row)
        torch.cuda.empty_cache()
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
