"""Where the C=1 context-parallel layer's time goes at 64K (bf16, L=3, p=4, K=1024,
forward+backward): for the single op and the sharded path, the host's own time per step
(behind a GPU sleep), the step synchronised after every call, the step with the sharded
path's collectives replaced by local copies (their in-step host cost, one process), and the
step replayed from a CUDA graph (the GPU's own time, no host in the way); then a CPU profile
of five steps of each (``<tag>_<op>_profile.txt``).

    torchrun --nproc-per-node 1 benchmarks/cp_c1_graphs.py TAG OUT_DIR [profile]

(``profile``: only the profiles, which also list where each copy and allocation was made.)

Run it twice with ``PYTHONPATH`` on two checkouts to compare them in one session.
"""

import cProfile
import io
import json
import pstats
import sys

import torch
import torch.distributed as dist
from host_timing import median_host_ms
from torch._C._profiler import _ExperimentalConfig

import lighthouse_attn.parallel.collectives as coll
from lighthouse_attn import LighthouseConfig, lighthouse_attention
from lighthouse_attn.bench.common import cuda_graph, sleep_cycles, time_ms
from lighthouse_attn.parallel import lighthouse_attention_cp

WATCHED = ("aten::copy_", "aten::clone", "cudaMemcpyAsync", "cudaMalloc",
           "cudaStreamSynchronize", "cudaDeviceSynchronize")


class _Copied:
    """The work handle of a collective done as a local copy: nothing to wait for."""

    def wait(self) -> None:
        pass


def _local_copy(out, x, group, async_op=False):
    """A one-process collective as a plain copy."""
    out.copy_(x.view_as(out))
    return _Copied()


def main() -> None:
    tag, out_dir = sys.argv[1], sys.argv[2]
    dist.init_process_group("nccl")
    torch.manual_seed(0)
    N, K, D = 65536, 1024, 128
    q, k, v = (torch.randn(1, 8, N, D, device="cuda", dtype=torch.bfloat16).requires_grad_()
               for _ in range(3))
    res = {"tag": tag, "device": torch.cuda.get_device_name(), "torch": torch.__version__,
           "seq_len": N, "topk": K}
    cycles = sleep_cycles(1.0)

    def step_of(fn, cfg):
        return lambda: torch.autograd.grad(fn(q, k, v, cfg).sum(), (q, k, v))

    for sel in ("paper", "causal") if sys.argv[3:] != ["profile"] else ():
        cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=K, selection=sel)
        single, cp = step_of(lighthouse_attention, cfg), step_of(lighthouse_attention_cp, cfg)
        r = {}
        for _ in range(3):
            single()
            cp()
        torch.cuda.synchronize()
        for name, fn in (("single", single), ("cp", cp)):
            r[f"{name}_host_ms"] = median_host_ms(fn, cycles)
            r[f"{name}_sync_ms"] = round(time_ms(fn, warmup=3, repeats=40)["median_ms"], 3)
        r["sync_ratio"] = round(r["cp_sync_ms"] / r["single_sync_ms"], 3)
        saved = coll.all_gather_into, coll.reduce_scatter_into  # one process: a copy each
        coll.all_gather_into = coll.reduce_scatter_into = _local_copy
        cp()
        torch.cuda.synchronize()
        r["cp_local_copies_host_ms"] = median_host_ms(cp, cycles)
        r["cp_local_copies_sync_ms"] = round(time_ms(cp, warmup=3, repeats=40)["median_ms"], 3)
        coll.all_gather_into, coll.reduce_scatter_into = saved
        for name, fn in (("single", single), ("cp", cp)):
            try:
                replay = cuda_graph(fn)[0]
                r[f"{name}_graph_ms"] = round(time_ms(replay, warmup=3, repeats=40)
                                              ["median_ms"], 3)
            except Exception as err:  # noqa: BLE001 (recorded in the result)
                r[f"{name}_graph_error"] = repr(err)[:300]
                torch.cuda.synchronize()
        if "cp_graph_ms" in r and "single_graph_ms" in r:
            r["graph_ratio"] = round(r["cp_graph_ms"] / r["single_graph_ms"], 3)
        res[sel] = r
        print(tag, sel, json.dumps(r), flush=True)

    cfg = LighthouseConfig(num_levels=3, pooling_factor=4, topk=K, selection="paper")
    for name, fn in (("cp", step_of(lighthouse_attention_cp, cfg)),
                     ("single", step_of(lighthouse_attention, cfg))):
        fn()
        torch.cuda.synchronize()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU],
                                    record_shapes=True, with_stack=True,
                                    experimental_config=_ExperimentalConfig(verbose=True)
                                    ) as prof:
            for _ in range(5):
                fn()
            torch.cuda.synchronize()
        with open(f"{out_dir}/{tag}_{name}_profile.txt", "w") as f:
            f.write(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=60,
                                              max_name_column_width=60))
            f.write("\n\nWhere the copies and allocations come from (shapes; stack):\n")
            for evt in prof.key_averages(group_by_input_shape=True, group_by_stack_n=12):
                if evt.key in WATCHED:
                    f.write(f"\n{evt.key} x{evt.count}, self {evt.self_cpu_time_total:.0f} us, "
                            f"shapes {evt.input_shapes}\n    " + "\n    ".join(evt.stack)
                            + "\n")
        if sys.argv[3:] == ["profile"]:  # the host's Python, function by function
            stats = io.StringIO()
            with cProfile.Profile() as cprof:
                for _ in range(20):
                    fn()
                torch.cuda.synchronize()
            pstats.Stats(cprof, stream=stats).sort_stats("tottime").print_stats(45)
            with open(f"{out_dir}/{tag}_{name}_profile.txt", "a") as f:
                f.write("\n\ncProfile of 20 steps:\n" + stats.getvalue())
    with open(f"{out_dir}/{tag}.json", "w") as f:
        json.dump(res, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
