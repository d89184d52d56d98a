"""Held-out validation during training, and the constant and wsd schedules in a run."""

import pytest
import torch
from train_helpers import TINY_MODEL, make_corpus, metrics, tiny_run

from lighthouse_attn.train import train
from lighthouse_attn.train.validation import eval_steps


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    d = tmp_path_factory.mktemp("held_out")
    (d / "other.py").write_text("".join(f"value_{i} = compute({i}, {i * 7 % 13})\n"
                                        for i in range(2000)))
    return str(d)


def test_eval_steps_cover_period_switch_and_end():
    assert eval_steps(4, 6, 10) == {4, 6, 8, 10}
    assert eval_steps(5, 0, 10) == {5, 10}
    assert eval_steps(20, 10, 10) == {10}


def test_held_out_scored_in_both_modes_in_stage_1(tmp_path, corpus, held_out):
    run = tiny_run(tmp_path, "v", corpus, eval_data=[held_out], eval_every=2,
                   eval_sequences=3, schedule="constant")
    train(run, TINY_MODEL, progress=False)
    recs = metrics(run.run_dir)
    scored = {r["step"]: r for r in recs if "val_dense" in r}
    assert sorted(scored) == [2, 3, 4, 6]
    assert all("val_lighthouse" in scored[s] for s in (2, 3))
    assert all("val_lighthouse" not in scored[s] for s in (4, 6))
    assert all(0 < r["val_dense"] < 10 and r["val_s"] >= 0 for r in scored.values())
    # Lighthouse and dense differ in stage 1 (Lighthouse runs in layers 1 and 2)
    assert scored[3]["val_lighthouse"] != scored[3]["val_dense"]
    assert [r["lr"] for r in recs][1:] == [pytest.approx(3e-3)] * 5  # constant after warm-up
    summary = (tmp_path / "v" / "summary.md").read_text()
    assert "## Held-out loss" in summary and "End of stage 1 (step 3)" in summary
    # scoring is deterministic: the same run scores the same
    run2 = tiny_run(tmp_path, "v2", corpus, eval_data=[held_out], eval_every=2,
                    eval_sequences=3, schedule="constant")
    train(run2, TINY_MODEL, progress=False)
    again = {r["step"]: r for r in metrics(run2.run_dir) if "val_dense" in r}
    assert [again[s]["val_dense"] for s in scored] == [scored[s]["val_dense"] for s in scored]


def test_validation_loss_matches_a_direct_forward(tmp_path, corpus, held_out):
    """The logged score is the mean next-byte loss of the final dense model on the first M
    sequences."""
    from lighthouse_attn.data import PackedSequences, load_tokens
    from lighthouse_attn.train import load_model

    run = tiny_run(tmp_path, "d", corpus, eval_data=[held_out], eval_sequences=2,
                   lighthouse_steps=2, dense_steps=2)
    result = train(run, TINY_MODEL, progress=False)
    last = metrics(run.run_dir)[-1]
    model, _ = load_model(result.final_dir)
    data = PackedSequences(load_tokens([held_out]), 512)
    x, y = data.batch([0, 1])
    with torch.no_grad():
        loss = torch.nn.functional.cross_entropy(model(x).flatten(0, 1), y.flatten())
    assert last["val_dense"] == pytest.approx(loss.item(), rel=1e-5)


def test_wsd_decays_inside_the_dense_stage(tmp_path, corpus):
    run = tiny_run(tmp_path, "w", corpus, schedule="wsd", lighthouse_steps=3, dense_steps=3,
                   min_lr_ratio=0.0, decay_steps=3)
    train(run, TINY_MODEL, progress=False)
    lrs = [r["lr"] for r in metrics(run.run_dir)]
    assert lrs == pytest.approx([1.5e-3, 3e-3, 3e-3, 2e-3, 1e-3, 0.0])


@pytest.mark.parametrize("changes,match", [
    (dict(schedule="cosine", decay_steps=2), "^decay_steps applies to the wsd schedule only"),
    (dict(schedule="wsd", decay_steps=9), "^decay_steps must be in 1..4"),
    (dict(eval_every=2), "need eval_data"),
    (dict(eval_sequences=0, eval_data=["x"]), "^eval_sequences must be >= 1"),
])
def test_bad_settings_are_one_line_errors(tmp_path, corpus, changes, match):
    with pytest.raises(ValueError, match=match):
        tiny_run(tmp_path, "bad", corpus, **changes).validate()


def test_too_little_held_out_text(tmp_path, corpus):
    small = tmp_path / "small.txt"
    small.write_text("x" * 1500)
    run = tiny_run(tmp_path, "s", corpus, eval_data=[str(small)], eval_sequences=4)
    with pytest.raises(ValueError, match="holds 2 sequence.*lower eval_sequences to 2"):
        train(run, TINY_MODEL, progress=False)


def test_tensorboard_scalars_or_a_clear_error(tmp_path, corpus, held_out):
    run = tiny_run(tmp_path, "tb", corpus, tensorboard=True, eval_data=[held_out],
                   eval_sequences=1, lighthouse_steps=2, dense_steps=1)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match="pip install tensorboard"):
            train(run, TINY_MODEL, progress=False)
        return
    train(run, TINY_MODEL, progress=False)
    assert list((tmp_path / "tb" / "tensorboard").glob("events.out.tfevents.*"))
