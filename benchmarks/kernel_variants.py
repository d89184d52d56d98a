"""Device-side experiment: pool kernel variants and dispatch overheads (see benchmarks/NOTES.md).

    python benchmarks/kernel_variants.py --out results.json
"""

import argparse
import json
import time

import torch
import triton
import triton.language as tl

from lighthouse_attn import LighthouseConfig
from lighthouse_attn.bench.common import environment, time_ms
from lighthouse_attn.ops.triton.scores import row_norms_triton
from lighthouse_attn.ops.triton.select import select_from_base_scores
from lighthouse_attn.ops.triton.window import _acc, pool, pool_op, position_map, spread


@triton.jit
def _pool3d_kernel(x_ptr, map_ptr, out_ptr, N, M, D, out_heads, x_div, sel_div, sel_heads,
                   sxb, sxh, sxn, sob, soh, sos,
                   SHIFT: tl.constexpr, MEAN: tl.constexpr, L: tl.constexpr, P: tl.constexpr,
                   LOG2P: tl.constexpr, ROWS: tl.constexpr, BLOCK_D: tl.constexpr,
                   ACC: tl.constexpr):
    """Variant B: per level, a (ROWS/W, W, D) load of the span reduced over the window axis."""
    pid_u = tl.program_id(0)
    pid_bh = tl.program_id(1)
    b = pid_bh // out_heads
    o = pid_bh % out_heads
    u0 = pid_u * ROWS
    d = tl.arange(0, BLOCK_D)
    md = d < D
    x_base = x_ptr + b.to(tl.int64) * sxb + (o // x_div).to(tl.int64) * sxh
    map_row = map_ptr + (b * sel_heads + o // sel_div).to(tl.int64) * M
    out_base = out_ptr + b.to(tl.int64) * sob + o.to(tl.int64) * soh
    level_off = 0
    for lvl in tl.static_range(L):
        m = (u0 >> (lvl * LOG2P)) + tl.arange(0, ROWS // (P**lvl)) - SHIFT
        ok = (m >= 0) & (m < (N >> (lvl * LOG2P)))
        s = tl.load(map_row + level_off + m, mask=ok, other=-1)
        ok = ok & (s >= 0)
        t = (u0 + tl.arange(0, ROWS // (P**lvl))[:, None] * (P**lvl)
             + tl.arange(0, P**lvl)[None, :] - SHIFT)
        mt = ok[:, None] & (t >= 0) & (t < N)
        x = tl.load(x_base + t[:, :, None].to(tl.int64) * sxn + d[None, None, :],
                    mask=mt[:, :, None] & md[None, None, :], other=0.0).to(ACC)
        val = tl.sum(x, axis=1)
        if MEAN:
            val = val * (1.0 / (P**lvl))
        tl.store(out_base + s[:, None].to(tl.int64) * sos + d[None, :],
                 val.to(out_ptr.dtype.element_ty), mask=ok[:, None] & md[None, :])
        level_off += N >> (lvl * LOG2P)


def pool3d(x, pm, S, H, p, L, shift, mean, rows):
    B, _, N, D = x.shape
    out = x.new_empty(B, H, S, D)
    grid = (triton.cdiv(N + (p ** (L - 1) if shift else 0), rows), B * H)
    _pool3d_kernel[grid](x, pm, out, N, pm.shape[2], D, H, 1, 1, pm.shape[1],
                         x.stride(0), x.stride(1), x.stride(2), out.stride(0), out.stride(1),
                         out.stride(2), SHIFT=int(shift), MEAN=mean, L=L, P=p,
                         LOG2P=p.bit_length() - 1, ROWS=rows, BLOCK_D=triton.next_power_of_2(D),
                         ACC=_acc(x.dtype), num_warps=4)
    return out


class _PoolFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, pm, S, H, p, L):
        ctx.save_for_backward(pm)
        ctx.args = (x.shape[2], H, p, L)
        return pool(x, pm, S, H, 1, 1, False, True, p, L)

    @staticmethod
    def backward(ctx, g):
        (pm,) = ctx.saved_tensors
        N, H, p, L = ctx.args
        dx = spread(g.contiguous(), pm, N, H, 1, 1, False, True, p, L)
        return dx, None, None, None, None, None


def host_us(fn, n=200):
    for _ in range(10):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    host = (time.perf_counter() - t0) / n * 1e6
    torch.cuda.synchronize()
    return host


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="variants.json")
    args = ap.parse_args()
    res = {"environment": environment(), "pool": [], "overhead_us": {}}
    for N, K, L, p in ((32768, 512, 3, 4), (524288, 2048, 3, 4), (1048576, 4096, 4, 4)):
        cfg = LighthouseConfig(num_levels=L, pooling_factor=p, topk=K, backend="triton")
        x = torch.randn(1, 8, N, 128, device="cuda", dtype=torch.bfloat16)
        sel = select_from_base_scores(row_norms_triton(x), row_norms_triton(x), cfg)
        S = sel.level.shape[2]
        pm = position_map(sel, N, p, L)
        ref = pool(x, pm, S, 8, 1, 1, False, True, p, L)
        row = {"seq_len": N, "topk": K, "num_levels": L, "bytes_read_gb": x.numel() * 2 / 1e9}
        for rows in (32, 64, 128):
            if rows < p ** (L - 1):
                continue
            got = pool3d(x, pm, S, 8, p, L, False, True, rows)
            row[f"B_rows{rows}_maxerr"] = (got.float() - ref.float()).abs().max().item()
            row[f"B_rows{rows}_ms"] = time_ms(lambda r=rows: pool3d(x, pm, S, 8, p, L, False,
                                                                     True, r), 3, 20)["median_ms"]
        timed = {
            "A_ms": lambda: pool(x, pm, S, 8, 1, 1, False, True, p, L),
            "A_shift_ms": lambda: pool(x, pm, S, 8, 1, 1, True, False, p, L),
            "spread_ms": lambda: spread(ref, pm, N, 8, 1, 1, True, False, p, L),
            "row_norms_ms": lambda: row_norms_triton(x),
            "torch_norm_fp32_ms": lambda: torch.linalg.vector_norm(x, dim=-1,
                                                                   dtype=torch.float32),
            "select_ms": lambda: select_from_base_scores(row_norms_triton(x),
                                                         row_norms_triton(x), cfg),
        }
        for name, fn in timed.items():
            row[name] = time_ms(fn, 3, 20)["median_ms"]
        row["copy_ms"] = time_ms(lambda: x.clone(), 3, 20)["median_ms"]
        res["pool"].append(row)
        print(row, flush=True)
        if N == 32768:
            xg = x.detach().requires_grad_()
            res["overhead_us"] = {
                "raw_launch": host_us(lambda: pool(x, pm, S, 8, 1, 1, False, True, p, L)),
                "autograd_function": host_us(lambda: _PoolFn.apply(xg, pm, S, 8, p, L)),
                "custom_op": host_us(lambda: pool_op(xg, pm, S, 8, 1, 1, False, True, p, L)),
                "custom_op_nograd": host_us(lambda: pool_op(x, pm, S, 8, 1, 1, False, True, p, L)),
                "torch_empty": host_us(lambda: torch.empty(1, 8, S, 128, device="cuda")),
            }
            print(res["overhead_us"], flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)


if __name__ == "__main__":
    main()
