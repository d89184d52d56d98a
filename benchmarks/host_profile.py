"""Where the host time of one Lighthouse layer step (forward+backward) goes: the step's host
time without a sync, and the Python functions that take it (cProfile, sorted by own time).

    python benchmarks/host_profile.py --seq-len 32768 --topk 512 --out host_profile.txt

Run it with LIGHTHOUSE_TRITON_LAUNCH=jit to compare with triton's own launcher.
"""

import cProfile
import io
import os
import pstats
import time

import torch
from layer_case import case_arguments, case_of


def main() -> None:
    args = case_arguments("host_profile.txt").parse_args()
    step = case_of(args).layer
    for _ in range(10):
        step()
    torch.cuda.synchronize()
    steps = 100
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    host_us = (time.perf_counter() - t0) / steps * 1e6
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step()
    prof.disable()
    torch.cuda.synchronize()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(30)
    launch = os.environ.get("LIGHTHOUSE_TRITON_LAUNCH", "direct")
    head = (f"N={args.seq_len} K={args.topk} deterministic={args.deterministic} launch={launch}"
            f": host {host_us:.1f} us per step (no profiler); profile of {steps} steps:\n")
    with open(args.out, "w") as f:
        f.write(head + buf.getvalue())
    print(head + "\n".join(buf.getvalue().splitlines()[:45]))


if __name__ == "__main__":
    main()
