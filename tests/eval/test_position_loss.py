"""Loss by position: buckets, and the batched computation against a per-sequence loop."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_helpers import shared_corpus, shared_run

from lighthouse_attn.data import VOCAB_SIZE, PackedSequences, load_tokens
from lighthouse_attn.eval.loading import load_checkpoint
from lighthouse_attn.eval.position_loss import context_ranges, loss_by_position, position_buckets


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    return shared_run(tmp_path_factory)


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    return shared_corpus(tmp_path_factory)



@pytest.mark.parametrize("seq_len,expected", [
    (1, [(1, 2)]),
    (2, [(1, 3)]),
    (5, [(1, 2), (2, 4), (4, 6)]),
    (8, [(1, 2), (2, 4), (4, 9)]),
    (2048, [(2**i, 2**(i + 1)) for i in range(10)] + [(1024, 2049)]),
    (98304, [(2**i, 2**(i + 1)) for i in range(16)] + [(65536, 98305)]),
])
def test_position_buckets(seq_len, expected):
    buckets = position_buckets(seq_len)
    assert buckets == expected
    assert buckets[0][0] == 1 and buckets[-1][1] == seq_len + 1


def test_uniform_model_has_log_vocab_loss_everywhere():
    data = PackedSequences(np.arange(1000, dtype=np.uint16) % 256, 64)
    uniform = lambda ids: torch.zeros(*ids.shape, VOCAB_SIZE)
    r = loss_by_position(uniform, data, max_sequences=5, progress=False)
    assert r.sequences == 5 and r.seq_len == 64 and len(r.per_position) == 64
    assert r.loss == pytest.approx(math.log(VOCAB_SIZE))
    assert all(b["loss"] == pytest.approx(math.log(VOCAB_SIZE)) for b in r.buckets)


def test_position_loss_matches_a_per_sequence_loop(tiny_run, corpus):
    model = load_checkpoint(tiny_run).model
    data = PackedSequences(load_tokens([corpus]), 256)
    r = loss_by_position(model, data, max_sequences=5, batch_size=2, progress=False)
    expected = torch.zeros(256, dtype=torch.float64)
    with torch.no_grad():
        for i in range(5):
            x, y = data.batch([i])
            expected += F.cross_entropy(model(x)[0], y[0], reduction="none").double()
    expected /= 5
    np.testing.assert_allclose(r.per_position, expected.numpy(), rtol=1e-5)
    assert r.loss == pytest.approx(expected.mean().item(), rel=1e-6)
    for b in r.buckets:
        assert b["loss"] == pytest.approx(expected[b["start"] - 1:b["end"] - 1].mean().item(),
                                          rel=1e-6)
    # all sequences when max_sequences is None
    assert loss_by_position(model, PackedSequences(data.tokens[:2000], 256),
                            progress=False).sequences == 7


def test_bad_arguments():
    data = PackedSequences(np.arange(100, dtype=np.uint16), 10)
    with pytest.raises(ValueError, match="must be >= 1"):
        loss_by_position(lambda ids: ids, data, batch_size=0, progress=False)


@pytest.mark.parametrize("seq_len,expected", [
    (1000, [("0-end", 1, 1001)]),
    (2048, [("0-end", 1, 2049)]),
    (4096, [("0-2K", 1, 2049), ("2K-end", 2049, 4097)]),
    (32768, [("0-2K", 1, 2049), ("2K-8K", 2049, 8193), ("8K-end", 8193, 32769)]),
    (131072, [("0-2K", 1, 2049), ("2K-8K", 2049, 8193), ("8K-32K", 8193, 32769),
              ("32K-end", 32769, 131073)]),
    (1 << 20, [("0-2K", 1, 2049), ("2K-8K", 2049, 8193), ("8K-32K", 8193, 32769),
               ("32K-128K", 32769, 131073), ("128K-512K", 131073, 524289),
               ("512K-end", 524289, (1 << 20) + 1)]),
])
def test_context_ranges(seq_len, expected):
    assert context_ranges(seq_len) == expected


def _copy_model(period: int):
    """Predicts token t+1 exactly when the token ``period`` before it is in its input (the
    data repeats with that period), uniformly otherwise: uses distant text only."""
    def model(ids):
        logits = torch.zeros(*ids.shape, VOCAB_SIZE)
        for t in range(period - 1, ids.shape[1]):
            logits[torch.arange(len(ids)), t, ids[:, t + 1 - period]] = 50.0
        return logits
    return model


def test_long_context_gain_of_a_model_that_copies_from_far_back():
    """Period 24 > 2 x window 8: with the full context every scored position is predicted
    (loss ~0); with only the window before it, none is (log V): the gain is log V."""
    rng = np.random.default_rng(0)
    tokens = np.tile(rng.integers(0, 256, 24), 40).astype(np.uint16)
    data = PackedSequences(tokens, 64)
    r = loss_by_position(_copy_model(24), data, max_sequences=6, batch_size=4, gain_window=8,
                         progress=False)
    lc = r.long_context
    assert lc["window"] == 8 and lc["loss_full"] == pytest.approx(0.0, abs=1e-6)
    assert lc["loss_short"] == pytest.approx(math.log(VOCAB_SIZE))
    assert lc["gain"] == pytest.approx(math.log(VOCAB_SIZE))
    assert [x["label"] for x in r.ranges] == ["0-end"]
    # a period the short context holds (4 < 8): nothing is gained from farther back
    tokens = np.tile(rng.integers(0, 256, 4), 400).astype(np.uint16)
    r = loss_by_position(_copy_model(4), PackedSequences(tokens, 64), max_sequences=6,
                         gain_window=8, progress=False)
    assert r.long_context["gain"] == pytest.approx(0.0, abs=1e-6)
    # too short for two windows, or switched off: not measured
    assert loss_by_position(_copy_model(4), PackedSequences(tokens, 64), max_sequences=2,
                            gain_window=40, progress=False).long_context is None
    assert loss_by_position(_copy_model(4), PackedSequences(tokens, 64), max_sequences=2,
                            gain_window=None, progress=False).long_context is None


def test_long_context_gain_matches_a_direct_computation(tiny_run, corpus):
    model = load_checkpoint(tiny_run).model
    data = PackedSequences(load_tokens([corpus]), 256)
    r = loss_by_position(model, data, max_sequences=3, batch_size=2, gain_window=64,
                         progress=False)
    x, y = data.batch([0, 1, 2])
    with torch.no_grad():
        full = F.cross_entropy(model(x)[:, -64:].flatten(0, 1), y[:, -64:].flatten())
        short = F.cross_entropy(model(x[:, -128:])[:, -64:].flatten(0, 1), y[:, -64:].flatten())
    assert r.long_context["loss_full"] == pytest.approx(full.item(), rel=1e-5)
    assert r.long_context["loss_short"] == pytest.approx(short.item(), rel=1e-5)
    assert r.long_context["gain"] == pytest.approx((short - full).item(), rel=1e-4, abs=1e-6)
    for rng in r.ranges:
        assert rng["loss"] == pytest.approx(
            float(np.mean(r.per_position[rng["start"] - 1:rng["end"] - 1])), rel=1e-6)
