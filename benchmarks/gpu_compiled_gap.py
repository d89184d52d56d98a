"""Where the compiled Lighthouse model's gradients part from eager's (``gpu_compiled_step.py``
found 3% in fp32, where the op alone compiles bit for bit): one forward+backward of a preset
from the same weights and batch in several arms, each arm's gradients compared with a named
reference arm, and, where both arms record them, the Lighthouse layers' selections compared
entry by entry.

Arms (``NAME=FLAGS``, flags joined by ``+``):

- ``eager`` / ``compiled``: ``torch.compile`` per block or not (as ``bench train``);
- ``nockpt``: without activation checkpointing (else every block is recomputed in backward);
- ``nudge``: every input-embedding weight moved by one unit in the last place, in a random
  direction (a rounding-sized change at the bottom of the model);
- ``record``: the selection of every Lighthouse layer kept (the forward only); in a compiled
  arm the op then runs outside the compiled graph (a graph break), on the compiled blocks'
  q and k;
- ``dense``: every layer dense.

    python benchmarks/gpu_compiled_gap.py --out gap.json --seq-len 32768 \\
        --arms ref=eager+record,nudge=eager+nudge+record,comp=compiled \\
        --compare nudge:ref,comp:ref

``--weights RUN`` starts from a trained model (its preset's shapes; ``--preset`` must match),
``--text FILES`` takes the batch from real bytes. ``--smoke`` runs the demo preset at 4K on
the CPU. The JSON is rewritten after every arm.
"""

import argparse
import json
from pathlib import Path

import torch
import torch.nn.functional as F

import lighthouse_attn.models.llama as llama
from lighthouse_attn.bench.common import environment
from lighthouse_attn.models import load_model, model_from_config
from lighthouse_attn.models.build import preset_model_config
from lighthouse_attn.ops import select
from lighthouse_attn.train.parallelize import parallelize

FLAGS = {"eager", "compiled", "nockpt", "nudge", "record", "dense"}


class Recorder:
    """Replaces the model's Lighthouse op to keep each call's selection as one key per entry
    (``(b, h, level, index)`` flattened), while ``active``."""

    def __init__(self, op):
        self.op, self.active, self.keys = op, False, []

    def __call__(self, q, k, v, config):
        if self.active:
            sel = select(q.detach(), k.detach(), config)
            B, H = sel.index.shape[:2]
            N = q.shape[2]
            bh = torch.arange(B * H, device=q.device).view(B, H, 1)
            self.keys.append(((bh * config.num_levels + sel.level) * N + sel.index).flatten())
        return self.op(q, k, v, config)


def run_arm(config, flags: set, batch, device, weights: str | None = None) -> dict:
    """One forward+backward in the arm ``flags``: loss, gradients and recorded selections."""
    torch.manual_seed(0)
    model = (model_from_config(config) if weights is None else load_model(weights)[0])
    model = model.train().to(device)
    if "nudge" in flags:
        with torch.no_grad():
            w = model.embed.weight
            up = torch.rand(w.shape, generator=torch.Generator().manual_seed(1)).to(device) < 0.5
            w.copy_(torch.where(up, torch.nextafter(w, torch.full_like(w, float("inf"))),
                                torch.nextafter(w, torch.full_like(w, float("-inf")))))
    recorder = Recorder(llama.lighthouse_attention)
    if "record" in flags:
        llama.lighthouse_attention = (torch._dynamo.disable(recorder) if "compiled" in flags
                                      else recorder)
    try:
        model = parallelize(model, activation_checkpointing="nockpt" not in flags,
                            compile="compiled" in flags)
        model.set_attention("dense" if "dense" in flags else "lighthouse")
        inputs, targets = (x.to(device) for x in batch)
        recorder.active = "record" in flags
        logits = model(inputs)
        recorder.active = False
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        loss.backward()
    finally:
        llama.lighthouse_attention = recorder.op
    grads = [p.grad.float().clone() for p in model.parameters()]
    return {"loss": loss.item(), "grads": grads, "keys": recorder.keys}


def rel_diffs(grads: list, ref: list) -> dict:
    """Largest and median relative difference over the parameters' gradients."""
    rels = sorted(((a - b).norm() / b.norm().clamp_min(1e-30)).item() for a, b in zip(grads, ref))
    return {"max": rels[-1], "median": rels[len(rels) // 2]}


def selection_diffs(keys: list, ref: list) -> list:
    """Per Lighthouse layer, the fraction of ``ref``'s gathered entries missing from ``keys``."""
    return [round(1.0 - torch.isin(b, a).float().mean().item(), 6) for a, b in zip(keys, ref)]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="compiled_gap.json")
    ap.add_argument("--preset", default="paper-268m")
    ap.add_argument("--seq-len", type=int, default=32768)
    ap.add_argument("--arms", required=True, help="NAME=FLAG+FLAG,...")
    ap.add_argument("--compare", required=True, help="ARM:REFERENCE,...")
    ap.add_argument("--weights", help="a run or checkpoint directory (default: fresh weights)")
    ap.add_argument("--text", nargs="+", help="files whose bytes make the batch (default: "
                    "random bytes; byte-tokenizer models)")
    ap.add_argument("--smoke", action="store_true")
    args = ap.parse_args()
    arms = {}
    for item in args.arms.split(","):
        name, flags = item.split("=")
        arms[name] = set(flags.split("+"))
        if not arms[name] <= FLAGS:
            raise ValueError(f"unknown flags {arms[name] - FLAGS} in arm {name}; know {FLAGS}")
    pairs = [tuple(p.split(":")) for p in args.compare.split(",")]
    device = torch.device("cpu" if args.smoke else "cuda")
    preset, seq_len = ("demo", 4096) if args.smoke else (args.preset, args.seq_len)
    config = preset_model_config(preset)
    if args.text:
        data = b"".join(Path(f).read_bytes() for f in args.text)[:seq_len + 1]
        if len(data) <= seq_len:
            raise ValueError(f"--text holds {len(data)} bytes; the batch needs {seq_len + 1}")
        rows = torch.tensor(list(data)).view(1, -1)
    else:
        rows = torch.randint(0, 256, (1, seq_len + 1), generator=torch.Generator().manual_seed(0))
    batch = (rows[:, :-1], rows[:, 1:])
    res = {"benchmark": "compiled_gap", **environment(), "preset": preset, "seq_len": seq_len,
           "weights": args.weights or "fresh", "batch": "text bytes" if args.text else
           "random bytes",
           "precision": "fp32", "arms": {n: sorted(f) for n, f in arms.items()},
           "losses": {}, "compare": {}}
    done = {}
    for name, flags in arms.items():
        done[name] = run_arm(config, flags, batch, device, args.weights)
        res["losses"][name] = done[name]["loss"]
        for arm, ref in pairs:
            if arm in done and ref in done and f"{arm}:{ref}" not in res["compare"]:
                row = {"grads": rel_diffs(done[arm]["grads"], done[ref]["grads"])}
                if done[arm]["keys"] and done[ref]["keys"]:
                    row["selection_changed"] = selection_diffs(done[arm]["keys"],
                                                               done[ref]["keys"])
                res["compare"][f"{arm}:{ref}"] = row
                print(arm, "vs", ref, json.dumps(row), flush=True)
        with open(args.out, "w") as f:
            json.dump(res, f, indent=1)
    print(json.dumps(res["losses"]), flush=True)


if __name__ == "__main__":
    main()
