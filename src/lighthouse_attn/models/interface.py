"""The model interface every model of the project implements (our :class:`~.llama.Llama` and
the Hugging Face wrapper :class:`~.hf_causal_lm.HFCausalLM`), so that training, checkpoints
and evaluation never ask which one they hold.

A model config provides the sizes (``vocab_size``, ``d_model``, ``n_layers``, ``n_heads``,
``n_kv_heads``, ``head_dim``, ``ffn_hidden``), ``lighthouse`` (stage-1 settings),
``dense_layer_indices``, ``lighthouse_layer_indices``, ``num_parameters()``, ``to_dict()``,
``build()`` (a fresh model), ``label(preset)`` (the name of its runs),
``check_lighthouse_run(seq_len)`` (what stage 1 would refuse, checked before a run),
``checkpoint_format`` (how its final dense model is saved) and
``supports_context_parallel`` (whether its model has ``set_context_parallel``). A model provides
``forward(input_ids (B, N) int64) -> logits (B, N, V) fp32``, ``set_attention(mode)``,
``attention_mode``, ``layers`` (the decoder blocks) and ``config``.
"""

from __future__ import annotations

from typing import Protocol

from torch import Tensor, nn

from ..config import LighthouseConfig

OUR_FORMAT = "lighthouse-attn"
"""Final model saved as ``model.safetensors`` + our ``config.json`` (``train/checkpoint.py``)."""
HF_FORMAT = "huggingface"
"""Final model saved as an ordinary Hugging Face checkpoint."""


class ModelConfigLike(Protocol):
    vocab_size: int
    lighthouse: LighthouseConfig
    checkpoint_format: str
    supports_context_parallel: bool

    @property
    def n_layers(self) -> int: ...

    @property
    def dense_layer_indices(self) -> tuple[int, ...]: ...

    @property
    def lighthouse_layer_indices(self) -> tuple[int, ...]: ...

    def num_parameters(self) -> int: ...

    def to_dict(self) -> dict: ...

    def build(self) -> nn.Module: ...

    def label(self, preset: str) -> str: ...

    def check_lighthouse_run(self, seq_len: int) -> None: ...


class ModelLike(Protocol):
    config: ModelConfigLike
    layers: nn.ModuleList

    @property
    def attention_mode(self) -> str: ...

    def set_attention(self, mode: str) -> None: ...

    def __call__(self, input_ids: Tensor) -> Tensor: ...
