"""A whole training step (forward, backward, clipping, AdamW; bf16 autocast, activation
checkpointing) of a preset model with its attention under context parallelism over one
process (C=1: every layer runs the sharded ops, collectives included) against the same step
on the single-device ops, at each length: how much of the sharded layer's extra host work
(``gpu_context_parallel.py`` times the layer alone, synchronised after every call) the GPU
work of a whole step hides. Both variants start from the same weights and batch; their
first-step losses are recorded side by side.

    torchrun --nproc-per-node 1 benchmarks/gpu_cp_train_step.py --out cp_train_step.json

``--smoke`` runs the demo preset (K=256) at 8K on the CPU (gloo) to check this script.
"""

import contextlib
import gc
import json
import statistics
import time

import torch
import torch.distributed as dist
from host_timing import one_process_parser, start_one_process

from lighthouse_attn.bench.common import environment
from lighthouse_attn.models import model_from_config
from lighthouse_attn.models.build import preset_lighthouse, preset_model_config
from lighthouse_attn.train.distributed import DistEnv
from lighthouse_attn.train.loop import make_optimizer, train_step
from lighthouse_attn.train.options import TrainConfig
from lighthouse_attn.train.parallelize import parallelize


def step_times(config, seq_len: int, sharded: bool, device: torch.device, steps: int,
               warmup: int) -> tuple[list[float], float]:
    """Seconds per timed step and the first step's loss."""
    torch.manual_seed(0)
    model = model_from_config(config).to(device)
    model.set_attention("lighthouse")
    if sharded:  # set_context_parallel turns a group of one off; this keeps it on
        for block in model.layers:
            block.attn.cp_group = dist.group.WORLD
    model = parallelize(model, activation_checkpointing=True)
    optimizer = make_optimizer(model, TrainConfig(run_dir=""), device)
    env = DistEnv(0, 1, device)
    rows = torch.randint(0, 256, (1, seq_len + 1), generator=torch.Generator().manual_seed(0))
    batch = [(rows[:, :-1], rows[:, 1:])]
    cuda = device.type == "cuda"
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if cuda
                else contextlib.nullcontext())
    times, first = [], None
    for i in range(warmup + steps):
        t = time.perf_counter()
        loss, _ = train_step(model, optimizer, batch, autocast, 1.0, env)
        if cuda:
            torch.cuda.synchronize()
        first = loss if first is None else first
        if i >= warmup:
            times.append(time.perf_counter() - t)
    del model, optimizer
    gc.collect()
    if cuda:
        torch.cuda.empty_cache()
    return times, first


def main() -> None:
    ap = one_process_parser("cp_train_step.json")
    ap.add_argument("--preset", default="paper-268m")
    ap.add_argument("--seq-lens", default="65536,131072")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    args = ap.parse_args()
    device = torch.device(start_one_process(args.smoke))
    preset, lens = ("demo", [8192]) if args.smoke else (
        args.preset, [int(n) for n in args.seq_lens.split(",")])
    config = (preset_model_config(preset, lighthouse=preset_lighthouse(preset, topk=256))
              if args.smoke else preset_model_config(preset))  # K: whole tiles per chunk
    res = {"benchmark": "cp_train_step", **environment(), "preset": preset,
           "steps": args.steps, "warmup": args.warmup, "model": config.to_dict(), "rows": []}
    for seq_len in lens:
        row = {"seq_len": seq_len}
        for name, sharded in (("single", False), ("cp_c1", True)):
            times, loss = step_times(config, seq_len, sharded, device, args.steps, args.warmup)
            row[f"{name}_step_s"] = statistics.median(times)
            row[f"{name}_step_times_s"] = times
            row[f"{name}_first_loss"] = loss
        row["ratio"] = row["cp_c1_step_s"] / row["single_step_s"]
        res["rows"].append(row)
        print(json.dumps({k: v for k, v in row.items() if "times" not in k}), flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
