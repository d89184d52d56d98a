"""Reliability round 2: failed writes, absurd plan lengths, huge generations, signals in the
first seconds, and the small ones; each used to end in a traceback, a hang or a wrong file."""

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "train"))
from train_helpers import TINY_ARGS, make_corpus  # noqa: E402

from lighthouse_attn import LighthouseConfig  # noqa: E402
from lighthouse_attn.cli import main  # noqa: E402
from lighthouse_attn.jsonfile import write_json  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


def _train_args(corpus, run_dir, *extra):
    return ["train", "--preset", "demo", "--run-dir", str(run_dir), "--data", corpus,
            "--lighthouse-steps", "2", "--dense-steps", "2", "--ckpt-every", "2", *TINY_ARGS,
            *extra]


def test_a_full_disk_at_a_checkpoint_is_one_line_and_leaves_nothing_half_written(
        corpus, tmp_path, capsys, monkeypatch):
    import lighthouse_attn.train.checkpoint as ckpt

    real, calls = ckpt.torch.save, []

    def save(obj, path, *a, **kw):
        calls.append(path)
        if len(calls) > 2:  # the first checkpoint is written, the second finds the disk full
            raise RuntimeError("[enforce fail at inline_container.cc:664] . unexpected pos "
                               "64 vs 0\nPytorchStreamWriter failed writing file data/0")
        return real(obj, path, *a, **kw)

    monkeypatch.setattr(ckpt.torch, "save", save)
    run_dir = tmp_path / "full"
    assert main(_train_args(corpus, run_dir)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write step_0000004" in err[0]
    assert "is the disk full?" in err[0] and "earlier checkpoints are intact" in err[0]
    names = sorted(p.name for p in (run_dir / "checkpoints").iterdir())
    assert names == ["step_0000002"]  # no temporary, nothing that looks complete
    monkeypatch.undo()  # the disk has room again
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 0


def test_a_read_only_run_directory_is_one_line(corpus, tmp_path, capsys, monkeypatch):
    from lighthouse_attn.train import loop

    def refuse(run_dir):
        raise PermissionError(13, "Permission denied", str(Path(run_dir) / ".lock"))

    monkeypatch.setattr(loop.RunLock, "acquire", staticmethod(refuse))
    assert main(_train_args(corpus, tmp_path / "ro")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"lighthouse-attn train: error: {tmp_path / 'ro' / '.lock'}: Permission "
                   "denied"]


def test_json_results_get_the_usual_file_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_report_only_without_runs_is_one_line(corpus, tmp_path, capsys):
    assert main(["compare", "--data", corpus, "--eval-data", corpus, "--report-only",
                 "--out", str(tmp_path / "none")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no run of this comparison has started" in err[0]


def test_valid_topks_match_a_brute_force_search():
    for L, p in ((2, 2), (3, 4), (4, 2)):
        cfg = LighthouseConfig(num_levels=L, pooling_factor=p, topk=128)
        for n in (4096, 98304, 131072, 3 * 5 * 7 * 2**12):
            coarse = n // cfg.coarsest_window if n % cfg.coarsest_window == 0 else None
            brute = [] if coarse is None else [t * 128 for t in range(1, coarse // 128 + 1)
                                               if coarse % t == 0 and coarse // t >= 128]
            assert cfg.valid_topks(n) == brute


def test_plan_answers_at_absurd_lengths(capsys):
    t0 = time.perf_counter()
    assert main(["plan", "--seq-len", "999999995904", "--suggest"]) == 0
    assert main(["plan", "--seq-len", "1000000000000"]) == 2
    assert time.perf_counter() - t0 < 30  # minutes before
    assert "Nearest valid seq_len" in capsys.readouterr().err


def test_generation_sizes_rope_tables_with_the_text_not_the_request(monkeypatch):
    import torch

    from lighthouse_attn.models import PRESETS, Llama, decode

    torch.manual_seed(0)
    model = Llama(PRESETS["demo"].replace(n_layers=2, d_model=64, n_heads=2, n_kv_heads=1,
                                          ffn_hidden=96))
    sizes, real = [], decode.rope_tables
    monkeypatch.setattr(decode, "rope_tables",
                        lambda n, *a: sizes.append(n) or real(n, *a))
    everything = tuple(range(model.config.vocab_size))
    assert len(decode.generate(model, [1, 2, 3], 100_000_000, stop_ids=everything)) == 1
    assert sizes == [3 + 1024]
    sizes.clear()
    grown = decode.generate(model, [1, 2, 3], 1500)
    assert sizes == [1027, 2054] and len(grown) == 1500
    monkeypatch.setattr(decode, "rope_tables", lambda n, *a: real(4096, *a))
    assert decode.generate(model, [1, 2, 3], 1500) == grown  # the same text as full tables


def test_generate_warns_beyond_the_trained_context(tmp_path, capsys):
    import torch

    from lighthouse_attn.models import PRESETS, Llama
    from lighthouse_attn.train.checkpoint import save_final_model

    config = PRESETS["demo"].replace(n_layers=2)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"train": {"seq_len": 8},
                                                 "model": config.to_dict()}))
    torch.manual_seed(0)
    save_final_model(run, Llama(config).state_dict(), config, 1)
    assert main(["generate", "--checkpoint", str(run), "--prompt", "abcdef",
                 "--max-new-tokens", "4", "--device", "cpu"]) == 0
    assert "exceed the 8 tokens the model was trained on" in capsys.readouterr().err


def _wait_until_reading_a_pipe(pid: int, timeout: float = 60.0) -> None:
    """Until process ``pid`` blocks in a read of a pipe (Linux's /proc/PID/wchan), or 0.5 s
    where the kernel does not say. A signal that lands after it opened the pipe but before
    its read starts is handled with no system call to interrupt, and the read then blocks for
    good: Python cannot close that window, so the test must not signal inside it."""
    wchan, deadline = Path(f"/proc/{pid}/wchan"), time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            where = wchan.read_text()
        except OSError:
            where = "0"
        if where in ("", "0"):  # not reported here
            time.sleep(0.5)
            return
        if "pipe_read" in where or "pipe_wait" in where:
            return
        time.sleep(0.02)
    raise AssertionError(f"the command never blocked reading its prompt (at {where!r})")


def _default_signals() -> None:
    """In the child before exec: SIGINT and SIGTERM as a terminal would deliver them. A test
    run started in the background (``cmd &`` in a script) ignores SIGINT, and a command
    started from it inherits that (as it should: Python then keeps ignoring it)."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_DFL)


@pytest.mark.parametrize("sig,code,name", [(signal.SIGINT, 130, "SIGINT"),
                                           (signal.SIGTERM, 143, "SIGTERM")])
def test_a_signal_before_any_work_is_one_line(tmp_path, sig, code, name):
    """Ctrl-C or SIGTERM while a command starts (here: reading a prompt file that is a pipe
    nobody writes to) used to print a traceback, or exit silently."""
    fifo = tmp_path / "prompt"
    os.mkfifo(fifo)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-m", "lighthouse_attn", "generate",
                             "--checkpoint", str(tmp_path), "--prompt-file", str(fifo)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=_default_signals)
    deadline, writer = time.monotonic() + 60, None
    while writer is None and time.monotonic() < deadline:  # until the command reads the pipe
        try:
            writer = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:  # no reader yet
            time.sleep(0.05)
    assert writer is not None, "the command never opened its prompt file"
    try:
        _wait_until_reading_a_pipe(proc.pid)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(writer)
    assert proc.returncode == code, err
    assert err.strip().splitlines() == [f"lighthouse-attn generate: stopped by {name}"]


def test_a_plain_file_named_like_a_checkpoint_is_one_line(corpus, tmp_path, capsys):
    run_dir = tmp_path / "p"
    assert main(_train_args(corpus, run_dir)) == 0
    (run_dir / "checkpoints" / "step_0000009").write_text("not a checkpoint")
    assert main(["train", "--resume", str(run_dir), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step_0000009 is a file, not a checkpoint directory" in err[0]


@pytest.mark.parametrize("command", ["train", "hf"])
def test_gpu_benchmarks_on_a_cpu_need_a_length(command, capsys):
    assert main(["bench", command, "--device", "cpu"]) == 2
    assert "set --seq-len (e.g. --seq-len 4096)" in capsys.readouterr().err
