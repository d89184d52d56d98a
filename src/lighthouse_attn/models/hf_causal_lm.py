"""A Hugging Face causal LM behind the project's model interface (``--hf-config``; needs the
``hf`` extra).

:class:`HFModelConfig` plays the part of :class:`~lighthouse_attn.models.LlamaConfig` for an
architecture read from a local ``config.json``: it holds the transformers config as a JSON dict
(so a run directory is self-contained and resumes without the original file), the stage-1
Lighthouse settings and the always-dense layers, and exposes the sizes the trainer reads.
:class:`HFCausalLM` wraps the model built from it like :class:`~lighthouse_attn.models.Llama`:
``forward(input_ids) -> logits``, ``set_attention``, ``attention_mode`` and ``layers``, with
exactly the HF model's state-dict keys. See ``models/interface.py`` for the interface.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor, nn
from transformers import CONFIG_MAPPING, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from ..config import LighthouseConfig
from ..data.hf_tokenizer import hf_tokenizer
from ..data.tokenizer import TOKENIZER, Tokenizer
from ..hf.model import (
    QKNormWarning,
    causal_lm_from_config,
    configure,
    read_config,
    save_pretrained,
    to_dense,
)
from ..hf.settings import CONFIG_KEY, read_settings, resolve_dense_layers
from ..settings import SettingError
from .interface import HF_FORMAT
from .llama import check_attention_mode

_REQUIRED = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")


@dataclass(frozen=True)
class HFModelConfig:
    """A transformers causal-LM architecture and its Lighthouse settings, for the trainer.

    Args:
        hf_config: the transformers config as a dict (``PretrainedConfig.to_dict()``), with a
            ``model_type`` transformers knows.
        lighthouse: the :class:`LighthouseConfig` of stage 1.
        dense_layers: layers that keep SDPA in stage 1; negative indices count from the end.

    Raises:
        ValueError: a config transformers cannot read, one without the sizes of a decoder-only
            LM (``vocab_size``, ``hidden_size``, ``num_hidden_layers``,
            ``num_attention_heads``), or a dense-layer index out of range.
    """

    hf_config: dict
    lighthouse: LighthouseConfig
    dense_layers: tuple[int, ...] = ()
    _parsed: PretrainedConfig = field(init=False, repr=False, compare=False)
    checkpoint_format: ClassVar[str] = HF_FORMAT
    supports_context_parallel: ClassVar[bool] = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "dense_layers", tuple(self.dense_layers))
        if not isinstance(self.lighthouse, LighthouseConfig):
            raise ValueError("lighthouse must be a LighthouseConfig")
        parsed = self.transformers_config()
        missing = [k for k in _REQUIRED if not isinstance(getattr(parsed, k, None), int)]
        if missing:
            raise ValueError(f"the {parsed.model_type} config has no integer {missing}: "
                             "Lighthouse supports decoder-only causal LMs such as Llama, Qwen2, "
                             "Qwen3 and Mistral")
        object.__setattr__(self, "_parsed", parsed)
        try:
            resolve_dense_layers(self.dense_layers, self.n_layers)
        except ValueError as err:
            raise SettingError(str(err), "dense_layers") from None

    @classmethod
    def from_file(cls, path: str | Path, lighthouse: LighthouseConfig,
                  dense_layers: Sequence[int]) -> HFModelConfig:
        """Read a local ``config.json`` (or a directory holding one); no download."""
        d = read_config(path).to_dict()
        d.pop(CONFIG_KEY, None)  # the settings come from ``lighthouse`` / ``dense_layers``
        return cls(d, lighthouse, tuple(dense_layers))

    def transformers_config(self) -> PretrainedConfig:
        """A fresh transformers config object (building a model mutates its config)."""
        model_type = self.hf_config.get("model_type")
        if model_type not in CONFIG_MAPPING:
            raise ValueError(f"the HF config's model_type {model_type!r} is not one transformers "
                             "knows; use the config.json of a transformers causal LM")
        try:
            return CONFIG_MAPPING[model_type].from_dict(self.hf_config)
        except (TypeError, ValueError, KeyError) as err:
            raise ValueError(f"cannot read the {model_type} config: {err}") from None

    # The sizes the trainer reads (same names as LlamaConfig).
    @property
    def model_type(self) -> str:
        return self._parsed.model_type

    @property
    def vocab_size(self) -> int:
        return self._parsed.vocab_size

    @property
    def n_layers(self) -> int:
        return self._parsed.num_hidden_layers

    @property
    def d_model(self) -> int:
        return self._parsed.hidden_size

    @property
    def n_heads(self) -> int:
        return self._parsed.num_attention_heads

    @property
    def n_kv_heads(self) -> int:
        return getattr(self._parsed, "num_key_value_heads", None) or self.n_heads

    @property
    def head_dim(self) -> int:
        return getattr(self._parsed, "head_dim", None) or self.d_model // self.n_heads

    @property
    def ffn_hidden(self) -> int:
        return getattr(self._parsed, "intermediate_size", None) or 4 * self.d_model

    @property
    def dense_layer_indices(self) -> tuple[int, ...]:
        return resolve_dense_layers(self.dense_layers, self.n_layers)

    @property
    def lighthouse_layer_indices(self) -> tuple[int, ...]:
        dense = set(self.dense_layer_indices)
        return tuple(i for i in range(self.n_layers) if i not in dense)

    def num_parameters(self) -> int:
        """Parameter count (tied embeddings once), from a model built on the meta device."""
        with torch.device("meta"):
            model = causal_lm_from_config(self.transformers_config(), self.lighthouse,
                                          self.dense_layers, attention="sdpa")
        return sum(p.numel() for p in model.parameters())

    def build(self) -> HFCausalLM:
        """A freshly initialised model (seed the RNG first)."""
        return HFCausalLM(self)

    def check_lighthouse_run(self, seq_len: int) -> None:
        """Refuse, before a run starts, what its Lighthouse layers would refuse at step 1: an
        architecture whose attention does not go through transformers' AttentionInterface, a
        sliding window shorter than ``seq_len``, attention dropout."""
        with torch.device("meta"):
            HFCausalLM(self)  # configure() raises for architectures it cannot reach
        parsed = self._parsed
        window = getattr(parsed, "sliding_window", None)
        if (isinstance(window, int) and window < seq_len
                and getattr(parsed, "use_sliding_window", True) is not False):
            raise SettingError(f"the {parsed.model_type} config has a sliding window of "
                               f"{window} tokens, shorter than seq_len {seq_len}: Lighthouse is "
                               "full causal attention; set sliding_window to null in the config",
                               "seq_len")
        dropout = getattr(parsed, "attention_dropout", 0.0) or 0.0
        if dropout > 0:
            raise ValueError(f"the {parsed.model_type} config has attention_dropout {dropout}, "
                             "which Lighthouse does not implement; set it to 0.0 in the config")

    def label(self, preset: str) -> str:
        """Name of runs of this model: ``hf-MODEL_TYPE`` (``preset`` does not apply)."""
        return f"hf-{self.model_type}"

    def to_dict(self) -> dict:
        """JSON-ready ``dict``; :meth:`from_dict` restores it."""
        return {"hf_config": dict(self.hf_config), "lighthouse": self.lighthouse.to_dict(),
                "dense_layers": list(self.dense_layers)}

    @classmethod
    def from_dict(cls, d: dict) -> HFModelConfig:
        """Inverse of :meth:`to_dict`; ``ValueError`` on anything malformed."""
        if not isinstance(d, dict) or set(d) != {"hf_config", "lighthouse", "dense_layers"}:
            raise ValueError("an HF model config must be a dict with keys 'hf_config', "
                             f"'lighthouse', 'dense_layers'; got {d!r:.200}")
        try:
            lighthouse = LighthouseConfig(**d["lighthouse"])
        except TypeError as err:
            raise ValueError(f"bad lighthouse config: {err}") from None
        return cls(dict(d["hf_config"]), lighthouse, tuple(d["dense_layers"]))


class HFCausalLM(nn.Module):
    """A transformers causal LM with the trainer's interface.

    ``forward(input_ids (B, N) int64) -> logits (B, N, V)`` in fp32 (no KV cache). Starts in
    ``"lighthouse"`` mode; :meth:`set_attention` switches (:func:`configure` /
    :func:`to_dense`, the weights untouched). ``layers`` are the decoder layers
    (``model.base_model.layers``), for activation checkpointing, ``torch.compile`` and FSDP2
    (``train/parallelize.py``).

    The HF model's children are registered as this module's children, so the state-dict keys
    and parameter names are exactly the HF model's (``model.layers.0...``, ``lm_head.weight``).
    Parameters are fp32 whatever the config's ``dtype`` (train with bf16 autocast).

    Args:
        config: the architecture and Lighthouse settings.
        lm: an already built (or loaded) model of that architecture; built from ``config``
            (random init from torch's global RNG) when ``None``.
    """

    def __init__(self, config: HFModelConfig, lm: PreTrainedModel | None = None) -> None:
        super().__init__()
        if lm is None:
            lm = causal_lm_from_config(config.transformers_config(), config.lighthouse,
                                       config.dense_layers, attention="sdpa")  # see below
        lm = lm.float()
        if lm._parameters or lm._buffers:
            raise ValueError(f"{type(lm).__name__} holds parameters on its root module; "
                             "Lighthouse supports causal LMs whose weights live in submodules")
        object.__setattr__(self, "lm", lm)  # not registered: its children are
        for name, child in lm.named_children():
            self.add_module(name, child)
        self.config = config
        self._mode = "lighthouse"
        self.set_attention("lighthouse")

    @property
    def layers(self) -> nn.ModuleList:
        layers = getattr(self.lm.base_model, "layers", None)
        if not isinstance(layers, nn.ModuleList):
            raise ValueError(f"cannot find the decoder layers of {type(self.lm).__name__} "
                             "(expected model.base_model.layers) for FSDP2 sharding or "
                             "compile; run it in one process, without compile")
        return layers

    @property
    def attention_mode(self) -> str:
        """``"lighthouse"`` or ``"dense"``."""
        return self._mode

    def set_attention(self, mode: str) -> None:
        """Run the non-dense layers with ``"lighthouse"`` or every layer with ``"dense"``."""
        check_attention_mode(mode)
        if mode == "lighthouse":
            with warnings.catch_warnings():  # the scorer was chosen (and said) with the config
                warnings.simplefilter("ignore", QKNormWarning)
                configure(self.lm, self.config.lighthouse, self.config.dense_layers,
                          keep_norm_scorer=True)
        else:
            to_dense(self.lm)
        self._mode = mode

    def train(self, mode: bool = True) -> HFCausalLM:
        super().train(mode)
        self.lm.training = mode
        return self

    def forward(self, input_ids: Tensor) -> Tensor:
        if input_ids.dim() != 2 or input_ids.dtype != torch.int64:
            raise ValueError(f"input_ids must be an int64 (B, N) tensor; got "
                             f"{input_ids.dtype} {tuple(input_ids.shape)}")
        return self.lm(input_ids=input_ids, use_cache=False).logits.float()


def save_dense_checkpoint(model_state: dict, config: HFModelConfig, path: str | Path,
                          tokenizer: Tokenizer = TOKENIZER) -> Path:
    """Write full (unsharded) weights as an ordinary HF checkpoint at ``path``, atomically,
    with ``tokenizer`` (the run's) beside them.

    The checkpoint loads with ``AutoModelForCausalLM.from_pretrained(path,
    attn_implementation="sdpa")`` and ``AutoTokenizer.from_pretrained(path)``, with exactly the
    dense model's keys; its config keeps the Lighthouse settings under ``lighthouse_attn``.
    Returns ``path``.
    """
    with torch.device("meta"):  # no init work, no memory: the weights are assigned
        model = HFCausalLM(config)
    model.load_state_dict(model_state, strict=True, assign=True)
    model.lm.tie_weights()  # assigned tensors are separate objects; tie them again
    model.set_attention("dense")
    save_pretrained(model.lm, path, tokenizer=hf_tokenizer(tokenizer))
    return Path(path)


def saved_tokenizer(path: str | Path) -> Tokenizer:
    """The tokenizer saved beside an HF checkpoint by :func:`save_dense_checkpoint`: the byte
    tokenizer when it is that one (257 tokens, separator ``<|sep|>``), else its
    ``tokenizer.json`` with its end-of-text token as the separator."""
    from ..data.hf_tokenizer import SEP_TOKEN
    from ..data.tokenizer_file import FileTokenizer

    tok = FileTokenizer(path)
    if tok.vocab_size == TOKENIZER.vocab_size and tok.sep_token == SEP_TOKEN:
        return TOKENIZER
    return tok


def load_dense_checkpoint(path: str | Path) -> HFCausalLM:
    """An HF checkpoint written by :func:`save_dense_checkpoint`, as an :class:`HFCausalLM` on
    the CPU (in ``"lighthouse"`` mode, like a fresh one)."""
    lm = AutoModelForCausalLM.from_pretrained(str(path), attn_implementation="sdpa")
    settings = read_settings(lm.config)
    if settings is None:
        raise ValueError(f"{path} is an HF checkpoint without Lighthouse settings (config."
                         f"{CONFIG_KEY}); load it with AutoModelForCausalLM.from_pretrained")
    hf_config = lm.config.to_dict()
    hf_config.pop(CONFIG_KEY, None)
    config = HFModelConfig(hf_config, settings.lighthouse, settings.dense_layers)
    return HFCausalLM(config, lm)
