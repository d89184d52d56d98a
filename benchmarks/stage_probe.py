"""GPU time of the forward stage kernels alone (20 launches captured in a CUDA graph per
timing, median of 7), with and without the coarsest level of q and k pooled by the norm
kernel, beside a plain copy of q, k and v; with ``--variants`` also the norm,
pool and spread kernels (backward ones included) over span rows and warps.

    python benchmarks/stage_probe.py --out stages.json [--variants]
"""

import argparse
import json
import statistics

import torch

from lighthouse_attn import LighthouseConfig
from lighthouse_attn.ops.triton import scores
from lighthouse_attn.ops.triton.select import select_with_map
from lighthouse_attn.ops.triton.window import pool


def gpu_us(fn, calls: int = 20, repeats: int = 7) -> float:
    """GPU time per call: ``calls`` calls captured in one CUDA graph (no host dispatch)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(calls):
            fn()
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        graph.replay()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / calls * 1e3)
    return round(statistics.median(times), 1)


def _with_warps(module, warps: int):
    """Make ``module``'s launches use ``warps`` warps (restore with the returned function)."""
    real = module.fast

    class Warps:
        def __init__(self, kernel):
            self.fk = real(kernel)

        def __getitem__(self, grid):
            launch = self.fk[grid]
            return lambda *a, **kw: launch(*a, **{**kw, "num_warps": warps})

    module.fast = Warps
    return lambda: setattr(module, "fast", real)


def variants(q, k, v, pm, S, H, p, L) -> dict:
    """Span rows and warps of the norm, pool and spread kernels around the defaults (which
    are marked *), each timed alone."""
    from lighthouse_attn.ops.triton import window

    N = q.shape[2]
    dout = torch.randn_like(q)
    g = [torch.randn(1, H, S, q.shape[3], device="cuda", dtype=q.dtype) for _ in range(3)]
    stages = {
        "pool dO": lambda: pool([dout], pm, S, [H], [1], [1], True, False, p, L),
        "pool q,k,v": lambda: pool([q, k, v], pm, S, [H] * 3, [1] * 3, [1] * 3, False, True,
                                   p, L),
        "spread o": lambda: window.spread(g[:1], pm, N, [H], [1], [1], True, False, p, L),
        "spread dq,dk,dv": lambda: window.spread(g, pm, N, [H] * 3, [1] * 3, [1] * 3, False,
                                                 True, p, L),
    }
    plan, spread_rows, block_r = window.pool_plan, window.SPREAD_ROWS, scores.BLOCK_R
    out = {}
    for warps in (2, 4, 8):
        restore = [_with_warps(window, warps), _with_warps(scores, warps)]
        try:
            for rows in (16, 32, 64, 128, 256):
                window.pool_plan = lambda *a, _r=rows: (_r, False)
                window.SPREAD_ROWS = rows
                scores.BLOCK_R = rows
                mark = lambda name, r=rows: "*" if (warps == 4 and r == {  # noqa: E731
                    "pool": plan(p, L, 128)[0], "spread": spread_rows,
                    "norms": block_r}[name.split()[0]]) else ""
                for name, fn in stages.items():
                    if rows >= 64 or name.startswith("spread"):
                        out[f"{name} rows={rows} warps={warps}{mark(name)}"] = gpu_us(fn)
                if rows <= 128:
                    out[f"norms rows={rows} warps={warps}{mark('norms')}"] = gpu_us(
                        lambda: scores.row_norms_pair(q, k))
        finally:
            window.pool_plan, window.SPREAD_ROWS, scores.BLOCK_R = plan, spread_rows, block_r
            for r in restore:
                r()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="stages.json")
    ap.add_argument("--variants", action="store_true",
                    help="also sweep span rows and warps of the norm, pool and spread kernels")
    args = ap.parse_args()
    res = {"device": torch.cuda.get_device_name(), "cases": []}
    for N, K in ((32768, 512), (131072, 2048)):
        H, D = 8, 128
        cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=K, backend="triton")
        S = cfg.gathered_length(N)
        q, k, v = (torch.randn(1, H, N, D, device="cuda", dtype=torch.bfloat16)
                   for _ in range(3))
        sq0, sk0 = scores.row_norms_pair(q, k)
        _, pm = select_with_map(sq0, sk0, cfg, with_selection=False)
        case = {"N": N, "K": K}
        case["norms"] = gpu_us(lambda: scores.row_norms_pair(q, k))
        case["select (map only)"] = gpu_us(
            lambda: select_with_map(sq0, sk0, cfg, with_selection=False))
        case["select (with selection)"] = gpu_us(lambda: select_with_map(sq0, sk0, cfg))
        args3 = ([q, k, v], pm, S, [H] * 3, [1] * 3, [1] * 3, False, True, 4, 3)
        case["pool q,k,v"] = gpu_us(lambda: pool(*args3))
        # as the eager layer runs them: the norm kernel also pools q and k's coarsest level
        coarsest = scores.row_norms_and_means(q, k, 16)[2:]
        case["norms + q,k coarsest level"] = gpu_us(
            lambda: scores.row_norms_and_means(q, k, 16))
        case["pool q,k,v (q,k coarsest given)"] = gpu_us(lambda: pool(*args3, coarsest))
        case["copy 3 x q (clone)"] = gpu_us(lambda: [x.clone() for x in (q, k, v)])
        if args.variants:
            case["variants"] = variants(q, k, v, pm, S, H, 4, 3)
        res["cases"].append(case)
        print(json.dumps(case, indent=1))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
