"""One way in for training and evaluation data: a prepared directory (streamed from its
shards) or text inputs (read and tokenized into memory at start)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from .corpus import load_corpus
from .packing import PackedSequences, TokenSamples
from .shards import ShardedSequences, is_prepared
from .tokenizer import TOKENIZER, Tokenizer, check_same_tokenizer, describe_identity


@dataclass
class DataSource:
    """Fixed-length samples of some data, the files they come from (for overlap checks) and
    notes a user should see."""

    sequences: TokenSamples
    files: list[str]
    notes: list[str] = field(default_factory=list)
    prepared: bool = False


def open_sequences(paths: list[str] | None, seq_len: int, tokenizer: Tokenizer = TOKENIZER,
                   text_field: str = "text", exclude: Iterable[str] = (), verify: bool = True,
                   progress: bool = True) -> DataSource:
    """Samples of ``seq_len + 1`` tokens of ``paths``: one prepared directory (see
    :mod:`.shards`; its tokenizer must be ``tokenizer``), or text inputs read with
    :func:`~.corpus.load_corpus` (empty: the embedded stdlib corpus).

    Raises:
        ValueError: missing or too little data, a prepared corpus of another tokenizer, or a
            prepared directory mixed with other inputs.
    """
    prepared = [p for p in paths or [] if is_prepared(p)]
    if prepared:
        if len(paths) > 1:
            raise ValueError(f"{prepared[0]} is a prepared corpus: pass it alone (prepare the "
                             "other inputs together with it)")
        seqs = ShardedSequences(prepared[0], seq_len, verify=verify, progress=progress)
        check_same_tokenizer(seqs.tokenizer, tokenizer, f"prepared corpus {prepared[0]}",
                             "prepare it again with the run's tokenizer, or train with "
                             f"the tokenizer {describe_identity(seqs.tokenizer)}")
        notes = []
        if seqs.manifest.get("replaced_bytes"):
            notes.append(f"{seqs.manifest['replaced_bytes']:,} byte(s) of invalid UTF-8 were "
                         "read as U+FFFD when the corpus was prepared")
        return DataSource(seqs, [str(prepared[0])], notes, prepared=True)
    corpus = load_corpus(paths, text_field, exclude=exclude, tokenizer=tokenizer)
    return DataSource(PackedSequences(corpus.tokens, seq_len), corpus.files, corpus.notes)
