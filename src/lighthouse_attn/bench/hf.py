"""`lighthouse-attn bench hf`: training steps of a Hugging Face ``LlamaForCausalLM`` in stage 1
(Lighthouse through :mod:`lighthouse_attn.hf`) against the same model on all-SDPA.

Both variants are built the same way (``from_config``, random init, no download) with the
shapes of the paper-268m preset, activation checkpointing on, and timed over steady-state
steps (forward, backward, AdamW) on one fixed random batch. Prints a table and writes a JSON
record (device, versions, config, per-step times). The defaults (N = 98,304;
per variant 2 warm-up steps, then 5 timed steps or 150 s of them, whichever ends first) fit in
about 6 minutes on one H100.
"""

from __future__ import annotations

import gc
import statistics
import sys
import time
from dataclasses import dataclass, replace

import torch

from ..config import GQA_MODES, SCORERS, SELECTIONS, LighthouseConfig
from ..environment import device_name, versions
from ..settings import SettingError, setting
from .common import sync

PAPER_530M = dict(hidden_size=1024, num_layers=30, heads=8, kv_heads=8, intermediate_size=1536,
                  vocab_size=257, rope_theta=10000.0)
"""The paper-268m preset's shapes (vocab: 256 bytes + 1 separator; untied embeddings)."""
VARIANTS = ("lighthouse", "sdpa")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
_MODEL = "model (defaults: the paper-268m preset)"
_LH = "Lighthouse (stage 1)"


@dataclass(frozen=True)
class HFBenchSettings:
    """Settings of ``bench hf`` (defaults: the paper-268m preset's shapes)."""

    hidden_size: int = setting(PAPER_530M["hidden_size"], help="hidden size", group=_MODEL)
    num_layers: int = setting(PAPER_530M["num_layers"], help="decoder layers", group=_MODEL)
    heads: int = setting(PAPER_530M["heads"], help="query heads", group=_MODEL)
    kv_heads: int = setting(PAPER_530M["kv_heads"], help="key/value heads", group=_MODEL)
    intermediate_size: int = setting(PAPER_530M["intermediate_size"], help="MLP hidden size",
                                     group=_MODEL)
    vocab_size: int = setting(PAPER_530M["vocab_size"], help="vocabulary", group=_MODEL)
    rope_theta: float = setting(PAPER_530M["rope_theta"], help="rotary base", group=_MODEL)
    num_levels: int = setting(3, help="pyramid levels L", group=_LH)
    pooling_factor: int = setting(4, help="pooling factor p", group=_LH)
    topk: int = setting(1536, help="selection budget K", group=_LH)
    scorer: str = setting("norm", help="selection scorer", group=_LH, choices=SCORERS)
    gqa: str = setting("expand", help="GQA mode", group=_LH, choices=GQA_MODES)
    selection: str = setting("paper", help="selection rule", group=_LH, choices=SELECTIONS)
    dense_layers: str = setting("0,1,-2,-1", help="comma-separated layers kept on SDPA in "
                                "stage 1 ('' for none)", group=_LH)
    seq_len: int | None = setting(None, help="tokens per sequence (default on a GPU: 98,304; "
                                  "on a CPU give one)", group="run")
    batch_size: int = setting(1, help="sequences per step", group="run")
    warmup_steps: int = setting(2, help="untimed steps per variant", group="run")
    steps: int = setting(5, help="timed steps per variant", group="run")
    dtype: str = setting("bf16", help="autocast dtype", group="run", choices=tuple(DTYPES))
    device: str = setting("auto", help="auto (cuda if available), cuda or cpu", group="run",
                          choices=("auto", "cuda", "cpu"))
    time_budget: float = setting(150.0, help="seconds of timed steps per variant; fewer steps "
                                 "are timed past it", group="run")
    lr: float = setting(1e-4, help="AdamW learning rate", group="run")
    checkpointing: bool = setting(True, help="keep activations instead of recomputing them",
                                  group="run", flag="--no-checkpointing")
    variants: str = setting(",".join(VARIANTS), help="comma-separated subset of "
                            "'lighthouse,sdpa' (both give the ratio)", group="run")
    seed: int = setting(0, help="seed of the weights and the batch", group="run")


def run(config: dict) -> dict:
    """Time every variant of ``config`` (from :func:`bench_config`); returns the record."""
    device = torch.device(config["device"])
    results = {}
    for variant in config["variants"]:
        try:
            results[variant] = _time_variant(config, variant, device)
        except torch.cuda.OutOfMemoryError as err:  # keep the other variant's numbers
            results[variant] = {"error": f"out of memory: {str(err).splitlines()[0]}"}
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    record = {"benchmark": "hf", "device": device_name(device), "versions": versions(),
              "config": config, "results": results}
    lh, dense = results.get("lighthouse", {}), results.get("sdpa", {})
    if "median_step_s" in lh and "median_step_s" in dense:
        record["speedup"] = dense["median_step_s"] / lh["median_step_s"]
    return record


def format_table(record: dict) -> str:
    """The record as a small text table."""
    c = record["config"]
    lh = c["lighthouse"]
    lines = [
        (f"HF LlamaForCausalLM train step: N={c['seq_len']:,} B={c['batch_size']} {c['dtype']} "
         f"layers={c['model']['num_layers']} d={c['model']['hidden_size']} "
         f"checkpointing={'on' if c['checkpointing'] else 'off'}  [{record['device']}]"),
        (f"stage 1: L={lh['num_levels']} p={lh['pooling_factor']} K={lh['topk']} "
         f"scorer={lh['scorer']}, Lighthouse in {len(c['lighthouse_layers'])} of "
         f"{c['model']['num_layers']} layers (dense: {c['dense_layers']})"),
        f"{'variant':<12}{'median step':>14}{'tokens/s':>14}{'peak memory':>14}",
    ]
    for variant, r in record["results"].items():
        if "error" in r:
            lines.append(f"{variant:<12}{r['error']}")
            continue
        peak = r["peak_memory_bytes"]
        mem = "n/a" if peak is None else f"{peak / 2**30:.2f} GiB"
        lines.append(f"{variant:<12}{r['median_step_s']:>12.3f} s{r['tokens_per_s']:>14,.0f}"
                     f"{mem:>14}  ({r['timed_steps']} timed steps)")
    if "speedup" in record:
        lines.append(f"speedup (sdpa step / lighthouse step): {record['speedup']:.2f}x")
    return "\n".join(lines)


def bench_config(settings: HFBenchSettings) -> dict:
    """Validated settings of the run as a JSON-ready dict (for :func:`run`);
    :class:`SettingError` on bad input."""
    from .common import default_seq_len

    device = settings.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        raise SettingError("device cuda asked for, but no CUDA device is available; "
                           "use device cpu", "device")
    seq_len = default_seq_len(settings.seq_len, torch.device(device).type, "bench hf")
    settings = replace(settings, seq_len=seq_len)
    for name in ("hidden_size", "num_layers", "heads", "kv_heads", "intermediate_size",
                 "vocab_size", "seq_len", "batch_size", "steps"):
        if getattr(settings, name) < 1:
            raise SettingError(f"{name} must be >= 1 (got {getattr(settings, name)})", name)
    if settings.time_budget <= 0:
        raise SettingError(f"time_budget must be > 0 seconds (got {settings.time_budget})",
                           "time_budget")
    if settings.warmup_steps < 0:
        raise SettingError(f"warmup_steps must be >= 0 (got {settings.warmup_steps})",
                           "warmup_steps")
    if settings.hidden_size % settings.heads or settings.heads % settings.kv_heads:
        raise SettingError(f"hidden_size ({settings.hidden_size}) must be a multiple of heads "
                           f"({settings.heads}), and heads a multiple of kv_heads "
                           f"({settings.kv_heads})", "hidden_size", "heads", "kv_heads")
    variants = [v for v in settings.variants.split(",") if v]
    if not variants or set(variants) - set(VARIANTS) or len(set(variants)) != len(variants):
        raise SettingError(f"variants must list some of {', '.join(VARIANTS)} once each; "
                           f"got {settings.variants!r}", "variants")
    try:
        dense_layers = [int(x) for x in settings.dense_layers.split(",") if x.strip()]
    except ValueError:
        raise SettingError(f"dense_layers must be comma-separated integers, e.g. 0,1,-2,-1; "
                           f"got {settings.dense_layers!r}", "dense_layers") from None
    n = settings.num_layers
    bad = [i for i in dense_layers if not -n <= i < n]
    if bad:
        raise SettingError(f"dense_layers {bad} out of range for {n} layers (0..{n - 1} or "
                           f"-{n}..-1)", "dense_layers")
    lighthouse = LighthouseConfig(num_levels=settings.num_levels,
                                  pooling_factor=settings.pooling_factor, topk=settings.topk,
                                  scorer=settings.scorer, gqa=settings.gqa,
                                  selection=settings.selection)
    lighthouse_layers = sorted(set(range(n)) - {i % n for i in dense_layers})
    if "lighthouse" in variants:
        lighthouse.validate(settings.seq_len)
        if not lighthouse_layers:
            raise SettingError(f"dense_layers {settings.dense_layers!r} leave no Lighthouse layer "
                               f"in a {n}-layer model; keep fewer layers dense", "dense_layers")
    model = {k: getattr(settings, k) for k in PAPER_530M}
    return {"model": model, "lighthouse": lighthouse.to_dict(), "dense_layers": dense_layers,
            "lighthouse_layers": lighthouse_layers,
            "seq_len": settings.seq_len, "batch_size": settings.batch_size,
            "warmup_steps": settings.warmup_steps, "steps": settings.steps,
            "time_budget_s": settings.time_budget, "dtype": settings.dtype,
            "device": device, "lr": settings.lr, "checkpointing": settings.checkpointing,
            "variants": variants, "seed": settings.seed,
            "gathered_length": (lighthouse.gathered_length(settings.seq_len)
                                if "lighthouse" in variants else None)}


def _build_model(config: dict, variant: str, device: torch.device):
    from transformers import AutoModelForCausalLM, LlamaConfig

    from .. import hf

    m = config["model"]
    hf_config = LlamaConfig(
        hidden_size=m["hidden_size"], num_hidden_layers=m["num_layers"],
        num_attention_heads=m["heads"], num_key_value_heads=m["kv_heads"],
        intermediate_size=m["intermediate_size"], vocab_size=m["vocab_size"],
        rope_theta=m["rope_theta"], rms_norm_eps=1e-5, tie_word_embeddings=False,
        max_position_embeddings=config["seq_len"], use_cache=False)
    torch.manual_seed(config["seed"])
    model = AutoModelForCausalLM.from_config(hf_config, attn_implementation="sdpa",
                                             dtype=DTYPES[config["dtype"]]).to(device)
    if variant == "lighthouse":
        hf.configure(model, LighthouseConfig(**config["lighthouse"]), config["dense_layers"])
    if config["checkpointing"]:
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:  # transformers >= 5.23
            enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable({"use_reentrant": False})
    return model.train()


def _time_variant(config: dict, variant: str, device: torch.device) -> dict:
    from tqdm.auto import tqdm

    model = _build_model(config, variant, device)
    opt = torch.optim.AdamW(model.parameters(), lr=config["lr"], fused=device.type == "cuda")
    g = torch.Generator().manual_seed(config["seed"] + 1)
    tokens = torch.randint(0, config["model"]["vocab_size"],
                           (config["batch_size"], config["seq_len"]), generator=g).to(device)
    times, losses = [], []
    warmup, budget = config["warmup_steps"], config["time_budget_s"]
    bar = tqdm(total=warmup + config["steps"], desc=f"bench hf {variant}", file=sys.stderr,
               disable=None)
    while len(times) < warmup + config["steps"]:
        if len(times) == warmup and device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        sync()
        start = time.perf_counter()
        loss = model(input_ids=tokens, labels=tokens).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        times.append(time.perf_counter() - start)
        losses.append(loss.item())
        bar.update()
        if len(times) > warmup and sum(times[warmup:]) > budget:
            break  # keep the whole run inside one device call
    bar.close()
    timed = times[warmup:]
    median = statistics.median(timed)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    del model, opt
    return {"median_step_s": median,
            "tokens_per_s": config["batch_size"] * config["seq_len"] / median,
            "peak_memory_bytes": peak, "timed_steps": len(timed),
            "stopped_by_time_budget": len(timed) < config["steps"],
            "step_times_s": times, "losses": losses}


