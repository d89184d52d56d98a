"""RoPE inside the Lighthouse layer (``lighthouse_attention(..., rope=)``) against RoPE first,
as a model calls them: q, k, v in a projection's ``(B, N, H, D)`` memory, bf16, B=1, H=8,
D=128, forward+backward with a random output gradient.

Arms, each a forward+backward of everything from the unrotated q and k on:

- ``before``: two RoPE launches (q, then k) writing contiguous ``(B, H, N, D)`` tensors and
  gradients, then the op: the model up to this change;
- ``pair_contiguous``: one RoPE launch for q and k, contiguous as ``before``, then the op;
- ``pair``: one RoPE launch for q and k, laid out as the projection, then the op (the rotated
  rows scored by the op);
- ``inside``: the op with ``rope=`` (one launch scores the rotated rows, the pool rotates
  what it gathers and the spread rotates the gradients back: no rotated q or k written);
- ``rope``: the RoPE pair alone, and ``inner``: cuDNN's attention alone on the gathered length.

Per case: every kernel's device time inside each arm (the profiler, averaged over steps
issued back to back), the synced step (median wall time), and the largest differences of
``inside`` from ``pair`` (outputs and gradients). ``layer_over_inner`` is the layer's own
cost beyond RoPE against the inner attention: ``(arm - rope) / inner`` in kernel time, the
measure of docs/performance.md's layer table with RoPE counted as the model's.
``inside_kernel_us_by_pool_warps`` times ``inside`` again with the rotating pool on each of
``--pool-warps`` (it runs on ``gather_scatter.POOL_WARPS_ROPE``; 2 warps spill registers).

    python benchmarks/rope_in_layer.py --out rope_in_layer.json
    python benchmarks/rope_in_layer.py --smoke   # tiny, on the CPU (Triton interpreter)
"""

import argparse
import json
import os

import torch

CASES = [(32768, 3, 512), (131072, 3, 2048), (524288, 3, 2048), (1048576, 4, 4096)]


class _ContiguousRope(torch.autograd.Function):
    """RoPE of ``x`` into contiguous tensors both ways, as the kernel wrote them before it kept
    its input's layout (``x`` and ``y`` in one launch, or ``x`` alone with ``y`` empty)."""

    @staticmethod
    def forward(ctx, x, y, cos, sin):
        from lighthouse_attn.ops.triton.rope import _launch

        ctx.save_for_backward(cos, sin)
        ctx.strides = tuple(torch.empty(t.shape, device="meta").stride() for t in (x, y))
        return _launch(x, y, cos, sin, back=False, window=None, strides=ctx.strides)

    @staticmethod
    def backward(ctx, dx, dy):
        from lighthouse_attn.ops.triton.rope import _launch

        cos, sin = ctx.saved_tensors
        return (*_launch(dx, dy, cos, sin, back=True, window=None, strides=ctx.strides),
                None, None)


def _contiguous_rope(x, y, cos, sin):
    return _ContiguousRope.apply(x, x.new_empty(x.shape[0], 0, *x.shape[2:]) if y is None
                                 else y, cos, sin)


def _case(N: int, L: int, K: int, device: str, H: int = 8, D: int = 128,
          dtype=torch.bfloat16) -> dict:
    """The arms' steps at ``(N, L, K)`` on ``device``."""
    from lighthouse_attn import LighthouseConfig, lighthouse_attention
    from lighthouse_attn.ops import rope_tables
    from lighthouse_attn.ops.triton.rope import rope_pair

    cfg = LighthouseConfig(num_levels=L, pooling_factor=4, topk=K, backend="triton")
    S = cfg.gathered_length(N)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, N, H * D, generator=g).to(device, dtype)
               .view(1, N, H, D).transpose(1, 2).requires_grad_() for _ in range(3))
    dout = torch.randn(1, N, H * D, generator=g).to(device, dtype).view(1, N, H, D)
    dout = dout.transpose(1, 2)  # as o_proj's backward hands it over
    qs, ks, vs = (torch.randn(1, H, S, D, generator=g).to(device, dtype).requires_grad_()
                  for _ in range(3))
    gs = torch.randn_like(qs)
    tables = rope_tables(N, D, 10000.0, torch.device(device))

    def run(arm: str):
        if arm == "before":
            qr, kr = (_contiguous_rope(x, None, *tables)[0] for x in (q, k))
            out = lighthouse_attention(qr, kr, v, cfg)
        elif arm == "pair_contiguous":
            out = lighthouse_attention(*_contiguous_rope(q, k, *tables), v, cfg)
        elif arm == "pair":
            out = lighthouse_attention(*rope_pair(q, k, *tables), v, cfg)
        elif arm == "inside":
            out = lighthouse_attention(q, k, v, cfg, rope=tables)
        elif arm == "rope":
            qr, kr = rope_pair(q, k, *tables)
            return torch.autograd.grad((qr, kr), (q, k), (dout, dout[:, :k.shape[1]]))
        else:  # inner
            out = torch.ops.aten._scaled_dot_product_cudnn_attention(
                qs, ks, vs, None, True, 0.0, True, False)[0]
            return torch.autograd.grad(out, (qs, ks, vs), gs)
        return (out, *torch.autograd.grad(out, (q, k, v), dout))

    return {"S": S, "run": run}


def _diff(a: tuple, b: tuple) -> float:
    return max(float((x.detach().float() - y.detach().float()).abs().max())
               for x, y in zip(a, b))


def _by_pool_warps(step, warps: list[int], steps: int) -> dict[int, float]:
    """Kernel time (us) of ``step`` with the rotating pool on each number of ``warps``."""
    from layer_kernels import kernel_us

    from lighthouse_attn.ops.triton import gather_scatter

    default, res = gather_scatter.POOL_WARPS_ROPE, {}
    try:
        for w in warps:
            gather_scatter.POOL_WARPS_ROPE = w
            res[w] = round(sum(kernel_us(step, steps).values()), 1)
    finally:
        gather_scatter.POOL_WARPS_ROPE = default
    return res


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out")
    ap.add_argument("--smoke", action="store_true", help="tiny case on the CPU interpreter")
    ap.add_argument("--pool-warps", default="2,4,8",
                    help="warps of the rotating pool to time the inside arm with")
    args = ap.parse_args()
    if args.smoke:
        os.environ["TRITON_INTERPRET"] = "1"
        c = _case(2048, 3, 128, "cpu", H=1, D=16, dtype=torch.float32)
        arms = {a: c["run"](a) for a in ("before", "pair_contiguous", "pair", "inside")}
        print(json.dumps({"smoke": True, "inside_vs_pair": _diff(arms["inside"], arms["pair"]),
                          "before_vs_pair": _diff(arms["before"], arms["pair"]),
                          "pair_contiguous_vs_pair": _diff(arms["pair_contiguous"],
                                                           arms["pair"])}))
        return

    from layer_kernels import kernel_us

    from lighthouse_attn.bench.common import time_ms, warm_up_gpu

    warm_up_gpu(2)
    res = {"device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "dtype": "bf16", "heads": 8, "head_dim": 128, "layout": "(B, N, H, D) memory",
           "cases": []}
    for N, L, K in CASES:
        c = _case(N, L, K, "cuda")
        run = c["run"]
        row = {"N": N, "L": L, "K": K, "S": c["S"],
               "inside_vs_pair_max_diff": _diff(run("inside"), run("pair"))}
        for arm in ("before", "pair_contiguous", "pair", "inside", "rope", "inner"):
            kernels = kernel_us(lambda arm=arm: run(arm), args.steps)
            row[f"{arm}_kernel_us"] = round(sum(kernels.values()), 1)
            row[f"{arm}_kernels"] = kernels
            row[f"{arm}_sync_ms"] = time_ms(lambda arm=arm: run(arm), 3, 20)["median_ms"]
        row["inside_kernel_us_by_pool_warps"] = _by_pool_warps(
            lambda: run("inside"), [int(w) for w in args.pool_warps.split(",")], args.steps)
        for arm in ("before", "pair_contiguous", "pair", "inside"):
            row[f"{arm}_layer_over_inner"] = round(
                (row[f"{arm}_kernel_us"] - row["rope_kernel_us"]) / row["inner_kernel_us"], 4)
        res["cases"].append(row)
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("_kernels")}),
              flush=True)
        c = run = None  # free the case before the next
        torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
