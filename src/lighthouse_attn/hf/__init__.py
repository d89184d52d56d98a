"""Lighthouse as a Hugging Face transformers attention implementation::

    import lighthouse_attn.hf as lh_hf
    lh_hf.register()             # "lighthouse" joins transformers' AttentionInterface
    model = AutoModelForCausalLM.from_config(cfg, attn_implementation="lighthouse")
    lh_hf.configure(model, LighthouseConfig(...), dense_layers=[0, 1, -2, -1])  # stage 1
    lh_hf.to_dense(model)        # stage 2: every layer back to "sdpa"
    Trainer(..., callbacks=[lh_hf.RecoveryCallback(switch_step=10_000)])  # or automatically

The project trainer trains an HF architecture from a local ``config.json`` with the same two
stages: ``lighthouse-attn train --hf-config config.json``
(:class:`lighthouse_attn.models.HFCausalLM`).

Needs ``pip install "lighthouse-attn[hf]"`` (transformers and accelerate).
"""

from .attention import ATTN_IMPLEMENTATION, lighthouse_attention_forward, lighthouse_mask, register
from .model import (
    attention_modules,
    build_causal_lm,
    causal_lm_from_config,
    configure,
    lighthouse_layers,
    read_config,
    save_pretrained,
    to_dense,
)
from .settings import CONFIG_KEY, Settings, read_settings

__all__ = ["ATTN_IMPLEMENTATION", "CONFIG_KEY", "RecoveryCallback", "Settings",
           "attention_modules", "build_causal_lm", "causal_lm_from_config", "configure",
           "lighthouse_attention_forward", "lighthouse_layers", "lighthouse_mask", "read_config",
           "read_settings", "register", "save_pretrained", "to_dense"]


def __getattr__(name: str):
    # The callback imports transformers' Trainer machinery (~1.5 s): load it when asked for.
    if name == "RecoveryCallback":
        from .callback import RecoveryCallback
        return RecoveryCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
