"""Learning-rate schedule and stages."""

import math

import pytest

from lighthouse_attn.train.schedule import lr_at, stage_at


def test_stage_switches_after_lighthouse_steps():
    assert [stage_at(s, 2) for s in range(4)] == ["lighthouse", "lighthouse", "dense", "dense"]
    assert stage_at(0, 0) == "dense"


def test_warmup_then_cosine_to_min():
    lrs = [lr_at(s, 10, 1.0, 4, 0.1) for s in range(10)]
    assert lrs[:4] == [0.25, 0.5, 0.75, 1.0]
    assert lrs[4] == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 6)))
    assert lrs[-1] == pytest.approx(0.1)
    assert all(a > b for a, b in zip(lrs[3:], lrs[4:]))


def test_linear_decay_and_unknown_schedule():
    lrs = [lr_at(s, 5, 2.0, 1, 0.0, "linear") for s in range(5)]
    assert lrs == pytest.approx([2.0, 1.5, 1.0, 0.5, 0.0])
    with pytest.raises(ValueError, match="cosine"):
        lr_at(3, 5, 1.0, 1, 0.0, "step")
