"""Our :class:`~.llama.Llama` as a transformers ``LlamaForCausalLM`` (needs the ``hf`` extra).

The architectures are the same: RMSNorm before attention and feed-forward, rotary embeddings
with rotate-half pairing (``i`` with ``i + D/2``) and base ``rope_theta``, grouped-query
attention with scale ``1/sqrt(head_dim)``, SwiGLU (``down(silu(gate) * up)``), no biases,
tied or untied embeddings. :func:`to_hf_llama` copies the weights under transformers' names
and then *checks* the mapping: both models run the same random bytes and their logits must
agree to float32 rounding, or it refuses.
"""

from __future__ import annotations

import torch
from torch import nn

from ..data import SEP_ID
from .llama import Llama, LlamaConfig

CHECK_TOLERANCE = 1e-4
"""Largest logit difference (relative to the logits' scale) the mapping check accepts."""


def hf_llama_config(config: LlamaConfig, max_positions: int, sep_id: int = SEP_ID):
    """The transformers ``LlamaConfig`` of our config (``max_positions``: the context the
    model trained at, at least; ``sep_id``: the tokenizer's document separator, declared as
    beginning, end and padding token)."""
    from transformers import LlamaConfig as HFLlamaConfig

    return HFLlamaConfig(
        vocab_size=config.vocab_size, hidden_size=config.d_model,
        intermediate_size=config.ffn_hidden, num_hidden_layers=config.n_layers,
        num_attention_heads=config.n_heads, num_key_value_heads=config.n_kv_heads,
        head_dim=config.head_dim, hidden_act="silu", max_position_embeddings=max_positions,
        rms_norm_eps=config.norm_eps, rope_theta=config.rope_theta, attention_bias=False,
        mlp_bias=False, attention_dropout=0.0, tie_word_embeddings=config.tie_embeddings,
        bos_token_id=sep_id, eos_token_id=sep_id, pad_token_id=sep_id, use_cache=True)


def hf_state_dict(model: Llama) -> dict[str, torch.Tensor]:
    """Our weights under transformers' ``LlamaForCausalLM`` names."""
    out = {"model.embed_tokens.weight": model.embed.weight,
           "model.norm.weight": model.norm.weight}
    if model.lm_head is not None:
        out["lm_head.weight"] = model.lm_head.weight
    for i, block in enumerate(model.layers):
        p = f"model.layers.{i}."
        out[p + "input_layernorm.weight"] = block.attn_norm.weight
        out[p + "post_attention_layernorm.weight"] = block.ffn_norm.weight
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            out[p + f"self_attn.{name}.weight"] = getattr(block.attn, name).weight
        for name in ("gate_proj", "up_proj", "down_proj"):
            out[p + f"mlp.{name}.weight"] = getattr(block.ffn, name).weight
    return {k: v.detach().clone().float() for k, v in out.items()}


def to_hf_llama(model: Llama, max_positions: int, sep_id: int = SEP_ID) -> nn.Module:
    """A ``LlamaForCausalLM`` (fp32, CPU, eval mode, SDPA attention) with ``model``'s weights.

    Raises:
        ValueError: transformers is missing, or the converted model's logits differ from
            ours (an architecture the mapping does not cover).
    """
    try:
        from transformers import LlamaForCausalLM
    except ImportError as err:
        raise ValueError(f"export needs transformers: pip install 'lighthouse-attn[hf]' "
                         f"({err})") from None
    hf = LlamaForCausalLM(hf_llama_config(model.config, max_positions, sep_id))
    hf.config._attn_implementation = "sdpa"
    missing, unexpected = hf.load_state_dict(hf_state_dict(model), strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and model.lm_head is None)]
    if missing or unexpected:
        raise ValueError(f"the model does not map onto LlamaForCausalLM: missing {missing[:4]}, "
                         f"unexpected {unexpected[:4]}")
    if model.lm_head is None:
        hf.tie_weights()
    hf.eval()
    check_same_logits(model, hf)
    return hf


@torch.no_grad()
def check_same_logits(model: Llama, hf: nn.Module, n: int = 64, seed: int = 0) -> float:
    """Run both models on the same random bytes under dense attention; the largest logit
    difference relative to the logits' scale, or ``ValueError`` above
    :data:`CHECK_TOLERANCE`."""
    mode = model.attention_mode
    was_training = model.training
    model.set_attention("dense")
    model.eval()
    try:
        ids = torch.randint(0, 256, (2, n), generator=torch.Generator().manual_seed(seed))
        ids = ids.to(next(model.parameters()).device)
        ours = model(ids).float().cpu()
        theirs = hf(input_ids=ids.to(next(hf.parameters()).device)).logits.float().cpu()
    finally:
        model.set_attention(mode)
        model.train(was_training)
    diff = (ours - theirs).abs().max().item() / max(ours.abs().max().item(), 1e-6)
    if not diff <= CHECK_TOLERANCE:
        raise ValueError(f"the transformers model does not reproduce this model (relative logit "
                         f"difference {diff:.2e}); its architecture does not map onto "
                         "LlamaForCausalLM, refusing to export")
    return diff
