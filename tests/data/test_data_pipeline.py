"""Tokenizer, corpus readers, the stdlib corpus, packing and the resumable loader."""

import json

import numpy as np
import pytest
import torch

from lighthouse_attn.data import (
    SEP_ID,
    VOCAB_SIZE,
    BatchLoader,
    PackedSequences,
    decode,
    encode,
    load_tokens,
    pack_documents,
    read_documents,
    stdlib_documents,
)


def test_tokenizer_round_trip_and_separator():
    text = "def f(x):\n    return 'héllo ✓'\n"
    ids = encode(text)
    assert ids == list(text.encode("utf-8")) and max(ids) < 256
    assert decode(ids) == text
    assert decode(encode("a") + [SEP_ID] + encode("b"), sep="|") == "a|b"
    assert VOCAB_SIZE == 257 and SEP_ID == 256
    with pytest.raises(ValueError, match="outside the byte vocabulary"):
        decode([300])


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_read_files_directories_globs_and_jsonl(tmp_path):
    write(tmp_path / "d" / "a.txt", "alpha")
    write(tmp_path / "d" / "sub" / "b.py", "beta")
    write(tmp_path / "d" / ".hidden", "secret")
    (tmp_path / "d" / "blob.bin").write_bytes(b"\x00\x01binary")
    write(tmp_path / "c.jsonl", json.dumps({"body": "gamma"}) + "\n\n"
          + json.dumps({"body": "delta"}) + "\n")
    assert list(read_documents([str(tmp_path / "d")])) == ["alpha", "beta"]
    assert list(read_documents([str(tmp_path / "d" / "**" / "*.py")])) == ["beta"]
    assert list(read_documents([str(tmp_path / "c.jsonl")], text_field="body")) == \
        ["gamma", "delta"]
    # a file named twice is read once
    assert list(read_documents([str(tmp_path / "d" / "a.txt")] * 2)) == ["alpha"]


@pytest.mark.parametrize("setup,match", [
    (lambda p: [str(p / "missing.txt")], "does not exist"),
    (lambda p: [str(p / "*.nothing")], "matches nothing"),
    (lambda p: [str((p / "empty").mkdir() or p / "empty")], "no readable text files"),
    (lambda p: [str(write(p / "x.jsonl", '{"text": 1}\n'))],
     r"x.jsonl:1: field 'text' is a JSON number, not a string"),
    (lambda p: [str(write(p / "z.jsonl", '{"body": "a"}\n'))],
     r"z.jsonl:1: no field 'text' \(keys: \['body'\]\)"),
    (lambda p: [str(write(p / "y.jsonl", '{"text": "ok"}\n{oops\n'))], r"y.jsonl:2: invalid"),
    (lambda p: [], "no data paths"),
    (lambda p: ["/dev/null"], "not a regular file or directory"),
    (lambda p: [str(write_bytes(p / "blob.bin", b"ab\x00cd"))], "is binary"),
])
def test_bad_data_is_a_clear_error(tmp_path, setup, match):
    with pytest.raises(ValueError, match=match):
        list(read_documents(setup(tmp_path)))


def test_pack_joins_documents_with_separators():
    tokens = pack_documents(["ab", "", "c"])
    assert tokens.dtype == np.uint16
    assert tokens.tolist() == [97, 98, SEP_ID, 99, SEP_ID]
    with pytest.raises(ValueError, match="no text"):
        pack_documents(["", ""])


def test_load_tokens_of_empty_file_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no text"):
        load_tokens([str(write(tmp_path / "e.txt", ""))])


def test_packed_sequences_and_too_short_data():
    tokens = np.arange(23, dtype=np.uint16)
    data = PackedSequences(tokens, seq_len=5)
    assert len(data) == 4  # (23 - 1) // 5
    x, y = data.batch([2, 0])
    assert x.dtype == torch.int64 and x.shape == (2, 5)
    assert x[0].tolist() == [10, 11, 12, 13, 14] and y[0].tolist() == [11, 12, 13, 14, 15]
    assert x[1].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="shorter than one sequence of seq_len \\+ 1 = 24"):
        PackedSequences(tokens, seq_len=23)


def make_data(n_samples=10, seq_len=4):
    rng = np.random.default_rng(0)
    return PackedSequences(rng.integers(0, 256, n_samples * seq_len + 1).astype(np.uint16),
                           seq_len)


def first_column(batches):
    return [row for x, _ in batches for row in x[:, 0].tolist()]


def test_loader_is_seeded_and_each_epoch_covers_every_sample():
    data = make_data()
    starts = {int(data.batch([i])[0][0, 0]): i for i in range(len(data))}
    loader = BatchLoader(data, 2, seed=0)
    seen = [starts[t] for _ in range(10) for t in first_column(loader.next_step())]
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))
    assert seen[:10] != seen[10:]  # a new shuffle per epoch
    other = BatchLoader(data, 2, seed=1)
    assert [starts[t] for _ in range(5) for t in first_column(other.next_step())] != seen[:10]
    again = BatchLoader(data, 2, seed=0)
    assert [starts[t] for _ in range(10) for t in first_column(again.next_step())] == seen


def test_loader_resumes_from_its_state():
    data = make_data()
    a = BatchLoader(data, 3, seed=7)
    for _ in range(4):
        a.next_step()
    b = BatchLoader(data, 3, seed=7)
    b.load_state_dict(json.loads(json.dumps(a.state_dict())))
    for _ in range(5):
        for (xa, ya), (xb, yb) in zip(a.next_step(), b.next_step()):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)
    with pytest.raises(ValueError, match="seed was 7, now 8"):
        BatchLoader(data, 3, seed=8).load_state_dict(a.state_dict())
    changed = PackedSequences(data.tokens[::-1].copy(), 4)
    with pytest.raises(ValueError, match="fingerprint"):
        BatchLoader(changed, 3, seed=7).load_state_dict(a.state_dict())


def test_loader_shards_the_global_batch_over_ranks_and_micro_steps():
    data = make_data(n_samples=16)
    single = BatchLoader(data, 8, grad_accum=1, seed=3).next_step()
    parts = [BatchLoader(data, 8, grad_accum=2, seed=3, rank=r, world_size=2).next_step()
             for r in range(2)]
    assert all(x.shape == (2, 4) for p in parts for x, _ in p)
    # micro-step j of rank r holds global rows (2j + r) * 2 ... + 2
    order = [parts[r][j][0] for j in range(2) for r in range(2)]
    assert torch.equal(torch.cat(order), single[0][0])
    with pytest.raises(ValueError, match="multiple of grad_accum \\(3\\) x processes \\(2\\)"):
        BatchLoader(data, 8, grad_accum=3, world_size=2)


def test_stdlib_corpus_has_one_document_per_package(tmp_path):
    write(tmp_path / "os.py", "import sys\n")
    write(tmp_path / "email" / "__init__.py", "# email\n")
    write(tmp_path / "email" / "mime" / "text.py", "class MIMEText: pass\n")
    write(tmp_path / "site-packages" / "x" / "y.py", "third party\n")
    write(tmp_path / "README", "not python\n")
    docs = list(stdlib_documents(str(tmp_path)))
    assert docs == ["# file: email/__init__.py\n# email\n\n"
                    "# file: email/mime/text.py\nclass MIMEText: pass\n",
                    "# file: os.py\nimport sys\n"]
    write(tmp_path / "bare" / "README", "no source\n")
    with pytest.raises(ValueError, match="no Python source"):
        list(stdlib_documents(str(tmp_path / "bare")))


def test_the_real_stdlib_corpus_is_long_code():
    docs = list(stdlib_documents())
    assert len(docs) > 50
    assert any(d.startswith("# file: os.py\n") for d in docs)
    assert max(len(d) for d in docs) > 1_000_000  # long documents: whole packages


def write_bytes(path, data: bytes):
    path.write_bytes(data)
    return path
