"""``exit_process`` ends torchrun processes cleanly although their process group outlives
``destroy_process_group``."""

import os
import subprocess
import sys
import textwrap

import pytest

# a group still referenced after destroy_process_group (as DTensor's caches keep FSDP's mesh):
# with sys.exit, most launches of this script abort at interpreter shutdown (SIGABRT)
SCRIPT = textwrap.dedent("""
    import torch
    import torch.distributed as dist

    from lighthouse_attn.process_exit import exit_process

    dist.init_process_group("gloo")
    kept = dist.group.WORLD
    for _ in range(200):
        dist.all_reduce(torch.randn(4096))
    dist.destroy_process_group()
    print("done", flush=True)
    exit_process(3)
""")


@pytest.mark.parametrize("launch", range(3))
def test_torchrun_processes_exit_with_their_code(tmp_path, launch):
    script = tmp_path / "script.py"
    script.write_text(SCRIPT)
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         str(script)], capture_output=True, text=True, timeout=120,
        env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert "terminate called" not in proc.stderr
    assert proc.stdout.count("done") == 2
    assert "exitcode  : 3" in proc.stderr  # the code each process exits with, and no signal
    assert "SIGABRT" not in proc.stderr


def test_single_process_exits_normally(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    from lighthouse_attn.process_exit import exit_process

    with pytest.raises(SystemExit) as stop:
        exit_process(2)
    assert stop.value.code == 2
