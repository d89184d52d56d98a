"""Launch shapes of the pool and spread kernels (``ops/triton/gather_scatter.py``) inside the
layer: for each variant, the profiler's device time per forward+backward of ``_pool_kernel``
and ``_spread_kernel`` (each summed over its two launches), and whether the layer's output
equals the shipped shapes' bit for bit (its gradients pass through cuDNN's backward, which is
not deterministic). bf16, B=1, H=8, D=128, p=4.

Pool variants are ``ROWS/skip/WARPS`` (span in rows, skipping levels absent from a span, warps),
spread variants ``ROWS/WARPS``; the i-th of each run together (the kernels are timed apart).
``shipped`` is what the library picks. Spans below the coarsest window are raised to it.

    python benchmarks/window_kernel_variants.py --out window_variants.json \\
        --cases 1048576:4:4096,524288:3:2048

``--smoke`` checks the variants' equality on the CPU (``TRITON_INTERPRET=1``; one head of 16).
"""

import argparse
import json

import torch
from layer_case import layer_case
from layer_kernels import kernel_us

import lighthouse_attn.ops.triton.gather_scatter as gs
from lighthouse_attn import lighthouse_attention
from lighthouse_attn.bench.common import environment, warm_up_gpu

POOL = ["shipped", "128/n/4", "128/y/4", "256/n/4", "256/y/4", "512/y/4", "256/y/8",
        "512/y/8", "256/y/2", "1024/y/8"]
SPREAD = ["shipped", "64/2", "64/4", "64/8", "128/4", "128/8", "256/8", "32/4", "16/2",
          "128/2"]
SHIPPED = (gs.pool_plan, gs.POOL_WARPS, gs.SPREAD_ROWS, gs.spread_warps)


def use(pool: str, spread: str) -> None:
    """Set the kernels' launch shapes to the variants ``pool`` and ``spread``."""
    gs.pool_plan, gs.POOL_WARPS, gs.SPREAD_ROWS, gs.spread_warps = SHIPPED
    if pool != "shipped":
        rows, skip, warps = pool.split("/")
        gs.pool_plan = lambda p, L, D, r=int(rows), s=skip == "y", **_: (gs._rows(r, p, L, D), s)
        gs.POOL_WARPS = int(warps)
    if spread != "shipped":
        rows, warps = map(int, spread.split("/"))
        gs.SPREAD_ROWS, gs.spread_warps = rows, lambda tensors, r, w=warps: w


def output(c) -> torch.Tensor:
    """The layer's output on the case's inputs (no autograd graph)."""
    with torch.no_grad():
        return lighthouse_attention(c.q, c.k, c.v, c.cfg)


def output_and_grads(c) -> list:
    """The layer's output and gradients on the case's inputs."""
    out = lighthouse_attention(c.q, c.k, c.v, c.cfg)
    return [out, *torch.autograd.grad(out, (c.q, c.k, c.v), c.dout)]


def smoke() -> None:
    for N, L in ((4096, 3), (16384, 4)):
        c = layer_case(N, 256, num_levels=L, device="cpu", heads=1, head_dim=16)
        use("shipped", "shipped")
        ref = output_and_grads(c)
        for pool, spread in zip(POOL, SPREAD):
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
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        return smoke()
    warm_up_gpu()
    res = {"benchmark": "window_kernel_variants", **environment(), "steps": args.steps,
           "cases": {}}
    for case in args.cases.split(","):
        N, L, K = map(int, case.split(":"))
        c = layer_case(N, K, num_levels=L)
        use("shipped", "shipped")
        ref = output(c)
        rows = res["cases"][case] = []
        for pool, spread in zip(POOL, SPREAD):
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
