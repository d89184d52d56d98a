"""Training on prepared shards with a tokenizer file: start, resume exactly, export, generate,
evaluate; data-parallel ranks see disjoint samples; a mismatched tokenizer is refused."""

import json
import os
import signal
import sys
from pathlib import Path

import pytest
from data_helpers import documents, train_bpe, write_jsonl, write_parquet

sys.path.insert(0, str(Path(__file__).parent.parent / "train"))
from train_helpers import TINY_MODEL, losses, metrics, tiny_run  # noqa: E402

from lighthouse_attn.cli import main as cli  # noqa: E402
from lighthouse_attn.data import BatchLoader, ShardedSequences  # noqa: E402
from lighthouse_attn.models.loading import load_model, model_tokenizer  # noqa: E402
from lighthouse_attn.train import train  # noqa: E402

pytest.importorskip("pyarrow")
pytest.importorskip("tokenizers")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A parquet and a jsonl input prepared with a BPE tokenizer, 10% held out."""
    root = tmp_path_factory.mktemp("stream")
    src = root / "src"
    src.mkdir()
    write_parquet(src / "a.parquet", documents(400, seed=1, words=120), row_group_size=100)
    write_jsonl(src / "b.jsonl", documents(300, seed=2, words=120))
    tok = train_bpe(root / "tok" / "tokenizer.json")
    assert cli(["data", "prepare", "--data", str(src), "--out", str(root / "prep"),
                "--tokenizer", str(tok), "--holdout-fraction", "0.1", "--shard-tokens",
                "5000", "--workers", "2", "--no-progress"]) == 0
    return root, tok


def test_train_resume_export_generate_and_eval_on_prepared_shards(corpus, tmp_path, capsys):
    root, tok = corpus
    model = TINY_MODEL.replace(vocab_size=300)
    settings = dict(data=[str(root / "prep")], tokenizer=str(tok),
                    eval_data=[str(root / "prep" / "heldout")], eval_sequences=2, seq_len=512)
    done = train(tiny_run(tmp_path, "full", "-", **settings), model, progress=False)
    assert done.status == "finished"
    banner = capsys.readouterr().out
    assert "prepared: streamed from its shards" in banner and "vocab 300" in banner
    assert all("val_dense" in r for r in metrics(done.run_dir) if r["step"] in (3, 6))

    cut = tiny_run(tmp_path, "cut", "-", keep_ckpts=1, **settings)

    def interrupt(record):
        if record["step"] == 2:
            os.kill(os.getpid(), signal.SIGINT)

    assert train(cut, model, progress=False, on_step=interrupt).status == "interrupted"
    assert cli(["train", "--resume", cut.run_dir, "--no-verify-data", "--no-progress"]) == 0
    assert losses(cut.run_dir) == losses(done.run_dir)  # bitwise
    # every checkpoint and the final model carry the tokenizer
    assert (Path(done.final_dir) / "tokenizer.json").read_bytes() == tok.read_bytes()
    assert model_tokenizer(done.final_dir).sep_token == "<|endoftext|>"
    assert load_model(done.run_dir)[1]["tokenizer"]["type"] == "file"

    # export writes the run's tokenizer; generate reads it back (ours and the export)
    out = tmp_path / "export"
    assert cli(["export", done.run_dir, str(out)]) == 0
    from transformers import AutoTokenizer

    hf_tok = AutoTokenizer.from_pretrained(str(out))
    assert len(hf_tok) == 300 and hf_tok.eos_token == "<|endoftext|>"
    assert json.loads((out / "config.json").read_text())["eos_token_id"] == hf_tok.eos_token_id
    text = documents(1, seed=7)[0][:40]
    assert hf_tok(text, add_special_tokens=False)["input_ids"] == \
        model_tokenizer(done.final_dir).encode(text)
    for source in (done.run_dir, str(out)):
        capsys.readouterr()
        assert cli(["generate", "--checkpoint", source, "--prompt", "alpha beta",
                    "--max-new-tokens", "5", "--temperature", "0", "--device", "cpu"]) == 0
        assert capsys.readouterr().out.startswith("alpha beta")
    # eval loss reads the prepared held-out shards with the run's tokenizer
    assert cli(["eval", "loss", "--checkpoint", done.run_dir, "--data",
                str(root / "prep" / "heldout"), "--max-sequences", "2", "--out",
                str(tmp_path / "ev"), "--no-progress", "--device", "cpu"]) == 0


def test_resuming_with_another_tokenizer_is_refused(corpus, tmp_path):
    root, tok = corpus
    model = TINY_MODEL.replace(vocab_size=300)
    run = tiny_run(tmp_path, "r", "-", data=[str(root / "prep")], tokenizer=str(tok),
                   seq_len=512, lighthouse_steps=3, dense_steps=0)
    train(run, model, progress=False)
    other = train_bpe(tmp_path / "other" / "tokenizer.json", vocab_size=290)
    with pytest.raises(ValueError, match="prepare it again"):
        train(tiny_run(tmp_path, "r2", "-", data=[str(root / "prep")], tokenizer=str(other),
                       seq_len=512), model, progress=False)
    changed = tiny_run(tmp_path, "r", "-", data=[str(root / "prep")], tokenizer=str(other),
                       seq_len=512, lighthouse_steps=3, dense_steps=2)
    with pytest.raises(ValueError, match="tokenizer"):
        train(changed, model, resume=True, progress=False)
    with pytest.raises(ValueError, match="smaller than the tokenizer's 300"):
        train(tiny_run(tmp_path, "small", "-", data=[str(root / "prep")], tokenizer=str(tok),
                       seq_len=512), TINY_MODEL, progress=False)


def test_data_parallel_ranks_read_disjoint_samples(corpus):
    root, _ = corpus
    seqs = ShardedSequences(root / "prep", 64)
    loaders = [BatchLoader(seqs, global_batch=8, seed=3, rank=r, world_size=2) for r in (0, 1)]
    for _ in range(3):
        a, b = (loader.next_step()[0][0] for loader in loaders)
        rows_a = {tuple(r.tolist()) for r in a}
        rows_b = {tuple(r.tolist()) for r in b}
        assert len(rows_a) == 4 and not rows_a & rows_b


def test_the_vocabulary_follows_the_tokenizer_and_paper_530m_is_the_papers_size(corpus):
    import argparse

    from lighthouse_attn.cli.model import build_model_config
    from lighthouse_attn.cli.train import add_arguments

    _, tok = corpus
    parser = argparse.ArgumentParser()
    add_arguments(parser)

    def config(*argv):
        return build_model_config(parser.parse_args(list(argv)))

    assert config("--tokenizer", str(tok)).vocab_size == 300
    assert config().vocab_size == 257
    assert config("--tokenizer", str(tok), "--vocab-size", "320").vocab_size == 320
    body = config("--preset", "paper-268m")
    paper = config("--preset", "paper-530m", "--vocab-size", "128256")
    assert paper.num_parameters() - body.num_parameters() == 2 * (128256 - 257) * 1024
    assert 530e6 < paper.num_parameters() < 532e6


def test_hf_config_run_keeps_its_tokenizer_file(corpus, tmp_path, capsys):
    """An --hf-config run's final model is an HF checkpoint: its tokenizer is saved beside it
    and read back (separator included) by generate."""
    pytest.importorskip("transformers")
    from transformers import Qwen2Config

    root, tok = corpus
    Qwen2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                head_dim=8, intermediate_size=64, vocab_size=300, max_position_embeddings=4096,
                tie_word_embeddings=True, use_cache=False).save_pretrained(tmp_path / "qwen")
    run = tmp_path / "hf"
    assert cli(["train", "--hf-config", str(tmp_path / "qwen" / "config.json"), "--tokenizer",
                str(tok), "--data", str(root / "prep"), "--run-dir", str(run), "--num-levels",
                "2", "--pooling-factor", "4", "--topk", "128", "--dense-layers", "0",
                "--seq-len", "512", "--batch-size", "2", "--lighthouse-steps", "2",
                "--dense-steps", "1", "--warmup-steps", "1", "--threads", "1",
                "--no-progress"]) == 0
    saved = model_tokenizer(run / "final")
    assert saved.vocab_size == 300 and saved.sep_token == "<|endoftext|>"
    assert saved.sep_id == load_model(run)[1]["tokenizer"]["sep_id"]
    capsys.readouterr()
    assert cli(["generate", "--checkpoint", str(run), "--prompt", "alpha", "--max-new-tokens",
                "3", "--temperature", "0", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.startswith("alpha")
