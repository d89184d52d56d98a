"""A slow, loop-based transcription of docs/spec.md, independent of the package's code.

Tests compare the vectorised reference path (and, through it, every fast path) against this.
Everything is plain Python over (batch, head, tile, entry), in float64 except the scores,
which SPEC computes in fp32.
"""

from __future__ import annotations

from fractions import Fraction

import torch


def _attend(qs, ks, vs, scale):
    """Causal softmax attention on lists of 1-D float64 tensors."""
    out = []
    for i, qi in enumerate(qs):
        logits = torch.stack([qi @ ks[j] for j in range(i + 1)]) * scale
        w = torch.softmax(logits, 0)
        out.append(sum(w[j] * vs[j] for j in range(i + 1)))
    return out


def base_scores(q, k, v, b, h_sel, cfg):
    """fp32 level-0 scores for selecting head ``h_sel`` of batch row ``b``."""
    H, Hkv = q.shape[1], k.shape[1]
    G = H // Hkv
    heads = [h_sel * G + j for j in range(G)] if cfg.gqa == "shared" else [h_sel]
    N, D = q.shape[2], q.shape[3]
    sq, sk = [float("-inf")] * N, [float("-inf")] * N
    for h in heads:
        qh, kh, vh = q[b, h].double(), k[b, h // G].double(), v[b, h // G].double()
        if cfg.scorer == "norm":
            a = torch.linalg.vector_norm(q[b, h].double(), dim=-1).float().tolist()
            c = torch.linalg.vector_norm(k[b, h // G].double(), dim=-1).float().tolist()
        else:
            a, c = [0.0] * N, [0.0] * N
            d = cfg.dilation
            for r in range(d):
                ts = list(range(r, N, d))
                o1 = _attend([qh[t] for t in ts], [kh[t] for t in ts], [vh[t] for t in ts],
                             D**-0.5)
                o2 = _attend([kh[t] for t in ts], [qh[t] for t in ts], [vh[t] for t in ts],
                             D**-0.5)
                for t, x, y in zip(ts, o1, o2):
                    a[t], c[t] = float(x.norm()), float(y.norm())
        sq = [max(x, y) for x, y in zip(sq, a)]
        sk = [max(x, y) for x, y in zip(sk, c)]
    return sq, sk


def select_row(sq0, sk0, cfg):
    """Gathered entries ``[(level, index), ...]`` in causal order for one (batch, head)."""
    L, p, T = cfg.num_levels, cfg.pooling_factor, cfg.topk // 128
    N = len(sq0)
    if L == 1:
        return [(0, t) for t in range(N)]

    def lvl_score(s0, lvl, m):
        w = p**lvl
        return max(s0[m * w:(m + 1) * w])

    def causal_score(s0, lvl, m):  # the window before (l, m) and its first position
        w = p**lvl
        return max(s0[max(0, m * w - w):m * w + 1])

    def causal_pick(cands, lvl):  # the sequential walk of SPEC section 11
        C = len(cands)
        g = max(2, -(-2 * C // 128))
        chosen, taken = set(), {}
        for i, m in enumerate(cands):
            want = any(causal_score(s, lvl, m) > max(
                [causal_score(s, lvl, cands[j]) for j in range(max(0, i - g + 1), i)],
                default=float("-inf")) for s in (sq0, sk0))
            seg = 16 * i // C
            left = sum(1 for j in range(i, C) if 16 * j // C == seg)
            have = taken.get(seg, 0)
            if (want and have < 8) or left <= 8 - have:
                chosen.add(m)
                taken[seg] = have + 1
        return chosen

    emitted = []  # (level, index, selected)
    n_coarse = N // p ** (L - 1)
    C = n_coarse // T
    for tile in range(T):
        cands = list(range(tile * C, (tile + 1) * C))
        for lvl in range(L - 1, 0, -1):
            if getattr(cfg, "selection", "paper") == "causal":
                chosen = causal_pick(cands, lvl)
                emitted += [(lvl, m, m in chosen) for m in cands]
                cands = sorted(p * m + j for m in chosen for j in range(p))
                continue
            a = sorted(cands, key=lambda m: (-lvl_score(sq0, lvl, m), m))[:64]
            rest = [m for m in cands if m not in set(a)]
            bset = sorted(rest, key=lambda m: (-lvl_score(sk0, lvl, m), m))[:64]
            chosen = set(a) | set(bset)
            emitted += [(lvl, m, m in chosen) for m in cands]
            cands = sorted(p * m + j for m in chosen for j in range(p))
        emitted += [(0, t, False) for t in cands]

    def key(e):
        lvl, m, chosen = e
        if chosen:
            return Fraction((m + 1) * p**lvl) - Fraction(1, 2**lvl)
        return Fraction(m * p**lvl)

    return [(lvl, m) for lvl, m, _ in sorted(emitted, key=key)]


def select(q, k, v, cfg):
    """Per (b, h'): list of (level, index) in causal order."""
    B, H = q.shape[:2]
    heads = k.shape[1] if cfg.gqa == "shared" else H
    return [[select_row(*base_scores(q, k, v, b, h, cfg), cfg) for h in range(heads)]
            for b in range(B)]


def attention(q, k, v, cfg, entries=None, scale=None):
    """Full op in float64: ``(B, H, N, D)``; ``entries`` as returned by :func:`select`."""
    entries = entries or select(q, k, v, cfg)
    B, H, N, D = q.shape
    G = H // k.shape[1]
    p = cfg.pooling_factor
    scale = D**-0.5 if scale is None else scale
    out = torch.zeros(B, H, N, D, dtype=torch.float64)
    for b in range(B):
        for h in range(H):
            row = entries[b][h // G if cfg.gqa == "shared" else h]

            def pooled(x, lvl, m):
                w = p**lvl
                return x[m * w:(m + 1) * w].double().mean(0)

            qs = [pooled(q[b, h], lvl, m) for lvl, m in row]
            ks = [pooled(k[b, h // G], lvl, m) for lvl, m in row]
            vs = [pooled(v[b, h // G], lvl, m) for lvl, m in row]
            for (lvl, m), o in zip(row, _attend(qs, ks, vs, scale)):
                w = p**lvl
                for t in range(m * w + w - 1, min(m * w + 2 * w - 1, N)):
                    out[b, h, t] += o
    return out


def gathered_length(N, cfg):
    L, p, K = cfg.num_levels, cfg.pooling_factor, cfg.topk
    return N // p ** (L - 1) + (L - 1) * p * K if L > 1 else N

