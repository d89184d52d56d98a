"""Validation of the op's tensor arguments, shared by every stage and backend."""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import LighthouseConfig
from .reference.select import position_keys
from .types import Selection

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_inputs(q: Tensor, k: Tensor, v: Tensor) -> None:
    """Raise ``ValueError`` unless ``q`` is ``(B, H, N, D)`` and ``k``, ``v`` are
    ``(B, H_kv, N, D)`` floating tensors of one dtype and device with ``H % H_kv == 0``."""
    for name, x in (("q", q), ("k", k), ("v", v)):
        if not isinstance(x, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() != 4:
            raise ValueError(f"{name} must be 4-D (B, H, N, D) as for "
                             f"scaled_dot_product_attention; got shape {tuple(x.shape)}. "
                             "Transpose (B, N, H, D) inputs with x.transpose(1, 2)")
        if x.dtype not in DTYPES:
            raise ValueError(f"{name} must be fp16, bf16, fp32 or fp64; got {x.dtype} (cast "
                             "fp8 or integer inputs with x.to(torch.bfloat16))")
        if x.numel() == 0:
            raise ValueError(f"{name} is empty (shape {tuple(x.shape)}): B, H, N and D must all "
                             "be >= 1")
    if k.shape != v.shape:
        raise ValueError(f"k and v must have the same shape; got {tuple(k.shape)} and "
                         f"{tuple(v.shape)}")
    (B, H, N, D), (Bk, Hkv, Nk, Dk) = q.shape, k.shape
    for what, a, b in (("batch size B", B, Bk), ("sequence length N", N, Nk),
                       ("head dim D", D, Dk)):
        if a != b:
            raise ValueError(f"q and k/v disagree on the {what}: {a} vs {b} "
                             f"(q {tuple(q.shape)}, k {tuple(k.shape)})")
    if Hkv == 0 or H % Hkv:
        raise ValueError(f"the query heads H={H} must be a multiple of the key/value heads "
                         f"H_kv={Hkv} (grouped-query attention); e.g. H_kv=1 or H_kv={H}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype; got {q.dtype}, {k.dtype}, {v.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device; got {q.device}, {k.device}, "
                         f"{v.device}")


def check_selection(selection: Selection, q: Tensor, k: Tensor,
                    config: LighthouseConfig) -> None:
    """Raise ``ValueError`` unless ``selection`` fits these inputs and config: a
    :class:`Selection` of ``(B, H', S)`` int64 level/index tensors, the gathered length and
    per-level counts of the config, indices inside their level, and a valid causal order (see
    :func:`check_causal_order`). The checks are elementwise over the ``S`` entries: a few
    percent of the inner attention's time at 32K tokens and less beyond."""
    if not isinstance(selection, Selection):
        raise ValueError(f"selection must be a Selection (as returned by select()), got "
                         f"{type(selection).__name__}; wrap tensors as Selection(level, index)")
    level, index = selection
    (B, H, N, _), Hkv = q.shape, k.shape[1]
    heads = Hkv if config.gqa == "shared" else H
    S = config.gathered_length(N)
    for name, x in (("level", level), ("index", index)):
        if not isinstance(x, Tensor) or x.dtype != torch.int64:
            raise ValueError(f"selection.{name} must be an int64 tensor")
        if tuple(x.shape) != (B, heads, S):
            raise ValueError(f"selection.{name} has shape {tuple(x.shape)}; these inputs and "
                             f"config (gqa={config.gqa!r}) need {(B, heads, S)}")
        if x.device != q.device:
            raise ValueError(f"selection.{name} is on {x.device}, the inputs on {q.device}")
    p = config.pooling_factor
    counts = config.level_counts(N)
    for lvl, want in enumerate(counts):
        if not bool(((level == lvl).sum(-1) == want).all()):
            raise ValueError(f"selection has the wrong number of level-{lvl} entries per row "
                             f"(the config gathers {want}); pass a selection made by select() "
                             "with the same config")
    n_level = torch.div(N, torch.pow(p, level), rounding_mode="floor")
    if bool(((index < 0) | (index >= n_level)).any()):
        raise ValueError("selection.index has entries outside their level "
                         "(0 <= index < N / p^level)")
    check_causal_order(selection, N, config)


def check_causal_order(selection: Selection, seq_len: int, config: LighthouseConfig) -> None:
    """Raise ``ValueError`` unless the entries are in the causal order of SPEC section 4 (sort
    keys strictly increasing: no entry twice, none out of place) and the unrefined entries'
    windows tile ``[0, seq_len)`` in that order. A selection that breaks either would let later
    tokens into earlier outputs."""
    p, L = config.pooling_factor, config.num_levels
    if L == 1:
        return
    refined = selection.refined(p)
    keys = position_keys(selection.level, selection.index, refined, config)
    if not bool((keys[..., 1:] > keys[..., :-1]).all()):
        raise ValueError("selection is not in causal order (its entries must be sorted by the "
                         "position keys of SPEC section 4, each once); pass a selection made "
                         "by select() and do not reorder it")
    start, end = selection.window(p)
    leaves = ~refined
    count = int(leaves[0, 0].sum()) if leaves.numel() else 0
    if not bool((leaves.sum(-1) == count).all()):
        raise ValueError("selection's refined entries do not match its children; pass a "
                         "selection made by select()")
    s = start[leaves].view(*leaves.shape[:-1], count)
    e = end[leaves].view(*leaves.shape[:-1], count)
    if not (bool((s[..., 0] == 0).all()) and bool((e[..., -1] == seq_len).all())
            and bool((s[..., 1:] == e[..., :-1]).all())):
        raise ValueError("selection's unrefined entries do not cover the sequence once, in "
                         "order; pass a selection made by select()")


def check_inner_output(out: object, q: Tensor) -> Tensor:
    """The inner kernel's output, checked: ``attn_fn`` must return a tensor shaped like its
    gathered ``q``."""
    if not isinstance(out, Tensor) or out.shape != q.shape:
        got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(f"attn_fn returned {got}; it must return a tensor of the shape of its "
                         f"q argument, (B, H, S, D) = {tuple(q.shape)}")
    return out
