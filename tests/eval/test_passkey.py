"""The passkey grid: prompt layout, scoring on oracle stubs, context planning, batching."""

import re

import numpy as np
import pytest
import torch
from eval_helpers import EVAL_MODEL, shared_run

from lighthouse_attn.data import VOCAB_SIZE
from lighthouse_attn.eval.forward import bytes_per_sequence, final_logits
from lighthouse_attn.eval.loading import load_checkpoint
from lighthouse_attn.eval.passkey import (
    DIGIT_IDS,
    MIN_CONTEXT,
    NEEDLE,
    PREFIX,
    QUESTION,
    make_prompt,
    plan_contexts,
    run_passkey,
    score,
    trial_setup,
)

NEEDLE_RE = re.compile(rb" The pass key is (\d)\. Remember it\. ")

@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return shared_run(tmp_path_factory)



class NeedleStub:
    """Reads the digit out of the prompt and answers it, or the next digit when ``right`` is
    False or the needle does not start within the last ``window`` tokens; random logits
    elsewhere."""

    def __init__(self, right: bool = True, window: int | None = None) -> None:
        self.right, self.window = right, window
        self.calls = []

    def __call__(self, ids: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(ids.shape))
        B, N = ids.shape
        g = torch.Generator().manual_seed(N)
        logits = torch.randn(B, N, VOCAB_SIZE, generator=g)
        for b in range(B):
            text = bytes(ids[b].tolist())
            m = NEEDLE_RE.search(text)
            seen = self.window is None or m.start() >= N - self.window
            digit = int(m.group(1)) if self.right and seen else (int(m.group(1)) + 1) % 10
            logits[b, -1, DIGIT_IDS[digit]] = 100.0
        return logits


@pytest.mark.parametrize("context", [MIN_CONTEXT, 300, 4096])
@pytest.mark.parametrize("depth", [0, 15, 50, 85, 100])
def test_prompt_is_exactly_context_long_with_the_needle_at_its_depth(context, depth):
    digit, filler = trial_setup(context, trial=3, seed=0)
    ids = make_prompt(digit, filler, depth)
    assert ids.dtype == np.int64 and ids.shape == (context,)
    text = bytes(ids.tolist()).decode()
    F = context - len(PREFIX) - len(NEEDLE.format(digit=0)) - len(QUESTION)
    assert len(filler) == F
    assert text.startswith(PREFIX) and text.endswith(QUESTION)
    needle = NEEDLE.format(digit=digit)
    assert text.index(needle) == len(PREFIX) + round(depth / 100 * F)
    assert text.count("pass key is ") == 2  # the needle and the question
    assert set(filler.tobytes().decode()) <= set(
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ")


def test_trials_are_seeded_and_differ():
    d1, f1 = trial_setup(1000, trial=0, seed=0)
    d2, f2 = trial_setup(1000, trial=0, seed=0)
    assert d1 == d2 and np.array_equal(f1, f2)
    others = [trial_setup(1000, trial=t, seed=s) for t, s in [(1, 0), (0, 1)]]
    assert all(not np.array_equal(f1, f) for _, f in others)
    digits = {trial_setup(1000, trial=t, seed=0)[0] for t in range(30)}
    assert len(digits) >= 5  # digits vary across trials


def test_score_takes_the_argmax_over_digit_tokens_only():
    logits = torch.randn(3, VOCAB_SIZE)
    logits[:, ord("A")] = 50.0  # a non-digit favourite is ignored
    logits[0, ord("7")], logits[1, ord("0")], logits[2, ord("9")] = 10.0, 10.0, 10.0
    answers, probs = score(logits)
    assert answers.tolist() == [7, 0, 9]
    assert probs.shape == (3, 10)
    torch.testing.assert_close(probs.sum(-1), torch.ones(3))


@pytest.mark.parametrize("right", [True, False])
def test_grid_on_a_stub_that_always_or_never_answers_right(right):
    result = run_passkey(NeedleStub(right), [200, 333], depths=[0, 50, 100], trials=4,
                         batch_size=5, progress=False)
    expected = 1.0 if right else 0.0
    assert result.accuracy == [[expected] * 2] * 3
    assert result.mean_accuracy == expected
    assert len(result.records) == 2 * 3 * 4
    assert all((r["answer"] == r["digit"]) == right for r in result.records)
    for row in result.digit_prob:
        for p in row:
            assert p == pytest.approx(expected, abs=1e-6)


def test_grid_rows_are_depths_and_columns_contexts():
    """A stub that only sees the last 300 tokens: the needle is found where it starts within
    them, so short contexts succeed everywhere and long ones only at large depths."""
    contexts, depths = [250, 600, 1200], [0, 30, 70, 100]
    result = run_passkey(NeedleStub(window=300), contexts, depths=depths, trials=2,
                         progress=False)
    needle = len(NEEDLE.format(digit=0))
    overhead = len(PREFIX) + needle + len(QUESTION)
    for i, d in enumerate(depths):
        for j, c in enumerate(contexts):
            start = len(PREFIX) + round(d / 100 * (c - overhead))
            assert result.accuracy[i][j] == float(start >= c - 300), (d, c)
    assert result.contexts == contexts and result.depths == depths


def test_batches_respect_the_per_context_batch_size():
    stub = NeedleStub()
    run_passkey(stub, [200, 400], depths=[0, 100], trials=3, batch_size={200: 4, 400: 1},
                progress=False)
    assert stub.calls == [(4, 200), (2, 200)] + [(1, 400)] * 6


def test_result_table_lists_the_grid_and_the_skipped():
    result = run_passkey(NeedleStub(), [200], depths=[0, 100], trials=1, progress=False,
                         skipped=[{"context": 4096, "kind": "max-context", "reason": "why"}])
    table = result.table()
    assert "100%" in table and "mean accuracy 100.0%" in table
    assert "skipped context 4,096: why" in table


@pytest.mark.parametrize("kwargs,match", [
    (dict(contexts=[MIN_CONTEXT - 1]), "too short for the passkey prompt"),
    (dict(contexts=[300], depths=[101]), "outside 0..100"),
    (dict(contexts=[300], trials=0), "trials must be >= 1"),
    (dict(contexts=[]), "no context lengths"),
    (dict(contexts=[300], batch_size=0), "batch_size must be an integer >= 1"),
    (dict(contexts=[300, 400], batch_size={300: 2}), "batch_size must be an integer >= 1"),
])
def test_bad_grids_are_rejected(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_passkey(NeedleStub(), progress=False, **kwargs)


def test_plan_skips_long_contexts_invalid_budgets_and_what_does_not_fit():
    per_1024 = bytes_per_sequence(EVAL_MODEL, 1024, attention="lighthouse")
    batches, skipped = plan_contexts(
        EVAL_MODEL, [300, 512, 1024, 1028, 8192], attention="lighthouse", batch_size=8,
        memory_budget=3 * per_1024, max_context=4096, trained_seq_len=512)
    per = {c: bytes_per_sequence(EVAL_MODEL, c, attention="lighthouse") for c in (512, 1028)}
    assert batches == {512: min(8, 3 * per_1024 // per[512]), 1024: 3, 1028: 2}
    assert per[512] < per_1024 < per[1028]
    kinds = {s["context"]: s["kind"] for s in skipped}
    assert kinds == {300: "lighthouse budget", 8192: "max-context"}
    reason = next(s["reason"] for s in skipped if s["context"] == 300)
    assert "seq_len >= 512" in reason
    # dense attention takes any length; a tiny budget fits nothing
    batches, skipped = plan_contexts(EVAL_MODEL, [300], attention="dense", batch_size=8,
                                     memory_budget=10, max_context=None, trained_seq_len=None)
    assert batches == {} and skipped[0]["kind"] == "memory"
    assert "more than the" in skipped[0]["reason"]


def test_last_position_logits_match_the_full_forward(tiny_run):
    model = load_checkpoint(tiny_run).model
    ids = torch.randint(0, 256, (3, 300), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        full = model(ids)[:, -1]
        fast = final_logits(model, ids)
        assert model(ids).shape == (3, 300, VOCAB_SIZE)  # the hook is removed again
    torch.testing.assert_close(fast, full, rtol=1e-5, atol=1e-5)


def test_trained_model_grid_is_deterministic_and_independent_of_batching(tiny_run):
    model = load_checkpoint(tiny_run).model
    kwargs = dict(contexts=[200, 512], depths=[0, 50, 100], trials=2, seed=1, progress=False)
    a = run_passkey(model, batch_size=6, **kwargs)
    b = run_passkey(model, batch_size=1, **kwargs)
    c = run_passkey(model, batch_size=6, **kwargs)
    assert a.records == c.records and a.accuracy == c.accuracy
    assert [r["answer"] for r in a.records] == [r["answer"] for r in b.records]
    np.testing.assert_allclose(a.digit_prob, b.digit_prob, rtol=1e-4)
