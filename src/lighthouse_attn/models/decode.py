"""Text generation with our :class:`~.llama.Llama`: dense attention with a key/value cache.

The prompt runs once (causal attention over it, the keys and values of every layer kept),
then each new token runs alone against the cache. Sampling: greedy at ``temperature=0``, else
softmax at ``temperature`` restricted to the smallest set of tokens whose probability reaches
``top_p``, drawn from a generator seeded with ``seed``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from .llama import Llama, rope_tables


def sample_next(logits: Tensor, temperature: float, top_p: float,
                generator: torch.Generator | None) -> Tensor:
    """Next token ids ``(B,)`` from last-position logits ``(B, V)``."""
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if top_p < 1:
        sorted_p, order = probs.sort(dim=-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p  # mass of the better tokens
        sorted_p = sorted_p.masked_fill(before >= top_p, 0.0)
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_p)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class KVCache:
    """Keys and values of every layer for the positions run so far."""

    def __init__(self, n_layers: int) -> None:
        self.k: list[Tensor | None] = [None] * n_layers
        self.v: list[Tensor | None] = [None] * n_layers
        self.length = 0

    def extend(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        if self.k[layer] is not None:
            k = torch.cat([self.k[layer], k], dim=2)
            v = torch.cat([self.v[layer], v], dim=2)
        self.k[layer], self.v[layer] = k, v
        return k, v


@torch.no_grad()
def forward_cached(model: Llama, ids: Tensor, cache: KVCache, cos: Tensor, sin: Tensor
                   ) -> Tensor:
    """Logits ``(B, n, V)`` of ``ids`` ``(B, n)`` at positions ``cache.length ..``, dense
    attention over the cached and the new positions; the cache grows by ``n``."""
    start, n = cache.length, ids.shape[1]
    c, s = cos[start:start + n], sin[start:start + n]
    x = model.embed(ids)
    for i, block in enumerate(model.layers):
        B = x.shape[0]
        q, k, v = block.attn.project(block.attn_norm(x), c, s)
        k, v = cache.extend(i, k, v)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=start == 0,
                                           enable_gqa=k.shape[1] != q.shape[1])
        x = x + block.attn.o_proj(o.transpose(1, 2).reshape(B, n, -1))
        x = x + block.ffn(block.ffn_norm(x))
    cache.length += n
    return model.logits(x)


@torch.no_grad()
def generate(model: Llama, prompt: list[int], max_new_tokens: int, *,
             temperature: float = 0.0, top_p: float = 1.0, seed: int = 0,
             stop_ids: tuple[int, ...] = ()) -> list[int]:
    """Token ids that continue ``prompt`` (at most ``max_new_tokens``; generation stops after
    a token of ``stop_ids``). ``ValueError`` for an empty prompt or bad sampling settings."""
    if not prompt:
        raise ValueError("the prompt is empty: give at least one token")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1 (got {max_new_tokens})")
    if not (temperature >= 0 and 0 < top_p <= 1):
        raise ValueError(f"temperature must be >= 0 and top_p in (0, 1] (got {temperature}, "
                         f"{top_p})")
    device = next(model.parameters()).device
    cfg = model.config
    # RoPE tables grow with the text (doubling), never sized for max_new_tokens up front
    length = len(prompt) + min(max_new_tokens, max(len(prompt), 1024))
    cos, sin = rope_tables(length, cfg.head_dim, cfg.rope_theta, device)
    generator = torch.Generator(device=device).manual_seed(seed) if temperature > 0 else None
    cache = KVCache(cfg.n_layers)
    logits = forward_cached(model, torch.tensor([prompt], device=device), cache, cos, sin)
    out: list[int] = []
    for _ in range(max_new_tokens):
        token = sample_next(logits[:, -1], temperature, top_p, generator)
        out.append(int(token))
        if out[-1] in stop_ids or len(out) == max_new_tokens:
            break
        if cache.length + 1 > cos.shape[0]:
            cos, sin = rope_tables(2 * cos.shape[0], cfg.head_dim, cfg.rope_theta, device)
        logits = forward_cached(model, token.view(1, 1), cache, cos, sin)
    return out
