"""A tiny trained run shared by the evaluation tests (a few seconds on a CPU, once per session).

Not a conftest.py: a second module named ``conftest`` would shadow ``tests/conftest.py``
for the other directories' ``from conftest import ...``.
"""

import random
from pathlib import Path

import torch

from lighthouse_attn import LighthouseConfig
from lighthouse_attn.models import LlamaConfig
from lighthouse_attn.train import TrainConfig, train

# 3 layers, layer 0 always dense; Lighthouse L=2, p=4, K=128: valid from 512 tokens
EVAL_MODEL = LlamaConfig(d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, ffn_hidden=48,
                         dense_layers=(0,),
                         lighthouse=LighthouseConfig(num_levels=2, pooling_factor=4, topk=128))
TRAINED_SEQ_LEN = 512


def write_corpus(path: Path, n_bytes: int = 40_000, seed: int = 0) -> str:
    """A deterministic text file of pseudo-words; returns its path."""
    rng = random.Random(seed)
    words = ["def", "return", "self", "import", "class", "lambda", "x", "y", "for", "in"]
    lines = []
    while sum(map(len, lines)) < n_bytes:
        lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + "\n")
    path.write_text("".join(lines))
    return str(path)


_SHARED: dict = {}  # built once per test session


def shared_corpus(tmp_path_factory) -> str:
    if "corpus" not in _SHARED:
        _SHARED["corpus"] = write_corpus(tmp_path_factory.mktemp("eval-corpus") / "corpus.txt")
    return _SHARED["corpus"]


def shared_run(tmp_path_factory) -> Path:
    """A finished run (once per session): 4 Lighthouse steps, 2 dense steps, checkpoints at
    steps 2, 4 and 6, trained at :data:`TRAINED_SEQ_LEN`."""
    if "run" in _SHARED:
        return _SHARED["run"]
    run_dir = tmp_path_factory.mktemp("eval-runs") / "tiny"
    run = TrainConfig(run_dir=str(run_dir), data=[shared_corpus(tmp_path_factory)],
                      seq_len=TRAINED_SEQ_LEN, batch_size=2, lighthouse_steps=4, dense_steps=2,
                      warmup_steps=1, lr=3e-3, ckpt_every=2, threads=1)
    threads = torch.get_num_threads()
    try:
        result = train(run, EVAL_MODEL, progress=False)
    finally:
        torch.set_num_threads(threads)  # the trainer sets its own; leave other tests theirs
    assert result.status == "finished"
    _SHARED["run"] = run_dir
    return run_dir
