"""The probes' shared case: one Lighthouse layer at (N, K) on random bf16 inputs (B=1, H=8,
D=128), the inner attention alone on its gathered length S, and a forward+backward step of
each (imported by the scripts beside it: benchmarks/ is on their path)."""

import argparse
from types import SimpleNamespace

import torch

from lighthouse_attn import LighthouseConfig, lighthouse_attention


def layer_case(seq_len: int, topk: int, deterministic: bool = False, num_levels: int = 3,
               pooling_factor: int = 4, device: str = "cuda", heads: int = 8,
               head_dim: int = 128) -> SimpleNamespace:
    """``cfg, N, H, S``, inputs ``q, k, v, dout`` and ``qs, ks, vs, gs`` (gathered length),
    and steps ``layer()`` and ``inner()`` (cuDNN's op called directly, as the layer does)."""
    cfg = LighthouseConfig(num_levels=num_levels, pooling_factor=pooling_factor, topk=topk,
                           backend="triton", deterministic=deterministic)
    N, H, D = seq_len, heads, head_dim
    S = cfg.gathered_length(N)
    q, k, v, qs, ks, vs = (
        torch.randn(1, H, n, D, device=device, dtype=torch.bfloat16, requires_grad=True)
        for n in (N, N, N, S, S, S))
    dout, gs = torch.randn_like(q), torch.randn_like(qs)

    def layer():
        out = lighthouse_attention(q, k, v, cfg)
        torch.autograd.grad(out, (q, k, v), dout)

    def inner():
        out = torch.ops.aten._scaled_dot_product_cudnn_attention(
            qs, ks, vs, None, True, 0.0, True, False)[0]
        torch.autograd.grad(out, (qs, ks, vs), gs)

    return SimpleNamespace(cfg=cfg, N=N, H=H, S=S, q=q, k=k, v=v, dout=dout, qs=qs, ks=ks,
                           vs=vs, gs=gs, layer=layer, inner=inner)


def case_arguments(out: str | None) -> argparse.ArgumentParser:
    """A parser with the probes' shared options: ``--seq-len``, ``--topk``, ``--num-levels``,
    ``--deterministic`` and ``--out`` (default ``out``); add a probe's own ones to it."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-len", type=int, default=32768)
    ap.add_argument("--topk", type=int, default=512)
    ap.add_argument("--num-levels", type=int, default=3)
    ap.add_argument("--deterministic", action="store_true")
    ap.add_argument("--out", default=out)
    return ap


def case_of(args: argparse.Namespace) -> SimpleNamespace:
    """:func:`layer_case` for the options of :func:`case_arguments`."""
    return layer_case(args.seq_len, args.topk, args.deterministic, args.num_levels)
