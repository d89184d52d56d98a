"""GPU time of the forward stage kernels alone (20 launches captured in a CUDA graph per
timing, median of 7), beside a plain copy of q, k and v.

    python benchmarks/stage_probe.py --out stages.json
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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="stages.json")
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
        case["copy 3 x q (clone)"] = gpu_us(lambda: [x.clone() for x in (q, k, v)])
        res["cases"].append(case)
        print(json.dumps(case, indent=1))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
