"""Small corpora and a BPE tokenizer trained in the test (no downloads)."""

from __future__ import annotations

import json
import random
from pathlib import Path

WORDS = ("alpha beta gamma delta epsilon zeta theta lambda sigma omega river stone cloud "
         "light house tower signal window pyramid select gather scatter dense sparse").split()


def documents(n: int, seed: int = 0, words: int = 60) -> list[str]:
    """``n`` random documents of words (with some non-ASCII text)."""
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, words))) + " é中"
            for _ in range(n)]


def train_bpe(path: Path, vocab_size: int = 300, eos: str = "<|endoftext|>") -> Path:
    """A byte-level BPE ``tokenizer.json`` trained on :func:`documents`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[eos, "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(documents(200, seed=99), trainer)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return path


def write_jsonl(path: Path, docs: list[str], field: str = "text") -> Path:
    path.write_text("".join(json.dumps({field: d, "id": i}) + "\n" for i, d in enumerate(docs)))
    return path


def write_parquet(path: Path, docs: list[str], field: str = "text", row_group_size: int = 7
                  ) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({field: docs, "n": list(range(len(docs)))}), str(path),
                   row_group_size=row_group_size)
    return path
