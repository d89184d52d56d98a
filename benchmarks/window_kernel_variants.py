"""Launch shapes of the pool and spread kernels (``ops/triton/gather_scatter.py``) inside the
layer: for each variant, the profiler's device time per forward+backward of ``_pool_kernel``
and ``_spread_kernel`` (each summed over its two launches), and whether the layer's output
equals the shipped shapes' bit for bit (the gradients pass through cuDNN's backward, which is
not deterministic; on the GPU the pool's window sums can round differently with other warps).
bf16, B=1, H=8, D=128, p=4.

Pool variants are ``ROWS/WARPS`` (spans below the coarsest window are raised to it; results
from before the pool always skipped the levels absent from a span name ``ROWS/skip/WARPS``).
Spread variants are ``ROWS/WARPS`` or ``ROWS/W1-W3`` (warps of the one-tensor forward launch
and of the three-tensor backward one). The i-th of each list run together (the kernels are
timed apart; the shorter list is filled with ``shipped``, what the library picks).

    python benchmarks/window_kernel_variants.py --out window_variants.json \\
        --cases 1048576:4:4096,524288:3:2048 [--pool shipped,128/4] [--spread shipped,32/4-2]

``--smoke`` checks on the CPU (``TRITON_INTERPRET=1``; one head of 16) that every variant's
output and gradients equal the shipped shapes' bit for bit.
"""

import argparse
import json
from itertools import zip_longest

import torch
from layer_case import layer_case
from layer_kernels import kernel_us

import lighthouse_attn.ops.triton.gather_scatter as gs
from lighthouse_attn import lighthouse_attention
from lighthouse_attn.bench.common import environment, warm_up_gpu

POOL = ["shipped", "128/4", "64/4", "128/2", "64/1", "32/2", "256/4", "64/8", "32/1", "128/8"]
SPREAD = ["shipped", "32/4-2", "16/1", "16/4-1", "16/2-2", "64/4-1", "64/2-1", "64/1", "64/2",
          "64/4"]
SHIPPED = (gs.POOL_ROWS, gs.POOL_WARPS, gs.SPREAD_ROWS, gs.spread_warps)


def use(pool: str, spread: str) -> None:
    """Set the kernels' launch shapes to the variants ``pool`` and ``spread``."""
    gs.POOL_ROWS, gs.POOL_WARPS, gs.SPREAD_ROWS, gs.spread_warps = SHIPPED
    if pool != "shipped":
        gs.POOL_ROWS, gs.POOL_WARPS = map(int, pool.split("/"))
    if spread != "shipped":
        rows, warps = spread.split("/")
        one, _, three = warps.partition("-")
        gs.SPREAD_ROWS = int(rows)
        gs.spread_warps = lambda tensors, r, D, w1=int(one), w3=int(three or one): (
            w3 if tensors == 3 else w1)


def output(c) -> torch.Tensor:
    """The layer's output on the case's inputs (no autograd graph)."""
    with torch.no_grad():
        return lighthouse_attention(c.q, c.k, c.v, c.cfg)


def output_and_grads(c) -> list:
    """The layer's output and gradients on the case's inputs."""
    out = lighthouse_attention(c.q, c.k, c.v, c.cfg)
    return [out, *torch.autograd.grad(out, (c.q, c.k, c.v), c.dout)]


def variants(pools: list[str], spreads: list[str]) -> list[tuple[str, str]]:
    """The (pool, spread) pairs run together."""
    return list(zip_longest(pools, spreads, fillvalue="shipped"))


def smoke(pairs: list[tuple[str, str]]) -> None:
    for N, L in ((4096, 3), (16384, 4)):
        c = layer_case(N, 256, num_levels=L, device="cpu", heads=1, head_dim=16)
        use("shipped", "shipped")
        ref = output_and_grads(c)
        for pool, spread in pairs:
            use(pool, spread)
            got = output_and_grads(c)
            assert all(torch.equal(a, b) for a, b in zip(got, ref)), (L, pool, spread)
    use("shipped", "shipped")
    print("smoke: every variant equals the shipped shapes bit for bit (4K L=3, 16K L=4)")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="window_variants.json")
    ap.add_argument("--cases", default="1048576:4:4096,524288:3:2048", help="N:L:K,...")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--pool", default=",".join(POOL), help="pool variants, comma-separated")
    ap.add_argument("--spread", default=",".join(SPREAD), help="spread variants, comma-separated")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    pairs = variants(args.pool.split(","), args.spread.split(","))
    if args.smoke:
        return smoke(pairs)
    warm_up_gpu()
    res = {"benchmark": "window_kernel_variants", **environment(), "steps": args.steps,
           "cases": {}}
    for case in args.cases.split(","):
        N, L, K = map(int, case.split(":"))
        c = layer_case(N, K, num_levels=L)
        use("shipped", "shipped")
        ref = output(c)
        rows = res["cases"][case] = []
        for pool, spread in pairs:
            use(pool, spread)
            same = torch.equal(output(c), ref)
            us = kernel_us(c.layer, args.steps)
            row = {"pool": pool, "spread": spread, "equal": same,
                   "pool_us": round(sum(v for k, v in us.items() if "_pool_kernel" in k), 1),
                   "spread_us": round(sum(v for k, v in us.items() if "_spread_kernel" in k),
                                      1),
                   "total_us": round(sum(us.values()), 1)}
            rows.append(row)
            print(case, json.dumps(row), flush=True)
            with open(args.out, "w") as f:
                json.dump(res, f, indent=1)
        use("shipped", "shipped")
        del c, ref
        torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
