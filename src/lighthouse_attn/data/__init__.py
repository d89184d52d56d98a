"""Data: byte tokenizer, corpus readers, the embedded stdlib corpus, packing and batches."""

from __future__ import annotations

from .corpus import (
           Corpus,
           Scan,
           load_corpus,
           load_tokens,
           read_documents,
           resolve_paths,
           scan_paths,
)
from .loader import BatchLoader
from .packing import PackedSequences, pack_documents
from .stdlib import stdlib_documents, stdlib_root
from .tokenizer import SEP_ID, TOKENIZER, VOCAB_SIZE, ByteTokenizer, decode, encode, vocab_size

__all__ = [
           "SEP_ID",
           "TOKENIZER",
           "VOCAB_SIZE",
           "BatchLoader",
           "Corpus",
           "ByteTokenizer",
           "PackedSequences",
           "Scan",
           "decode",
           "encode",
           "load_corpus",
           "load_tokens",
           "pack_documents",
           "read_documents",
           "resolve_paths",
           "scan_paths",
           "stdlib_documents",
           "stdlib_root",
           "vocab_size",
]
