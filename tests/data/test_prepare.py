"""``data prepare``: shards equal the direct read, in any number of workers; resume after a
kill; held-out split; every bad input is one clear error."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from data_helpers import documents, train_bpe, write_jsonl, write_parquet

from lighthouse_attn.data import (
    TOKENIZER,
    ShardedSequences,
    load_corpus,
    load_tokenizer,
    open_sequences,
)
from lighthouse_attn.data import prepare as prep

pytest.importorskip("pyarrow")
pytest.importorskip("tokenizers")


@pytest.fixture(autouse=True)
def one_input_per_unit(monkeypatch):
    """Every file and row group its own unit of work (as large inputs are), so that these
    small inputs exercise several units, workers and shards."""
    monkeypatch.setattr(prep, "UNIT_BYTES", 1)


@pytest.fixture
def inputs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    write_parquet(src / "a.parquet", documents(30, seed=1))
    write_jsonl(src / "b.jsonl", documents(20, seed=2))
    (src / "c.txt").write_text(documents(1, seed=3)[0])
    return src


def stream(path) -> np.ndarray:
    seqs = ShardedSequences(path, seq_len=1, verify=True)
    return seqs.read(0, seqs.num_tokens)


@pytest.mark.parametrize("tokenizer", ["bytes", "bpe"])
def test_prepared_stream_equals_direct_read_in_any_worker_count(tmp_path, inputs, tokenizer):
    spec = "bytes" if tokenizer == "bytes" else str(train_bpe(tmp_path / "tok.json"))
    tok = load_tokenizer(spec)
    direct = load_corpus([str(inputs)], tokenizer=tok).tokens
    one = prep.prepare([str(inputs)], tmp_path / "one", spec, workers=1, shard_tokens=97,
                       progress=False, echo=lambda *_: None)
    two = prep.prepare([str(inputs)], tmp_path / "two", spec, workers=2, shard_tokens=97,
                       progress=False, echo=lambda *_: None)
    assert one["shards"] == two["shards"]
    assert len(one["shards"]) > 5  # several units (5 row groups + 2 files), several shards
    assert max(s["tokens"] for s in one["shards"]) <= 97
    got = stream(tmp_path / "one")
    np.testing.assert_array_equal(got, direct)
    assert one["documents"] == 51 and one["tokens"] == len(direct)
    assert one["dtype"] == "uint16" and one["tokenizer"] == tok.identity()
    # samples read across shard boundaries equal the in-memory samples
    src = open_sequences([str(inputs)], 33, tok)
    shards = open_sequences([str(tmp_path / "one")], 33, tok)
    assert shards.prepared and len(src.sequences) == len(shards.sequences)
    idx = list(range(len(src.sequences)))
    for a, b in zip(src.sequences.batch(idx), shards.sequences.batch(idx)):
        assert a.equal(b)
    # a second prepare with the same settings is a no-op
    again = prep.prepare([str(inputs)], tmp_path / "one", spec, workers=1, shard_tokens=97,
                         progress=False, echo=lambda *_: None)
    assert again == one


def test_holdout_split_is_disjoint_and_complete(tmp_path, inputs):
    full = prep.prepare([str(inputs)], tmp_path / "full", progress=False, echo=lambda *_: None)
    m = prep.prepare([str(inputs)], tmp_path / "p", holdout_fraction=0.3, progress=False,
                     echo=lambda *_: None)
    held = json.loads((tmp_path / "p" / "heldout" / "manifest.json").read_text())
    assert m["documents"] + held["documents"] == full["documents"]
    assert m["tokens"] + held["tokens"] == full["tokens"]
    assert 0 < held["documents"] < full["documents"]

    def docs(path):
        return TOKENIZER.decode(stream(path), sep="\0").split("\0")[:-1]

    train, heldout = docs(tmp_path / "p"), docs(tmp_path / "p" / "heldout")
    assert sorted(train + heldout) == sorted(docs(tmp_path / "full"))
    assert len(heldout) == held["documents"]


def test_prepare_resumes_after_a_failure_without_stray_shards(tmp_path, inputs, monkeypatch):
    clean = prep.prepare([str(inputs)], tmp_path / "clean", shard_tokens=50, progress=False,
                         echo=lambda *_: None)
    real, calls = prep._prepare_unit, []

    def dies_on_third(job):
        calls.append(job.unit.index)
        if len(calls) == 3:  # leave a finished-looking and a half-written shard behind
            (tmp_path / "out" / f"shard-{job.unit.index:06d}-0000.bin").write_bytes(b"xx")
            (tmp_path / "out" / f".tmp-shard-{job.unit.index:06d}-0001.bin").write_bytes(b"x")
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(prep, "_prepare_unit", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        prep.prepare([str(inputs)], tmp_path / "out", shard_tokens=50, workers=1,
                     progress=False, echo=lambda *_: None)
    assert not (tmp_path / "out" / "manifest.json").exists()
    with pytest.raises(ValueError, match="not a prepared corpus"):
        ShardedSequences(tmp_path / "out", 8)
    monkeypatch.setattr(prep, "_prepare_unit", real)
    lines = []
    resumed = prep.prepare([str(inputs)], tmp_path / "out", shard_tokens=50, workers=1,
                           progress=False, echo=lines.append)
    assert any("2 unit(s) done" in line for line in lines)
    assert resumed["shards"] == clean["shards"]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(["manifest.json"] + [s["file"] for s in clean["shards"]])


def test_prepare_killed_by_sigkill_resumes(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(12):
        (src / f"{i:02d}.txt").write_text(documents(3, seed=i)[0])
    code = (f"import time, sys; sys.path.insert(0, {os.path.dirname(__file__)!r})\n"
            "from lighthouse_attn.data import prepare as p\n"
            "real = p._prepare_unit\n"
            "def slow(job):\n    time.sleep(0.3)\n    return real(job)\n"
            "p._prepare_unit = slow\n"
            "p.UNIT_BYTES = 1\n"
            f"p.prepare([{str(src)!r}], {str(tmp_path / 'out')!r}, workers=1, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    state = tmp_path / "out" / "prepare_state.jsonl"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if state.is_file() and len(state.read_text().splitlines()) >= 4:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "out" / "manifest.json").exists()
    resumed = prep.prepare([str(src)], tmp_path / "out", workers=2, progress=False,
                           echo=lambda *_: None)
    clean = prep.prepare([str(src)], tmp_path / "clean", progress=False, echo=lambda *_: None)
    assert resumed["shards"] == clean["shards"]


def test_bad_inputs_are_one_line_errors(tmp_path, inputs):
    quiet = dict(progress=False, echo=lambda *_: None)
    out = tmp_path / "p"
    prep.prepare([str(inputs)], out, shard_tokens=200, **quiet)
    shard = out / json.loads((out / "manifest.json").read_text())["shards"][1]["file"]
    data = bytearray(shard.read_bytes())
    data[5] ^= 1
    shard.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match its checksum"):
        ShardedSequences(out, 8)
    shard.write_bytes(bytes(data[:-2]))
    with pytest.raises(ValueError, match="truncated"):
        ShardedSequences(out, 8, verify=False)
    # a corpus of another tokenizer
    prep.prepare([str(inputs)], tmp_path / "q", **quiet)
    bpe = load_tokenizer(str(train_bpe(tmp_path / "tok.json")))
    with pytest.raises(ValueError, match="prepare it again"):
        open_sequences([str(tmp_path / "q")], 8, bpe)
    with pytest.raises(ValueError, match="pass it alone"):
        open_sequences([str(tmp_path / "q"), str(inputs)], 8)
    # a vocabulary too large for uint16
    big = _word_tokenizer(tmp_path / "big.json", 70_000)
    with pytest.raises(ValueError, match="does not fit uint16"):
        prep.prepare([str(inputs)], tmp_path / "r", str(big), dtype="uint16", **quiet)
    m = prep.prepare([str(inputs / "c.txt")], tmp_path / "r32", str(big), **quiet)
    assert m["dtype"] == "uint32"
    # parquet without the column; empty inputs; settings; a busy output
    with pytest.raises(ValueError, match="no column 'body'"):
        prep.prepare([str(inputs / "a.parquet")], tmp_path / "s", text_field="body", **quiet)
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(ValueError, match="no text"):
        prep.prepare([str(tmp_path / "empty.txt")], tmp_path / "t", **quiet)
    with pytest.raises(ValueError, match="holdout_fraction must be in"):
        prep.prepare([str(inputs)], tmp_path / "u", holdout_fraction=1.5, **quiet)
    with pytest.raises(ValueError, match="other inputs or settings"):
        prep.prepare([str(inputs / "c.txt")], tmp_path / "q", **quiet)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        prep.prepare([str(inputs)], tmp_path / "busy", **quiet)


def _word_tokenizer(path, size):
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {f"w{i}": i for i in range(size - 2)}
    vocab.update({"[UNK]": size - 2, "<|endoftext|>": size - 1})
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(path))
    return path


def test_compressed_jsonl_reads_like_plain_jsonl(tmp_path):
    import gzip

    docs = documents(12, seed=4)
    plain = write_jsonl(tmp_path / "a.jsonl", docs)
    (tmp_path / "gz").mkdir()
    with gzip.open(tmp_path / "gz" / "a.jsonl.gz", "wb") as f:
        f.write(plain.read_bytes())
    assert load_corpus([str(tmp_path / "gz")]).tokens.tolist() == \
        load_corpus([str(plain)]).tokens.tolist()
    (tmp_path / "bad.jsonl.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot read data file"):
        load_corpus([str(tmp_path / "bad.jsonl.gz")])


def test_zstd_jsonl_needs_its_library_or_reads(tmp_path):
    docs = documents(5, seed=6)
    try:
        import zstandard
    except ImportError:
        (tmp_path / "a.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd")
        with pytest.raises(ValueError, match="zstandard"):
            load_corpus([str(tmp_path / "a.jsonl.zst")])
        return
    plain = write_jsonl(tmp_path / "a.jsonl", docs)
    (tmp_path / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(
        plain.read_bytes()))
    assert load_corpus([str(tmp_path / "a.jsonl.zst")]).tokens.tolist() == \
        load_corpus([str(plain)]).tokens.tolist()


def test_a_torn_journal_line_is_ignored(tmp_path):
    settings = {"inputs": [], "dtype": "uint16"}
    path = tmp_path / "prepare_state.jsonl"
    path.write_text(json.dumps({"settings": settings}) + "\n" +
                    json.dumps({"unit": 0, "train": [], "heldout": []}) + "\n" + '{"unit": 1, "tr')
    got_settings, units = prep._read_journal(path)
    assert got_settings == settings and list(units) == ["0"]


def test_small_inputs_are_grouped_into_few_units_and_shards(tmp_path, monkeypatch):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"{i:02d}.txt").write_text(documents(2, seed=i)[0])
    monkeypatch.setattr(prep, "UNIT_BYTES", 2000)
    m = prep.prepare([str(src)], tmp_path / "out", progress=False, echo=lambda *_: None)
    total = sum(os.path.getsize(src / f) for f in os.listdir(src))
    assert 1 < len(m["shards"]) <= total // 2000 + 1
    assert m["documents"] == 30
    np.testing.assert_array_equal(stream(tmp_path / "out"), load_corpus([str(src)]).tokens)
