"""`lighthouse-attn bench train`: steady-state training throughput, Lighthouse vs dense.

Times full optimizer steps (forward, backward, gradient clipping, AdamW; bf16 autocast on GPU;
activation checkpointing on by default) of the same model with stage-1 attention (Lighthouse in
every layer but ``dense_layers``) and with dense SDPA everywhere, on random byte tokens. Each
mode starts from the same initial weights; the first ``warmup_steps`` (kernel compilation,
autotuning, allocator growth) are not timed. Reports the median step time, tokens/s and peak
memory per mode and the tokens/s ratio, as a record with the device, versions and full
config. Any model config works, a Hugging Face architecture's included.
"""

from __future__ import annotations

import contextlib
import gc
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from ..data import VOCAB_SIZE
from ..environment import device_name, versions
from ..models import ATTENTION_MODES, ModelConfig, model_from_config
from ..runtime import DEVICES, PRECISIONS, resolve_device, set_cpu_threads, uses_bf16
from ..settings import SettingError, setting
from ..train.distributed import DistEnv
from ..train.loop import make_optimizer, train_step
from ..train.options import TrainConfig
from ..train.parallelize import parallelize
from .common import GPU_SEQ_LEN, default_seq_len

_GROUP = "benchmark"


@dataclass(frozen=True)
class TrainBenchSettings:
    """Settings of ``bench train`` (the model comes apart, as a model config)."""

    seq_len: int | None = setting(None, help=f"tokens per sequence (default on a GPU: "
                                  f"{GPU_SEQ_LEN:,}; on a CPU give one, e.g. 4096)",
                                  group=_GROUP)
    batch_size: int = setting(1, help="sequences per step", group=_GROUP)
    warmup_steps: int = setting(2, help="untimed steps per mode", group=_GROUP)
    steps: int = setting(5, help="timed steps per mode", group=_GROUP)
    modes: str = setting("lighthouse,dense", help="comma-separated attention modes to time",
                         group=_GROUP)
    activation_checkpointing: bool = setting(True, help="recompute blocks in the backward "
                                             "pass (default: on)", group=_GROUP,
                                             negatable=True)
    precision: str = setting("auto", help="auto: bf16 autocast on GPU, fp32 on CPU",
                             group=_GROUP, choices=PRECISIONS)
    compile: bool = setting(False, help="torch.compile each block", group=_GROUP)
    device: str = setting("auto", help="auto: CUDA when available, else CPU", group=_GROUP,
                          choices=DEVICES)
    seed: int = setting(0, help="seed of the weights and the batch", group=_GROUP)


def _parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or any(m not in ATTENTION_MODES for m in modes):
        raise SettingError(f"modes must list 'lighthouse' and/or 'dense' (got {text!r})",
                           "modes")
    return modes


def _check(settings: TrainBenchSettings, config: ModelConfig, modes: list[str]) -> None:
    for name in ("seq_len", "batch_size", "steps"):
        if getattr(settings, name) < 1:
            raise SettingError(f"{name} must be >= 1 (got {getattr(settings, name)})", name)
    if settings.warmup_steps < 0:
        raise SettingError(f"warmup_steps must be >= 0 (got {settings.warmup_steps})",
                           "warmup_steps")
    if config.vocab_size < VOCAB_SIZE:
        raise ValueError(f"the model's vocab_size {config.vocab_size} is smaller than the byte "
                         f"tokenizer's {VOCAB_SIZE} tokens: use a vocab_size >= {VOCAB_SIZE}")
    if "lighthouse" in modes and config.lighthouse_layer_indices:
        try:
            config.lighthouse.validate(settings.seq_len)
        except ValueError as err:
            raise SettingError(f"seq_len {settings.seq_len} does not fit the Lighthouse "
                               f"settings: {err}", "seq_len") from None


def training_step(config: ModelConfig, mode: str, settings: TrainBenchSettings,
                  device: torch.device, bf16: bool) -> Callable[[], float]:
    """One optimizer step of a fresh model in attention ``mode`` on a fixed random batch, as a
    callable returning the loss (synced on CUDA): what every timed step of ``bench train``
    runs, and what ``benchmarks/train_step_profile.py`` profiles."""
    torch.manual_seed(settings.seed)
    model = parallelize(model_from_config(config).to(device),
                        activation_checkpointing=settings.activation_checkpointing,
                        compile=settings.compile)
    model.set_attention(mode)
    optimizer = make_optimizer(model, TrainConfig(run_dir=""), device)
    env = DistEnv(0, 1, device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())
    gen = torch.Generator().manual_seed(settings.seed)
    rows = torch.randint(0, VOCAB_SIZE, (settings.batch_size, settings.seq_len + 1), generator=gen)
    batch = [(rows[:, :-1], rows[:, 1:])]

    def step() -> float:
        loss, _ = train_step(model, optimizer, batch, autocast, 1.0, env)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return loss

    return step


def time_mode(config: ModelConfig, mode: str, settings: TrainBenchSettings, device: torch.device,
              bf16: bool) -> dict:
    """Warm-up then timed optimizer steps of one attention mode; per-step times and losses,
    median step time, tokens/s and peak memory (CUDA only). An out-of-memory error is
    reported in the result instead of raised."""
    step = training_step(config, mode, settings, device, bf16)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    times, losses = [], []
    total = settings.warmup_steps + settings.steps
    try:
        for i in tqdm(range(total), desc=f"{mode:>10}", unit="step", leave=False, disable=None):
            t0 = time.perf_counter()
            loss = step()
            if i >= settings.warmup_steps:
                times.append(time.perf_counter() - t0)
                losses.append(loss)
    except torch.cuda.OutOfMemoryError as err:
        return {"mode": mode, "error": f"out of memory: {str(err).splitlines()[0]}"}
    finally:
        peak = torch.cuda.max_memory_allocated(device) if cuda else None
        del step
        gc.collect()
        if cuda:
            torch.cuda.empty_cache()
    median = statistics.median(times)
    return {"mode": mode, "step_times_s": times, "losses": losses, "median_step_s": median,
            "tokens_per_s": settings.batch_size * settings.seq_len / median,
            "peak_memory_bytes": peak}


def _out_path(out: str, preset: str, seq_len: int, device_name: str) -> Path:
    path = Path(out)
    if path.suffix == ".json":
        return path
    slug = "".join(c if c.isalnum() else "-" for c in device_name.lower()).strip("-")
    slug = "-".join(part for part in slug.split("-") if part)[:40]
    return path / f"train_{preset}_{seq_len}_{slug}.json"


def format_table(result: dict) -> str:
    lines = [f"bench train: {result['preset']}, seq_len {result['seq_len']:,} x batch "
             f"{result['batch_size']}, {result['precision']}, activation checkpointing "
             f"{'on' if result['activation_checkpointing'] else 'off'}, {result['device']}",
             f"  {'mode':<11} {'median step':>12} {'tokens/s':>12} {'peak memory':>12}"]
    for r in result["results"].values():
        if "error" in r:
            lines.append(f"  {r['mode']:<11} {r['error']}")
            continue
        mem = (f"{r['peak_memory_bytes'] / 2**30:.2f} GiB" if r["peak_memory_bytes"] is not None
               else "n/a")
        lines.append(f"  {r['mode']:<11} {r['median_step_s']:>10.3f} s {r['tokens_per_s']:>12,.0f}"
                     f" {mem:>12}")
    if result.get("speedup") is not None:
        lines.append(f"  Lighthouse / dense tokens/s: {result['speedup']:.2f}x")
    return "\n".join(lines)


def benchmark_training(config: ModelConfig, settings: TrainBenchSettings, label: str) -> dict:
    """Time every mode of ``settings`` on the model ``config`` (``label`` names it); returns
    the JSON-ready record (see :func:`format_table`)."""
    modes = _parse_modes(settings.modes)
    device = resolve_device(settings.device)
    settings = replace(settings, seq_len=default_seq_len(settings.seq_len, device.type,
                                                         "bench train"))
    _check(settings, config, modes)
    if device.type == "cpu":
        set_cpu_threads(None)
    bf16 = uses_bf16(settings.precision, device)
    results = {mode: time_mode(config, mode, settings, device, bf16) for mode in modes}
    ok = {m: r for m, r in results.items() if "error" not in r}
    speedup = (ok["lighthouse"]["tokens_per_s"] / ok["dense"]["tokens_per_s"]
               if {"lighthouse", "dense"} <= set(ok) else None)
    lh = config.lighthouse
    lh_active = "lighthouse" in modes and bool(config.lighthouse_layer_indices)
    seq_len = settings.seq_len
    return {
        "benchmark": "train", "preset": label, "device": device_name(device), **versions(),
        "seq_len": seq_len, "batch_size": settings.batch_size,
        "warmup_steps": settings.warmup_steps, "steps": settings.steps,
        "precision": "bf16 autocast" if bf16 else "fp32",
        "activation_checkpointing": settings.activation_checkpointing,
        "compile": settings.compile,
        "optimizer": "AdamW(0.9, 0.95, wd 0.1), grad clip 1.0",
        "model": config.to_dict(), "parameters": config.num_parameters(),
        "lighthouse_layers": list(config.lighthouse_layer_indices),
        "gathered_length": lh.gathered_length(seq_len) if lh_active else None,
        "attention_flops_ratio": lh.attention_flops_ratio(seq_len) if lh_active else None,
        "results": results, "speedup": speedup,
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def write_record(record: dict, out: str) -> Path:
    """Write ``record`` to ``out`` (a ``.json`` file, or a directory for a file named after
    the preset, length and device); returns the path."""
    path = _out_path(out, record["preset"], record["seq_len"], record["device"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    return path
