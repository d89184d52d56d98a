"""Parameter-free scores of every pyramid entry (SPEC section 2), in fp32, without gradient."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ...config import LighthouseConfig


def _dilated_attention(q: Tensor, k: Tensor, v: Tensor, dilation: int) -> Tensor:
    """Causal attention inside each of the ``dilation`` interleaved sub-sequences
    ``{t : t mod dilation = r}``; inputs and output are ``(B, H, N, D)``."""
    B, H, N, D = q.shape

    def split(x: Tensor) -> Tensor:  # (B, H, N, D) -> (B, H*δ, N/δ, D), sub-sequence r at (h, r)
        return x.reshape(B, H, N // dilation, dilation, D).transpose(2, 3).reshape(
            B, H * dilation, N // dilation, D)

    o = F.scaled_dot_product_attention(split(q), split(k), split(v), is_causal=True)
    return o.reshape(B, H, dilation, N // dilation, D).transpose(2, 3).reshape(B, H, N, D)


def row_norms(x: Tensor) -> Tensor:
    """fp32 L2 norm of every row of ``x`` (``(..., D)`` -> ``(...)``), summed in fp64 and
    rounded once. For fp16/bf16 inputs the fp64 sum of squares is exact in any order, so every
    backend (``ops/triton/scores.py`` is the kernel twin) gets bitwise-equal scores."""
    return torch.linalg.vector_norm(x, dim=-1, dtype=torch.float64).float()


def recent_query_affinity(q: Tensor, k: Tensor, window: int) -> Tensor:
    """``(B, H, N)`` fp32: each key (query head ``h``'s kv head) dotted with the mean query of
    the aligned ``window`` positions before the window that holds it (0 in the first window):
    how strongly the recent queries point at the key, from positions up to the key's own."""
    B, H, N, D = q.shape
    means = q.float().view(B, H, N // window, window, D).mean(3)
    before = F.pad(means, (0, 0, 1, 0))[:, :, :-1]
    keys = k.float().repeat_interleave(H // k.shape[1], 1).view(B, H, N // window, window, D)
    return torch.einsum("bhjd,bhjwd->bhjw", before, keys).reshape(B, H, N)


@torch.no_grad()
def base_scores(q: Tensor, k: Tensor, v: Tensor | None, config: LighthouseConfig
                ) -> tuple[Tensor, Tensor]:
    """Level-0 scores ``(sq, sk)``, each ``(B, H', N)`` fp32.

    ``q`` is ``(B, H, N, D)``; ``k``, ``v`` are ``(B, H_kv, N, D)``. With ``gqa="expand"``
    ``H' = H`` (query head ``h`` reads kv head ``h // (H/H_kv)``); with ``gqa="shared"``
    ``H' = H_kv`` and each score is the max over the group's query heads. The ``dilated``
    scorer needs ``v``; the ``affinity`` scorer gives queries and keys the same scores
    (:func:`recent_query_affinity` over the coarsest window).
    """
    B, H, N, D = q.shape
    group = H // k.shape[1]
    if config.scorer == "norm":
        sq = row_norms(q.detach())
        sk = row_norms(k.detach()).repeat_interleave(group, dim=1)
    elif config.scorer == "affinity":
        sq = sk = recent_query_affinity(q.detach(), k.detach(), config.coarsest_window)
    else:
        if v is None:
            raise ValueError("the dilated scorer needs v: call select(q, k, config, v=v)")
        qf = q.detach().float()
        kf, vf = (x.detach().float().repeat_interleave(group, dim=1) for x in (k, v))
        sq = row_norms(_dilated_attention(qf, kf, vf, config.dilation))
        sk = row_norms(_dilated_attention(kf, qf, vf, config.dilation))
    if config.gqa == "shared" and group > 1:
        sq = sq.view(B, H // group, group, N).amax(2)
        sk = sk.view(B, H // group, group, N).amax(2)
    return sq, sk


def level_scores(s0: Tensor, num_levels: int, pooling_factor: int) -> list[Tensor]:
    """Scores of levels ``0 .. L-1`` from the level-0 scores ``(B, H', N)``: at level ``l`` the
    **max** over each window of ``p^l`` base scores (SPEC section 2)."""
    out = [s0]
    for lvl in range(1, num_levels):
        w = pooling_factor**lvl
        out.append(s0.view(*s0.shape[:-1], s0.shape[-1] // w, w).amax(-1))
    return out


def causal_level_scores(s0: Tensor, num_levels: int, pooling_factor: int) -> list[Tensor]:
    """Scores of the causal selection (SPEC section 11): entry ``(l, m)`` with ``w = p^l``
    scores the max of the base scores over ``[m w - w, m w]`` (the window before it and its own
    first position; ``s0[0]`` for ``m = 0``), so it reads no position after the window's first.
    """
    out = [s0]
    for lvl in range(1, num_levels):
        w = pooling_factor**lvl
        before = F.pad(s0.view(*s0.shape[:-1], s0.shape[-1] // w, w).amax(-1), (1, 0),
                       value=float("-inf"))[..., :-1]
        out.append(torch.maximum(before, s0[..., ::w]))
    return out
