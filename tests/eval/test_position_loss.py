"""Loss by position: buckets, and the batched computation against a per-sequence loop."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from eval_helpers import shared_corpus, shared_run

from lighthouse_attn.data import VOCAB_SIZE, PackedSequences, load_tokens
from lighthouse_attn.eval.loading import load_checkpoint
from lighthouse_attn.eval.position_loss import loss_by_position, position_buckets


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
