"""The two-stage training loop, top to bottom.

Stage 1 trains with Lighthouse in every layer except ``dense_layers``; at step
``lighthouse_steps`` every layer switches to dense SDPA and training continues with the same
weights, optimizer state, learning-rate schedule and data position (stage 2, recovery). The run
ends with an ordinary dense model in ``run_dir/final/``.

The model is a :class:`~lighthouse_attn.models.Llama` or, for a ``--hf-config`` run, a
transformers causal LM behind the same interface (:class:`~lighthouse_attn.models.HFCausalLM`);
:func:`~lighthouse_attn.models.model_from_config` builds either from its config.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..data import BatchLoader, DataSource, Tokenizer, load_tokenizer, open_sequences
from ..data.tokenizer import loss_unit
from ..jsonfile import write_json
from ..models import ModelConfig, model_from_config
from ..models.loading import how_to_load
from ..models.memory import gib
from ..parallel import shard_sequence
from ..progress import bar_disable
from ..runtime import set_cpu_threads, uses_bf16
from ..settings import SettingError
from . import checkpoint, distributed
from .distributed import DistEnv
from .memory import check_memory, estimate_bytes
from .metrics import MetricsLog, plot_loss, read_metrics, write_summary
from .options import TrainConfig, validate_model_for_run
from .parallelize import parallelize
from .run_lock import RunLock
from .schedule import layers_switched_at, lr_at, stage_at
from .signals import StopRequest
from .validation import Validation, eval_steps


class TrainingError(RuntimeError):
    """The run cannot go on (a non-finite loss); the message says what to do."""


class NonFiniteLoss(Exception):
    """Raised by :func:`train_step` before the optimizer update when loss or grads blow up."""


@dataclass
class TrainState:
    """How far a run has come: optimizer steps, training seconds (scoring excluded) and
    tokens; saved in every checkpoint's ``trainer.json``."""

    step: int = 0
    elapsed_s: float = 0.0
    tokens: int = 0

    def state_dict(self) -> dict:
        return {"step": self.step, "elapsed_s": self.elapsed_s, "tokens": self.tokens}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.elapsed_s = int(state["step"]), float(state["elapsed_s"])
        self.tokens = int(state["tokens"])


@dataclass
class _Session:
    """What one training process works with, built once by :func:`_train`."""

    env: DistEnv
    run: TrainConfig
    model_config: ModelConfig
    tokenizer: Tokenizer
    log: MetricsLog
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loader: BatchLoader
    state: TrainState

    @property
    def run_dir(self) -> Path:
        return Path(self.run.run_dir)


@dataclass
class RunResult:
    status: str  # "finished", "interrupted" or "dry run"
    step: int
    run_dir: str
    final_dir: str | None
    summary_path: str | None
    interrupted_by: str | None = None  # "SIGINT" or "SIGTERM"


def train(run: TrainConfig, model_config: ModelConfig, *, resume: bool = False,
          overwrite: bool = False, progress: bool = True, dry_run: bool = False,
          on_step: Callable[[dict], None] | None = None) -> RunResult:
    """Run (or, with ``resume``, continue) a two-stage training run in ``run.run_dir``.

    A fresh start needs a new or empty ``run.run_dir``; ``overwrite`` lets it replace an
    earlier run's files there (:data:`checkpoint.RUN_FILES`; anything else stays).
    ``on_step(record)`` is called on the main process after every step with its metrics.

    Raises:
        ValueError: invalid settings, data, or checkpoint (before any training step).
        TrainingError: a non-finite loss; the last good checkpoint is left intact.
    """
    run.validate()  # settings first: they need no process group
    tokenizer = load_tokenizer(run.tokenizer, run.sep_token)
    validate_model_for_run(model_config, run, tokenizer)
    if not resume:
        checkpoint.check_fresh_run_dir(run.run_dir, overwrite)
    env = distributed.setup(run.device, run.context_parallel)
    lock = None
    try:
        if env.is_main and not dry_run:
            lock = RunLock.acquire(run.run_dir)  # one training process per run directory
        return _train(env, run, model_config, tokenizer, resume, progress, dry_run, on_step)
    finally:
        if lock is not None:
            lock.release()
        distributed.teardown()


def _train(env: DistEnv, run: TrainConfig, model_config: ModelConfig, tokenizer: Tokenizer,
           resume: bool, progress: bool, dry_run: bool,
           on_step: Callable[[dict], None] | None) -> RunResult:
    run_dir = Path(run.run_dir)
    log = MetricsLog(run_dir, enabled=env.is_main, echo=tqdm.write)
    echo = log.echo

    # ---- 1. Check everything before any work: memory, data (settings: in train()) ---
    threads = (set_cpu_threads(run.threads, int(os.environ.get(
        "LOCAL_WORLD_SIZE", "1"))) if env.device.type == "cpu" else None)
    bf16 = uses_bf16(run.precision, env.device)
    micro_batch = run.batch_size // (run.grad_accum * env.dp_size)
    memory = estimate_bytes(model_config, run.seq_len, max(1, micro_batch), env.world_size,
                            bf16, run.activation_checkpointing, run.lighthouse_steps > 0,
                            env.cp_size)
    check_memory(memory, env.device, run.activation_checkpointing)
    source = open_sequences(run.data, run.seq_len, tokenizer, run.text_field,
                            exclude=[run.run_dir], verify=run.verify_data,
                            progress=progress and env.is_main)
    loader = BatchLoader(source.sequences, run.batch_size, run.grad_accum, run.seed,
                         env.dp_rank, env.dp_size)
    validation = (Validation(run.eval_data, run.seq_len, run.eval_sequences,
                             max(1, micro_batch), env.dp_size, run.text_field, tokenizer)
                  if run.eval_data else None)
    tensorboard = _tensorboard_check(run)
    echo(describe(run, model_config, env, source, memory, bf16, threads, validation))
    for note in source.notes + _held_out_overlap(validation, source.files):
        echo(f"  note: {note}")
    lh = model_config.lighthouse
    if (run.lighthouse_steps and model_config.lighthouse_layer_indices and lh.num_levels > 1
            and lh.gathered_length(run.seq_len) >= run.seq_len):
        echo(f"warning: stage 1 gathers {lh.gathered_length(run.seq_len):,} entries from "
             f"{run.seq_len:,} tokens: Lighthouse costs more than dense attention here; "
             "lower topk or raise num_levels (lighthouse-attn plan --suggest)")
    if dry_run:
        return RunResult("dry run", 0, str(run_dir), None, None)

    # ---- 2. Model and optimizer: same init on every process; checkpointing, compile, FSDP2 -
    torch.manual_seed(run.seed)
    model = model_from_config(model_config).to(env.device)
    if env.cp_size > 1:
        model.set_context_parallel(env.cp_group, env.cp_rank, env.cp_size)
    model = parallelize(model, activation_checkpointing=run.activation_checkpointing,
                        compile=run.compile, shard=env.distributed)
    optimizer = make_optimizer(model, run, env.device)

    # ---- 3. Fresh start or resume from the newest checkpoint -----------------------
    session = _Session(env, run, model_config, tokenizer, log, model, optimizer, loader,
                       TrainState())
    env.barrier()  # every process has checked the run directory before the first writes
    if env.is_main:
        for stale in checkpoint.clean_stale_temporaries(run_dir):
            log.event(f"removed {stale}, a checkpoint whose writer died before finishing it")
    if resume:
        _resume(session)
    elif env.is_main:
        _start_fresh(session)
    env.barrier()
    state = session.state
    model.set_attention(stage_at(state.step, run.lighthouse_steps))
    if run.switch_ramp:
        model.switch_layers(_switched(run, model, state.step))
    model.train()
    autocast = (torch.autocast(env.device.type, dtype=torch.bfloat16) if bf16
                else contextlib.nullcontext())

    # ---- 4. The loop ----------------------------------------------------------------
    interrupted = _loop(session, validation, autocast, tensorboard, progress, on_step)

    # ---- 5. The dense model, plot and summary -----------------------------------------
    final_dir = None
    if interrupted is None:
        model_state = distributed.full_model_state_dict(model)
        if env.is_main:
            final_dir = str(checkpoint.save_final_model(run_dir, model_state, model_config,
                                                        state.step, tokenizer))
    summary_path = None
    if env.is_main:
        summary_path = str(report(run, run_dir, final_dir, interrupted, state.step))
    log.event(f"report: {summary_path}")
    env.barrier()
    status = "interrupted" if interrupted else "finished"
    return RunResult(status, state.step, str(run_dir), final_dir, summary_path, interrupted)


def _switched(run: TrainConfig, model, step: int) -> int:
    """Lighthouse layers already dense at ``step`` under the run's staggered switch."""
    return layers_switched_at(step, run.lighthouse_steps, run.switch_ramp,
                              len(model.config.lighthouse_layer_indices))


def _loop(s: _Session, validation: Validation | None, autocast, tensorboard, progress: bool,
          on_step: Callable[[dict], None] | None) -> str | None:
    """Train from ``s.state.step`` to the last step: the stage switch, the learning rate,
    scoring, metrics, checkpoints; stops after a checkpoint on SIGINT/SIGTERM. Returns the
    signal's name when one stopped it, else ``None``.

    Raises:
        TrainingError: a non-finite loss (the weights are not updated)."""
    env, run, model, optimizer, loader, log, state = (s.env, s.run, s.model, s.optimizer,
                                                      s.loader, s.log, s.state)
    run_dir = s.run_dir
    bar = tqdm(total=run.total_steps, initial=state.step, unit="step", dynamic_ncols=True,
               disable=bar_disable(progress and env.is_main))
    scored_at = eval_steps(run.validation_every, run.lighthouse_steps, run.total_steps) \
        if validation else set()
    board = tensorboard(run_dir / "tensorboard") if tensorboard and env.is_main else None
    step_tokens = run.batch_size * run.seq_len
    interrupted = None
    with StopRequest() as stop:
        while state.step < run.total_steps:
            step = state.step
            stage = stage_at(step, run.lighthouse_steps)
            if stage != model.attention_mode:
                model.set_attention(stage)
                log.event(f"step {step}: switch to dense SDPA in every layer (same weights, "
                          "optimizer state, learning-rate schedule and data position)")
            elif run.switch_ramp:
                count = _switched(run, model, step)
                if count != model.switched_layers:
                    model.switch_layers(count)
                    log.event(f"step {step}: {count} of "
                              f"{len(model.config.lighthouse_layer_indices)} Lighthouse layers "
                              "now run dense (staggered switch)")
            lr = lr_at(step, run.total_steps, run.lr, run.warmup_steps, run.min_lr_ratio,
                       run.schedule, run.wsd_decay)
            for group in optimizer.param_groups:
                group["lr"] = lr

            t0 = time.perf_counter()
            try:
                loss, grad_norm = train_step(model, optimizer, loader.next_step(), autocast,
                                             run.grad_clip, env)
            except NonFiniteLoss as err:
                last = checkpoint.list_checkpoints(run_dir)
                where = f"the last good checkpoint is {last[-1][1]}" if last else \
                    "no checkpoint was written yet"
                msg = (f"non-finite {err} at step {step + 1} ({stage} stage); stopped without "
                       f"updating the weights; {where}. Lower lr or raise warmup_steps; "
                       "with precision bf16 off a GPU, try fp32")
                log.event(msg)
                bar.close()
                raise TrainingError(msg) from None
            dt = time.perf_counter() - t0
            state.step += 1
            state.elapsed_s += dt
            state.tokens += step_tokens
            step = state.step

            record = {"step": step, "stage": stage, "loss": loss, "lr": lr,
                      "grad_norm": grad_norm, "tokens_per_s": step_tokens / dt,
                      "tokens_step": step_tokens, "tokens": state.tokens,
                      "elapsed_s": state.elapsed_s}
            if step in scored_at:
                record.update(validation.scores(model, env, autocast, stage))
            if env.is_main:
                log.append(record)
                if board is not None:
                    for key in ("loss", "lr", "grad_norm", "tokens_per_s", "val_dense",
                                "val_lighthouse"):
                        if key in record:
                            board.add_scalar(f"train/{key}" if key[:3] != "val" else
                                             f"val/{key[4:]}", record[key], step)
                bar.set_postfix(stage=stage, loss=f"{loss:.3f}",
                                tok_s=f"{step_tokens / dt:,.0f}")
                bar.update()
                if on_step is not None:
                    on_step(record)

            stage_end = step == run.lighthouse_steps and run.dense_steps > 0
            saved = step % run.ckpt_every == 0 or stage_end or step in run.save_at
            if saved:
                path = _save(s, stage)
                log.event(f"step {step}: checkpoint {path}")
            if env.any(stop.requested) and step < run.total_steps:
                if not saved:
                    path = _save(s, stage)
                interrupted = stop.signal_name or "signal"
                log.event(f"{interrupted} at step {step}: checkpoint {path}; continue with "
                          f"`lighthouse-attn train --resume {run_dir}`")
                break
    bar.close()
    if board is not None:
        board.close()
    return interrupted


def _start_fresh(s: _Session) -> None:
    """A fresh start (main process): clear an earlier run's files (the run directory is
    empty, or ``overwrite`` was asked for) and write the run's ``config.json``."""
    checkpoint.clear_run_files(s.run_dir)
    write_json(s.run_dir / "config.json",
               {"train": s.run.to_dict(), "model": s.model_config.to_dict()})
    s.log.event(f"started {s.run_dir}")


def _resume(s: _Session) -> None:
    """Load the newest checkpoint (weights, optimizer, data position, RNG, :class:`TrainState`)
    and cut the metrics log back to it; a directory with no checkpoint restarts at step 0."""
    ckpts = checkpoint.list_checkpoints(s.run_dir)
    if ckpts:
        path = ckpts[-1][1]
        try:
            saved = checkpoint.read_checkpoint(path, s.model_config, s.tokenizer)
        except ValueError as err:
            older = (f"; remove {path} to resume from {ckpts[-2][1].name}"
                     if len(ckpts) > 1 else "")
            raise ValueError(f"{err}{older}") from None
        for note in settings_changes(saved["trainer"].get("run"), s.run, path):
            s.log.event(note)
        distributed.load_full_state_dicts(s.model, s.optimizer, saved["model"],
                                          saved["optimizer"])
        s.loader.load_state_dict(saved["trainer"]["loader"])
        restore_rng(saved["rng"])
        s.state.load_state_dict(saved["trainer"])
    metrics = s.run_dir / "metrics.jsonl"
    trained = metrics.is_file() and metrics.stat().st_size > 0
    s.log.truncate(s.state.step)
    if ckpts or trained:
        s.log.event(f"resumed {s.run_dir} at step {s.state.step}/{s.run.total_steps}"
                    + (f" from {ckpts[-1][1].name}" if ckpts else " (no checkpoint: restart)"))
    else:  # a prepared directory that never trained (as compare makes them)
        s.log.event(f"started {s.run_dir}")


def _save(s: _Session, stage: str) -> Path | None:
    """Checkpoint the run after ``s.state.step`` (collective; the main process writes it and
    prunes old ones); returns its path on the main process."""
    model_state, optimizer_state = distributed.full_state_dicts(s.model, s.optimizer)
    path = None
    if s.env.is_main:
        trainer_state = {"stage": stage, "loader": s.loader.state_dict(),
                         **s.state.state_dict(), "run": s.run.to_dict()}
        path = checkpoint.save_checkpoint(s.run_dir, s.state.step, model_state,
                                          optimizer_state, trainer_state, rng_state(),
                                          s.model_config, stage, s.tokenizer)
        checkpoint.prune_checkpoints(s.run_dir, s.run.keep_ckpts,
                                     {s.run.lighthouse_steps, *s.run.save_at})
    s.env.barrier()
    return path


_SAME_ON_RESUME = ("seq_len", "batch_size", "grad_accum", "data", "text_field", "seed",
                   "lighthouse_steps", "tokenizer", "sep_token")
"""Settings a resumed run must keep: they decide which batches come next and where stage 1
ends. Others (learning rate, schedule, length of recovery, checkpoint and evaluation cadence)
may change from the checkpoint on; the log says so."""
_FREE_ON_RESUME = ("run_dir", "device", "threads", "context_parallel", "preset", "verify_data")


def settings_changes(saved: dict | None, run: TrainConfig, path: Path) -> list[str]:
    """What differs between the settings a checkpoint was written with and ``run``'s: a
    ``ValueError`` for settings a resumed run must keep, else one note per changed setting
    (none for checkpoints written before settings were recorded)."""
    if not saved:
        return []
    now = json.loads(json.dumps(run.to_dict()))
    # a setting newer than the checkpoint counts as its default there
    saved = {**json.loads(json.dumps(TrainConfig(run_dir="-").to_dict())), **saved}
    changed = {k: (saved.get(k), now.get(k)) for k in set(saved) | set(now)
               if k not in _FREE_ON_RESUME and saved.get(k) != now.get(k)}
    fixed = sorted(k for k in changed if k in _SAME_ON_RESUME)
    if fixed:
        what = "; ".join(f"{k}: {changed[k][0]!r} at the checkpoint, {changed[k][1]!r} now"
                         for k in fixed)
        raise ValueError(f"the run's config.json no longer matches checkpoint {path} ({what}); "
                         "a resumed run keeps these settings: restore them in config.json, or "
                         "start a new run")
    return [f"config.json changed since {path.name}: {k} {changed[k][0]!r} -> "
            f"{changed[k][1]!r} (used from here on)" for k in sorted(changed)]


def _held_out_overlap(validation: Validation | None, train_files: list[str]) -> list[str]:
    """A warning when held-out files are also training files (then nothing is held out)."""
    if validation is None:
        return []
    mine = {os.path.realpath(f) for f in train_files}
    shared = [f for f in validation.files if os.path.realpath(f) in mine]
    if not shared:
        return []
    return [f"warning: {len(shared)} held-out file(s) are also training data ({shared[0]}"
            f"{', ...' if len(shared) > 1 else ''}): the held-out loss is not held out; pass "
            "eval_data text the run does not train on"]


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               micro_batches: list[tuple[torch.Tensor, torch.Tensor]], autocast,
               grad_clip: float, env: DistEnv) -> tuple[float, float]:
    """One optimizer step over ``micro_batches`` of (inputs, targets) int64 ``(b, N)``.

    Returns the mean loss over every token of the global batch and the gradient norm before
    clipping. Raises :class:`NonFiniteLoss` before updating if either is not finite.
    """
    optimizer.zero_grad(set_to_none=True)
    total = torch.zeros((), device=env.device)
    for i, (inputs, targets) in enumerate(micro_batches):
        if env.distributed:  # reduce gradients once, after the last micro-batch
            model.set_requires_gradient_sync(i == len(micro_batches) - 1)
        if env.cp_size > 1:  # this rank's two chunks of every sequence
            inputs = shard_sequence(inputs, 1, env.cp_rank, env.cp_size)
            targets = shard_sequence(targets, 1, env.cp_rank, env.cp_size)
        inputs = inputs.to(env.device, non_blocking=True)
        targets = targets.to(env.device, non_blocking=True)
        with autocast:
            logits = model(inputs)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten()) / len(micro_batches)
        loss.backward()
        total += loss.detach()
    loss = env.mean(total).item()
    grad_norm = distributed.grad_norm_value(
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip))
    if not math.isfinite(loss):
        raise NonFiniteLoss(f"loss {loss} (gradient norm {grad_norm})")
    if not math.isfinite(grad_norm):
        raise NonFiniteLoss(f"gradient norm {grad_norm} (loss {loss:.4f})")
    optimizer.step()
    return loss, grad_norm


def make_optimizer(model: torch.nn.Module, run: TrainConfig, device: torch.device
                   ) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on norm gains)."""
    params = list(model.parameters())
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": run.weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=run.lr, betas=(run.beta1, run.beta2),
                             fused=device.type == "cuda")


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tensorboard_check(run: TrainConfig):
    """``SummaryWriter`` when ``--tensorboard`` is on (``ValueError`` if not installed)."""
    if not run.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise SettingError("tensorboard needs the tensorboard package: pip install "
                           "tensorboard (or turn tensorboard off)", "tensorboard") from None
    return SummaryWriter


def describe(run: TrainConfig, model: ModelConfig, env: DistEnv, data: DataSource,
             memory: dict[str, int], bf16: bool, threads: int | None,
             validation: Validation | None = None) -> str:
    """The plan printed before training."""
    lh = model.lighthouse
    lh_layers = model.lighthouse_layer_indices
    if run.lighthouse_steps and lh_layers:
        stage1 = (f"Lighthouse L={lh.num_levels} p={lh.pooling_factor} K={lh.topk} "
                  f"{lh.scorer}, {lh.selection} selection, in {len(lh_layers)}/"
                  f"{model.n_layers} layers (dense: {list(model.dense_layer_indices)}), "
                  "gathered length "
                  f"{lh.gathered_length(run.seq_len):,} of {run.seq_len:,}")
    else:
        stage1 = "none (dense from scratch)" if not run.lighthouse_steps else \
            "every layer is in dense_layers: stage 1 runs dense"
    tokens = run.batch_size * run.seq_len
    header = (f"lighthouse-attn train: preset {run.preset}, "
              f"{model.num_parameters() / 1e6:.2f}M parameters ({model.n_layers} layers, "
              f"d_model {model.d_model}, {model.n_heads} heads, {model.n_kv_heads} kv heads)")
    processes = f"{env.world_size} process{'es' if env.world_size > 1 else ''}" + (
        f": {env.dp_size} data-parallel x {env.cp_size} context-parallel"
        if env.cp_size > 1 else "")
    source = "embedded stdlib corpus" if not run.data else ", ".join(run.data)
    if data.prepared:
        source += ", prepared: streamed from its shards"
    seqs = data.sequences
    tokenizer = "bytes" if run.tokenizer == "bytes" else (
        f"{run.tokenizer} (vocab {model.vocab_size:,})")
    device = env.device.type + (f" ({threads} thread{'s' if threads > 1 else ''})"
                                if threads else "")
    schedule = run.schedule + (f" (decay over the last {run.wsd_decay} steps)"
                               if run.schedule == "wsd" else "")
    held_out = (f"{validation.count} x {run.seq_len:,} tokens of {', '.join(run.eval_data)}, "
                f"every {run.validation_every} steps" if validation else "none given")
    return "\n".join([
        header,
        f"  stage 1: {run.lighthouse_steps} steps, {stage1}" + (
            f"; its layers turn dense one at a time over its last {run.switch_ramp} steps"
            if run.switch_ramp else ""),
        f"  stage 2: {run.dense_steps} steps, dense SDPA in every layer",
        f"  schedule: {schedule}, lr {run.lr:g}, {run.warmup_steps} warm-up steps",
        f"  held-out: {held_out}",
        f"  batch: {run.batch_size} x {run.seq_len:,} = {tokens:,} tokens/step (grad-accum "
        f"{run.grad_accum}, {processes})",
        f"  data: {seqs.num_tokens:,} tokens, {len(seqs):,} sequences ({source}); the run "
        f"reads {run.total_steps * run.batch_size / len(seqs):.2f} epochs; tokenizer "
        f"{tokenizer}",
        f"  device: {device}, {'bf16 autocast' if bf16 else 'fp32'}, activation checkpointing "
        f"{'on' if run.activation_checkpointing else 'off'}, estimated memory "
        f"{gib(sum(memory.values()))} per process",
        f"  run dir: {run.run_dir}",
    ])


def report(run: TrainConfig, run_dir: Path, final_dir: str | None, interrupted: str | None,
           step: int) -> Path:
    """Write ``loss.png`` and ``summary.md``, print the summary table; returns its path."""
    records = read_metrics(run_dir / "metrics.jsonl")
    switch = run.lighthouse_steps if 0 < run.lighthouse_steps < run.total_steps else None
    title = f"lighthouse-attn train: {run.preset}, seq_len {run.seq_len:,}"
    if records:
        plot_loss(records, switch, run_dir / "loss.png", title,
                  loss_unit(run.tokenizer))
    status = (f"interrupted by {interrupted} at step {step}/{run.total_steps}; resume with "
              f"`lighthouse-attn train --resume {run_dir}`" if interrupted else
              f"finished, {step} steps")
    config = json.loads((run_dir / "config.json").read_text())
    text = write_summary(run_dir / "summary.md", title=title, records=records, config=config,
                         switch_step=switch, final_dir=final_dir, status=status,
                         final_note=how_to_load(final_dir) if final_dir else "")
    tqdm.write(text.split("\n## Config")[0].rstrip())
    return run_dir / "summary.md"
