"""`lighthouse-attn bench attention`: one attention layer, Lighthouse against dense SDPA.

For every case ``N:K[:L[:p]]`` it times, forward and forward+backward (medians over repeats):
dense causal SDPA with each requested backend, the inner attention alone on the gathered length
``S``, and the whole Lighthouse layer, with a per-stage breakdown and peak memory. Prints a table,
writes JSON and a log-log PNG of latency against context length. :func:`merge_results` joins
earlier results of one device (runs split to fit a time limit) without timing anything.
"""

from __future__ import annotations

import gc
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..config import LighthouseConfig
from ..ops import lighthouse_attention
from ..ops.inner import fast_causal_attention
from ..settings import SettingError, setting
from .common import (
    environment,
    peak_memory_mib,
    steady_ms,
    time_ms,
    warm_up_gpu,
)

ISSUE_CASES = "32768:512,32768:2048,131072:2048,524288:2048,524288:8192,1048576:4096:4:4"
SDPA_BACKENDS = {"cudnn": SDPBackend.CUDNN_ATTENTION, "flash": SDPBackend.FLASH_ATTENTION,
                 "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_GROUP = "benchmark"


def parse_cases(text: str, num_levels: int, pooling_factor: int
                ) -> list[tuple[int, LighthouseConfig]]:
    """``"N:K[:L[:p]],..."`` -> [(N, LighthouseConfig)], each validated."""
    cases = []
    for item in text.split(","):
        parts = [int(x) for x in item.strip().split(":")]
        if not 2 <= len(parts) <= 4:
            raise ValueError(f"bad case {item!r}: write N:K, N:K:L or N:K:L:p "
                             "(e.g. 131072:2048 or 1048576:4096:4:4)")
        n, k = parts[:2]
        L = parts[2] if len(parts) > 2 else num_levels
        p = parts[3] if len(parts) > 3 else pooling_factor
        cfg = LighthouseConfig(num_levels=L, pooling_factor=p, topk=k, backend="triton")
        cfg.validate(n)
        cases.append((n, cfg))
    return cases


def _cudnn_op(q, k, v):
    from ..ops.triton.attention import cudnn_forward

    return cudnn_forward(q, k, v, None)[0]


def _fwd_bwd(fn, inputs, grad):
    def run():
        out = fn(*inputs)
        torch.autograd.grad(out, inputs, grad)
    return run


def _graphed_fwd_bwd_ms(fn, inputs, grad, repeats) -> float:
    """Forward+backward of ``fn`` replayed as CUDA graphs (``make_graphed_callables``): the
    time without host dispatch, as under ``torch.compile(mode="reduce-overhead")``. The graphs
    get fresh leaf inputs: leaves that eager runs already used keep gradient accumulators on
    the default stream, whose synchronisation breaks the capture. Python's garbage collector is
    off while capturing (a collection there may free CUDA objects, which a capture forbids)."""
    inputs = tuple(x.detach().clone().requires_grad_() for x in inputs)
    gc.collect()
    gc.disable()
    try:
        graphed = torch.cuda.make_graphed_callables(fn, inputs)
    finally:
        gc.enable()
    return time_ms(_fwd_bwd(graphed, inputs, grad), 2, repeats)["median_ms"]


STEADY_SAMPLE_MS = 10.0  # back-to-back steps per steady sample: about this long


def _measure(fn, inputs, grad, warmup, repeats) -> dict:
    """Forward and forward+backward, each call synced (``time_ms``), and forward+backward
    issued back to back (``steady_ms``), with peak memory."""
    fwd = time_ms(lambda: fn(*inputs), warmup, repeats)
    step = _fwd_bwd(fn, inputs, grad)
    both = time_ms(step, warmup, repeats)
    steps = max(3, min(20, math.ceil(STEADY_SAMPLE_MS / both["median_ms"])))
    return {"fwd_ms": fwd["median_ms"], "fwd_bwd_ms": both["median_ms"],
            "fwd_bwd_steady_ms": steady_ms(step, steps, repeats)["median_ms"],
            "repeats": both["repeats"], "peak_mib": peak_memory_mib(step)}


def _stage_breakdown(q, k, v, cfg, warmup, repeats) -> dict:
    """Each stage of the fast path timed alone on the same inputs (forward and backward), as
    the eager layer runs them: where the norm kernel can (``scores.means_apply``), it also
    pools q and k's coarsest level, and the gather copies it."""
    from ..ops.triton.gather_scatter import (
        build_position_map,
        gather_plan,
        pool_windows,
        scatter_plan,
        spread_windows,
    )
    from ..ops.triton.scores import means_apply, row_norms_and_means, row_norms_pair
    from ..ops.triton.select import select_with_map

    N, H, L, p = q.shape[2], q.shape[1], cfg.num_levels, cfg.pooling_factor
    if means_apply(cfg.coarsest_window, q.shape[-1]):
        def scores():
            return row_norms_and_means(q, k, cfg.coarsest_window)
    else:
        def scores():
            return row_norms_pair(q, k)
    sq0, sk0, *coarsest = scores()
    sel, pm = select_with_map(sq0, sk0, cfg)
    S = sel.level.shape[2]
    gather = gather_plan(S, [H] * 3, [1] * 3, p, L)
    scatter = scatter_plan(N, [H], p, L)
    gathered = pool_windows([q, k, v], pm, gather, coarsest=coarsest)
    og = fast_causal_attention(*gathered)
    dout = torch.randn_like(q)
    stages = {
        "scores": scores,
        "select": lambda: select_with_map(sq0, sk0, cfg),
        "position_map (user selections only)": lambda: build_position_map(*sel, N, p, L),
        "gather_fwd": lambda: pool_windows([q, k, v], pm, gather, coarsest=coarsest),
        "scatter_fwd": lambda: spread_windows([og], pm, scatter),
        "scatter_bwd": lambda: pool_windows([dout], pm, scatter.adjoint([og])),
        "gather_bwd": lambda: spread_windows(gathered, pm, gather.adjoint([q, k, v])),
    }
    return {name: time_ms(fn, warmup, repeats)["median_ms"] for name, fn in stages.items()}


@dataclass(frozen=True)
class AttentionBenchSettings:
    """Settings of ``bench attention`` besides its cases."""

    batch_size: int = setting(1, help="batch size B", group=_GROUP)
    heads: int = setting(8, help="heads H", group=_GROUP)
    head_dim: int = setting(128, help="head dim D", group=_GROUP)
    dtype: str = setting("bf16", help="input dtype", group=_GROUP, choices=tuple(sorted(DTYPES)))
    dense_backends: list[str] = setting(factory=lambda: ["cudnn", "flash"],
                                        help="comma-separated SDPA backends timed for dense "
                                        "(default: cudnn,flash)", group=_GROUP,
                                        separator=",")
    dense_max_len: int = setting(524_288, help="skip dense SDPA above this length",
                                 group=_GROUP)
    repeats: int = setting(10, help="timed repeats (medians are reported)", group=_GROUP)
    cuda_graphs: bool = setting(False, help="also time Lighthouse and the inner kernel "
                                "replayed as CUDA graphs (no host dispatch, as under "
                                "torch.compile reduce-overhead)", group=_GROUP)
    deterministic: bool = setting(False, help="also time LighthouseConfig(deterministic=True)",
                                  group=_GROUP)
    causal: bool = setting(False, help="also time LighthouseConfig(selection='causal') on the "
                           "same inputs", group=_GROUP)


def run_case(N: int, cfg: LighthouseConfig, settings: AttentionBenchSettings, dense_cache: dict
             ) -> dict:
    dtype = DTYPES[settings.dtype]
    B, H, D = settings.batch_size, settings.heads, settings.head_dim
    dev = "cuda"
    gen = torch.Generator(device=dev).manual_seed(0)
    q, k, v = (torch.randn(B, H, N, D, device=dev, dtype=dtype, generator=gen)
               .requires_grad_() for _ in range(3))
    grad = torch.randn(B, H, N, D, device=dev, dtype=dtype, generator=gen)
    S = cfg.gathered_length(N)
    row: dict = {"seq_len": N, "topk": cfg.topk, "num_levels": cfg.num_levels,
                 "pooling_factor": cfg.pooling_factor, "gathered_length": S,
                 "flops_ratio": cfg.attention_flops_ratio(N), "dense": {}}
    for name in settings.dense_backends:
        if N > settings.dense_max_len:
            break
        if (N, name) in dense_cache:  # dense timings do not depend on K
            row["dense"][name] = dense_cache[N, name]
            continue

        def dense(a, b, c, _b=SDPA_BACKENDS[name]):
            with sdpa_kernel(_b):
                return F.scaled_dot_product_attention(a, b, c, is_causal=True)
        try:
            row["dense"][name] = _measure(dense, (q, k, v), grad, 1, settings.repeats)
        except RuntimeError as err:  # backend unavailable for these shapes
            row["dense"][name] = {"error": str(err).splitlines()[0][:200]}
        dense_cache[N, name] = row["dense"][name]
    qs, ks, vs = (torch.randn(B, H, S, D, device=dev, dtype=dtype, generator=gen)
                  .requires_grad_() for _ in range(3))
    row["inner"] = _measure(fast_causal_attention, (qs, ks, vs), torch.randn_like(qs), 2,
                            settings.repeats)
    if dtype in (torch.float16, torch.bfloat16):  # cuDNN's op called directly, as the layer does
        row["inner_cudnn_op"] = _measure(_cudnn_op, (qs, ks, vs), torch.randn_like(qs), 2,
                                         settings.repeats)
    row["lighthouse"] = _measure(lambda a, b, c: lighthouse_attention(a, b, c, cfg), (q, k, v),
                                 grad, 2, settings.repeats)
    if settings.cuda_graphs:
        row["cuda_graphs"] = {
            "inner_fwd_bwd_ms": _graphed_fwd_bwd_ms(fast_causal_attention, (qs, ks, vs),
                                                    torch.randn_like(qs), settings.repeats),
            "lighthouse_fwd_bwd_ms": _graphed_fwd_bwd_ms(
                lambda a, b, c: lighthouse_attention(a, b, c, cfg), (q, k, v), grad,
                settings.repeats)}
        row["cuda_graphs"]["overhead_vs_inner"] = (row["cuda_graphs"]["lighthouse_fwd_bwd_ms"]
                                                   / row["cuda_graphs"]["inner_fwd_bwd_ms"])
    del qs, ks, vs
    row["lighthouse"]["stages_ms"] = _stage_breakdown(q.detach(), k.detach(), v.detach(), cfg,
                                                      1, settings.repeats)
    if settings.causal:
        ccfg = LighthouseConfig(**{**cfg.to_dict(), "selection": "causal"})
        row["lighthouse_causal"] = _measure(
            lambda a, b, c: lighthouse_attention(a, b, c, ccfg), (q, k, v), grad, 2,
            settings.repeats)
        row["causal_vs_paper"] = (row["lighthouse_causal"]["fwd_bwd_ms"]
                                  / row["lighthouse"]["fwd_bwd_ms"])
        row["causal_vs_paper_steady"] = (row["lighthouse_causal"]["fwd_bwd_steady_ms"]
                                         / row["lighthouse"]["fwd_bwd_steady_ms"])
    if settings.deterministic:
        dcfg = LighthouseConfig(**{**cfg.to_dict(), "deterministic": True})
        row["lighthouse_deterministic"] = _measure(
            lambda a, b, c: lighthouse_attention(a, b, c, dcfg), (q, k, v), grad, 2,
            settings.repeats)
    inners = [row[k] for k in ("inner", "inner_cudnn_op") if k in row]
    inner = min(m["fwd_bwd_ms"] for m in inners)
    row["inner_fwd_bwd_ms"] = inner  # the faster way to call the inner kernel: the baseline
    row["overhead_vs_inner"] = row["lighthouse"]["fwd_bwd_ms"] / inner
    row["inner_fwd_bwd_steady_ms"] = min(m["fwd_bwd_steady_ms"] for m in inners)
    row["overhead_vs_inner_steady"] = (row["lighthouse"]["fwd_bwd_steady_ms"]
                                       / row["inner_fwd_bwd_steady_ms"])
    row["target_vs_inner"] = 1.5 if N < 131072 else 1.2
    if settings.deterministic:
        row["deterministic_vs_default"] = (row["lighthouse_deterministic"]["fwd_bwd_ms"]
                                           / row["lighthouse"]["fwd_bwd_ms"])
    best = [d["fwd_bwd_ms"] for d in row["dense"].values() if "fwd_bwd_ms" in d]
    if best:
        row["speedup_vs_dense_fwd_bwd"] = min(best) / row["lighthouse"]["fwd_bwd_ms"]
        row["speedup_vs_dense_fwd"] = (min(d["fwd_ms"] for d in row["dense"].values()
                                           if "fwd_ms" in d) / row["lighthouse"]["fwd_ms"])
    del q, k, v, grad
    torch.cuda.empty_cache()
    return row


def format_table(rows: list[dict]) -> str:
    steady = any("overhead_vs_inner_steady" in r for r in rows)
    graphed = any("cuda_graphs" in r for r in rows)
    head = (f"{'N':>9} {'K':>5} {'L':>2} {'p':>2} {'S':>7} | {'dense best f/fb ms':>20} | "
            f"{'inner f/fb ms':>16} | {'lighthouse f/fb ms':>19} | {'LH/inner':>8} "
            + (f"{'steady':>7} " if steady else "")
            + f"{'target':>6} | {'vs dense':>8}"
            + (f" | {'det/default':>11}" if any("deterministic_vs_default" in r for r in rows)
               else "")
            + (f" | {'graphed LH/inner':>11}" if graphed else "")
            + (f" | {'causal/paper':>12}" if any("causal_vs_paper" in r for r in rows) else ""))
    lines = [head, "-" * len(head)]
    for r in rows:
        dense = [d for d in r["dense"].values() if "fwd_bwd_ms" in d]
        dtxt = (f"{min(d['fwd_ms'] for d in dense):8.2f}/{min(d['fwd_bwd_ms'] for d in dense):9.2f}"
                if dense else f"{'-':>20}")
        lh, inner = r["lighthouse"], r["inner"]
        sp = r.get("speedup_vs_dense_fwd_bwd")
        lines.append(
            f"{r['seq_len']:>9} {r['topk']:>5} {r['num_levels']:>2} {r['pooling_factor']:>2} "
            f"{r['gathered_length']:>7} | {dtxt:>20} | "
            f"{inner['fwd_ms']:7.2f}/{r['inner_fwd_bwd_ms']:8.2f} | "
            f"{lh['fwd_ms']:8.2f}/{lh['fwd_bwd_ms']:9.2f} | {r['overhead_vs_inner']:7.2f}x "
            + (_ratio(r.get("overhead_vs_inner_steady"), 6) + " " if steady else "")
            + f"{r['target_vs_inner']:5.1f}x | " + (f"{sp:7.1f}x" if sp else f"{'-':>8}")
            + (f" | {r['deterministic_vs_default']:10.2f}x" if "deterministic_vs_default" in r
               else "")
            + (" | " + _ratio(r.get("cuda_graphs", {}).get("overhead_vs_inner"), 10)
               if graphed else "")
            + (" | " + _ratio(r.get("causal_vs_paper"), 11)
               if any("causal_vs_paper" in x for x in rows) else ""))
    return "\n".join(lines)


def _ratio(value: float | None, width: int) -> str:
    return f"{value:{width}.2f}x" if value is not None else f"{'-':>{width + 1}}"


def plot(rows: list[dict], path: Path, env: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    for name in sorted({n for r in rows for n in r["dense"]}):
        pts = sorted((r["seq_len"], r["dense"][name]["fwd_bwd_ms"]) for r in rows
                     if "fwd_bwd_ms" in r["dense"].get(name, {}))
        pts = sorted(dict(pts).items())
        if pts:
            ax.plot(*zip(*pts), "o--", label=f"dense SDPA ({name})")
    for key in sorted({(r["num_levels"], r["pooling_factor"], r["topk"]) for r in rows}):
        sub = sorted((r for r in rows
                      if (r["num_levels"], r["pooling_factor"], r["topk"]) == key),
                     key=lambda r: r["seq_len"])
        L, p, K = key
        ax.plot([r["seq_len"] for r in sub], [r["lighthouse"]["fwd_bwd_ms"] for r in sub],
                "s-", label=f"Lighthouse L={L} p={p} K={K}")
        ax.plot([r["seq_len"] for r in sub], [r["inner_fwd_bwd_ms"] for r in sub], "x:",
                color=ax.lines[-1].get_color(), alpha=0.6, label=f"  inner SDPA alone (K={K})")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("context length N (tokens)")
    ax.set_ylabel("forward+backward latency (ms, median)")
    ax.set_title(f"One attention layer, {env['device']}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def merge_results(paths: list[str]) -> dict:
    """One result from several ``bench attention`` JSON files of one device (cases in order of
    N, then K); raises ``ValueError`` for a missing file, another benchmark or mixed devices."""
    results = []
    for path in paths:
        try:
            with open(path) as f:
                res = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"cannot read {path!r} as a bench attention result: {err}") from err
        if res.get("benchmark") != "attention":
            raise ValueError(f"{path!r} is not a bench attention result (its benchmark is "
                             f"{res.get('benchmark')!r}); pass files written by this command")
        results.append(res)
    devices = {r["environment"].get("device") for r in results}
    if len(devices) > 1:
        raise ValueError(f"results from different devices {sorted(map(str, devices))} cannot be "
                         "merged; merge the files of one device")
    cases = sorted((c for r in results for c in r["cases"]),
                   key=lambda c: (c["seq_len"], c["topk"]))
    return {"benchmark": "attention", "environment": results[0]["environment"],
            "settings": [r["settings"] for r in results], "merged_from": list(paths),
            "cases": cases}


def report(result: dict, path: Path) -> None:
    """Print the table and the geometric mean of Lighthouse/inner; draw the plot beside
    ``path`` (the JSON written)."""
    plot(result["cases"], path.with_suffix(".png"), result["environment"])
    rows = result["cases"]
    print(format_table(rows))
    print(f"geomean Lighthouse/inner: "
          f"{math.exp(sum(math.log(r['overhead_vs_inner']) for r in rows) / len(rows)):.2f}x")
    print(f"wrote {path} and {path.with_suffix('.png')}")


def benchmark_attention(cases: list[tuple[int, LighthouseConfig]],
                        settings: AttentionBenchSettings) -> dict:
    """Time every case (from :func:`parse_cases`) on the GPU; returns the JSON-ready result."""
    if not torch.cuda.is_available():
        raise ValueError("bench attention needs a CUDA GPU (the numbers are GPU timings)")
    for name in settings.dense_backends:
        if name not in SDPA_BACKENDS:
            raise SettingError(f"unknown dense backend {name!r} in dense_backends; choose from "
                               f"{', '.join(SDPA_BACKENDS)}", "dense_backends")
    env = environment()
    warm_up_gpu()
    rows, dense_cache = [], {}
    for i, (N, cfg) in enumerate(cases, 1):
        print(f"[{i}/{len(cases)}] N={N:,} L={cfg.num_levels} p={cfg.pooling_factor} "
              f"K={cfg.topk} ...", flush=True)
        rows.append(run_case(N, cfg, settings, dense_cache))
    return {"benchmark": "attention", "environment": env,
            "settings": {"batch_size": settings.batch_size, "heads": settings.heads,
                         "head_dim": settings.head_dim, "dtype": settings.dtype,
                         "scorer": "norm", "repeats": settings.repeats,
                         "cuda_graphs": settings.cuda_graphs,
                         "inner": "faster of fast_causal_attention (SDPA) and cuDNN's op"},
            "cases": rows}
