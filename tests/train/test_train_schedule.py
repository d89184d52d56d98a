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
    with pytest.raises(ValueError, match="cosine, linear, constant, wsd"):
        lr_at(3, 5, 1.0, 1, 0.0, "step")


def test_constant_after_warmup():
    lrs = [lr_at(s, 8, 1.0, 2, 0.1, "constant") for s in range(8)]
    assert lrs == [0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0]


def test_wsd_is_flat_then_decays_linearly_over_the_last_steps():
    lrs = [lr_at(s, 10, 1.0, 2, 0.0, "wsd", decay_steps=4) for s in range(10)]
    assert lrs == pytest.approx([0.5, 1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.0])
    # identical to the constant schedule before the decay: a wsd run can branch from it
    assert lrs[:6] == [lr_at(s, 10, 1.0, 2, 0.0, "constant") for s in range(6)]
    assert lr_at(9, 10, 1.0, 2, 0.1, "wsd", decay_steps=4) == pytest.approx(0.1)


def test_wsd_default_decay_is_the_last_fifth():
    from lighthouse_attn.train.schedule import wsd_decay_steps

    assert wsd_decay_steps(None, 400) == 80
    assert wsd_decay_steps(None, 3) == 1
    assert wsd_decay_steps(50, 480) == 50


def test_staggered_switch_turns_layers_dense_one_at_a_time():
    from lighthouse_attn.train.schedule import layers_switched_at

    # ramp over the last 4 of 10 stage-1 steps, 2 layers: the first at step 6, the second at 8
    assert [layers_switched_at(s, 10, 4, 2) for s in range(10)] == [0] * 6 + [1, 1, 2, 2]
    assert [layers_switched_at(s, 10, 3, 3) for s in range(7, 10)] == [1, 2, 3]
    assert all(layers_switched_at(s, 10, 0, 3) == 0 for s in range(10))
