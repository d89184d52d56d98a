"""What a config costs at a sequence length, and valid alternatives (the `plan` command)."""

from __future__ import annotations

import math

from .config import TILE, LighthouseConfig
from .settings import SettingError

DTYPE_BYTES = {"fp64": 8, "fp32": 4, "bf16": 2, "fp16": 2}


def plan(config: LighthouseConfig, seq_len: int, batch_size: int = 1, heads: int = 8,
         kv_heads: int | None = None, head_dim: int = 128, dtype: str = "bf16") -> dict:
    """Planning figures of ``config`` at ``seq_len`` (validates it): tiles, gathered length,
    entries per level, attention FLOP ratio, and bytes of the gathered and dense tensors."""
    for name, value in (("seq_len", seq_len), ("batch_size", batch_size), ("heads", heads),
                        ("head_dim", head_dim)):
        if value < 1:
            raise SettingError(f"{name} must be >= 1 (got {value})", name)
    if kv_heads is not None and (kv_heads < 1 or heads % kv_heads):
        raise SettingError(f"kv_heads must divide heads ({heads}; got {kv_heads})", "kv_heads",
                           "heads")
    config.validate(seq_len)
    kv_heads = kv_heads or heads
    S = config.gathered_length(seq_len)
    ratio = config.attention_flops_ratio(seq_len)
    nbytes = DTYPE_BYTES[dtype]
    kv_gathered = kv_heads if config.gqa == "shared" else heads
    row = batch_size * S * head_dim * nbytes
    gathered = row * (2 * heads + 2 * kv_gathered)  # q, o with H heads; k, v
    dense = batch_size * seq_len * head_dim * nbytes * (2 * heads + 2 * kv_heads)
    out = dict(config.to_dict(), seq_len=seq_len, tiles=config.num_tiles,
               coarsest_entries_per_tile=(seq_len // config.coarsest_window // config.num_tiles
                                          if config.num_levels > 1 else None),
               gathered_length=S, level_counts=config.level_counts(seq_len),
               attention_flops_ratio=ratio, attention_speedup=1 / ratio,
               batch_size=batch_size, heads=heads, kv_heads=kv_heads, head_dim=head_dim,
               dtype=dtype, gathered_bytes=gathered, dense_qkvo_bytes=dense)
    return out


def suggest(seq_len: int, target_ratio: float, base: LighthouseConfig, count: int = 12
            ) -> list[dict]:
    """Valid ``(L, p, K)`` at ``seq_len`` (p a power of two, as the GPU kernels need) whose
    attention FLOP ratio is nearest ``target_ratio`` (in log distance)."""
    rows = []
    for L in range(2, 6):
        for p in (2, 4, 8):
            probe = LighthouseConfig(num_levels=L, pooling_factor=p, topk=TILE,
                                     scorer=base.scorer, dilation=base.dilation)
            for k in probe.valid_topks(seq_len):
                cfg = LighthouseConfig(num_levels=L, pooling_factor=p, topk=k,
                                       scorer=base.scorer, dilation=base.dilation)
                try:
                    cfg.validate(seq_len)
                except ValueError:
                    continue
                r = cfg.attention_flops_ratio(seq_len)
                rows.append(dict(num_levels=L, pooling_factor=p, topk=k,
                                 gathered_length=cfg.gathered_length(seq_len),
                                 attention_flops_ratio=r,
                                 distance=abs(math.log(r / target_ratio))))
    rows.sort(key=lambda d: (d["distance"], d["num_levels"], d["topk"]))
    return rows[:count]


def _mb(n: int) -> str:
    return f"{n / 2**20:,.1f} MiB" if n < 2**30 else f"{n / 2**30:,.2f} GiB"


def _fewer(ratio: float) -> str:
    if ratio < 1:
        return f"{1 / ratio:.1f}x fewer"
    if ratio == 1:
        return "the same as dense"
    return f"{ratio:.2f}x MORE than dense"


def plan_warnings(p: dict) -> list[str]:
    """What makes a config pointless at this length."""
    if p["num_levels"] == 1:
        return ["L=1 is exactly dense attention: no pyramid, no selection"]
    if p["attention_flops_ratio"] >= 1:
        return [f"the gathered length {p['gathered_length']:,} is not shorter than N="
                f"{p['seq_len']:,}: this config costs more than dense attention; lower K or "
                "raise L (see suggest())"]
    return []


def context_parallel_plan(config: LighthouseConfig, seq_len: int, degree: int) -> dict:
    """Each process's share under context parallelism (``ValueError`` when it cannot be
    exact: see ``lighthouse_attn.parallel.chunk_config``)."""
    from .parallel.attention import chunk_config

    local = chunk_config(config, seq_len, degree)
    chunk = seq_len // (2 * degree)
    gathered = local.gathered_length(chunk) if local.num_levels > 1 else chunk
    return {"degree": degree, "chunks": 2 * degree, "chunk_len": chunk,
            "chunk_topk": local.topk if local.num_levels > 1 else None,
            "gathered_per_process": 2 * gathered}


def context_parallel_traffic(config: LighthouseConfig, seq_len: int, degree: int, *,
                             batch_size: int = 1, heads: int = 8, kv_heads: int | None = None,
                             head_dim: int = 128, dtype: str = "bf16") -> dict:
    """Bytes each process moves per attention layer under context parallelism of ``degree``
    ``W`` (``lighthouse_attn.parallel``), forward and backward, and the keys and values of the
    others it holds. Every exchange is an all-gather of equal pieces (a process contributes its
    piece and receives ``W - 1`` others) or, for gradients, a reduce-scatter of as many bytes.

    - Lighthouse layer: the gathered keys and values of both local chunks (``gathered_kv``), the
      scatter's spill (fp32; ``spill``), and with the causal selection the last coarsest window
      of base scores (fp32; ``causal_scores``). The backward reduce-scatters the gradients of
      the gathered keys and values and all-gathers the spill's (the next chunk's output
      gradient on its first rows, in ``dtype``).
    - Dense layer (always-dense layers, stage 2), as implemented (``dense_all_gather``): the
      full keys and values, gathered a group of ``kv_heads_per_group`` kv heads at a time and
      dropped after use; the backward gathers them again and reduce-scatters their gradients.
      The forward holds three groups' worth at once (the group in use, gathered and in sequence
      order, and the next in flight) and keeps nothing N long for backward. Beside it, a ring
      (``dense_ring``): the same bytes in ``W - 1`` steps, holding two pieces.
    """
    from .parallel.attention import chunk_config
    from .parallel.dense import kv_heads_per_gather

    local = chunk_config(config, seq_len, degree)
    W, kv = degree, kv_heads or heads
    n = seq_len // (2 * W)
    itemsize = DTYPE_BYTES[dtype]
    row = batch_size * head_dim * itemsize
    acc = 8 if dtype == "fp64" else 4  # the spill is fp32 (fp64 for fp64); scores are fp32

    def exchange(piece: int, backward_piece: int = 0) -> dict:
        return {"piece_bytes": piece, "sent_bytes": (W - 1) * piece,
                "received_bytes": (W - 1) * piece,
                "backward_received_bytes": (W - 1) * backward_piece}

    out: dict = {"degree": W, "chunk_len": n}
    if local.num_levels > 1:
        E = local.gathered_length(n)
        sel_heads = kv if config.gqa == "shared" else heads  # heads of gathered K/V, scores
        kv_piece = 2 * 2 * E * sel_heads * row
        spill_rows = 2 * batch_size * heads * (local.coarsest_window - 1) * head_dim
        lighthouse = {"gathered_kv": exchange(kv_piece, backward_piece=kv_piece),
                      "spill": exchange(spill_rows * acc, backward_piece=spill_rows * itemsize)}
        if config.selection == "causal":
            # both chunks' last window: query scores per selection head, key scores per kv head
            lighthouse["causal_scores"] = exchange(2 * batch_size * (sel_heads + kv)
                                                   * local.coarsest_window * 4)
        parts = list(lighthouse.values())
        for key in ("received_bytes", "backward_received_bytes"):
            lighthouse[key] = sum(x[key] for x in parts)
        lighthouse["held_kv_bytes"] = 2 * 2 * W * E * sel_heads * row  # both chunks' gathers
        out.update(chunk_topk=local.topk, chunk_gathered_len=E, lighthouse=lighthouse)
    shard = 2 * 2 * n * kv * row  # this process's keys and values
    per_group = kv_heads_per_gather(kv, seq_len, batch_size, head_dim, itemsize)
    groups = kv // per_group
    # forward: the group in use, the next one in flight, and the group's keys and values put
    # in sequence order (the backward holds about two groups more: their gradients)
    out["dense_all_gather"] = {**exchange(shard, backward_piece=2 * shard),
                               "kv_heads_per_group": per_group,
                               "held_kv_bytes": (min(2, groups) + 1) * W * shard // groups}
    out["dense_ring"] = {**exchange(shard, backward_piece=2 * shard), "held_kv_bytes": 2 * shard}
    return out


def format_traffic(t: dict) -> str:
    """The traffic of :func:`context_parallel_traffic` as text."""
    lines = [f"  per process and layer, C={t['degree']}, chunks of {t['chunk_len']:,} tokens "
             "(received forward / backward; held at once):"]
    if "lighthouse" in t:
        lh = t["lighthouse"]
        parts = ", ".join(f"{name} {_mb(lh[name]['received_bytes'])}"
                          for name in ("gathered_kv", "spill", "causal_scores") if name in lh)
        lines.append(f"    Lighthouse layer  {_mb(lh['received_bytes'])} ({parts}) / "
                     f"{_mb(lh['backward_received_bytes'])}; holds "
                     f"{_mb(lh['held_kv_bytes'])} of gathered K/V")
    d = t["dense_all_gather"]
    lines.append(f"    dense layer       {_mb(d['received_bytes'])} / "
                 f"{_mb(d['backward_received_bytes'])}; holds {_mb(d['held_kv_bytes'])} of K/V "
                 f"({d['kv_heads_per_group']} kv heads per gather)")
    d = t["dense_ring"]
    lines.append(f"    (a ring instead)  {_mb(d['received_bytes'])} / "
                 f"{_mb(d['backward_received_bytes'])}; holds {_mb(d['held_kv_bytes'])} of K/V")
    return "\n".join(lines)


def format_plan(p: dict) -> str:
    levels = "; ".join(f"level {lvl}: {n:,}" for lvl, n in reversed(list(enumerate(
        p["level_counts"]))))
    tiles = (f"{p['tiles']}  ({p['coarsest_entries_per_tile']:,} coarsest entries each, 128 "
             "refined per level)" if p["num_levels"] > 1 else "- (L=1: no selection)")
    lines = [
        f"Lighthouse plan: N={p['seq_len']:,}  L={p['num_levels']}  p={p['pooling_factor']}  "
        f"K={p['topk']:,}  scorer={p['scorer']}  selection={p['selection']}  gqa={p['gqa']}",
        f"  tiles T                  {tiles}",
        f"  gathered length S        {p['gathered_length']:,}  ({levels})",
        f"  attention FLOPs vs dense {p['attention_flops_ratio']:.4f}  "
        f"({_fewer(p['attention_flops_ratio'])})",
        f"  gathered q,k,v,o         {_mb(p['gathered_bytes'])}  vs dense q,k,v,o "
        f"{_mb(p['dense_qkvo_bytes'])}  (B={p['batch_size']} H={p['heads']} "
        f"H_kv={p['kv_heads']} D={p['head_dim']} {p['dtype']}, per layer)",
    ]
    return "\n".join(lines)


def format_suggestions(rows: list[dict], target: float) -> str:
    lines = [f"valid (L, p, K) nearest attention FLOP ratio {target:.4f}:",
             f"  {'L':>2} {'p':>2} {'K':>6} {'S':>9} {'ratio':>8} {'fewer':>7}"]
    for r in rows:
        lines.append(f"  {r['num_levels']:>2} {r['pooling_factor']:>2} {r['topk']:>6} "
                     f"{r['gathered_length']:>9,} {r['attention_flops_ratio']:>8.4f} "
                     f"{1 / r['attention_flops_ratio']:>6.1f}x")
    return "\n".join(lines)
