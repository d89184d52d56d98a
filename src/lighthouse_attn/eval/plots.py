"""Pictures of the evaluations: the passkey heatmap, loss by position, and the selection.

matplotlib (Agg backend) is imported when a plot is drawn, not when this module is imported.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ..config import LighthouseConfig
from ..ops import Selection
from .passkey import PasskeyResult
from .position_loss import PositionLoss
from .selection import leaf_levels


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _context_label(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 else f"{n:,}"


def plot_passkey(result: PasskeyResult, path: str | Path, title: str) -> None:
    """Heatmap of passkey accuracy: depth (rows, 0% = start of the filler at the top) by
    context length (columns), the accuracy written in each cell, a colour bar; skipped
    contexts are listed under the plot."""
    plt = _pyplot()
    acc = np.array(result.accuracy, dtype=float).reshape(len(result.depths), -1)
    fig, ax = plt.subplots(figsize=(1.5 + 1.1 * max(1, len(result.contexts)),
                                    1.6 + 0.5 * len(result.depths)))
    image = ax.imshow(acc, cmap="RdYlGn", vmin=0.0, vmax=1.0, aspect="auto")
    for i in range(acc.shape[0]):
        for j in range(acc.shape[1]):
            ax.text(j, i, f"{100 * acc[i, j]:.0f}%", ha="center", va="center", fontsize=9,
                    color="black")
    ax.set_xticks(range(len(result.contexts)), [_context_label(c) for c in result.contexts])
    ax.set_yticks(range(len(result.depths)), [f"{d:g}%" for d in result.depths])
    ax.set_xlabel("context length (tokens)")
    ax.set_ylabel("needle depth (% of filler before it)")
    mean = result.mean_accuracy
    ax.set_title(f"{title}\nmean accuracy {100 * mean:.1f}% ({result.trials} trials per cell)"
                 if mean is not None else title, fontsize=10)
    fig.colorbar(image, ax=ax, label="accuracy (chance: 10%)")
    if result.skipped:
        note = "skipped: " + "; ".join(f"{_context_label(s['context'])} ({s['kind']})"
                                       for s in result.skipped)
        fig.text(0.01, 0.01, note, fontsize=7, color="gray", wrap=True)
    fig.tight_layout(rect=(0, 0.04 if result.skipped else 0, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_position_loss(results: list[PositionLoss], path: str | Path, title: str) -> None:
    """Loss against token position on a log axis: one line per checkpoint through the mean
    loss of each power-of-two position bucket (plotted at the bucket's geometric middle),
    over a faint line of the per-position loss."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5))
    for n, r in enumerate(results):
        color = f"C{n}"
        per_pos = np.array(r.per_position)
        # a light smoothing of the per-position curve, over windows growing with position
        pos = np.unique(np.geomspace(1, r.seq_len, num=min(r.seq_len, 400)).astype(int))
        cum = np.concatenate([[0.0], np.cumsum(per_pos)])
        lo = np.maximum(1, (pos / 1.25).astype(int))
        smooth = (cum[pos] - cum[lo - 1]) / (pos - lo + 1)
        ax.plot(pos, smooth, color=color, lw=0.8, alpha=0.3)
        mids = [math.sqrt(b["start"] * (b["end"] - 1)) for b in r.buckets]
        ax.plot(mids, [b["loss"] for b in r.buckets], color=color, marker="o", lw=1.8,
                label=f"{r.name} (mean {r.loss:.3f}, {r.sequences} x {r.seq_len:,} tokens"
                      + (f", long-context gain {r.long_context['gain']:+.3f}"
                         if r.long_context else "") + ")")
    ax.set_xscale("log", base=2)
    from matplotlib.ticker import FuncFormatter

    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: _context_label(int(round(v)))
                                               if v >= 1 else ""))
    ax.set_xlabel("token position (tokens of context before the predicted one, log scale)")
    ax.set_ylabel("loss (nats per token)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_selection(selection: Selection, config: LighthouseConfig | int, *, batch: int = 0,
                   head: int | None = None, path: str | Path | None = None,
                   title: str | None = None):
    """Draw where a Lighthouse selection left every base position, and return the figure.

    Args:
        selection: from :func:`lighthouse_attn.select` (or the model's layer), ``(B, H', S)``.
        config: the :class:`LighthouseConfig` it was made with (tile boundaries are drawn), or
            just its pooling factor ``p``.
        batch: which batch row to draw.
        head: draw this head's levels on top; ``None``: only the per-head raster and the
            aggregate.
        path: also save the figure there (PNG).
        title: figure title.

    Panels: (1, with ``head``) that head's leaf level along the sequence (0 = refined to
    tokens, ``l`` = left as a ``p^l``-token summary); (2) a raster of every head's leaf level
    (rows: heads); (3) the fraction of heads ending at each level, per position (level 0 at the
    bottom: the share of heads that see the position at token resolution).

    Raises:
        ValueError: ``batch`` or ``head`` out of range.
    """
    plt = _pyplot()
    from matplotlib.colors import BoundaryNorm, ListedColormap

    p = config if isinstance(config, int) else config.pooling_factor
    B, H = selection.level.shape[:2]
    if not 0 <= batch < B:
        raise ValueError(f"batch {batch} is out of range: the selection has {B} rows")
    if head is not None and not 0 <= head < H:
        raise ValueError(f"head {head} is out of range: the selection has {H} heads "
                         f"(0..{H - 1})")
    levels = leaf_levels(selection, p)[batch].cpu().numpy()
    N = levels.shape[1]
    L = int(selection.level.max()) + 1
    colors = [_level_color(lvl, L) for lvl in range(L)]
    names = ["level 0: tokens"] + [f"level {lvl}: {p ** lvl}-token summary"
                                     for lvl in range(1, L)]

    rows = 3 if head is not None else 2
    fig, axes = plt.subplots(rows, 1, figsize=(10, 2.2 * rows + 0.6), sharex=True,
                             gridspec_kw={"height_ratios": [1] * (rows - 2) + [1.2, 1.2]})
    all_axes = list(np.atleast_1d(axes))
    x = np.arange(N)
    if head is not None:
        ax = all_axes[0]
        for lvl in range(L):  # bars from below level 0, so token-level stretches show too
            ax.fill_between(x, -0.5, levels[head], where=levels[head] == lvl, step="post",
                            color=colors[lvl], lw=0)
        if N <= 2048:  # an outline helps while a window is wider than a pixel
            ax.step(x, levels[head], where="post", color="black", lw=0.6)
        ax.set_yticks(range(L))
        ax.set_ylim(-0.5, L - 0.5)
        ax.set_ylabel(f"head {head}\nlevel")
    ax_raster, ax_frac = all_axes[-2:]
    cmap = ListedColormap(colors)
    ax_raster.imshow(levels, aspect="auto", interpolation="nearest", cmap=cmap,
                     norm=BoundaryNorm(np.arange(L + 1) - 0.5, L), extent=(0, N, H - 0.5, -0.5))
    ax_raster.set_ylabel("head")
    ax_raster.set_yticks(range(H) if H <= 16 else np.linspace(0, H - 1, 9).astype(int))
    if head is not None:
        ax_raster.axhline(head - 0.5, color="white", lw=0.6)
        ax_raster.axhline(head + 0.5, color="white", lw=0.6)
    fractions = np.stack([(levels == lvl).mean(0) for lvl in range(L)])
    ax_frac.stackplot(x, fractions, colors=colors, labels=names, step="post")
    ax_frac.set_ylim(0, 1)
    ax_frac.set_ylabel("fraction\nof heads")
    ax_frac.set_xlabel("base position")
    ax_frac.set_xlim(0, N)
    ax_frac.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)
    if isinstance(config, LighthouseConfig) and 1 < config.num_tiles <= 64:
        for t in range(1, config.num_tiles):
            for ax in all_axes:
                ax.axvline(t * N / config.num_tiles, color="gray", ls=":", lw=0.6)
    refined = 100 * fractions[0].mean()
    fig.suptitle((title + "\n" if title else "") + f"N = {N:,}, {H} heads, gathered length "
                 f"{selection.level.shape[-1]:,}; {refined:.1f}% of (position, head) pairs at "
                 "token resolution", fontsize=10)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _level_color(level: int, num_levels: int) -> tuple:
    from matplotlib import colormaps

    return colormaps["viridis"](level / max(1, num_levels - 1) * 0.9)


def plot_recall(curve: list[dict], path: str | Path, title: str) -> None:
    """Recall of dense attention mass against the budget K for one layer: the selection, the
    oracle and the random selection with the same budget and tiles."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    ks = [c["topk"] for c in curve]
    for name, style in (("oracle", "k--"), ("selection", "o-"), ("random", "s:")):
        ax.plot(ks, [c[name]["exact"] for c in curve], style, label=name, ms=4)
    ax.set_xscale("log", base=2)
    ax.set_xticks(ks, [f"{k:,}" for k in ks])
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("budget K")
    ax.set_ylabel("dense attention mass kept exactly")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
