"""The data walk never reads a file twice, never hangs on a pipe, never reads a run directory,
and says what it skipped, merged or replaced."""

import os
import threading

import pytest

from lighthouse_attn.data import load_corpus, read_documents, scan_paths


def _tree(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "a.txt").write_text("alpha")
    (data / "sub" / "b.txt").write_text("beta")
    return data


def test_duplicates_are_merged_by_real_path(tmp_path):
    """A `**` glob through a symlinked parent used to read one file many times."""
    data = _tree(tmp_path)
    os.symlink(data, data / "sub" / "loop")  # a link back up: a loop
    os.symlink(data, tmp_path / "alias")
    scan = scan_paths([str(tmp_path / "alias" / "**" / "*.txt"), str(data)])
    assert sorted(os.path.basename(f) for f in scan.files) == ["a.txt", "b.txt"]
    assert scan.merged > 0
    assert any("read once" in n for n in scan.notes())
    assert list(read_documents([str(data), str(tmp_path / "alias")])) == ["alpha", "beta"]


def test_a_linked_subdirectory_is_followed_once(tmp_path):
    data = _tree(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "c.txt").write_text("gamma")
    os.symlink(outside, data / "linked")
    docs = list(read_documents([str(data)]))
    assert sorted(docs) == ["alpha", "beta", "gamma"]


def test_a_fifo_in_a_data_directory_is_skipped_not_waited_on(tmp_path):
    data = _tree(tmp_path)
    os.mkfifo(data / "pipe")
    result = {}
    worker = threading.Thread(target=lambda: result.update(scan=scan_paths([str(data)])),
                              daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the walk hung on a FIFO"
    scan = result["scan"]
    assert len(scan.files) == 2 and sum(scan.skipped.values()) == 1
    assert any("non-regular" in n for n in scan.notes())
    glob_scan = scan_paths([str(data / "*")])  # globs too
    assert len(glob_scan.files) == 2 and sum(glob_scan.skipped.values()) == 1


def test_run_and_comparison_directories_are_never_data(tmp_path):
    data = _tree(tmp_path)
    run = data / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "metrics.jsonl").write_text('{"step": 1}\n')
    cmp_dir = data / "cmp"
    cmp_dir.mkdir()
    (cmp_dir / "compare.json").write_text("{}")
    (cmp_dir / "compare.md").write_text("report")
    fresh = data / "new_run"  # the run's own directory before it writes anything
    fresh.mkdir()
    (fresh / "stale.txt").write_text("x")
    corpus = load_corpus([str(data)], exclude=[str(fresh)])
    assert sorted(os.path.basename(f) for f in corpus.files) == ["a.txt", "b.txt"]
    assert sum("never read as data" in n for n in corpus.notes) == 3


def test_invalid_utf8_is_counted_and_reported(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"ok \xff\xfe and \xef\xbf\xbd kept")
    (tmp_path / "good.txt").write_text("fine")
    corpus = load_corpus([str(tmp_path)])
    assert corpus.notes == ["2 byte(s) of invalid UTF-8 in 1 file(s) were read as U+FFFD"]
    assert load_corpus([str(tmp_path / "good.txt")]).notes == []


def test_the_trainer_banner_says_what_was_skipped_and_when_held_out_is_training(
        tmp_path, capsys):
    import sys

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "train"))
    from train_helpers import TINY_ARGS, make_corpus

    from lighthouse_attn.cli import main

    data = tmp_path / "data"
    data.mkdir()
    make_corpus(data)
    os.symlink(data / "corpus.txt", data / "again.txt")
    run_dir = data / "runs" / "r1"  # inside the data directory
    args = ["train", "--preset", "demo", "--run-dir", str(run_dir), "--data", str(data),
            "--eval-data", str(data / "corpus.txt"), "--eval-sequences", "1",
            "--lighthouse-steps", "2", "--dense-steps", "1", *TINY_ARGS]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "note: 1 data path(s) named a file already read" in out
    assert "note: warning: 1 held-out file(s) are also training data" in out
    # resuming reads the same data: the run's own files are not picked up
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "never read as data" in out


@pytest.mark.parametrize("topk", ["np", "bool"])
def test_numpy_integers_are_settings_and_bools_are_not(topk):
    import numpy as np

    from lighthouse_attn import LighthouseConfig

    if topk == "np":
        assert LighthouseConfig(topk=np.int64(128)).topk == 128
    else:
        with pytest.raises(ValueError, match="topk"):
            LighthouseConfig(topk=True)
