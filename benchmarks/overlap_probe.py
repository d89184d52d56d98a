"""A/B probe: the layer with v's coarsest means computed beside the cascade (on a side
stream, ``OVERLAP_MEANS``) against the same layer without, for the issue's cases. Steps are
timed back to back (``steady_ms``, the host queues ahead) and synced one by one (``time_ms``),
interleaving the variants over rounds so that drift hits both alike; the inner kernel alone is
timed the same way. Also counts host-device syncs in one layer step (there should be none).

    python benchmarks/overlap_probe.py --out overlap.json
"""

import argparse
import gc
import json
import statistics
import warnings

import torch
from layer_case import layer_case

import lighthouse_attn.ops.triton.attention as tri
from lighthouse_attn import lighthouse_attention
from lighthouse_attn.bench.attention import ISSUE_CASES, parse_cases
from lighthouse_attn.bench.common import steady_ms, time_ms, warm_up_gpu


def with_overlap(step, on: bool):
    def run():
        tri.OVERLAP_MEANS, tri.OVERLAP_MIN_ROWS = on, 0  # eager forks at every size here
        step()
    return run


def graphed_ms(c, on: bool, replays: int = 20) -> float:
    """Forward+backward of the layer captured by make_graphed_callables, OVERLAP_MEANS on or
    off while capturing; median replay time."""
    tri.OVERLAP_MEANS = on
    leaves = tuple(x.detach().clone().requires_grad_() for x in (c.q, c.k, c.v))
    gc.collect()
    gc.disable()
    try:
        fn = torch.cuda.make_graphed_callables(lambda a, b, d: lighthouse_attention(a, b, d, c.cfg),
                                               leaves)
    finally:
        gc.enable()

    def step():
        torch.autograd.grad(fn(*leaves), leaves, c.dout)
    return steady_ms(step, replays, 5)["median_ms"]


def syncs_in(step) -> int:
    """Host-device syncs torch reports during one call of ``step``."""
    step()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in seen)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=ISSUE_CASES)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="overlap.json")
    args = ap.parse_args()
    warm_up_gpu(2)
    rows = []
    for N, cfg in parse_cases(args.cases, 3, 4):
        c = layer_case(N, cfg.topk, num_levels=cfg.num_levels,
                       pooling_factor=cfg.pooling_factor)
        fns = {"inner": c.inner, "layer overlap": with_overlap(c.layer, True),
               "layer no overlap": with_overlap(c.layer, False)}
        one = time_ms(c.layer, 2, 3)["median_ms"]
        steps = max(3, min(20, round(10 / one)))
        steady = {k: [] for k in fns}
        synced = {k: [] for k in fns}
        for _ in range(args.rounds):
            for name, fn in fns.items():
                steady[name].append(steady_ms(fn, steps, 3)["median_ms"])
                synced[name].append(time_ms(fn, 1, 5)["median_ms"])
        graphs = {"overlap": [], "no overlap": []}
        for _ in range(2):
            for on, name in ((True, "overlap"), (False, "no overlap")):
                graphs[name].append(graphed_ms(c, on))
        tri.OVERLAP_MEANS, tri.OVERLAP_MIN_ROWS = True, 1 << 20
        row = {"seq_len": N, "topk": cfg.topk, "num_levels": cfg.num_levels, "S": c.S,
               "steps": steps, "syncs_per_layer_step": syncs_in(c.layer),
               "steady_ms": {k: round(statistics.median(v), 4) for k, v in steady.items()},
               "synced_ms": {k: round(statistics.median(v), 4) for k, v in synced.items()},
               "steady_all_ms": steady, "synced_all_ms": synced, "graphed_all_ms": graphs,
               "graphed_vs_inner": {k: round(statistics.median(v) / statistics.median(
                   steady["inner"]), 4) for k, v in graphs.items()}}
        for mode in ("steady_ms", "synced_ms"):
            t = row[mode]
            row[mode.replace("_ms", "_vs_inner")] = {
                k: round(t[k] / t["inner"], 4) for k in t if k != "inner"}
        rows.append(row)
        st, sy = row["steady_vs_inner"], row["synced_vs_inner"]
        print(f"N={N:>8} K={cfg.topk:>5} LH/inner steady: overlap {st['layer overlap']:.3f}, "
              f"none {st['layer no overlap']:.3f} | synced: overlap {sy['layer overlap']:.3f}, "
              f"none {sy['layer no overlap']:.3f} | graphed: overlap "
              f"{row['graphed_vs_inner']['overlap']:.3f}, none "
              f"{row['graphed_vs_inner']['no overlap']:.3f} | syncs {row['syncs_per_layer_step']}",
              flush=True)
        del c
        torch.cuda.empty_cache()
    res = {"device": torch.cuda.get_device_name(), "cases": rows}
    with open(args.out, "w") as f:
        json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
