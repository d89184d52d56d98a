"""Host time of one collective call with one process, as the context-parallel op issues them:
through ``torch.distributed`` (``all_gather_into_tensor`` / ``reduce_scatter_tensor``) against
the process group's own methods (``_allgather_base`` / ``_reduce_scatter_base``), which skip
the Python checks in between. Calls are issued back to back; the GPU work is tiny.

    torchrun --nproc-per-node 1 benchmarks/collective_host.py --out collective_host.json

``--smoke`` runs on the CPU (gloo).
"""

import json
import time

import torch
import torch.distributed as dist
from host_timing import one_process_parser, start_one_process


def per_call_us(fn, calls: int, sync) -> float:
    for _ in range(10):
        fn()
    sync()
    t = time.perf_counter()
    for _ in range(calls):
        fn()
    elapsed = time.perf_counter() - t
    sync()
    return round(elapsed / calls * 1e6, 1)


def main() -> None:
    ap = one_process_parser("collective_host.json")
    ap.add_argument("--calls", type=int, default=500)
    args = ap.parse_args()
    device = start_one_process(args.smoke)
    pg = dist.group.WORLD
    world = dist.get_world_size()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    res = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
           "torch": torch.__version__, "world": world, "calls": args.calls, "us_per_call": {}}
    for name, numel in (("tail 2x8x15x128 fp32", 2 * 8 * 15 * 128),
                        ("gathered kv 64K 2x2x8x2560x128 bf16", 2 * 2 * 8 * 2560 * 128)):
        dtype = torch.float32 if "fp32" in name else torch.bfloat16
        x = torch.randn(numel, device=device).to(dtype)
        out = x.new_empty(world * numel)
        rs_out = x.new_empty(numel // world)
        cases = {
            "all_gather via torch.distributed":
                lambda: dist.all_gather_into_tensor(out, x, group=pg),
            "all_gather via the process group":
                lambda: pg._allgather_base(out, x).wait(),
            "reduce_scatter via torch.distributed":
                lambda: dist.reduce_scatter_tensor(rs_out, x, group=pg),
            "reduce_scatter via the process group":
                lambda: pg._reduce_scatter_base(rs_out, x).wait(),
            "one copy_ (for scale)": lambda: out[:numel].copy_(x),
        }
        res["us_per_call"][name] = {k: per_call_us(f, args.calls, sync) for k, f in cases.items()}
        print(name, json.dumps(res["us_per_call"][name]))
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
