"""One forward+backward of a preset model, eager against ``torch.compile`` per block (as
``bench train --compile`` runs it), from the same weights and batch, in each attention mode:
the losses and the relative differences of the parameters' gradients, next to a second eager
run's (the kernels' own run-to-run spread), to show that the compiled step computes what the
eager one does before its speed is quoted.

    python benchmarks/gpu_compiled_step.py --out compiled_step.json

``--smoke`` runs the demo preset at 4K on the CPU.
"""

import argparse
import contextlib
import json

import torch
import torch.nn.functional as F

from lighthouse_attn.bench.common import environment
from lighthouse_attn.models import model_from_config
from lighthouse_attn.models.build import preset_model_config
from lighthouse_attn.train.parallelize import parallelize


def loss_and_grads(config, mode: str, compiled: bool, batch, device, bf16: bool
                   ) -> tuple[float, list]:
    torch.manual_seed(0)
    model = parallelize(model_from_config(config).to(device), activation_checkpointing=True,
                        compile=compiled)
    model.set_attention(mode)
    inputs, targets = (x.to(device) for x in batch)
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    with autocast:
        logits = model(inputs)
    loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
    loss.backward()
    grads = [p.grad.float().clone() for p in model.parameters()]
    del model
    return loss.item(), grads


def _rel_diffs(grads: list, ref: list) -> dict:
    """Largest and median relative difference over the parameters' gradients."""
    rels = sorted(((a - b).norm() / b.norm().clamp_min(1e-30)).item() for a, b in zip(grads, ref))
    return {"max": rels[-1], "median": rels[len(rels) // 2]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="compiled_step.json")
    ap.add_argument("--preset", default="paper-268m")
    ap.add_argument("--seq-len", type=int, default=98304)
    ap.add_argument("--modes", default="lighthouse,dense")
    ap.add_argument("--fp32", action="store_true", help="no bf16 autocast")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    device = torch.device("cpu" if args.smoke else "cuda")
    preset, seq_len = ("demo", 4096) if args.smoke else (args.preset, args.seq_len)
    config = preset_model_config(preset)
    rows = torch.randint(0, 256, (1, seq_len + 1), generator=torch.Generator().manual_seed(0))
    batch = (rows[:, :-1], rows[:, 1:])
    bf16 = device.type == "cuda" and not args.fp32
    res = {"benchmark": "compiled_step", **environment(), "preset": preset,
           "seq_len": seq_len, "precision": "bf16 autocast" if bf16 else "fp32", "modes": {}}
    for mode in args.modes.split(","):
        eager_loss, eager = loss_and_grads(config, mode, False, batch, device, bf16)
        again_loss, again = loss_and_grads(config, mode, False, batch, device, bf16)
        comp_loss, comp = loss_and_grads(config, mode, True, batch, device, bf16)
        res["modes"][mode] = {"eager_loss": eager_loss, "eager_again_loss": again_loss,
                              "compiled_loss": comp_loss,
                              "compiled_vs_eager": _rel_diffs(comp, eager),
                              "eager_again_vs_eager": _rel_diffs(again, eager)}
        print(mode, json.dumps(res["modes"][mode]), flush=True)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
