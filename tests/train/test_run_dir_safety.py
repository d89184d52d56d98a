"""Run directories survive torn writes, double starts, dead writers and hand edits; bad
settings are one-line errors before anything is written."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from train_helpers import TINY_ARGS, TINY_MODEL, losses, make_corpus, metrics, tiny_run

from lighthouse_attn.cli import main
from lighthouse_attn.train import train
from lighthouse_attn.train.checkpoint import list_checkpoints
from lighthouse_attn.train.run_lock import RunLock


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def done(tmp_path_factory, corpus):
    run = tiny_run(tmp_path_factory.mktemp("runs"), "done", corpus)
    train(run, TINY_MODEL, progress=False)
    return run


def _copy_run(src, dst, keep_step):
    """A run that 'crashed' after checkpoint ``keep_step``: later checkpoints and final gone."""
    import shutil

    shutil.copytree(src, dst)
    shutil.rmtree(Path(dst) / "final")
    for step, path in list_checkpoints(dst):
        if step > keep_step:
            shutil.rmtree(path)
    return dst


def test_torn_last_metrics_line_resumes(done, tmp_path):
    d = _copy_run(done.run_dir, tmp_path / "torn", 4)
    with open(d / "metrics.jsonl", "a") as f:
        f.write('{"step": 7, "stage": "de')  # a write cut short
    run = tiny_run(tmp_path, "torn", done.data[0])
    train(run, TINY_MODEL, resume=True, progress=False)
    assert [r["step"] for r in metrics(d)] == [1, 2, 3, 4, 5, 6]
    assert losses(d) == pytest.approx(losses(done.run_dir), rel=1e-6)


def test_damaged_metrics_elsewhere_is_a_clear_error(done, tmp_path):
    from lighthouse_attn.train.metrics import read_metrics

    path = tmp_path / "m.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match="m.jsonl:2 is not a metrics record"):
        read_metrics(path)


def test_resume_from_another_working_directory(corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(Path(corpus).parent)
    rel = os.path.basename(corpus)
    args = ["train", *TINY_ARGS, "--data", rel, "--run-dir", str(tmp_path / "r"),
            "--lighthouse-steps", "2", "--dense-steps", "1", "--ckpt-every", "1"]
    assert main(args) == 0
    saved = json.loads((tmp_path / "r" / "config.json").read_text())["train"]["data"]
    assert saved == [os.path.abspath(rel)]
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--resume", str(tmp_path / "r"), "--no-progress"]) == 0


def test_second_process_on_the_same_run_dir_is_refused(done, tmp_path, capsys):
    d = _copy_run(done.run_dir, tmp_path / "busy", 4)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from lighthouse_attn.train.run_lock import "
         "RunLock; RunLock.acquire(sys.argv[1]); print('locked', flush=True); time.sleep(60)",
         str(d)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        assert main(["train", "--resume", str(d), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert "is being trained by another process (pid " in err
        assert len(err.strip().splitlines()) == 1
    finally:
        holder.kill()
        holder.wait()
    assert main(["train", "--resume", str(d), "--no-progress"]) == 0  # free again


def test_lock_of_a_new_directory_leaves_nothing_when_unused(tmp_path):
    lock = RunLock.acquire(tmp_path / "new")
    lock.release()
    assert not (tmp_path / "new").exists()


def test_stale_temporaries_of_dead_writers_are_removed(done, tmp_path):
    d = _copy_run(done.run_dir, tmp_path / "stale", 4)
    junk = d / "checkpoints" / ".tmp-step_0000006-99999"
    junk.mkdir()
    (junk / "model.safetensors").write_bytes(b"x" * 100)
    train(tiny_run(tmp_path, "stale", done.data[0]), TINY_MODEL, resume=True, progress=False)
    assert not junk.exists()
    assert "a checkpoint whose writer died" in (d / "train.log").read_text()


@pytest.mark.parametrize("damage,match", [
    (lambda c: (c / "manifest.json").write_text("[1, 2]"), "manifest.json does not list"),
    (lambda c: (c / "manifest.json").write_text("{}"), "manifest.json does not list"),
    (lambda c: _rewrite_trainer(c, lambda t: t.pop("loader")), "lacks valid loader"),
])
def test_damaged_checkpoint_files_are_one_line_errors(done, tmp_path, capsys, damage, match):
    d = _copy_run(done.run_dir, tmp_path / "dmg", 4)
    damage(list_checkpoints(d)[-1][1])
    assert main(["train", "--resume", str(d), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1


def _rewrite_trainer(ckpt, change):
    """Edit trainer.json and re-sign the manifest, as a hand edit that keeps checksums."""
    from lighthouse_attn.models.loading import sha256_file as _sha256

    state = json.loads((ckpt / "trainer.json").read_text())
    change(state)
    (ckpt / "trainer.json").write_text(json.dumps(state))
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["trainer.json"] = {"bytes": (ckpt / "trainer.json").stat().st_size,
                                "sha256": _sha256(ckpt / "trainer.json")}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def test_run_config_with_a_string_for_a_number(done, tmp_path, capsys):
    d = _copy_run(done.run_dir, tmp_path / "cfg", 4)
    cfg = json.loads((d / "config.json").read_text())
    cfg["train"]["lr"] = "fast"
    (d / "config.json").write_text(json.dumps(cfg))
    assert main(["train", "--resume", str(d), "--no-progress"]) == 2
    assert "training setting 'lr' must be float, got 'fast'" in capsys.readouterr().err


@pytest.mark.parametrize("extra,match", [
    (["--grad-clip", "nan"], "--grad-clip must be a finite number > 0"),
    (["--weight-decay", "nan"], "--weight-decay must be a finite number >= 0"),
    (["--rope-theta", "nan"], "rope_theta must be a finite number > 0"),
    (["--lr", "inf"], "--lr must be a finite number > 0"),
])
def test_nan_settings_are_refused(corpus, tmp_path, capsys, extra, match):
    assert main(["train", *TINY_ARGS, "--data", corpus, "--run-dir", str(tmp_path / "n"),
                 *extra]) == 2
    assert match in capsys.readouterr().err
    assert not (tmp_path / "n").exists()


def test_run_dir_naming_a_file(corpus, tmp_path, capsys):
    f = tmp_path / "afile"
    f.write_text("x")
    assert main(["train", *TINY_ARGS, "--data", corpus, "--run-dir", str(f)]) == 2
    assert "is a file, not a directory" in capsys.readouterr().err


def test_files_are_readable_like_the_rest_and_custom_shapes_are_named(corpus, tmp_path):
    assert main(["train", *TINY_ARGS, "--data", corpus, "--run-dir", str(tmp_path / "m"),
                 "--lighthouse-steps", "2", "--dense-steps", "1"]) == 0
    final = tmp_path / "m" / "final"
    modes = {f.name: f.stat().st_mode & 0o777 for f in final.iterdir()}
    assert modes["model.safetensors"] == modes["config.json"], modes
    assert "custom-3x32" in (tmp_path / "m" / "summary.md").read_text()


def test_output_not_a_terminal_gets_no_progress_frames(corpus, tmp_path, capsys):
    assert main(["train", *[a for a in TINY_ARGS if a != "--no-progress"], "--data", corpus,
                 "--run-dir", str(tmp_path / "p"), "--lighthouse-steps", "2",
                 "--dense-steps", "1"]) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out
    assert "Final loss" in captured.out


def test_lighthouse_costlier_than_dense_is_announced(corpus, tmp_path, capsys):
    # seq_len 512, L=2, p=4, K=128: S = 128 + 512 = 640 > 512
    assert main(["train", *TINY_ARGS, "--data", corpus, "--run-dir", str(tmp_path / "w"),
                 "--dry-run"]) == 0
    assert "Lighthouse costs more than dense attention here" in capsys.readouterr().out


def test_a_directory_without_config_is_never_wiped(corpus, tmp_path, capsys):
    """The issue's reproduction: foreign checkpoints/ and final/ in a new --run-dir are
    refused, not deleted; --overwrite replaces only what a run writes."""
    proj = tmp_path / "proj"
    (proj / "checkpoints" / "other").mkdir(parents=True)
    (proj / "final").mkdir()
    (proj / "checkpoints" / "other" / "weights.bin").write_text("w")
    (proj / "notes.md").write_text("mine")
    args = ["train", "--preset", "demo", "--run-dir", str(proj), "--data", corpus,
            "--lighthouse-steps", "2", "--dense-steps", "1", *TINY_ARGS]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "is not empty (checkpoints, final, notes.md)" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1
    assert (proj / "checkpoints" / "other" / "weights.bin").read_text() == "w"
    assert main(args + ["--dry-run"]) == 2  # a dry run says so too
    capsys.readouterr()
    assert main(args + ["--overwrite"]) == 0
    assert (proj / "notes.md").read_text() == "mine"  # not a run file: kept
    assert not (proj / "checkpoints" / "other").exists()


def test_lost_config_with_checkpoints_says_how_to_recover(done, tmp_path, capsys):
    d = _copy_run(done.run_dir, tmp_path / "lost", 4)
    (d / "config.json").unlink()
    args = ["train", "--preset", "demo", "--run-dir", str(d), "--data", done.data[0],
            *TINY_ARGS]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds checkpoints (step_0000003, step_0000004) but no config.json" in err
    assert "export" in err and len(err.strip().splitlines()) == 1
    assert list_checkpoints(d)
    assert main(["train", "--resume", str(d)]) == 2
    err = capsys.readouterr().err
    assert "holds checkpoints but no config.json" in err and "export" in err


def test_library_fresh_start_refuses_a_used_directory(done, corpus, tmp_path):
    d = _copy_run(done.run_dir, tmp_path / "used", 4)
    run = tiny_run(tmp_path, "used", corpus)
    with pytest.raises(ValueError, match="already holds a run"):
        train(run, TINY_MODEL, progress=False)
    assert list_checkpoints(d)


def test_wsd_run_shorter_than_its_warm_up_is_refused_in_train_as_in_compare(corpus, tmp_path,
                                                                          capsys):
    """8 + 4 steps with the demo's 20 warm-up steps used to warm up and never decay."""
    args = ["train", "--preset", "demo", "--run-dir", str(tmp_path / "r"), "--data", corpus,
            "--lighthouse-steps", "8", "--dense-steps", "4", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--warmup-steps 20 leaves no step for the wsd decay in a 12-step run" in err
    assert not (tmp_path / "r").exists()
    assert main(args + ["--warmup-steps", "11", "--decay-steps", "4"]) == 2
    assert "--decay-steps must be in 1..1" in capsys.readouterr().err


@pytest.mark.parametrize("seed", ["-1", str(2**32), "99999999999999999999"])
def test_bad_seeds_are_refused_before_the_run_dir_exists(corpus, tmp_path, capsys, seed):
    args = ["train", "--preset", "demo", "--run-dir", str(tmp_path / "s"), "--data", corpus,
            "--seed", seed, *TINY_ARGS]
    assert main(args + ["--dry-run"]) == 2
    assert "--seed must be an integer in 0..4294967295" in capsys.readouterr().err
    assert main(args) == 2
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("key,value,refused", [
    ("batch_size", 4, True), ("lighthouse_steps", 2, True), ("seed", 3, True),
    ("lr", 0.001, False), ("dense_steps", 5, False)])
def test_hand_edited_settings_are_noticed_on_resume(done, tmp_path, capsys, key, value,
                                                    refused):
    d = _copy_run(done.run_dir, tmp_path / "edited", 4)
    config = json.loads((d / "config.json").read_text())
    config["train"][key] = value
    (d / "config.json").write_text(json.dumps(config))
    code = main(["train", "--resume", str(d), "--no-progress"])
    captured = capsys.readouterr()
    if refused:
        assert code == 2
        assert "no longer matches checkpoint" in captured.err and key in captured.err
        assert len(captured.err.strip().splitlines()) == 1
    else:
        assert code == 0
        assert f"config.json changed since step_0000004: {key}" in (d / "train.log").read_text()


@pytest.mark.parametrize("arm,match", [
    ("k:lighthouse_steps=1.5", "'lighthouse_steps' must be int, got 1.5"),
    ("k:batch_size=true", "'batch_size' must be int, got True"),
    ('k:seq_len="512"', "'seq_len' must be int, got '512'"),
])
def test_compare_arm_types_are_checked_before_anything_trains(corpus, tmp_path, capsys, arm,
                                                              match):
    out = tmp_path / "cmp"
    assert main(["compare", "--data", corpus, "--eval-data", corpus, "--out", str(out),
                 "--arms", "dense,lighthouse", "--arm", arm, "--seeds", "0", *TINY_ARGS]) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1
    assert not out.exists()
