"""Where an eager training step's GPU time goes, stage 1 against dense: the profiler's device
time of one optimizer step of a preset model (``bench train``'s own step: bf16 autocast,
activation checkpointing, AdamW), summed by kind of kernel, with the step's wall time and the
largest kernels.

    python benchmarks/train_step_profile.py --seq-len 98304 --out step_profile.json

Kinds, by kernel name: ``attention`` (cuDNN's and flash's attention kernels: the dense layers'
and Lighthouse's inner attention), ``lighthouse`` (our Triton kernels), ``matmul`` (GEMMs) and
``other`` (elementwise, norms, RoPE, loss, optimizer). ``--smoke`` runs the demo preset at 4K
on the CPU.
"""

import argparse
import json
import time
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from lighthouse_attn.bench.common import environment
from lighthouse_attn.bench.train import TrainBenchSettings, training_step
from lighthouse_attn.models.build import preset_model_config

KINDS = {
    "attention": ("sdpa", "flash", "fmha", "attention", "compute_dot_do_o", "convert_dq"),
    "lighthouse": ("_pool_kernel", "_spread_kernel", "_row_norms", "_select", "_map_kernel",
                   "_cascade", "_merge"),
    "matmul": ("gemm", "nvjet", "cutlass", "xmma", "sm90_", "sm80_"),
}


def kind_of(name: str) -> str:
    low = name.lower()
    for kind, keys in KINDS.items():
        if any(k in low for k in keys):
            return kind
    return "other"


def profile_mode(config, mode: str, seq_len: int, steps: int, device: torch.device) -> dict:
    """Two untimed steps, then ``steps`` steps timed and profiled: per step, wall time,
    device time by kind and the 15 largest kernels."""
    cuda = device.type == "cuda"
    step = training_step(config, mode, TrainBenchSettings(seq_len=seq_len), device, bf16=cuda)
    for _ in range(2):
        step()
    with profile(activities=[ProfilerActivity.CUDA if cuda else ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        wall = (time.perf_counter() - t0) / steps
    kernels = defaultdict(lambda: [0.0, 0])
    for e in prof.key_averages():
        us = e.self_device_time_total if cuda else 0.0
        if us > 0:
            kernels[e.key[:90]][0] += us / steps / 1e3
            kernels[e.key[:90]][1] += e.count // steps
    by_kind = defaultdict(float)
    for name, (ms, _) in kernels.items():
        by_kind[kind_of(name)] += ms
    top = sorted(kernels.items(), key=lambda kv: -kv[1][0])[:15]
    return {"mode": mode, "wall_ms": round(wall * 1e3, 1),
            "device_ms": round(sum(by_kind.values()), 1),
            "by_kind_ms": {k: round(v, 1) for k, v in sorted(by_kind.items())},
            "top_kernels": [{"name": n, "ms": round(ms, 2), "calls": c} for n, (ms, c) in top]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="paper-268m")
    ap.add_argument("--seq-len", type=int, default=98304)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--out", default="step_profile.json")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    if args.smoke:
        args.preset, args.seq_len, args.steps = "demo", 4096, 1
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    config = preset_model_config(args.preset)
    res = {"benchmark": "train_step_profile", **environment(), "preset": args.preset,
           "seq_len": args.seq_len, "steps": args.steps,
           "precision": "bf16 autocast" if device.type == "cuda" else "fp32",
           "activation_checkpointing": True, "modes": {}}
    for mode in ("lighthouse", "dense"):
        res["modes"][mode] = r = profile_mode(config, mode, args.seq_len, args.steps, device)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the previous mode's model is gone with its frame
        print(json.dumps({k: v for k, v in r.items() if k != "top_kernels"}), flush=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
