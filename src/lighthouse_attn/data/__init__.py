"""Data: tokenizers, corpus readers, the embedded stdlib corpus, packing, prepared shards,
and deterministic batches."""

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
from .packing import PackedSequences, pack_documents, token_dtype
from .shards import ShardedSequences, is_prepared
from .sources import DataSource, open_sequences
from .stdlib import stdlib_documents, stdlib_root
from .tokenizer import (
           BYTES,
           SEP_ID,
           TOKENIZER,
           VOCAB_SIZE,
           ByteTokenizer,
           Tokenizer,
           decode,
           encode,
           vocab_size,
)
from .tokenizers import load_tokenizer, tokenizer_from_identity

__all__ = [
           "BYTES",
           "SEP_ID",
           "TOKENIZER",
           "VOCAB_SIZE",
           "BatchLoader",
           "ByteTokenizer",
           "Corpus",
           "DataSource",
           "PackedSequences",
           "Scan",
           "ShardedSequences",
           "Tokenizer",
           "decode",
           "encode",
           "is_prepared",
           "load_corpus",
           "load_tokenizer",
           "load_tokens",
           "open_sequences",
           "pack_documents",
           "read_documents",
           "resolve_paths",
           "scan_paths",
           "stdlib_documents",
           "stdlib_root",
           "token_dtype",
           "tokenizer_from_identity",
           "vocab_size",
]
