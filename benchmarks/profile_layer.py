"""Profile one Lighthouse layer (fwd+bwd) on the GPU: where the time goes, CPU side and GPU side.

    python benchmarks/profile_layer.py --seq-len 32768 --topk 512 --out prof_32k.txt
"""

import argparse
import time

import torch
from torch.profiler import ProfilerActivity, profile

from lighthouse_attn import LighthouseConfig, lighthouse_attention

parser = argparse.ArgumentParser()
parser.add_argument("--seq-len", type=int, default=32768)
parser.add_argument("--topk", type=int, default=512)
parser.add_argument("--num-levels", type=int, default=3)
parser.add_argument("--pooling-factor", type=int, default=4)
parser.add_argument("--out", default="profile.txt")
args = parser.parse_args()

cfg = LighthouseConfig(num_levels=args.num_levels, pooling_factor=args.pooling_factor,
                       topk=args.topk, backend="triton")
q, k, v = (torch.randn(1, 8, args.seq_len, 128, device="cuda", dtype=torch.bfloat16,
                       requires_grad=True) for _ in range(3))
g = torch.randn_like(q)


def step():
    out = lighthouse_attention(q, k, v, cfg)
    torch.autograd.grad(out, (q, k, v), g)


for _ in range(5):
    step()
torch.cuda.synchronize()
t0 = time.perf_counter()
for _ in range(20):
    step()
cpu_issue = (time.perf_counter() - t0) / 20 * 1e3  # host time per step (launch-bound if ~= wall)
torch.cuda.synchronize()
wall = (time.perf_counter() - t0) / 20 * 1e3
with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
    for _ in range(5):
        step()
    torch.cuda.synchronize()
table_cpu = prof.key_averages().table(sort_by="cpu_time_total", row_limit=25)
table_gpu = prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=25)
gpu_busy = sum(e.self_device_time_total for e in prof.key_averages()) / 5 / 1e3
summary = (f"N={args.seq_len} K={args.topk}: wall {wall:.3f} ms/step, host issue "
           f"{cpu_issue:.3f} ms/step, GPU busy {gpu_busy:.3f} ms/step")
with open(args.out, "w") as f:
    f.write(summary + "\n\nby CPU total\n" + table_cpu + "\n\nby GPU self\n" + table_gpu)
print(summary)
