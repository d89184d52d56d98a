"""Tokenizers as Hugging Face tokenizers for export (:func:`hf_tokenizer`). The byte tokenizer
as a Hugging Face tokenizer, so ``AutoTokenizer.from_pretrained`` loads
it beside an exported model with no code of ours (needs the ``hf`` extra).

Token ``b`` is the UTF-8 byte ``b`` and ``SEP_ID`` (256) the document separator, exactly as in
``tokenizer.py``: a byte-level pre-tokenizer maps each byte to one symbol, a vocabulary of the
256 symbols in byte order with no merges, and the separator as a special token (declared as
beginning, end and padding token: it is what separates documents in training).
"""

from __future__ import annotations

from .tokenizer import SEP_ID, TOKENIZER, Tokenizer
from .tokenizer_file import FileTokenizer

SEP_TOKEN = "<|sep|>"
"""The text of the separator token."""


def hf_byte_tokenizer():
    """A ``PreTrainedTokenizerFast`` equal to the byte tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    symbols = pre_tokenizers.ByteLevel.alphabet()
    byte_symbol = _bytes_to_symbols()
    vocab = {byte_symbol[b]: b for b in range(256)}
    assert set(vocab) == set(symbols)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=None, fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=SEP_TOKEN,
                                   eos_token=SEP_TOKEN, pad_token=SEP_TOKEN,
                                   clean_up_tokenization_spaces=False)
    if fast.convert_tokens_to_ids(SEP_TOKEN) != SEP_ID:
        raise ValueError(f"the separator token got id {fast.convert_tokens_to_ids(SEP_TOKEN)}, "
                         f"not {SEP_ID}")
    fast.model_max_length = 1 << 40
    return fast


def hf_tokenizer(tokenizer: Tokenizer):
    """``tokenizer`` as a transformers ``PreTrainedTokenizerFast`` (for export): the byte
    tokenizer as :func:`hf_byte_tokenizer`, a tokenizer file as itself with its separator
    declared as the beginning, end and padding token."""
    if tokenizer is TOKENIZER:
        return hf_byte_tokenizer()
    if not isinstance(tokenizer, FileTokenizer):
        raise ValueError(f"cannot export tokenizer {type(tokenizer).__name__}")
    from tokenizers import Tokenizer as RustTokenizer
    from transformers import PreTrainedTokenizerFast

    sep = tokenizer.sep_token
    fast = PreTrainedTokenizerFast(
        tokenizer_object=RustTokenizer.from_str(tokenizer.source.decode("utf-8")),
        bos_token=sep, eos_token=sep, pad_token=sep, clean_up_tokenization_spaces=False)
    fast.model_max_length = 1 << 40
    return fast


def _bytes_to_symbols() -> dict[int, str]:
    """The byte-level pre-tokenizer's printable symbol for each byte (GPT-2's mapping)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out
