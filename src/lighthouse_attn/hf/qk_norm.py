"""Models that normalise queries and keys per head (QK-norm: Qwen3, OLMo 2, Gemma 3, ...).

After an RMSNorm over each head's query and key, every query and key has (almost) the same
norm: exactly ``sqrt(head_dim)`` at initialisation, since the norm's weight starts at 1 and RoPE
keeps norms. The ``norm`` scorer (SPEC section 2) then nearly ties every score: they differ
only through RMSNorm's epsilon and the norm's learned weights, and the selection rests on those
small differences. The ``dilated`` scorer scores by the norms of dilated attention outputs,
which depend on the content through the attention weights, so it is the default for such
models.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from ..config import LighthouseConfig

QK_NORM_MODEL_TYPES = frozenset({"qwen3", "qwen3_moe", "qwen3_next", "olmo2", "olmo3",
                                 "gemma3", "gemma3_text", "chameleon"})
"""transformers ``model_type`` values whose attention always normalises q and k per head
(others, such as Cohere, say so with a flag)."""

_FLAGS = ("use_qk_norm", "qk_layernorm", "qk_norm", "use_qk_layernorm")


def config_uses_qk_norm(config) -> bool:
    """Whether a transformers config describes a model with QK-norm (by its ``model_type``
    or a QK-norm flag)."""
    return (getattr(config, "model_type", None) in QK_NORM_MODEL_TYPES or
            any(getattr(config, flag, False) is True for flag in _FLAGS))


def uses_qk_norm(model: nn.Module) -> bool:
    """Whether ``model``'s attention modules hold ``q_norm``/``k_norm`` modules, or its config
    says it normalises q and k."""
    for m in model.modules():
        if isinstance(getattr(m, "q_norm", None), nn.Module) or \
                isinstance(getattr(m, "k_norm", None), nn.Module):
            return True
    config = getattr(model, "config", None)
    return config is not None and config_uses_qk_norm(config)


def scorer_for(lighthouse: LighthouseConfig, qk_norm: bool, *, keep_norm_scorer: bool,
               keep_hint: str = "keep_norm_scorer=True") -> tuple[LighthouseConfig, str | None]:
    """The settings to use on a model with (``qk_norm``) or without QK-norm, and a one-line
    note when they differ from ``lighthouse`` or keep a scorer that cannot work
    (``keep_hint``: how the caller keeps the norm scorer)."""
    if not qk_norm or lighthouse.scorer != "norm":
        return lighthouse, None
    if keep_norm_scorer:
        return lighthouse, ("the model normalises q and k per head (QK-norm): the norm scorer "
                            "nearly ties every score (they differ only through RMSNorm's "
                            "epsilon and weights); prefer scorer='dilated'")
    return replace(lighthouse, scorer="dilated"), (
        "the model normalises q and k per head (QK-norm), which nearly ties every norm score: "
        f"scoring with scorer='dilated' instead (keep 'norm' with {keep_hint})")
