"""The row-norm kernel's launch shapes (``ops/triton/scores.py``): the time of one call of
``row_norms_and_means`` (q and k's norms and coarsest means, the shipped path) for each
``MEANS_WARPS`` x ``MEANS_ROWS``, and of ``row_norms_pair``, against a plain read of q and k
(``torch.add``: two reads, one write), steady (100 calls back to back), bf16, B=1, H=8,
D=128, p=4, L=3.

    python benchmarks/norm_kernel_variants.py --out norm_variants.json
"""

import argparse
import json

import torch

import lighthouse_attn.ops.triton.scores as scores
from lighthouse_attn.bench.common import environment, steady_ms, warm_up_gpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="norm_variants.json")
    ap.add_argument("--seq-lens", default="32768,131072")
    args = ap.parse_args()
    warm_up_gpu()
    res = {"benchmark": "norm_kernel_variants", **environment(), "shipped":
           {"MEANS_WARPS": scores.MEANS_WARPS, "MEANS_ROWS": scores.MEANS_ROWS}, "cases": {}}
    for N in map(int, args.seq_lens.split(",")):
        q, k = (torch.randn(1, 8, N, 128, device="cuda", dtype=torch.bfloat16)
                for _ in range(2))
        gb = 2 * q.numel() * q.element_size() / 1e9

        def us(fn):
            return round(steady_ms(fn, steps=100)["median_ms"] * 1e3, 2)

        ref = scores.row_norms_and_means(q, k, 16)
        case = {"read_qk_add_us": us(lambda: torch.add(q, k)),
                "row_norms_pair_us": us(lambda: scores.row_norms_pair(q, k))}
        shipped = (scores.MEANS_WARPS, scores.MEANS_ROWS)
        for warps in (1, 2, 4):
            for rows in (4, 8, 16):
                scores.MEANS_WARPS, scores.MEANS_ROWS = warps, rows
                got = scores.row_norms_and_means(q, k, 16)
                same = all(torch.equal(a, b) for a, b in zip(got, ref))
                t = us(lambda: scores.row_norms_and_means(q, k, 16))
                case[f"means_w{warps}_r{rows}_us"] = t
                case[f"means_w{warps}_r{rows}_tb_s"] = round(gb / t * 1e3, 2)
                case[f"means_w{warps}_r{rows}_equal"] = same
        scores.MEANS_WARPS, scores.MEANS_ROWS = shipped
        res["cases"][N] = case
        print(N, json.dumps(case), flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
