"""Validation of the op's tensor arguments, shared by every stage and backend."""

from __future__ import annotations

import torch
from torch import Tensor

from ..config import LighthouseConfig


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
        if not x.is_floating_point():
            raise ValueError(f"{name} must be a floating tensor (fp16, bf16, fp32 or fp64); "
                             f"got {x.dtype}")
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


def check_selection(selection: tuple[Tensor, Tensor], q: Tensor, k: Tensor,
                    config: LighthouseConfig) -> None:
    """Raise ``ValueError`` unless ``selection`` fits these inputs and config: ``(B, H', S)``
    int64 level/index tensors, the gathered length and per-level counts of the config, and
    indices inside their level."""
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
