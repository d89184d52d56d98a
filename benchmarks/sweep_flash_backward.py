"""Time the deterministic attention backward (ops/triton/flash_backward.py) against cuDNN's.

For each sequence length: cuDNN's backward alone, ours with the default launch configs and with
each config given (dK/dV configs with the default dQ one, then dQ configs with the default
dK/dV one), and forward+backward of fast_causal_attention in default and deterministic mode.
A config is BMxBNwWARPSsSTAGES, e.g. 64x128w8s2.

    python benchmarks/sweep_flash_backward.py --seq-lens 18432,98304 --heads 8 --kv-heads 8
"""

from __future__ import annotations

import argparse
import re

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from lighthouse_attn.bench.common import time_ms, warm_up_gpu
from lighthouse_attn.ops.attention import sdpa_causal
from lighthouse_attn.ops.inner import _forward_with_lse, fast_causal_attention
from lighthouse_attn.ops.triton.flash_backward import (
    KernelConfig,
    causal_attention_backward,
    default_configs,
)


def parse_config(text: str) -> KernelConfig:
    m = re.fullmatch(r"(\d+)x(\d+)w(\d+)s(\d+)", text.strip())
    if not m:
        raise SystemExit(f"bad config {text!r}: write BMxBNwWARPSsSTAGES, e.g. 64x128w8s2")
    return KernelConfig(*map(int, m.groups()))


def rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seq-lens", default="18432,49152,98304")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--dkdv", default="64x128w8s2,32x128w8s3,32x64w4s2,64x64w4s3",
                    help="comma-separated dK/dV configs to try (all compile with Triton 3.6)")
    ap.add_argument("--dq", default="128x64w8s2,128x128w8s2,64x32w4s2,128x32w8s3",
                    help="comma-separated dQ configs to try (all compile with Triton 3.6)")
    args = ap.parse_args()
    dkdv_list = [parse_config(c) for c in args.dkdv.split(",") if c]
    dq_list = [parse_config(c) for c in args.dq.split(",") if c]
    dkdv0, dq0 = default_configs(args.dim, torch.bfloat16)
    warm_up_gpu()
    print(f"{torch.cuda.get_device_name()}, B={args.batch} H={args.heads} "
          f"H_kv={args.kv_heads} D={args.dim} bf16; defaults dkdv={dkdv0} dq={dq0}")
    for S in map(int, args.seq_lens.split(",")):
        g = torch.Generator(device="cuda").manual_seed(S)
        shape = lambda h: (args.batch, h, S, args.dim)  # noqa: E731
        q, k, v = (torch.randn(*shape(h), device="cuda", dtype=torch.bfloat16, generator=g)
                   for h in (args.heads, args.kv_heads, args.kv_heads))
        do = torch.randn_like(q)
        scale = args.dim**-0.5
        x = [t.detach().requires_grad_() for t in (q, k, v)]
        with sdpa_kernel([SDPBackend.CUDNN_ATTENTION]):
            out = sdpa_causal(*x, scale)
        ref = torch.autograd.grad(out, x, do, retain_graph=True)
        t_cudnn = time_ms(lambda: torch.autograd.grad(out, x, do, retain_graph=True))["median_ms"]
        o, lse = _forward_with_lse(q, k, v, scale)
        rows = [("cudnn backward", t_cudnn, 0.0)]
        trials = [(dkdv0, dq0)] + [(c, dq0) for c in dkdv_list] + [(dkdv0, c) for c in dq_list]
        for dkdv, dq in trials:
            run = lambda: causal_attention_backward(do, q, k, v, o, lse, scale,  # noqa: E731
                                                    dkdv=dkdv, dq=dq)
            err = max(rel(a, b) for a, b in zip(run(), ref))
            name = "ours dkdv={}x{}w{}s{} dq={}x{}w{}s{}".format(*dkdv, *dq)
            rows.append((name, time_ms(run)["median_ms"], err))
        for det in (False, True):
            def step(det=det):
                y = fast_causal_attention(*x, scale, deterministic=det)
                torch.autograd.grad(y, x, do)
            rows.append((f"fwd+bwd deterministic={det}", time_ms(step)["median_ms"], 0.0))
        print(f"\nS={S}")
        for name, ms, err in rows:
            print(f"  {name:52s} {ms:9.3f} ms  x{ms / t_cudnn:5.2f} vs cudnn bwd"
                  + (f"  max rel err {err:.2e}" if err else ""))


if __name__ == "__main__":
    main()
