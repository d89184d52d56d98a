"""The settings of a training run (``TrainConfig``), per-preset defaults, and their checks."""

from __future__ import annotations

import argparse
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace

from ..data import Tokenizer
from ..models import ModelConfig
from ..runtime import DEVICES, PRECISIONS
from .schedule import SCHEDULES, wsd_decay_steps

MAX_SEED = 2**32 - 1
"""Largest seed: every random generator the trainer seeds accepts it."""


# Training defaults per model preset (command-line options override them). The demo's fit
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
    Lighthouse, the next ``dense_steps`` with dense SDPA everywhere.
    """

    run_dir: str
    preset: str = "demo"
    lighthouse_steps: int = 150
    dense_steps: int = 50
    seq_len: int = 2048
    batch_size: int = 2
    grad_accum: int = 1
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 20
    schedule: str = "wsd"
    decay_steps: int | None = None
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.95
    grad_clip: float = 1.0
    seed: int = 0
    data: list[str] = field(default_factory=list)
    text_field: str = "text"
    tokenizer: str = "bytes"
    sep_token: str | None = None
    verify_data: bool = True
    eval_data: list[str] = field(default_factory=list)
    eval_every: int | None = None
    eval_sequences: int = 16
    ckpt_every: int = 50
    keep_ckpts: int = 3
    save_at: list[int] = field(default_factory=list)
    tensorboard: bool = False
    context_parallel: int = 1
    compile: bool = False
    activation_checkpointing: bool = False
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None

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
        """Raise ``ValueError`` naming the first bad setting and a valid alternative."""
        for name in ("seq_len", "batch_size", "grad_accum", "ckpt_every", "keep_ckpts"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1 "
                                 f"(got {getattr(self, name)})")
        for name in ("lighthouse_steps", "dense_steps", "warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 0")
        if self.total_steps < 1:
            raise ValueError("--lighthouse-steps + --dense-steps must be >= 1")
        if not (_has_type(self.seed, "int") and 0 <= self.seed <= MAX_SEED):
            raise ValueError(f"--seed must be an integer in 0..{MAX_SEED} (got {self.seed!r})")
        if not isinstance(self.context_parallel, int) or self.context_parallel < 1:
            raise ValueError(f"--context-parallel must be an integer >= 1 (got "
                             f"{self.context_parallel})")
        if self.threads is not None and self.threads < 1:
            raise ValueError("--threads must be >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"--lr must be a finite number > 0 (got {self.lr})")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"--min-lr-ratio must be in [0, 1] (got {self.min_lr_ratio})")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError("AdamW betas must be in [0, 1)")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"--weight-decay must be a finite number >= 0 (got "
                             f"{self.weight_decay}); the paper uses 0.1")
        if not (math.isfinite(self.grad_clip) and self.grad_clip > 0):
            raise ValueError(f"--grad-clip must be a finite number > 0 (got {self.grad_clip}); "
                             "the paper uses 1.0")
        for name, allowed in (("schedule", SCHEDULES), ("precision", PRECISIONS),
                              ("device", DEVICES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"--{name} must be one of {', '.join(allowed)}")
        if self.decay_steps is not None and self.schedule != "wsd":
            raise ValueError(f"--decay-steps applies to --schedule wsd only (the schedule "
                             f"is {self.schedule}); drop it or use --schedule wsd")
        if self.schedule == "wsd":  # the decay must fit after the warm-up
            room = self.total_steps - self.warmup_steps
            if room < 1:
                raise ValueError(f"--warmup-steps {self.warmup_steps} leaves no step for the "
                                 f"wsd decay in a {self.total_steps}-step run; use "
                                 f"--warmup-steps <= {max(0, self.total_steps - 1)}")
            if not 1 <= self.wsd_decay <= room:
                what = "--decay-steps" if self.decay_steps is not None else \
                    "the default decay (a fifth of the run)"
                raise ValueError(f"{what} must be in 1..{room} (the steps after warm-up; got "
                                 f"{self.wsd_decay}); lower --warmup-steps or pass "
                                 f"--decay-steps <= {room}")
        if any(not 1 <= s <= self.total_steps for s in self.save_at):
            raise ValueError(f"--save-at steps must be in 1..{self.total_steps} (got "
                             f"{self.save_at})")
        if self.eval_every is not None and self.eval_every < 1:
            raise ValueError(f"--eval-every must be >= 1 (got {self.eval_every})")
        if self.eval_sequences < 1:
            raise ValueError(f"--eval-sequences must be >= 1 (got {self.eval_sequences})")
        if (self.eval_every is not None or self.eval_sequences != 16) and not self.eval_data:
            raise ValueError("--eval-every and --eval-sequences need --eval-data PATH (the "
                             "held-out text)")

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
        raise ValueError(f"the model's vocab_size {model.vocab_size} is smaller than the "
                         f"tokenizer's {tokenizer.vocab_size:,} tokens: use a vocab_size >= "
                         f"{tokenizer.vocab_size} (--vocab-size; by default it is the "
                         "tokenizer's)")
    if run.lighthouse_steps > 0 and model.lighthouse_layer_indices:
        try:
            model.lighthouse.validate(run.seq_len)
        except ValueError as err:
            raise ValueError(f"--seq-len {run.seq_len} does not fit the Lighthouse settings: "
                             f"{err}") from None
        model.check_lighthouse_run(run.seq_len)
    if run.context_parallel > 1:
        from ..parallel import chunk_config

        if not model.supports_context_parallel:
            raise ValueError("--context-parallel runs the presets' Llama; an --hf-config "
                             "model trains without it (drop --context-parallel)")
        lighthouse = model.lighthouse if (run.lighthouse_steps > 0 and
                                          model.lighthouse_layer_indices) else None
        try:
            chunk_config(lighthouse or replace(model.lighthouse, num_levels=1), run.seq_len,
                         run.context_parallel)
        except ValueError as err:
            raise ValueError(f"--context-parallel {run.context_parallel}: {err}") from None


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the run; ``None`` defaults are filled from ``PRESET_TRAINING``."""
    g = parser.add_argument_group("run")
    g.add_argument("--run-dir", help="output directory (default: runs/PRESET-TIMESTAMP)")
    g.add_argument("--resume", metavar="RUN_DIR",
                   help="continue RUN_DIR from its latest checkpoint with its own settings")
    g.add_argument("--overwrite", action="store_true",
                   help="allow a --run-dir that already holds a run (its files are replaced)")
    g.add_argument("--lighthouse-steps", type=int,
                   help="stage-1 steps with Lighthouse (0: dense from scratch)")
    g.add_argument("--dense-steps", type=int, help="stage-2 (recovery) steps with dense SDPA")
    g.add_argument("--seq-len", type=int, help="tokens (bytes) per sequence")
    g.add_argument("--batch-size", type=int, help="global batch: sequences per optimizer step")
    g.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimizer step")
    g.add_argument("--data", nargs="+", metavar="PATH",
                   help="a directory prepared by `lighthouse-attn data prepare` (streamed), or "
                        "text: files, directories, globs, .jsonl[.gz|.zst], .parquet (read "
                        "into memory; default: the embedded stdlib corpus)")
    g.add_argument("--text-field", default="text",
                   help="field of .jsonl records, column of parquet files")
    g.add_argument("--tokenizer", default="bytes", metavar="PATH|bytes",
                   help="a Hugging Face tokenizer.json or a directory holding one (stored with "
                        "every checkpoint), or bytes (default: UTF-8 bytes + a separator)")
    g.add_argument("--sep-token", help="special token that separates documents (default: the "
                   "tokenizer's end-of-text token)")
    g.add_argument("--no-verify-data", dest="verify_data", action="store_false", default=None,
                   help="skip the CRC32 check of a prepared corpus's shards at start (their "
                        "sizes are still checked)")
    g.add_argument("--seed", type=int, default=0)
    v = parser.add_argument_group("held-out validation")
    v.add_argument("--eval-data", nargs="+", metavar="PATH",
                   help="held-out text, scored during training under dense attention (and "
                        "under Lighthouse in stage 1)")
    v.add_argument("--eval-every", type=int, help="steps between scorings (default: "
                   "--ckpt-every; also at the end of stage 1 and at the last step)")
    v.add_argument("--eval-sequences", type=int, default=16,
                   help="held-out sequences scored each time (the first M; default 16)")
    o = parser.add_argument_group("optimizer and schedule")
    o.add_argument("--lr", type=float, help="peak learning rate")
    o.add_argument("--min-lr-ratio", type=float, default=0.1,
                   help="final learning rate as a fraction of --lr")
    o.add_argument("--warmup-steps", type=int, help="linear warm-up steps")
    o.add_argument("--schedule", choices=SCHEDULES, default="wsd",
                   help="after warm-up, over both stages: wsd (default: flat, then linear "
                        "decay over --decay-steps), constant (the paper's), cosine or linear")
    o.add_argument("--decay-steps", type=int,
                   help="wsd: decay over the last N steps (default: a fifth of the run)")
    o.add_argument("--weight-decay", type=float, default=0.1)
    o.add_argument("--grad-clip", type=float, default=1.0, help="max global grad norm")
    s = parser.add_argument_group("system")
    s.add_argument("--ckpt-every", type=int, help="checkpoint every N steps")
    s.add_argument("--keep-ckpts", type=int, default=3, help="checkpoints kept (the newest)")
    s.add_argument("--save-at", type=int, nargs="+", metavar="STEP",
                   help="also checkpoint after these steps, and keep those checkpoints")
    s.add_argument("--device", choices=DEVICES, default="auto")
    s.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="auto: bf16 autocast on GPU, fp32 on CPU")
    s.add_argument("--threads", type=int,
                   help="CPU threads per process (default: the cores that are free at start)")
    s.add_argument("--compile", action="store_true", help="torch.compile each block")
    s.add_argument("--context-parallel", type=int, metavar="C",
                   help="split every sequence over C processes (torchrun; the processes form "
                        "a data-parallel x context-parallel mesh); exactly the one-process "
                        "result")
    s.add_argument("--tensorboard", action="store_true",
                   help="also write the scalars for TensorBoard (RUN_DIR/tensorboard)")
    s.add_argument("--activation-checkpointing", action=argparse.BooleanOptionalAction,
                   default=None, help="recompute blocks in the backward pass")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--dry-run", action="store_true",
                   help="validate the settings, print the plan and exit")


def train_config_from_args(args: argparse.Namespace, run_dir: str) -> TrainConfig:
    """The :class:`TrainConfig` of the options, preset defaults filling what is unset."""
    defaults = PRESET_TRAINING[args.preset]
    values = {}
    for f in fields(TrainConfig):
        if f.name == "run_dir":
            continue
        given = getattr(args, f.name, None)
        values[f.name] = defaults[f.name] if given is None and f.name in defaults else given
    # absolute paths: a run resumes from any working directory
    values["data"] = [os.path.abspath(p) for p in args.data or []]
    values["save_at"] = sorted(set(getattr(args, "save_at", None) or []))
    values["eval_data"] = [os.path.abspath(p) for p in getattr(args, "eval_data", None) or []]
    tokenizer = getattr(args, "tokenizer", None) or "bytes"
    values["tokenizer"] = tokenizer if tokenizer == "bytes" else os.path.abspath(tokenizer)
    cfg = TrainConfig(run_dir=run_dir, **{k: v for k, v in values.items() if v is not None})
    cfg.validate()
    return cfg
