"""The one activation-memory model: bytes of a model's tensors per pass, from its config.

Training (``train.memory``) and the evaluations (``eval.forward``) build their estimates from
these parts. Estimates, not bounds: dense attention is assumed to run in a fused kernel (O(N)
memory), and allocator overheads are ignored.
"""

from __future__ import annotations


def block_bytes(config, tokens: int, bf16: bool) -> int:
    """One decoder block's largest tensors for ``tokens`` positions: the residual stream and
    its norm (fp32), q, k, v, the attention output, and the SwiGLU gate, up and product."""
    act = 2 if bf16 else 4
    kv = config.n_kv_heads * config.head_dim
    d, f = config.d_model, config.ffn_hidden
    return tokens * (2 * 4 * d + act * (3 * d + 2 * kv) + act * 3 * f)


def gathered_bytes(config, gathered: int, bf16: bool, tensors: int) -> int:
    """``tensors`` per-head tensors of a Lighthouse layer's gathered length ``gathered``
    (e.g. q, k, v and output)."""
    return tensors * config.n_heads * gathered * config.head_dim * (2 if bf16 else 4)


def residual_bytes(config, tokens: int) -> int:
    """The fp32 residual stream of ``tokens`` positions."""
    return tokens * config.d_model * 4


def logits_bytes(config, positions: int) -> int:
    """fp32 logits of ``positions`` positions."""
    return positions * config.vocab_size * 4


def optimizer_state_bytes(config, shards: int = 1) -> int:
    """fp32 weights, gradients and both AdamW moments, split over ``shards`` processes."""
    return 16 * config.num_parameters() // shards


def gib(n: float) -> str:
    """``n`` bytes as ``"1.23 GiB"``."""
    return f"{n / 2**30:.2f} GiB"
