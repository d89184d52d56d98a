"""What stage-1 selection picks: the q, k, v of one layer, and where every position ended.

Every base position is covered by exactly one *leaf* of the gathered sequence: a base token
(it was refined all the way down, level 0) or a rejected coarse entry of level ``l >= 1`` (its
window of ``p^l`` tokens stayed summarised). :func:`leaf_levels` gives that level per position.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import LighthouseConfig
from ..models import Llama
from ..ops import Selection, select


class _Captured(Exception):
    """Stops the forward pass once the wanted layer's inputs are captured."""


@torch.no_grad()
def layer_qkv(model: Llama, input_ids: Tensor, layer: int) -> tuple[Tensor, Tensor, Tensor]:
    """``q`` ``(B, H, N, D)`` and ``k``, ``v`` ``(B, H_kv, N, D)`` of attention layer ``layer``
    (after RoPE, as its attention receives them) for ``input_ids`` ``(B, N)`` int64.

    Earlier layers run in the model's current attention mode; the forward pass stops at the
    layer (a pre-hook on its attention module captures the input). ``ValueError`` for a layer
    out of range.
    """
    n = len(model.layers)
    if not -n <= layer < n:
        raise ValueError(f"layer {layer} is out of range for a model with {n} layers: use "
                         f"0..{n - 1}")
    attn = model.layers[layer].attn
    got = {}

    def capture(_module, args):
        got["x"], got["cos"], got["sin"] = args
        raise _Captured

    handle = attn.register_forward_pre_hook(capture)
    try:
        model(input_ids)
    except _Captured:
        pass
    finally:
        handle.remove()
    return attn.project(got["x"], got["cos"], got["sin"])


@torch.no_grad()
def hf_layer_qkv(model, input_ids: Tensor, layer: int
                 ) -> tuple[Tensor, Tensor, Tensor, float | None]:
    """:func:`layer_qkv` for a model of an HF architecture (an ``--hf-config`` run's
    :class:`~lighthouse_attn.models.HFCausalLM`): ``q``, ``k``, ``v`` as transformers' attention
    interface hands them to layer ``layer`` (after QK-norm and RoPE) and that layer's softmax
    scale. The layers before it run dense SDPA; the model's attention mode is restored."""
    from transformers import AttentionInterface
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    n = model.config.n_layers
    if not -n <= layer < n:
        raise ValueError(f"layer {layer} is out of range for a model with {n} layers: use "
                         f"0..{n - 1}")
    layer %= n
    got = {}
    sdpa = ALL_ATTENTION_FUNCTIONS["sdpa"]

    def capture(module, query, key, value, attention_mask, **kwargs):
        if module.layer_idx == layer:
            got["qkv"] = (query, key, value, kwargs.get("scaling"))
            raise _Captured
        return sdpa(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register("lighthouse_capture", capture)
    mode = model.attention_mode
    model.lm.set_attn_implementation("lighthouse_capture")
    try:
        model(input_ids)
    except _Captured:
        pass
    finally:
        model.set_attention(mode)
    return got["qkv"]


def model_selection(model: Llama, input_ids: Tensor, layer: int,
                    config: LighthouseConfig | None = None) -> Selection:
    """Stage-1 selection of layer ``layer`` for ``input_ids`` ``(B, N)``: ``(B, H', S)``.

    ``config`` defaults to the model's Lighthouse settings; pass another one (other ``L``,
    ``p``, ``K``) to see what it would select on the same q and k. ``ValueError`` for a
    sequence length the config rejects.
    """
    config = config or model.config.lighthouse
    config.validate(input_ids.shape[1])
    q, k, v = layer_qkv(model, input_ids, layer)
    return select(q, k, config, v=v)


def leaf_levels(selection: Selection, pooling_factor: int) -> Tensor:
    """The pyramid level at which each base position ended, ``(B, H', N)`` int64: 0 where it
    was refined to tokens, ``l`` where its window stayed a level-``l`` summary.

    The leaves (entries not refined, in causal order) tile ``[0, N)`` left to right, each
    covering ``p^level`` positions.
    """
    leaf = ~selection.refined(pooling_factor)
    level = selection.level[leaf]
    widths = torch.pow(pooling_factor, level)
    B, H = selection.level.shape[:2]
    return level.repeat_interleave(widths).view(B, H, -1)


def level_runs(levels: Tensor) -> list[list[int]]:
    """Run-length form of one row of :func:`leaf_levels` (``(N,)``): ``[start, end, level]``
    for every maximal stretch of equal level, ``end`` exclusive."""
    change = torch.nonzero(levels[1:] != levels[:-1]).flatten() + 1
    starts = [0] + change.tolist()
    ends = change.tolist() + [levels.numel()]
    return [[s, e, int(levels[s])] for s, e in zip(starts, ends)]


def selection_summary(selection: Selection, pooling_factor: int, num_levels: int,
                      batch: int = 0) -> dict:
    """Per head (of batch row ``batch``): the fraction of positions ending at each level and
    the runs of :func:`level_runs`; plus ``refined_fraction``, the fraction of heads that
    refined each position to tokens, as runs ``[start, end, fraction]``."""
    levels = leaf_levels(selection, pooling_factor)[batch]
    H, N = levels.shape
    heads = []
    for h in range(H):
        counts = torch.bincount(levels[h], minlength=num_levels)[:num_levels]
        heads.append({"head": h, "level_fraction": (counts / N).tolist(),
                      "runs": level_runs(levels[h])})
    refined = (levels == 0).sum(0)
    runs = [[s, e, lvl / H] for s, e, lvl in level_runs(refined)]
    return {"seq_len": N, "heads": heads, "gathered_length": selection.level.shape[-1],
            "refined_fraction": runs}
