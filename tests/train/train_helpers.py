"""Tiny runs for the trainer tests (a few seconds each on a CPU)."""

import json
import random
from pathlib import Path

from lighthouse_attn import LighthouseConfig
from lighthouse_attn.models import LlamaConfig
from lighthouse_attn.train import TrainConfig

TINY_MODEL = LlamaConfig(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, ffn_hidden=48,
                         dense_layers=(0,),
                         lighthouse=LighthouseConfig(num_levels=2, pooling_factor=4, topk=128))

# the same model and run as command-line options
TINY_ARGS = ["--d-model", "32", "--n-layers", "3", "--n-heads", "4", "--n-kv-heads", "2",
             "--ffn-hidden", "48", "--dense-layers", "0", "--num-levels", "2",
             "--pooling-factor", "4", "--topk", "128", "--seq-len", "512", "--warmup-steps", "2",
             "--lr", "0.003", "--threads", "1", "--no-progress"]


def make_corpus(directory: Path, n_bytes: int = 40_000) -> str:
    """A deterministic text file of pseudo-words; returns its path."""
    rng = random.Random(0)
    words = ["def", "return", "self", "import", "class", "lambda", "x", "y", "for", "in"]
    text = []
    while sum(map(len, text)) < n_bytes:
        text.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + "\n")
    path = directory / "corpus.txt"
    path.write_text("".join(text))
    return str(path)


def tiny_run(tmp_path: Path, name: str, corpus: str, **changes) -> TrainConfig:
    settings = dict(run_dir=str(tmp_path / name), data=[corpus], seq_len=512, batch_size=2,
                    lighthouse_steps=3, dense_steps=3, warmup_steps=2, lr=3e-3, ckpt_every=2,
                    threads=1)
    settings.update(changes)
    return TrainConfig(**settings)


def metrics(run_dir) -> list[dict]:
    return [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text()
            .splitlines()]


def losses(run_dir) -> list[float]:
    return [r["loss"] for r in metrics(run_dir)]
