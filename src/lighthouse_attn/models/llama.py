"""A Llama-3-style decoder whose attention layers run Lighthouse or dense causal SDPA.

RMSNorm, rotary position embeddings (rotate-half convention, ``theta`` configurable), SwiGLU
feed-forward with an explicit hidden size, grouped-query attention, tied or untied embeddings.
The attention mode is run-time state, not a parameter: the weights, and so the state-dict keys,
are the same in both modes.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import LighthouseConfig
from ..ops import lighthouse_attention, sdpa_causal
from ..ops.rope import apply_rope
from ..parallel import dense_attention_cp, lighthouse_attention_cp, local_positions
from ..settings import setting
from .interface import OUR_FORMAT

ATTENTION_MODES = ("lighthouse", "dense")
_GROUP = "model"


def check_attention_mode(mode: str) -> None:
    """Raise ``ValueError`` unless ``mode`` is one of :data:`ATTENTION_MODES`."""
    if mode not in ATTENTION_MODES:
        raise ValueError(f"unknown attention mode {mode!r}; choose 'lighthouse' or 'dense'")


@dataclass(frozen=True)
class LlamaConfig:
    """Architecture of :class:`Llama`, plus its Lighthouse settings.

    Args:
        vocab_size: embedding rows (257 for the byte tokenizer: 256 bytes + separator).
        d_model: width of the residual stream; ``d_model / n_heads`` is the head dim, even.
        n_layers: decoder blocks.
        n_heads: query heads; a multiple of ``n_kv_heads``.
        n_kv_heads: key/value heads (grouped-query attention when fewer than ``n_heads``).
        ffn_hidden: hidden size of the SwiGLU feed-forward.
        rope_theta: rotary embedding base.
        norm_eps: RMSNorm epsilon.
        tie_embeddings: share the input embedding with the output projection.
        init_std: std of the normal weight init (output projections are scaled by
            ``1/sqrt(2 n_layers)``).
        dense_layers: layers that always use dense SDPA; negative indices count from the end.
        lighthouse: the :class:`LighthouseConfig` of the other layers in ``"lighthouse"`` mode.

    Raises:
        ValueError: inconsistent sizes or a dense-layer index out of range.
    """

    vocab_size: int = setting(257, help="embedding rows (default: the tokenizer's "
                              "vocabulary)", group=_GROUP)
    d_model: int = setting(1024, help="width of the residual stream", group=_GROUP)
    n_layers: int = setting(30, help="decoder blocks", group=_GROUP)
    n_heads: int = setting(8, help="query heads", group=_GROUP)
    n_kv_heads: int = setting(8, help="key/value heads (GQA)", group=_GROUP)
    ffn_hidden: int = setting(1536, help="SwiGLU hidden size", group=_GROUP)
    rope_theta: float = setting(10000.0, help="rotary embedding base", group=_GROUP)
    norm_eps: float = 1e-5
    tie_embeddings: bool = setting(False, help="share input and output embeddings",
                                   group=_GROUP, negatable=True)
    init_std: float = 0.02
    dense_layers: tuple[int, ...] = (0, 1, -2, -1)
    lighthouse: LighthouseConfig = field(default_factory=LighthouseConfig)
    checkpoint_format: ClassVar[str] = OUR_FORMAT
    supports_context_parallel: ClassVar[bool] = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "dense_layers", tuple(self.dense_layers))
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads",
                     "ffn_hidden"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive integer (got {value!r})")
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be a multiple of n_heads="
                             f"{self.n_heads} (head dim = d_model / n_heads)")
        if self.head_dim % 2:
            raise ValueError(f"the head dim d_model/n_heads = {self.head_dim} must be even for "
                             "rotary embeddings; change d_model or n_heads")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads="
                             f"{self.n_kv_heads} (grouped-query attention); e.g. n_kv_heads="
                             f"{self.n_heads}")
        for name in ("rope_theta", "norm_eps", "init_std"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a finite number > 0 (got {value!r})")
        if not isinstance(self.lighthouse, LighthouseConfig):
            raise ValueError("lighthouse must be a LighthouseConfig")
        n = self.n_layers
        for i in self.dense_layers:
            if not isinstance(i, int) or not -n <= i < n:
                raise ValueError(f"dense_layers entry {i!r} is out of range for n_layers={n}: "
                                 f"use 0..{n - 1} or -{n}..-1")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def dense_layer_indices(self) -> tuple[int, ...]:
        """The always-dense layers as sorted non-negative indices."""
        return tuple(sorted({i % self.n_layers for i in self.dense_layers}))

    @property
    def lighthouse_layer_indices(self) -> tuple[int, ...]:
        """Layers that run Lighthouse in ``"lighthouse"`` mode."""
        dense = set(self.dense_layer_indices)
        return tuple(i for i in range(self.n_layers) if i not in dense)

    def num_parameters(self) -> int:
        """Parameter count (embeddings included once when tied)."""
        d, f, hd = self.d_model, self.ffn_hidden, self.head_dim
        attn = d * hd * (2 * self.n_heads + 2 * self.n_kv_heads)
        per_layer = attn + 3 * d * f + 2 * d
        head = 0 if self.tie_embeddings else self.vocab_size * d
        return self.n_layers * per_layer + self.vocab_size * d + head + d

    def build(self) -> Llama:
        """A freshly initialised model (seed the RNG first)."""
        return Llama(self)

    def label(self, preset: str) -> str:
        """Name of runs of this model: the preset it came from."""
        return preset

    def check_lighthouse_run(self, seq_len: int) -> None:
        """Nothing beyond ``lighthouse.validate``: every layer of this model can run it."""

    def to_dict(self) -> dict:
        """JSON-ready ``dict``; :meth:`from_dict` restores it."""
        d = asdict(self)
        d["dense_layers"] = list(self.dense_layers)
        d["lighthouse"] = self.lighthouse.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> LlamaConfig:
        """Inverse of :meth:`to_dict`; ``ValueError`` on unknown keys or bad values."""
        if not isinstance(d, dict):
            raise ValueError(f"a model config must be a dict, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown model config keys {unknown}; known: {sorted(known)}")
        d = dict(d)
        if isinstance(d.get("lighthouse"), dict):
            try:
                d["lighthouse"] = LighthouseConfig(**d["lighthouse"])
            except TypeError as err:
                raise ValueError(f"bad lighthouse config: {err}") from None
        if "dense_layers" in d:
            d["dense_layers"] = tuple(d["dense_layers"])
        return cls(**d)

    def replace(self, **changes) -> LlamaConfig:
        """A copy with ``changes`` applied (validated)."""
        return replace(self, **changes)


# --------------------------------------------------------------------------- layers
class RMSNorm(nn.Module):
    """Root-mean-square norm, computed in fp32, returned in the input dtype."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return F.rms_norm(x.float(), (x.shape[-1],), self.weight.float(), self.eps).type_as(x)


def rope_tables(seq_len: int, head_dim: int, theta: float, device: torch.device,
                positions: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """fp32 ``cos``, ``sin`` of shape ``(n, head_dim / 2)`` for ``positions`` (int64, ``n`` of
    them), by default ``0..seq_len-1``."""
    if positions is None:
        positions = torch.arange(seq_len, device=device)
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=device, dtype=torch.float64)
                         / head_dim)
    angles = positions.to(device, torch.float64)[:, None] * inv_freq
    return angles.cos().float(), angles.sin().float()


class Attention(nn.Module):
    """Grouped-query attention; Lighthouse or dense SDPA as set by :attr:`use_lighthouse`."""

    def __init__(self, config: LlamaConfig, always_dense: bool) -> None:
        super().__init__()
        d, hd = config.d_model, config.head_dim
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, hd
        self.q_proj = nn.Linear(d, config.n_heads * hd, bias=False)
        self.k_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.v_proj = nn.Linear(d, config.n_kv_heads * hd, bias=False)
        self.o_proj = nn.Linear(config.n_heads * hd, d, bias=False)
        self.lighthouse = config.lighthouse
        self.always_dense = always_dense
        self.use_lighthouse = not always_dense
        self.cp_group = None  # set by Llama.set_context_parallel

    def project(self, x: Tensor, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` ``(B, N, d_model)`` -> ``q`` ``(B, H, N, D)`` and ``k``, ``v``
        ``(B, H_kv, N, D)``, RoPE applied to q and k: what the attention kernel receives."""
        B, N, _ = x.shape
        q = self.q_proj(x).view(B, N, self.n_heads, self.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(B, N, self.n_kv_heads, self.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(B, N, self.n_kv_heads, self.head_dim).transpose(1, 2)
        return apply_rope(q, cos, sin), apply_rope(k, cos, sin), v

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        B, N, _ = x.shape
        q, k, v = self.project(x, cos, sin)
        if self.cp_group is not None:
            o = (lighthouse_attention_cp(q, k, v, self.lighthouse, self.cp_group)
                 if self.use_lighthouse else dense_attention_cp(q, k, v, self.cp_group))
        elif self.use_lighthouse:
            o = lighthouse_attention(q, k, v, self.lighthouse)
        else:
            o = sdpa_causal(q, k, v)
        return self.o_proj(o.transpose(1, 2).reshape(B, N, -1))


class FeedForward(nn.Module):
    """SwiGLU: ``down(silu(gate(x)) * up(x))``."""

    def __init__(self, d_model: int, hidden: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(d_model, hidden, bias=False)
        self.up_proj = nn.Linear(d_model, hidden, bias=False)
        self.down_proj = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Block(nn.Module):
    """Pre-norm decoder block: ``x + attn(norm(x))``, then ``x + ffn(norm(x))``."""

    def __init__(self, config: LlamaConfig, always_dense: bool) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config, always_dense)
        self.ffn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.ffn = FeedForward(config.d_model, config.ffn_hidden)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        x = x + self.attn(self.attn_norm(x), cos, sin)
        return x + self.ffn(self.ffn_norm(x))


# --------------------------------------------------------------------------- model
class Llama(nn.Module):
    """Decoder-only language model; ``forward(input_ids (B, N) int64) -> logits (B, N, V)``
    in fp32. Starts in ``"lighthouse"`` mode; :meth:`set_attention` switches. Activation
    checkpointing, compilation and sharding are applied from outside
    (``train/parallelize.py``)."""

    def __init__(self, config: LlamaConfig) -> None:
        super().__init__()
        self.config = config
        dense = set(config.dense_layer_indices)
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.layers = nn.ModuleList(Block(config, i in dense) for i in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.lm_head = (None if config.tie_embeddings
                        else nn.Linear(config.d_model, config.vocab_size, bias=False))
        self._mode = "lighthouse"
        self._switched = 0
        self._cp: tuple | None = None  # (group, rank, world) under context parallelism
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Normal(0, init_std) weights; residual output projections scaled by 1/sqrt(2 L)."""
        std = self.config.init_std
        out_std = std / (2 * self.config.n_layers) ** 0.5
        for name, p in self.named_parameters():
            if p.dim() < 2:
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, 0.0, out_std)
            else:
                nn.init.normal_(p, 0.0, std)

    @property
    def attention_mode(self) -> str:
        """``"lighthouse"`` or ``"dense"``."""
        return self._mode

    def set_attention(self, mode: str) -> None:
        """Run the non-dense layers with ``"lighthouse"`` (but the first :meth:`switch_layers`
        of them) or every layer with ``"dense"``."""
        check_attention_mode(mode)
        self._mode = mode
        rank = 0
        for block in self.layers:
            lighthouse = not block.attn.always_dense
            block.attn.use_lighthouse = (mode == "lighthouse" and lighthouse
                                         and rank >= self._switched)
            rank += lighthouse

    @property
    def switched_layers(self) -> int:
        """Lighthouse layers already run dense in ``"lighthouse"`` mode (:meth:`switch_layers`)."""
        return self._switched

    def switch_layers(self, count: int) -> None:
        """In ``"lighthouse"`` mode, run the first ``count`` Lighthouse layers dense already
        (a staggered switch, ``TrainConfig.switch_ramp``); 0 restores them."""
        self._switched = count
        self.set_attention(self._mode)

    def set_context_parallel(self, group, rank: int, world: int) -> None:
        """Run on this rank's shard of each sequence (``lighthouse_attn.parallel``'s layout)
        over the ``world`` ranks of ``group``: global RoPE positions, and attention over the
        whole sequence through the group. ``world = 1`` turns it off."""
        self._cp = (group, rank, world) if world > 1 else None
        for block in self.layers:
            block.attn.cp_group = group if world > 1 else None

    def forward(self, input_ids: Tensor) -> Tensor:
        if input_ids.dim() != 2 or input_ids.dtype != torch.int64:
            raise ValueError(f"input_ids must be an int64 (B, N) tensor; got "
                             f"{input_ids.dtype} {tuple(input_ids.shape)}")
        N = input_ids.shape[1] * (self._cp[2] if self._cp else 1)  # the whole sequence
        if self._mode == "lighthouse" and self.config.lighthouse_layer_indices:
            lh = self.config.lighthouse
            if not (lh.short_seq == "dense" and lh.is_short(N)):
                lh.validate(N)
        positions = (local_positions(input_ids.shape[1], self._cp[1], self._cp[2],
                                     input_ids.device) if self._cp else None)
        cos, sin = rope_tables(N, self.config.head_dim, self.config.rope_theta,
                               input_ids.device, positions)
        x = self.embed(input_ids)
        for block in self.layers:
            x = block(x, cos, sin)
        return self.logits(x)

    def logits(self, x: Tensor) -> Tensor:
        """fp32 logits of the last block's output ``x`` (final norm, then the head)."""
        x = self.norm(x)
        logits = F.linear(x, self.embed.weight) if self.lm_head is None else self.lm_head(x)
        return logits.float()
