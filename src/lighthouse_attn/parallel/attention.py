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
  ``S`` is a few percent of ``N``) and each chunk attends with a lower-right causal mask
  (``gathered.py``), the backward reduce-scattering the key and value gradients;
- **the scatter's spill**: the summary of the last window of each level adds to the first
  ``p^l - 1`` positions after the chunk, which belong to the next chunk; the scatter writes
  it as its tail and the ranks all-gather the tails (``spill.py``).

On the Triton kernels gather, inner attention, scatter and spill form one autograd node
(``fused.py``); on the torch path they are composed with autograd.

The causal selection also reads one window before each chunk: the last ``p^(L-1)`` base scores
of the previous chunk are all-gathered too. Why not PyTorch's ring attention: its context-
parallel API shards buffers with its own load balancer and runs SDPA on them, whereas here the
attention runs on gathered sequences whose chunks must stay aligned with the base chunks, with
a lower-right causal offset per chunk; and the all-gather moves only the gathered keys and
values, a few percent of the ring's traffic over the full sequence. Dense attention under
context parallelism (the dense layers, stage 2) is ``dense.py``.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import torch
import torch.distributed as dist
from torch import Tensor

from ..config import TILE, LighthouseConfig
from ..ops import Selection
from ..ops.api import autocast_inputs
from ..ops.backend import resolve_backend
from ..ops.inner import resolve_scale
from ..ops.inputs import check_inputs
from ..ops.reference.attention import gather_reference
from ..ops.reference.scores import base_scores, causal_level_scores
from ..ops.reference.select import select_from_scores, select_reference
from . import collectives
from .dense import dense_attention_cp
from .gathered import InnerContext, two_chunk_inner
from .layout import as_batch, from_batch
from .spill import exchange_tails


@functools.lru_cache(maxsize=256)
def chunk_config(config: LighthouseConfig, seq_len: int, world: int) -> LighthouseConfig:
    """The config each of the ``2W`` chunks runs with (``topk / 2W``), after checking the
    exactness conditions of docs/spec.md section 12; ``ValueError`` names the broken rule and
    the nearest valid ``topk`` or ``seq_len``. Cached (configs are frozen): every layer of
    every step asks for the same one."""
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
                  ) -> tuple[Tensor, Tensor, list[Tensor]]:
    """Level-0 scores of the chunks: ``(2B, H', n)`` for the queries and ``(2B, H_kv', n)``
    for the keys, one row per kv head (as the Triton cascade reads them; the reference's are
    repeated over each group of query heads, so one in ``group`` rows is kept), and on the
    kernels the coarsest means of q and k made with them (else ``[]``)."""
    if triton:
        from ..ops.triton.attention import cascade_scores

        return cascade_scores(q, k, None, local, coarsest=True)
    sq, sk = base_scores(q, k, None, local)
    return sq, sk[:, ::sk.shape[1] // k.shape[1]], []


def _causal_prefix(sq0: Tensor, sk0: Tensor, local: LighthouseConfig, group, rank: int,
                   world: int) -> tuple[Tensor, Tensor]:
    """The last coarsest window of base scores of each chunk's previous chunk (all-gathered,
    one small exchange; -inf before the first chunk): what the causal cascade reads before a
    chunk's first window, so that it scores as in the whole sequence."""
    w, q_rows = local.coarsest_window, sq0.shape[1]
    last = torch.cat([sq0[..., -w:], sk0[..., -w:]], 1)  # (2B, rows, w), batch rows (b, slot)
    front = collectives.from_neighbours(last, -1, float("-inf"), group, rank, world)
    return front[:, :q_rows], front[:, q_rows:]


def _causal_levels(sq0: Tensor, sk0: Tensor, prefix: tuple[Tensor, Tensor],
                   local: LighthouseConfig) -> Selection:
    """The causal selection of the chunks on the reference, from their base scores and the
    scores before each (:func:`_causal_prefix`)."""
    w, q_rows = local.coarsest_window, sq0.shape[1]
    levels = []
    for i, s0 in enumerate((sq0, sk0)):
        pre = prefix[i]
        if i == 1:  # the reference reads key scores per query row
            pre, s0 = (x.repeat_interleave(q_rows // s0.shape[1], 1) for x in (pre, s0))
        ext = causal_level_scores(torch.cat([pre, s0], dim=-1), local.num_levels,
                                  local.pooling_factor)
        levels.append([lv[..., w // local.pooling_factor ** lvl:] for lvl, lv in enumerate(ext)])
    return select_from_scores(levels[0], levels[1], local)


def _triton_layer(q: Tensor, k: Tensor, v: Tensor, local: LighthouseConfig,
                  how: InnerContext, exchange: bool) -> Tensor:
    """This rank's ``(B, H, 2n, D)`` on the kernels: the cascade's position map of the
    chunks (batch rows), then one node."""
    from ..ops.triton.attention import map_and_means, window_plans
    from ..ops.triton.select import select_with_map
    from .fused import sharded_layer

    with torch.no_grad():  # the selection reads the chunks as batch rows, no autograd
        qb, kb = as_batch(q), as_batch(k)
        if local.selection == "causal":
            sq0, sk0, means = _chunk_scores(qb, kb, local, triton=True)
            prefix = _causal_prefix(sq0, sk0, local, how.group, how.rank, how.world)
            pos_map = select_with_map(sq0, sk0, local, with_selection=False, prefix=prefix)[1]
        else:
            pos_map, means = map_and_means(qb, kb, None, local)
    return sharded_layer(q, k, v, pos_map, window_plans(qb, kb, local), how, means,
                         exchange=exchange)


def _reference_layer(q: Tensor, k: Tensor, v: Tensor, local: LighthouseConfig,
                     how: InnerContext, exchange: bool) -> Tensor:
    """This rank's ``(B, H, 2n, D)`` on the torch path: the chunks as batch rows, composed
    with autograd."""
    out = _reference_rows(as_batch(q), as_batch(k), as_batch(v), local, how, exchange)
    return from_batch(out)  # laid out as the batch view of q: a view


def _reference_rows(q: Tensor, k: Tensor, v: Tensor, local: LighthouseConfig,
                    how: InnerContext, exchange: bool) -> Tensor:
    """The chunks (batch rows ``(2B, H, n, D)``) on the torch path."""
    if local.selection == "causal":
        sq0, sk0, _ = _chunk_scores(q, k, local, triton=False)
        prefix = _causal_prefix(sq0, sk0, local, how.group, how.rank, how.world)
        selection = _causal_levels(sq0, sk0, prefix, local)
    else:
        with torch.no_grad():
            selection = select_reference(q, k, v, local)
    qg, kg, vg, scatter_back = gather_reference(q, k, v, local, selection, tail=True)
    out, tail = scatter_back(two_chunk_inner(qg, kg, vg, how))
    if exchange and tail.shape[2]:
        out = exchange_tails(out, tail, how.group, how.rank, how.world)
    return out


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
    how = InnerContext(group, rank, world, resolve_scale(scale, q.shape[-1]),
                       local.deterministic)
    layer = _triton_layer if resolve_backend(local, q) == "triton" else _reference_layer
    return layer(q, k, v, local, how, exchange_spill)
