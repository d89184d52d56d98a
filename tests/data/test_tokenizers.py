"""Tokenizer files: loading, the separator, identity, round trips and errors."""

import json

import numpy as np
import pytest
from data_helpers import documents, train_bpe

from lighthouse_attn.data import (
    TOKENIZER,
    load_tokenizer,
    pack_documents,
    tokenizer_from_identity,
)

pytest.importorskip("tokenizers")


def test_bytes_is_the_default_and_has_no_separator_option():
    assert load_tokenizer("bytes") is TOKENIZER
    with pytest.raises(ValueError, match="leave sep_token unset"):
        load_tokenizer("bytes", sep_token="<x>")


def test_file_tokenizer_round_trip_separator_and_identity(tmp_path):
    path = train_bpe(tmp_path / "tok" / "tokenizer.json")
    tok = load_tokenizer(str(path))
    assert tok.vocab_size == 300 and tok.sep_token == "<|endoftext|>"
    assert tok.sep_id == json.loads(path.read_text())["added_tokens"][0]["id"]
    text = documents(1, seed=5)[0]
    ids = tok.encode(text)
    assert len(ids) < len(text.encode())  # merges happen
    assert tok.decode(ids) == text
    assert tok.decode(ids + [tok.sep_id] + ids, sep="|") == text + "|" + text
    assert [a.tolist() for a in tok.encode_batch([text, "beta"])] == [ids, tok.encode("beta")]
    # a directory works too, and the identity is the file's content, not its path
    same = load_tokenizer(str(path.parent))
    assert same.identity() == tok.identity()
    assert tokenizer_from_identity(tok.identity(), path.parent).identity() == tok.identity()
    packed = pack_documents(["alpha beta", "", "gamma"], tok)
    assert packed.dtype == np.uint16 and (packed == tok.sep_id).sum() == 2


def test_separator_from_config_or_named(tmp_path):
    path = train_bpe(tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "<pad>"}))
    assert load_tokenizer(str(tmp_path)).sep_token == "<pad>"
    assert load_tokenizer(str(path), sep_token="<pad>").sep_token == "<pad>"
    with pytest.raises(ValueError, match="not in tokenizer"):
        load_tokenizer(str(path), sep_token="<nope>")
    other = train_bpe(tmp_path / "b" / "tokenizer.json", eos="<mine>")
    with pytest.raises(ValueError, match="separator with sep_token"):
        load_tokenizer(str(other))


def test_bad_tokenizer_files(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_tokenizer(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="cannot load tokenizer"):
        load_tokenizer(str(bad))


def test_checkpoint_copy_must_match_identity(tmp_path):
    path = train_bpe(tmp_path / "a" / "tokenizer.json")
    identity = load_tokenizer(str(path)).identity()
    train_bpe(tmp_path / "b" / "tokenizer.json", vocab_size=280)
    with pytest.raises(ValueError, match="is not the tokenizer"):
        tokenizer_from_identity(identity, tmp_path / "b")
    with pytest.raises(ValueError, match="is missing"):
        tokenizer_from_identity(identity, tmp_path)
