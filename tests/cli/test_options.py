"""The command line lives in cli/: options generated from the described config dataclasses, and
library errors that name settings shown with the command's flags."""

import argparse
import ast
from dataclasses import fields
from pathlib import Path

import pytest

import lighthouse_attn
from lighthouse_attn.cli import main
from lighthouse_attn.cli.model import add_model_arguments, build_model_config
from lighthouse_attn.cli.options import flag, with_flags
from lighthouse_attn.cli.train import add_arguments, train_config_from_args
from lighthouse_attn.settings import SettingError
from lighthouse_attn.train import PRESET_TRAINING, TrainConfig

PACKAGE = Path(lighthouse_attn.__file__).parent


def _parser():
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_only_the_cli_folder_imports_argparse():
    users = []
    for path in PACKAGE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = {a.name for node in ast.walk(tree) if isinstance(node, ast.Import)
                 for a in node.names}
        names |= {node.module for node in ast.walk(tree)
                  if isinstance(node, ast.ImportFrom) and node.module}
        if "argparse" in names:
            users.append(path.relative_to(PACKAGE).parts[0])
    assert users and set(users) == {"cli"}


def test_every_described_training_setting_is_an_option_that_reaches_the_config():
    parser = _parser()
    options = {a.dest: a for a in parser._actions if a.option_strings}
    described = [f for f in fields(TrainConfig) if f.metadata.get("cli", True)]
    assert described and all(f.name in options for f in described)
    assert all(options[f.name].default is None for f in described)  # "not given"
    args = parser.parse_args(["--beta2", "0.99", "--seq-len", "4096", "--no-verify-data",
                              "--save-at", "9", "3", "--no-activation-checkpointing"])
    run = train_config_from_args(args, "runs/x")
    assert (run.beta2, run.seq_len, run.verify_data, run.save_at) == (0.99, 4096, False, [3, 9])
    assert run.activation_checkpointing is False and run.run_dir == "runs/x"


def test_unset_options_take_the_presets_training_defaults_then_the_fields():
    run = train_config_from_args(_parser().parse_args(["--preset", "small"]), "runs/x")
    for name, value in PRESET_TRAINING["small"].items():
        assert getattr(run, name) == value
    assert run.beta1 == 0.9 and run.keep_ckpts == 3


def test_model_options_come_from_the_model_and_lighthouse_fields():
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    args = parser.parse_args(["--preset", "small", "--n-layers", "6", "--topk", "256",
                              "--scorer", "dilated", "--dense-layers", "none",
                              "--tie-embeddings"])
    cfg = build_model_config(args)
    assert cfg.n_layers == 6 and cfg.d_model == 768 and cfg.tie_embeddings
    assert cfg.dense_layers == () and cfg.lighthouse.topk == 256
    assert cfg.lighthouse.scorer == "dilated" and cfg.lighthouse.num_levels == 3
    with pytest.raises(ValueError, match="comma-separated"):
        build_model_config(parser.parse_args(["--dense-layers", "0,x"]))
    with pytest.raises(ValueError, match="multiple of 128"):
        build_model_config(parser.parse_args(["--topk", "100"]))


def test_library_errors_name_fields_and_the_cli_shows_flags():
    with pytest.raises(SettingError, match=r"^seq_len must be >= 1") as err:
        TrainConfig(run_dir="x", seq_len=0).validate()
    assert err.value.fields == ("seq_len",)
    assert with_flags(err.value, _parser()).startswith("--seq-len must be >= 1")
    both = SettingError("lighthouse_steps + dense_steps must be >= 1 (seq_len_x stays)",
                        "lighthouse_steps", "dense_steps")
    assert with_flags(both, _parser()) == \
        "--lighthouse-steps + --dense-steps must be >= 1 (seq_len_x stays)"
    assert with_flags(ValueError("seq_len"), _parser()) == "seq_len"  # not a SettingError
    assert flag("grad_clip") == "--grad-clip"


def test_a_bad_option_value_is_reported_with_its_flag(capsys):
    assert main(["train", "--seq-len", "0", "--dry-run"]) == 2
    assert "lighthouse-attn train: error: --seq-len must be >= 1 (got 0)" in \
        capsys.readouterr().err
    assert main(["plan", "--heads", "8", "--kv-heads", "3"]) == 2
    assert "--kv-heads must divide --heads (8; got 3)" in capsys.readouterr().err
