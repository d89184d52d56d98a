"""A rank's two chunks over every chunk up to each, in one process: forward and backward
against autograd through plain softmax attention (fp64), for every rank of several degrees."""

import pytest
import torch

from lighthouse_attn.parallel.chunk_attention import (
    attend_own,
    attend_past,
    own_backward,
    past_backward,
    slot,
)
from lighthouse_attn.parallel.layout import chunk_ids, chunks_upto


def attend(q, k, v, past, chunks, scale):
    """The chunks' attention in one piece: their own keys, then the earlier chunks'."""
    out, lse, own = attend_own(q, k, v, scale)
    return out, lse, [own, *attend_past(q, out, lse, past, chunks, scale)]


def attend_backward(dout, q, k, v, past, out, lse, saved, chunks, scale, pieces_shape, world):
    """``(dq, dk, dv, d_pieces)`` of :func:`attend`."""
    past_dq, d_pieces = past_backward(dout, q, past, out, lse, saved, chunks, scale,
                                      pieces_shape=pieces_shape, world=world)
    grads = own_backward(dout, q, k, v, out, lse, own_state=saved[0], past_dq=past_dq,
                         scale=scale)
    return (*grads, d_pieces)


def _reference(q, k, v, past, chunks, scale):
    """Each chunk's queries over the earlier chunks' keys then its own, lower-right causal."""
    E, heads = q.shape[2], q.shape[1]
    outs = []
    for i, chunk in enumerate(chunks):
        keys = torch.cat([past[0][..., :chunk * E, :], slot(k, i)], 2)
        values = torch.cat([past[1][..., :chunk * E, :], slot(v, i)], 2)
        keys, values = (x.repeat_interleave(heads // x.shape[1], 1) for x in (keys, values))
        s = slot(q, i) @ keys.transpose(-1, -2) * scale
        seen = torch.arange(keys.shape[2]) <= chunk * E + torch.arange(E)[:, None]
        outs.append(s.masked_fill(~seen, float("-inf")).softmax(-1) @ values)
    return torch.stack(outs, 1).flatten(0, 1)  # batch rows (b, slot)


@pytest.mark.parametrize("world", [1, 2, 3])
def test_attend_backward_gives_the_gathered_pieces_their_gradient(world):
    """The earlier chunks' key and value gradients land in their owners' slots of the
    all-gathered pieces, summed where both local chunks read a chunk, zero where neither
    does; the chunks' own gradients and outputs match too."""
    B, H, Hkv, E, D, scale = 2, 4, 2, 8, 16, 0.3
    for rank in range(world):
        torch.manual_seed(10 * world + rank)
        chunks = chunk_ids(rank, world)
        pieces = torch.randn(world, 2, 2 * B, Hkv, E, D, dtype=torch.float64,
                             requires_grad=True)
        q = torch.randn(2 * B, H, E, D, dtype=torch.float64, requires_grad=True)
        k, v = (torch.randn(2 * B, Hkv, E, D, dtype=torch.float64, requires_grad=True)
                for _ in range(2))
        past = chunks_upto(pieces, max(chunks) - 1, world)
        ref = _reference(q, k, v, past, chunks, scale)
        dout = torch.randn_like(ref)
        expected = torch.autograd.grad((ref * dout).sum(), (q, k, v, pieces))
        with torch.no_grad():
            out, lse, saved = attend(q, k, v, past, chunks, scale)
            grads = attend_backward(dout, q, k, v, past, out, lse, saved, chunks, scale,
                                    pieces_shape=pieces.shape, world=world)
        torch.testing.assert_close(out, ref)
        for name, got, want in zip(("dq", "dk", "dv", "d_pieces"), grads, expected):
            torch.testing.assert_close(got, want, msg=lambda m, n=name: f"{n}: {m}")


def test_pieces_gradient_rounds_the_overlap_once():
    """In bf16, a chunk both local chunks read gets the sum of their gradients rounded once
    (as summing in fp32 then casting), the others each read's gradient as is, unread
    chunks zero."""
    from lighthouse_attn.parallel.chunk_attention import _pieces_grad
    from lighthouse_attn.parallel.layout import chunk_of

    world, rank, B, H, n, D = 3, 1, 2, 2, 4, 8
    g = torch.Generator().manual_seed(3)
    reads = [(c * n, [torch.randn(B, H, c * n, D, generator=g).bfloat16() for _ in range(2)])
             for c in chunk_ids(rank, world)]  # chunks 1 and 4 read 1 and 4 chunks
    expected = [[r[1][kind].float() for r in reads] for kind in range(2)]
    shape = torch.Size((world, 2, 2 * B, H, n, D))
    got = _pieces_grad([(u, [x.clone() for x in gr]) for u, gr in reads],
                       torch.empty(0, dtype=torch.bfloat16), shape, world)
    for c in range(2 * world):
        for kind in range(2):
            short, full = expected[kind]
            rows = slice(c * n, (c + 1) * n)
            want = (torch.zeros(B, H, n, D) if c >= 4 else
                    full[..., rows, :] + (short[..., rows, :] if c < 1 else 0))
            torch.testing.assert_close(chunk_of(got, c, world)[kind].float(),
                                       want.bfloat16().float(), rtol=0, atol=0)


def _one_rank_exchanges(monkeypatch, module, events: list) -> None:
    """Record, in ``events``, the collectives of one rank (done as copies), the waits on
    them and the calls of ``module``'s attention pieces, in order."""
    from lighthouse_attn.parallel import collectives

    class Work:
        def __init__(self, name):
            self.name = name

        def wait(self):
            events.append(f"wait {self.name}")

    def fake(name):
        def collective(out, x, group, async_op=False):
            events.append(name)
            out.copy_(x)
            return Work(name)
        return collective

    def watch(name):
        fn = getattr(module, name)

        def watched(*a, **kw):
            events.append(name)
            return fn(*a, **kw)
        monkeypatch.setattr(module, name, watched)

    monkeypatch.setattr(collectives, "group_info", lambda group: (None, 0, 1))
    monkeypatch.setattr(collectives, "all_gather_into", fake("all_gather"))
    monkeypatch.setattr(collectives, "reduce_scatter_into", fake("reduce_scatter"))
    for name in ("attend_own", "attend_past", "own_backward", "past_backward"):
        watch(name)


def test_the_collectives_run_behind_the_chunks_own_attention(monkeypatch):
    """The inner attention issues its all-gather before the chunks' attention over their
    own keys and waits for it only after, and its reduce-scatter before the own backward,
    waiting after (so the exchange overlaps work that needs nothing from other ranks); the
    result equals the plain composition."""
    from lighthouse_attn.parallel import gathered

    events = []
    _one_rank_exchanges(monkeypatch, gathered, events)
    torch.manual_seed(0)
    B, H, Hkv, E, D = 1, 2, 1, 8, 16
    how = gathered.InnerContext(None, 0, 1, 0.25, False)
    q = torch.randn(2 * B, H, E, D, dtype=torch.float64)
    kv = torch.randn(2, 2 * B, Hkv, E, D, dtype=torch.float64)
    out, tensors, state = gathered.inner_forward(q, kv, how)
    assert events == ["all_gather", "attend_own", "wait all_gather", "attend_past"]
    events.clear()
    dout = torch.randn_like(out)
    grads = gathered.inner_backward(dout, tensors, state, how)
    assert events == ["past_backward", "reduce_scatter", "own_backward",
                      "wait reduce_scatter"]
    pieces = kv[None]
    past = chunks_upto(pieces, 0, 1)
    want_out, lse, saved = attend(q, kv[0], kv[1], past, (0, 1), 0.25)
    want = attend_backward(dout, q, kv[0], kv[1], past, want_out, lse, saved, (0, 1), 0.25,
                           pieces_shape=pieces.shape, world=1)
    torch.testing.assert_close(out, want_out, rtol=0, atol=0)
    for got, w, d_mine in zip(grads, want[:3], (0, *want[3][0])):
        torch.testing.assert_close(got, w + d_mine, rtol=0, atol=0)


def test_the_dense_layer_overlaps_its_collectives_the_same_way(monkeypatch):
    """Per group of kv heads, the dense layer attends over the chunks' own keys before it
    waits for the group's gather, and runs that backward while the group's gradients are
    reduce-scattered."""
    from lighthouse_attn.parallel import dense

    events = []
    _one_rank_exchanges(monkeypatch, dense, events)
    q, k, v = (torch.randn(1, 2, 16, 8, dtype=torch.float64, requires_grad=True)
               for _ in range(3))
    out = dense.dense_attention_cp(q, k, v, kv_heads_per_group=2)
    assert events == ["all_gather", "attend_own", "wait all_gather", "attend_past"]
    events.clear()
    out.backward(torch.randn_like(out))
    assert events == ["all_gather", "wait all_gather", "past_backward", "reduce_scatter",
                      "own_backward", "wait reduce_scatter"]
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(out, want)
