"""Lighthouse attention over a sequence sharded across ranks: exactly the single-device op
(docs/spec.md section 12).

Each rank holds two chunks of the sequence (``layout.py``). Under the exactness conditions
(every pooling window inside a chunk, tiles aligned with chunks) the selection of a chunk is
the global selection restricted to it, and the gathered sequence is the concatenation of the
chunks' gathered sequences. So every chunk runs the single-device op with ``K / 2W`` (a
rank's two chunks as two batch rows of one call: selection, gather and scatter launch once for
both) and two things from elsewhere:

- **the inner attention** of a chunk's gathered entries over the gathered keys and values of
  every earlier chunk: the ranks all-gather their gathered keys and values (one collective;
  ``S`` is a few percent of ``N``) and each chunk attends with a lower-right causal mask, both
  chunks in one autograd node (``gathered.py``) whose backward reduce-scatters the key and
  value gradients;
- **the scatter's spill**: the summary of the last window of each level adds to the first
  ``p^l - 1`` positions after the chunk, which belong to the next chunk; every chunk computes
  that spill from its gathered outputs and the ranks all-gather the spills.

The causal selection also reads one window before each chunk: the last ``p^(L-1)`` base scores
of the previous chunk are all-gathered too. Why not PyTorch's ring attention: its context-
parallel API shards buffers with its own load balancer and runs SDPA on them, whereas here the
attention runs on gathered sequences whose chunks must stay aligned with the base chunks, with
a lower-right causal offset per chunk; and the all-gather moves only the gathered keys and
values, a few percent of the ring's traffic over the full sequence. Dense attention under
context parallelism (the dense layers, stage 2) is ``dense.py``.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.distributed as dist
from torch import Tensor

from ..config import TILE, LighthouseConfig
from ..ops import Selection
from ..ops.api import autocast_inputs, gather_unchecked
from ..ops.backend import resolve_backend
from ..ops.inner import resolve_scale
from ..ops.inputs import check_inputs
from ..ops.reference.scores import base_scores, causal_level_scores
from ..ops.reference.select import select_from_scores, select_reference
from . import collectives
from .dense import dense_attention_cp
from .gathered import two_chunk_inner
from .layout import as_batch, chunk_ids, from_batch, owner
from .spill import head_rows, incoming_spill, spill_plan


def chunk_config(config: LighthouseConfig, seq_len: int, world: int) -> LighthouseConfig:
    """The config each of the ``2W`` chunks runs with (``topk / 2W``), after checking the
    exactness conditions of docs/spec.md section 12; ``ValueError`` names the broken rule and
    the nearest valid ``topk`` or ``seq_len``."""
    if world < 1:
        raise ValueError(f"the context-parallel degree must be >= 1 (got {world})")
    parts = 2 * world
    if seq_len % parts:
        near = max(parts, round(seq_len / parts) * parts)
        raise ValueError(f"seq_len {seq_len} must split into 2 x {world} = {parts} equal "
                         f"chunks for context parallelism over {world} ranks; try {near}")
    if config.num_levels == 1:
        return config
    if config.scorer != "norm":
        raise ValueError(f"the {config.scorer} scorer reads across chunk boundaries, so its "
                         "scores of a chunk depend on the other chunks: use scorer='norm' "
                         "with context parallelism")
    chunk = seq_len // parts
    window = config.coarsest_window
    if chunk % window:
        step = window * parts
        raise ValueError(f"each of the {parts} chunks ({chunk} tokens) must hold whole coarsest "
                         f"windows of p^(L-1) = {window} tokens (N / 2W % p^(L-1) == 0); try "
                         f"seq_len {max(step, round(seq_len / step) * step)}")
    if config.num_tiles % parts:
        step = TILE * parts
        near = max(step, round(config.topk / step) * step)
        raise ValueError(f"the T = {config.num_tiles} tiles must line up with the {parts} "
                         f"chunks (K % (256 W) == 0, here a multiple of {step}); try topk={near}")
    local = replace(config, topk=config.topk // parts)
    local.validate(chunk)
    return local


def _chunk_scores(q: Tensor, k: Tensor, local: LighthouseConfig, triton: bool
                  ) -> tuple[Tensor, Tensor]:
    """Level-0 scores of the chunks: ``(2B, H', n)`` for the queries and ``(2B, H_kv', n)``
    for the keys, one row per kv head (as the Triton cascade reads them; the reference's are
    repeated over each group of query heads, so one in ``group`` rows is kept)."""
    if triton:
        from ..ops.triton.attention import cascade_scores

        return cascade_scores(q, k, None, local)[:2]
    sq, sk = base_scores(q, k, None, local)
    return sq, sk[:, ::sk.shape[1] // k.shape[1]]


def _paper_selection(q: Tensor, k: Tensor, v: Tensor, local: LighthouseConfig
                     ) -> tuple[Selection, Tensor | None]:
    """The paper's selection of the chunks (batch rows), with its position map on the
    kernels."""
    if resolve_backend(local, q) == "triton":
        from ..ops.triton.attention import select_triton_with_map

        return select_triton_with_map(q, k, v, local)
    with torch.no_grad():
        return select_reference(q, k, v, local), None


def _causal_selection(q: Tensor, k: Tensor, local: LighthouseConfig, group, rank: int,
                      world: int) -> tuple[Selection, Tensor | None]:
    """The causal selection of the chunks (batch rows ``(b, slot)``), with its position map
    on the kernels: each chunk's cascade reads the last coarsest window of base scores of the
    previous chunk (all-gathered, one small exchange; -inf before the first chunk), so the
    first window of a chunk scores as in the whole sequence. On the Triton cascade where the
    backend resolves to it, else on the reference."""
    w = local.coarsest_window
    triton = resolve_backend(local, q) == "triton"
    sq0, sk0 = _chunk_scores(q, k, local, triton)
    q_rows = sq0.shape[1]
    tails = torch.cat([sq0[..., -w:], sk0[..., -w:]], 1)  # (2B, rows, w)
    tails = tails.unflatten(0, (-1, 2)).transpose(0, 1).contiguous()  # (slot, B, rows, w)
    everyone = tails.new_empty((world, *tails.shape))
    collectives.all_gather_into(everyone.view(-1, *tails.shape[1:]), tails, group)
    fronts = []
    for chunk in chunk_ids(rank, world):
        fronts.append(everyone[owner(chunk - 1, world)] if chunk > 0 else
                      torch.full_like(tails[0], float("-inf")))
    front = torch.stack(fronts, 1).flatten(0, 1)  # (2B, rows, w), batch rows (b, slot)
    prefix = (front[:, :q_rows], front[:, q_rows:])
    if triton:
        from ..ops.triton.select import select_with_map

        return select_with_map(sq0, sk0, local, prefix=prefix)
    levels = []
    for i, s0 in enumerate((sq0, sk0)):
        pre = prefix[i]
        if i == 1:  # the reference reads key scores per query row
            pre, s0 = (x.repeat_interleave(q_rows // s0.shape[1], 1) for x in (pre, s0))
        ext = causal_level_scores(torch.cat([pre, s0], dim=-1), local.num_levels,
                                  local.pooling_factor)
        levels.append([lv[..., w // local.pooling_factor ** lvl:] for lvl, lv in enumerate(ext)])
    return select_from_scores(levels[0], levels[1], local), None


def lighthouse_attention_cp(q: Tensor, k: Tensor, v: Tensor, config: LighthouseConfig,
                            group: dist.ProcessGroup | None = None, *,
                            scale: float | None = None, exchange_spill: bool = True) -> Tensor:
    """``lighthouse_attention`` on this rank's shard of a sequence spread over the ranks of
    ``group`` (default: the world) in the load-balanced layout of ``layout.py``.

    Args:
        q: ``(B, H, 2n, D)``: this rank's two chunks of ``n`` tokens (``shard_sequence``);
            ``N = 2n W``.
        k, v: ``(B, H_kv, 2n, D)``, likewise.
        config: the config of the whole sequence (``topk`` of all of it).
        exchange_spill: add each chunk's spill (the scattered summaries that land past its
            end) to the next chunk. Always on in use; ``False`` is a control that shows the
            exchange matters (outputs after chunk boundaries then differ).

    Returns:
        This rank's ``(B, H, 2n, D)`` of the output of ``lighthouse_attention`` on the whole
        sequence, with exact gradients to this rank's ``q``, ``k``, ``v``. Every rank of the
        group must call it (it runs collectives).

    Raises:
        ValueError: bad inputs, or a config that cannot be exact at this length and degree.
    """
    q, k, v = autocast_inputs(q, k, v)
    check_inputs(q, k, v)
    group, rank, world = collectives.group_info(group)
    if q.shape[2] % 2:
        raise ValueError(f"each rank holds two equal chunks: the local length {q.shape[2]} "
                         "must be even (shard with lighthouse_attn.parallel.shard_sequence)")
    n = q.shape[2] // 2
    local = chunk_config(config, 2 * n * world, world)
    if local.num_levels == 1:
        return dense_attention_cp(q, k, v, group, scale=scale)
    qb, kb, vb = as_batch(q), as_batch(k), as_batch(v)
    if local.selection == "causal":
        selection, pos_map = _causal_selection(qb, kb, local, group, rank, world)
    else:
        selection, pos_map = _paper_selection(qb, kb, vb, local)
    qg, kg, vg, scatter_back = gather_unchecked(qb, kb, vb, local, selection, pos_map)
    plan = spill_plan(selection, local, n, heads=q.shape[1],
                      acc=torch.promote_types(q.dtype, torch.float32))
    og, spill = two_chunk_inner(qg, kg, vg, plan, group, rank, world,
                                resolve_scale(scale, q.shape[-1]),
                                deterministic=local.deterministic)
    out = scatter_back(og)  # laid out as qb: from_batch below is then a view
    spills = collectives.gather_autograd(spill.unflatten(0, (-1, 2)).transpose(0, 1),
                                         group)  # (2W, B, H, w-1, D)
    rows = spills.shape[3]
    if rows and exchange_spill:  # each chunk gets the previous chunk's spill on its head
        incoming = incoming_spill(spills, chunk_ids(rank, world), world, out.dtype)
        # in place on the scatter's fresh output: its backward passes the gradient whole
        out = out.index_add_(2, head_rows(rows, out.device), incoming)
    return from_batch(out)
