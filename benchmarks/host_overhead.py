"""Host (CPU) cost of each call of the fast path at one shape, and the layer's time with and
without a sync per step: where a small layer is dispatch-bound rather than GPU-bound.

    python benchmarks/host_overhead.py --seq-len 32768 --topk 512 --out host.json

"host_us": Python + launch time per call, measured over back-to-back calls without a sync.
"""

import json
import time

import torch
import triton
import triton.language as tl
from layer_case import case_arguments, case_of

from lighthouse_attn import lighthouse_attention
from lighthouse_attn.bench.common import steady_ms, time_ms, warm_up_gpu
from lighthouse_attn.ops.inner import fast_causal_attention
from lighthouse_attn.ops.triton.scores import row_norms_pair
from lighthouse_attn.ops.triton.select import select_with_map
from lighthouse_attn.ops.triton.window import gather_pooled, pool, spread


@triton.jit
def _empty(x_ptr):
    pass


@triton.jit
def _empty_many(a, b, c, d, e, f, g, n0, n1, n2, n3, n4, n5, n6, n7, n8, n9, n10, n11, n12,
                n13, n14, n15, n16, n17, n18, n19, n20, X: tl.constexpr, Y: tl.constexpr):
    pass


def host_us(fn, calls: int = 200) -> float:
    fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        fn()
    t1 = time.perf_counter()
    torch.cuda.synchronize()
    return round((t1 - t0) / calls * 1e6, 1)


def main() -> None:
    args = case_arguments("host.json").parse_args()
    case = case_of(args)
    cfg, N, H, S = case.cfg, case.N, case.H, case.S
    q, k, v, qs, ks, vs, gs = case.q, case.k, case.v, case.qs, case.ks, case.vs, case.gs
    with torch.no_grad():
        sq0, sk0 = row_norms_pair(q, k)
        sel, pm = select_with_map(sq0, sk0, cfg)
    x = torch.empty(16, device="cuda")
    ints = list(range(1, 22))

    layer, inner_aten = case.layer, case.inner

    def inner():
        out = fast_causal_attention(qs, ks, vs)
        torch.autograd.grad(out, (qs, ks, vs), gs)

    with torch.no_grad():
        host = {
            "empty triton launch (1 arg)": host_us(lambda: _empty[(1,)](x)),
            "empty triton launch (28 args)": host_us(
                lambda: _empty_many[(1,)](x, x, x, x, x, x, x, *ints, X=1, Y=2)),
            "torch.empty": host_us(lambda: torch.empty(1024, device="cuda")),
            "row_norms_pair": host_us(lambda: row_norms_pair(q, k)),
            "select_with_map": host_us(lambda: select_with_map(sq0, sk0, cfg)),
            "pool q,k,v": host_us(lambda: pool([q, k, v], pm, S, [H] * 3, [1] * 3, [1] * 3,
                                               False, True, 4, 3)),
            "spread o": host_us(lambda: spread([qs], pm, N, [H], [1], [1], True, False, 4, 3)),
            "inner fwd (fast_causal_attention)": host_us(
                lambda: fast_causal_attention(qs, ks, vs)),
            "inner fwd (aten cudnn op)": host_us(
                lambda: torch.ops.aten._scaled_dot_product_cudnn_attention(
                    qs, ks, vs, None, True, 0.0, True, False)),
            "lighthouse fwd (no grad)": host_us(lambda: lighthouse_attention(q, k, v, cfg)),
        }
    host["gather_pooled fwd (autograd Function)"] = host_us(
        lambda: gather_pooled([q, k, v], pm, S, [H] * 3, [1] * 3, [1] * 3, False, True, 4, 3))
    host["lighthouse fwd (grad)"] = host_us(lambda: lighthouse_attention(q, k, v, cfg))
    host["lighthouse fwd+bwd"] = host_us(layer, 50)
    host["inner fwd+bwd"] = host_us(inner, 50)
    host["inner fwd+bwd (aten cudnn op)"] = host_us(inner_aten, 50)
    warm_up_gpu(2)
    timing = {
        "layer synced per step (bench method)": round(time_ms(layer, 3, 20)["median_ms"], 4),
        "layer back-to-back": round(steady_ms(layer, 50, 3)["median_ms"], 4),
        "inner synced per step": round(time_ms(inner, 3, 20)["median_ms"], 4),
        "inner back-to-back": round(steady_ms(inner, 50, 3)["median_ms"], 4),
        "inner (aten op) synced per step": round(time_ms(inner_aten, 3, 20)["median_ms"], 4),
    }
    res = {"device": torch.cuda.get_device_name(), "N": N, "K": args.topk, "S": S,
           "host_us": host, "ms": timing,
           "cudnn_bwd_schema": str(
               torch.ops.aten._scaled_dot_product_cudnn_attention_backward.default._schema)}
    print(json.dumps(res, indent=1))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
