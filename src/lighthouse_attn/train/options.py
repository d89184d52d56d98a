"""The settings of a training run (``TrainConfig``), per-preset defaults, and their checks."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace

from ..data import Tokenizer
from ..models import ModelConfig
from ..runtime import DEVICES, PRECISIONS
from ..settings import SettingError, setting
from .schedule import SCHEDULES, wsd_decay_steps

MAX_SEED = 2**32 - 1
"""Largest seed: every random generator the trainer seeds accepts it."""


# Training defaults per model preset (the settings a run gives override them). The demo's fit
# the main job's budget (a few minutes on a 2-core CPU); the others are starting points.
PRESET_TRAINING: dict[str, dict] = {
    "demo": dict(seq_len=2048, batch_size=2, lighthouse_steps=150, dense_steps=50, lr=2e-3,
                 warmup_steps=20, ckpt_every=50, activation_checkpointing=False),
    "small": dict(seq_len=32768, batch_size=8, lighthouse_steps=4000, dense_steps=1000,
                  lr=6e-4, warmup_steps=200, ckpt_every=250, activation_checkpointing=True),
    "paper-268m": dict(seq_len=98304, batch_size=8, lighthouse_steps=8000, dense_steps=2000,
                       lr=3e-4, warmup_steps=500, ckpt_every=250,
                       activation_checkpointing=True),
}
PRESET_TRAINING["paper-530m"] = PRESET_TRAINING["paper-268m"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a run except the model architecture (see ``LlamaConfig``).

    ``preset`` names the model in titles and run directories (``hf-MODEL_TYPE`` for a
    ``--hf-config`` run, whose training defaults are the demo preset's).

    ``batch_size`` is the global batch in sequences per optimizer step, split into
    ``grad_accum`` micro-steps and over the processes. Steps ``1..lighthouse_steps`` train with
    Lighthouse, the next ``dense_steps`` with dense SDPA everywhere. Each field's metadata
    holds its help text (see :func:`~lighthouse_attn.settings.setting`).
    """

    run_dir: str = setting(help="output directory (default: runs/PRESET-TIMESTAMP)",
                           group="run")
    preset: str = setting("demo", help="the model's name in titles and run directories",
                          group="", cli=False)
    lighthouse_steps: int = setting(150, help="stage-1 steps with Lighthouse (0: dense from "
                                    "scratch)", group="run", preset=True)
    dense_steps: int = setting(50, help="stage-2 (recovery) steps with dense SDPA",
                               group="run", preset=True)
    switch_ramp: int = setting(0, help="a staggered switch: over the last N steps of stage 1 "
                               "the Lighthouse layers turn dense one at a time, first layer "
                               "first (0: all at once, as the paper)", group="run")
    seq_len: int = setting(2048, help="tokens per sequence", group="run", preset=True)
    batch_size: int = setting(2, help="global batch: sequences per optimizer step",
                              group="run", preset=True)
    grad_accum: int = setting(1, help="micro-steps per optimizer step", group="run")
    lr: float = setting(2e-3, help="peak learning rate", group="optimizer and schedule",
                        preset=True)
    min_lr_ratio: float = setting(0.1, help="final learning rate as a fraction of lr",
                                  group="optimizer and schedule")
    warmup_steps: int = setting(20, help="linear warm-up steps",
                                group="optimizer and schedule", preset=True)
    schedule: str = setting("wsd", help="after warm-up, over both stages: wsd (flat, then "
                            "linear decay over decay_steps), constant (the paper's), cosine or "
                            "linear", group="optimizer and schedule", choices=SCHEDULES)
    decay_steps: int | None = setting(None, help="wsd: decay over the last N steps (default: "
                                      "a fifth of the run)", group="optimizer and schedule")
    weight_decay: float = setting(0.1, help="AdamW weight decay",
                                  group="optimizer and schedule")
    beta1: float = setting(0.9, help="AdamW beta1", group="optimizer and schedule")
    beta2: float = setting(0.95, help="AdamW beta2", group="optimizer and schedule")
    grad_clip: float = setting(1.0, help="max global grad norm",
                               group="optimizer and schedule")
    seed: int = setting(0, help="seed of the initialisation and the data order", group="run")
    data: list[str] = setting(factory=list, help="a directory prepared by `lighthouse-attn "
                              "data prepare` (streamed), or text: files, directories, globs, "
                              ".jsonl[.gz|.zst], .parquet (read into memory; default: the "
                              "embedded stdlib corpus)", group="run", metavar="PATH")
    text_field: str = setting("text", help="field of .jsonl records, column of parquet files",
                              group="run")
    tokenizer: str = setting("bytes", help="a Hugging Face tokenizer.json or a directory "
                             "holding one (stored with every checkpoint), or bytes (UTF-8 bytes "
                             "+ a separator)", group="run", metavar="PATH|bytes")
    sep_token: str | None = setting(None, help="special token that separates documents "
                                    "(default: the tokenizer's end-of-text token)",
                                    group="run")
    verify_data: bool = setting(True, help="skip the CRC32 check of a prepared corpus's "
                                "shards at start (their sizes are still checked)", group="run",
                                flag="--no-verify-data")
    eval_data: list[str] = setting(factory=list, help="held-out text, scored during training "
                                   "under dense attention (and under Lighthouse in stage 1)",
                                   group="held-out validation", metavar="PATH")
    eval_every: int | None = setting(None, help="steps between scorings (default: ckpt_every; "
                                     "also at the end of stage 1 and at the last step)",
                                     group="held-out validation")
    eval_sequences: int = setting(16, help="held-out sequences scored each time (the first M)",
                                  group="held-out validation")
    ckpt_every: int = setting(50, help="checkpoint every N steps", group="system",
                              preset=True)
    keep_ckpts: int = setting(3, help="checkpoints kept (the newest)", group="system")
    save_at: list[int] = setting(factory=list, help="also checkpoint after these steps, and "
                                 "keep those checkpoints", group="system", metavar="STEP")
    tensorboard: bool = setting(False, help="also write the scalars for TensorBoard "
                                "(RUN_DIR/tensorboard)", group="system")
    context_parallel: int = setting(1, help="split every sequence over C processes (torchrun; "
                                    "the processes form a data-parallel x context-parallel "
                                    "mesh); exactly the one-process result", group="system",
                                    metavar="C")
    compile: bool = setting(False, help="torch.compile each block", group="system")
    activation_checkpointing: bool = setting(False, help="recompute blocks in the backward "
                                             "pass", group="system", preset=True,
                                             negatable=True)
    device: str = setting("auto", help="auto: CUDA when available, else CPU", group="system",
                          choices=DEVICES)
    precision: str = setting("auto", help="auto: bf16 autocast on GPU, fp32 on CPU",
                             group="system", choices=PRECISIONS)
    threads: int | None = setting(None, help="CPU threads per process (default: the cores "
                                  "that are free at start)", group="system")

    @property
    def total_steps(self) -> int:
        return self.lighthouse_steps + self.dense_steps

    @property
    def wsd_decay(self) -> int:
        """Decay steps of the ``wsd`` schedule (see ``schedule.wsd_decay_steps``)."""
        return wsd_decay_steps(self.decay_steps, self.total_steps)

    @property
    def validation_every(self) -> int:
        """Steps between held-out evaluations (``--eval-every``, else ``--ckpt-every``)."""
        return self.eval_every or self.ckpt_every

    def validate(self) -> None:
        """Raise :class:`SettingError` naming the first bad setting and a valid alternative."""
        for name in ("seq_len", "batch_size", "grad_accum", "ckpt_every", "keep_ckpts"):
            if getattr(self, name) < 1:
                raise SettingError(f"{name} must be >= 1 (got {getattr(self, name)})", name)
        for name in ("lighthouse_steps", "dense_steps", "warmup_steps"):
            if getattr(self, name) < 0:
                raise SettingError(f"{name} must be >= 0 (got {getattr(self, name)})", name)
        if self.total_steps < 1:
            raise SettingError("lighthouse_steps + dense_steps must be >= 1",
                               "lighthouse_steps", "dense_steps")
        if not 0 <= self.switch_ramp <= self.lighthouse_steps:
            raise SettingError(f"switch_ramp must be in 0..lighthouse_steps "
                               f"({self.lighthouse_steps}; got {self.switch_ramp})",
                               "switch_ramp", "lighthouse_steps")
        if not (_has_type(self.seed, "int") and 0 <= self.seed <= MAX_SEED):
            raise SettingError(f"seed must be an integer in 0..{MAX_SEED} (got {self.seed!r})",
                               "seed")
        if not isinstance(self.context_parallel, int) or self.context_parallel < 1:
            raise SettingError(f"context_parallel must be an integer >= 1 (got "
                               f"{self.context_parallel})", "context_parallel")
        if self.threads is not None and self.threads < 1:
            raise SettingError(f"threads must be >= 1 (got {self.threads})", "threads")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise SettingError(f"lr must be a finite number > 0 (got {self.lr})", "lr")
        if not 0 <= self.min_lr_ratio <= 1:
            raise SettingError(f"min_lr_ratio must be in [0, 1] (got {self.min_lr_ratio})",
                               "min_lr_ratio")
        for name in ("beta1", "beta2"):
            if not 0 <= getattr(self, name) < 1:
                raise SettingError(f"AdamW {name} must be in [0, 1) (got "
                                   f"{getattr(self, name)}); the paper uses 0.9 and 0.95",
                                   name)
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise SettingError(f"weight_decay must be a finite number >= 0 (got "
                               f"{self.weight_decay}); the paper uses 0.1", "weight_decay")
        if not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise SettingError(f"grad_clip must be a finite number > 0 (got {self.grad_clip}); "
                               "the paper uses 1.0", "grad_clip")
        for name, allowed in (("schedule", SCHEDULES), ("precision", PRECISIONS),
                              ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise SettingError(f"{name} must be one of {', '.join(allowed)} (got "
                                   f"{getattr(self, name)!r})", name)
        if self.decay_steps is not None and self.schedule != "wsd":
            raise SettingError(f"decay_steps applies to the wsd schedule only (the schedule "
                               f"is {self.schedule}); drop it or use schedule wsd",
                               "decay_steps", "schedule")
        if self.schedule == "wsd":  # the decay must fit after the warm-up
            room = self.total_steps - self.warmup_steps
            if room < 1:
                raise SettingError(f"warmup_steps {self.warmup_steps} leaves no step for the "
                                   f"wsd decay in a {self.total_steps}-step run; use "
                                   f"warmup_steps <= {max(0, self.total_steps - 1)}",
                                   "warmup_steps")
            if not 1 <= self.wsd_decay <= room:
                what = "decay_steps" if self.decay_steps is not None else \
                    "the default decay (a fifth of the run)"
                raise SettingError(f"{what} must be in 1..{room} (the steps after warm-up; "
                                   f"got {self.wsd_decay}); lower warmup_steps or set "
                                   f"decay_steps <= {room}", "decay_steps", "warmup_steps")
        if any(not 1 <= s <= self.total_steps for s in self.save_at):
            raise SettingError(f"save_at steps must be in 1..{self.total_steps} (got "
                               f"{self.save_at})", "save_at")
        if self.eval_every is not None and self.eval_every < 1:
            raise SettingError(f"eval_every must be >= 1 (got {self.eval_every})",
                               "eval_every")
        if self.eval_sequences < 1:
            raise SettingError(f"eval_sequences must be >= 1 (got {self.eval_sequences})",
                               "eval_sequences")
        if (self.eval_every is not None or self.eval_sequences != 16) and not self.eval_data:
            raise SettingError("eval_every and eval_sequences need eval_data (the held-out "
                               "text)", "eval_every", "eval_sequences", "eval_data")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of :meth:`to_dict`; ``ValueError`` for unknown settings or a value of the
        wrong type (a run ``config.json`` edited by hand)."""
        if not isinstance(d, dict):
            raise ValueError(f"the training settings must be a JSON object, got "
                             f"{type(d).__name__}")
        unknown = sorted(set(d) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"unknown training settings {unknown} in the run config")
        check_types(d)
        return cls(**d)


def check_types(settings: dict) -> None:
    """``ValueError`` for a training setting whose value has the wrong type (``1.5`` steps,
    ``true`` as a batch size, ``"512"`` as a length)."""
    types = {f.name: f.type for f in fields(TrainConfig)}
    for name, value in settings.items():
        if name in types and not _has_type(value, types[name]):
            raise ValueError(f"training setting {name!r} must be {types[name]}, got "
                             f"{value!r}")


def _has_type(value: object, annotation: str) -> bool:
    """Whether a JSON value fits a field annotation such as ``"int | None"`` or
    ``"list[str]"``."""
    for option in annotation.split("|"):
        option = option.strip()
        if option == "None" and value is None:
            return True
        if option == "bool" and isinstance(value, bool):
            return True
        if option == "int" and isinstance(value, int) and not isinstance(value, bool):
            return True
        if option == "float" and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if option == "str" and isinstance(value, str):
            return True
        if option.startswith("list[") and isinstance(value, list) and all(
                _has_type(v, option[5:-1]) for v in value):
            return True
    return False


def validate_model_for_run(model: ModelConfig, run: TrainConfig, tokenizer: Tokenizer) -> None:
    """Check the model against the run: the tokenizer's vocabulary, and the sequence length
    against the Lighthouse budget when stage 1 has Lighthouse layers."""
    if model.vocab_size < tokenizer.vocab_size:
        raise SettingError(f"the model's vocab_size {model.vocab_size} is smaller than the "
                         f"tokenizer's {tokenizer.vocab_size:,} tokens: use a vocab_size >= "
                           f"{tokenizer.vocab_size} (by default it is the tokenizer's)",
                           "vocab_size")
    if run.lighthouse_steps > 0 and model.lighthouse_layer_indices:
        try:
            model.lighthouse.validate(run.seq_len)
        except ValueError as err:
            raise SettingError(f"seq_len {run.seq_len} does not fit the Lighthouse settings: "
                               f"{err}", "seq_len") from None
        model.check_lighthouse_run(run.seq_len)
    if run.switch_ramp and not model.supports_context_parallel:
        raise SettingError("switch_ramp turns the presets' Llama layers dense one at a time; "
                           "a Hugging Face model switches all at once (set switch_ramp 0)",
                           "switch_ramp")
    if run.context_parallel > 1:
        from ..parallel import chunk_config

        if not model.supports_context_parallel:
            raise SettingError("context_parallel runs the presets' Llama; a Hugging Face "
                               "model trains without it (set context_parallel 1)",
                               "context_parallel")
        lighthouse = model.lighthouse if (run.lighthouse_steps > 0 and
                                          model.lighthouse_layer_indices) else None
        try:
            chunk_config(lighthouse or replace(model.lighthouse, num_levels=1), run.seq_len,
                         run.context_parallel)
        except ValueError as err:
            raise SettingError(f"context_parallel {run.context_parallel}: {err}",
                               "context_parallel") from None
