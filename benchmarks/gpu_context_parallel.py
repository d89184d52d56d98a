"""The context-parallel ops on one GPU with one process (C=1: two chunks, the spill exchanged
between them) against the single-device ops on the same inputs: exactness, then forward and
forward+backward times (and the host's own time per forward+backward, and the calls where it
waits for the GPU), then a profile of where the sharded path spends its time.

    torchrun --nproc-per-node 1 benchmarks/gpu_context_parallel.py --out cp_c1.json

Rows: Lighthouse (both selections) at 64K (L=3, p=4, K=1024; fp32 and bf16), 128K (K=2048)
and 1M (L=4, K=4096) in bf16, and the dense layer (``dense_attention_cp`` against causal SDPA)
at 64K and 128K. ``--profile`` adds, for the single op and the sharded path at 64K and 128K
(bf16), the device time and kernels per step and the operators with the most device time by
input shapes, as ``torch.profiler`` sees them (``<out>.profile.txt``). ``--smoke`` runs tiny
cases on the CPU (gloo) to check this script without a GPU.
"""

import argparse
import itertools
import json
import warnings

import torch
import torch.distributed as dist
import torch.nn.functional as F

from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.bench.common import environment, host_ms, sleep_cycles, time_ms
from lighthouse_attn.ops.lse_attention import attention_forward
from lighthouse_attn.parallel import dense_attention_cp, lighthouse_attention_cp

CASES = [  # (seq_len, num_levels, topk, dtypes)
    (65536, 3, 1024, (torch.float32, torch.bfloat16)),
    (131072, 3, 2048, (torch.bfloat16,)),
    (1048576, 4, 4096, (torch.bfloat16,)),
]
SMOKE_CASES = [(8192, 3, 512, (torch.float32,))]
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def host_ms_or_none(step, steps: int = 3) -> float | None:
    """The host's own time per ``step`` (``bench.common.host_ms``, behind 100 ms of GPU sleep
    per step); ``None`` off CUDA."""
    if DEVICE != "cuda":
        return None
    return host_ms(step, steps, sleep_cycles(100.0 * steps))


def sync_points(step) -> list[str] | None:
    """Where one ``step`` makes the host wait for the GPU (``torch.cuda``'s sync debug mode:
    each synchronizing call as ``file:line: message``); ``None`` off CUDA."""
    if DEVICE != "cuda":
        return None
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sorted({f"{w.filename}:{w.lineno}: {str(w.message).splitlines()[0]}"
                   for w in caught if "debug mode is a prototype" not in str(w.message)})


def compare(single, sharded, q, k, v) -> dict:
    """Relative differences of outputs and gradients, the two ops' times, the host's own
    time per forward+backward, and where a forward+backward waits for the GPU."""
    ref, out = single(), sharded()
    w = torch.randn_like(ref)
    ref_grads = torch.autograd.grad((ref * w).sum(), (q, k, v))
    grads = torch.autograd.grad((out * w).sum(), (q, k, v))

    def step(fn):
        return lambda: torch.autograd.grad((fn() * w).sum(), (q, k, v))

    return {"rel_err_out": rel(out, ref),
            "rel_err_grads": max(rel(a, b) for a, b in zip(grads, ref_grads)),
            "single_ms": time_ms(single, 2, 10)["median_ms"],
            "cp_c1_ms": time_ms(sharded, 2, 10)["median_ms"],
            "single_fwd_bwd_ms": time_ms(step(single), 2, 10)["median_ms"],
            "cp_c1_fwd_bwd_ms": time_ms(step(sharded), 2, 10)["median_ms"],
            "single_fwd_bwd_host_ms": host_ms_or_none(step(single)),
            "cp_c1_fwd_bwd_host_ms": host_ms_or_none(step(sharded)),
            "single_sync_points": sync_points(step(single)),
            "cp_c1_sync_points": sync_points(step(sharded))}


def inputs(N: int, dtype: torch.dtype, heads: int = 8) -> list[torch.Tensor]:
    g = torch.Generator(device=DEVICE).manual_seed(N)
    return [torch.randn(1, heads, N, 128, device=DEVICE, dtype=dtype, generator=g)
            .requires_grad_() for _ in range(3)]


def inner_kernel(dtype: torch.dtype) -> str:
    """Which kernel runs the sharded path's inner attention in ``dtype`` here."""
    x = torch.randn(1, 8, 256, 128, device=DEVICE, dtype=dtype)
    return attention_forward(x, x, x, 1.0, causal=True)[2][0]


def _busy(prof) -> tuple[float, int]:
    """Device time (ms) and kernel count of the profiled kernels."""
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    return sum(e.device_time for e in kernels) / 1e3, len(kernels)


def profile(q, k, v, cfg: LighthouseConfig, steps: int = 3) -> str:
    """For the single op and the sharded path: wall and device time per forward+backward,
    kernels per step, and the operators with the most device time by input shapes."""
    text = []
    for name, fn in (("single op", lambda: lighthouse_attention(q, k, v, cfg)),
                     ("sharded, C=1", lambda: lighthouse_attention_cp(q, k, v, cfg))):
        def step():
            torch.autograd.grad(fn().sum(), (q, k, v))

        step()
        acts = [torch.profiler.ProfilerActivity.CPU]
        if DEVICE == "cuda":
            torch.cuda.synchronize()
            acts.append(torch.profiler.ProfilerActivity.CUDA)
        with torch.profiler.profile(activities=acts, record_shapes=True) as prof:
            for _ in range(steps):
                step()
            if DEVICE == "cuda":
                torch.cuda.synchronize()
        busy, kernels = _busy(prof)
        table = prof.key_averages(group_by_input_shape=True)
        text += [f"## {cfg.selection} selection, {name}, N={q.shape[2]}: per step "
                 f"{busy / steps:.3f} ms of kernels, {kernels / steps:.0f} kernels",
                 table.table(sort_by="cuda_time_total" if DEVICE == "cuda" else
                             "cpu_time_total", row_limit=30, max_name_column_width=50,
                             max_shapes_column_width=70)]
    return "\n".join(text)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="cp_c1.json")
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    dist.init_process_group("nccl" if DEVICE == "cuda" else "gloo")
    if DEVICE == "cuda":
        torch.cuda.set_device(0)
    rows = []
    dense_lengths = (2048,) if args.smoke else (65536, 131072)
    profile_cases = [(8192, 512)] if args.smoke else [(65536, 1024), (131072, 2048)]
    for N, L, K, dtypes in SMOKE_CASES if args.smoke else CASES:
        for dtype in dtypes:
            for selection in ("paper", "causal"):
                cfg = LighthouseConfig(num_levels=L, pooling_factor=4, topk=K,
                                       selection=selection)
                q, k, v = inputs(N, dtype)
                row = {"op": "lighthouse", "seq_len": N, "num_levels": L, "topk": K,
                       "dtype": str(dtype), "selection": selection,
                       "inner_kernel": inner_kernel(dtype),
                       **compare(lambda: lighthouse_attention(q, k, v, cfg),
                                 lambda: lighthouse_attention_cp(q, k, v, cfg), q, k, v)}
                print(row, flush=True)
                rows.append(row)
                del q, k, v
    dense_dtype = torch.float32 if args.smoke else torch.bfloat16
    for N in dense_lengths:
        q, k, v = inputs(N, dense_dtype)
        row = {"op": "dense", "seq_len": N, "dtype": str(dense_dtype),
               "inner_kernel": inner_kernel(dense_dtype),
               **compare(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True),
                         lambda: dense_attention_cp(q, k, v), q, k, v)}
        print(row, flush=True)
        rows.append(row)
    for row in rows:
        row["ratio"] = row["cp_c1_ms"] / row["single_ms"]
        row["ratio_fwd_bwd"] = row["cp_c1_fwd_bwd_ms"] / row["single_fwd_bwd_ms"]
    with open(args.out, "w") as f:
        json.dump({"benchmark": "context_parallel_c1", "environment": environment(),
                   "context_parallel": 1, "heads": 8, "head_dim": 128, "batch_size": 1,
                   "rows": rows}, f, indent=1)
    print(f"{'op':<10} {'N':>8} {'dtype':<15} {'selection':<7} {'single':>8} {'cp':>8} "
          f"{'ratio':>6} {'fwd+bwd ratio':>13} {'rel err':>8} {'host ms (single, cp)':>20}")
    for r in rows:
        host = "-" if r["cp_c1_fwd_bwd_host_ms"] is None else (
            f"{r['single_fwd_bwd_host_ms']:.2f}, {r['cp_c1_fwd_bwd_host_ms']:.2f}")
        print(f"{r['op']:<10} {r['seq_len']:>8} {r['dtype']:<15} {r.get('selection', '-'):<7} "
              f"{r['single_ms']:>8.2f} {r['cp_c1_ms']:>8.2f} {r['ratio']:>6.2f} "
              f"{r['ratio_fwd_bwd']:>13.2f} {r['rel_err_out']:>8.1e} {host:>20}")
    for r in rows:  # where a step waits for the GPU (a host-bound step should never)
        for side in ("single", "cp_c1"):
            for point in r[f"{side}_sync_points"] or []:
                print(f"sync in {r['op']} {r['seq_len']} {r['dtype']} {side}: {point}")
    if args.profile:
        text = []
        for (N, K), selection in itertools.product(profile_cases, ("paper", "causal")):
            q, k, v = inputs(N, dense_dtype)
            text.append(profile(q, k, v, LighthouseConfig(num_levels=3, pooling_factor=4,
                                                          topk=K, selection=selection)))
        with open(args.out.rsplit(".", 1)[0] + ".profile.txt", "w") as f:
            f.write("\n\n".join(text))
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
