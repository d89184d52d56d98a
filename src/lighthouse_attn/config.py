"""LighthouseConfig: the op's settings, their validation, and the planning math of docs/spec.md."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

from .settings import setting

TILE = 128
"""Entries selected per tile and level (SPEC section 3): ``T0``."""
HALF = TILE // 2
"""Entries picked by the query score (set A) and by the key score (set B) per tile."""
SEGMENTS = 16
"""Causal selection: each tile's candidate list at a level is cut into this many consecutive
segments, each refining ``TILE / SEGMENTS`` of its candidates (docs/spec.md section 11)."""

SCORERS = ("norm", "dilated", "affinity")
SELECTIONS = ("paper", "causal")
GQA_MODES = ("expand", "shared")
SHORT_SEQ = ("error", "dense")
BACKENDS = ("auto", "torch", "triton")
MAX_WINDOW_LOG2 = 40  # coarsest windows up to 2^40 tokens
_GROUP = "Lighthouse"


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


@dataclass(frozen=True)
class LighthouseConfig:
    """Settings of Lighthouse attention. Defaults are the paper's main configuration.

    Args:
        num_levels: pyramid levels ``L >= 1``; ``L = 1`` is exactly dense causal attention.
        pooling_factor: pooling factor ``p >= 2`` between consecutive levels.
        topk: selection budget ``K``: a positive multiple of 128; ``K / 128`` tiles.
        scorer: ``"norm"`` (query/key norms), ``"dilated"`` (norms of dilated attention
            outputs) or ``"affinity"`` (experimental, for the causal selection: each key
            against the mean query of the coarsest window before its own).
        dilation: ``δ`` for the dilated scorer (the sequence length must be a multiple of it).
        selection: ``"paper"`` (the paper's top-K by window-max scores: which windows are
            refined depends on later tokens, so stage 1 is not causal) or ``"causal"`` (each
            refinement is decided from tokens up to the window's first position, with the same
            gathered length and tile budget; docs/spec.md section 11).
        gqa: ``"expand"`` (every query head selects on its own) or ``"shared"`` (one selection
            per key/value head, no expansion of k and v).
        short_seq: what to do with a sequence too short for the budget: ``"error"`` raises
            ``ValueError``, ``"dense"`` falls back to dense causal SDPA with one warning.
        backend: ``"auto"`` (Triton kernels for CUDA inputs when they apply, else the reference
            path), ``"torch"`` (the pure-PyTorch reference path) or ``"triton"`` (the kernels;
            CUDA, or the CPU under ``TRITON_INTERPRET=1`` for testing).
        deterministic: bitwise-reproducible forward and backward. The kernels never use float
            atomics; this flag also makes the inner attention deterministic: cuDNN's forward
            with our Triton backward (fp16/bf16, power-of-two head dims 16-256; about 1.2x
            the default time on an H100), else SDPA under
            ``torch.use_deterministic_algorithms``.

    Field values are checked on construction; sequence-length rules by :meth:`validate`.
    """

    num_levels: int = setting(3, help="pyramid levels L", group=_GROUP)
    pooling_factor: int = setting(4, help="pooling factor p", group=_GROUP)
    topk: int = setting(1536, help="selection budget K (a multiple of 128)", group=_GROUP)
    scorer: str = setting("norm", help="norm: query/key norms; dilated: norms of dilated "
                          "attention outputs; affinity (experimental): each key against the "
                          "mean query of the coarsest window before its own",
                          group=_GROUP, choices=SCORERS)
    dilation: int = setting(4, help="dilation of the dilated scorer", group=_GROUP)
    selection: str = setting("paper", help="paper: the paper's top-K (reads later tokens); "
                             "causal: every refinement decided from earlier tokens only",
                             group=_GROUP, choices=SELECTIONS)
    gqa: str = setting("expand", help="expand: every query head selects; shared: one "
                       "selection per key/value head", group=_GROUP, choices=GQA_MODES)
    short_seq: str = "error"
    backend: str = "auto"
    deterministic: bool = False

    def __post_init__(self) -> None:
        for name in ("num_levels", "pooling_factor", "topk", "dilation"):
            value = getattr(self, name)  # numpy and other integer types become int
            if isinstance(value, numbers.Integral) and not isinstance(value, (bool, int)):
                object.__setattr__(self, name, int(value))
        if not _is_int(self.num_levels) or self.num_levels < 1:
            raise ValueError(f"num_levels must be an integer >= 1 (got {self.num_levels!r}); "
                             "the paper uses 3, and 1 means dense attention")
        if not _is_int(self.pooling_factor) or self.pooling_factor < 2:
            raise ValueError(f"pooling_factor must be an integer >= 2 (got "
                             f"{self.pooling_factor!r}); the paper uses 4 (or 2)")
        if (self.num_levels - 1) * math.log2(self.pooling_factor) > MAX_WINDOW_LOG2:
            most = 1 + int(MAX_WINDOW_LOG2 // math.log2(self.pooling_factor))
            raise ValueError(f"num_levels={self.num_levels} with pooling_factor="
                             f"{self.pooling_factor} makes coarsest windows of p^(L-1) tokens, "
                             f"more than 2^{MAX_WINDOW_LOG2}: longer than any sequence; use "
                             f"num_levels <= {most} (the paper uses 3 or 4)")
        if not _is_int(self.topk) or self.topk < TILE or self.topk % TILE:
            near = max(TILE, round(self.topk / TILE) * TILE) if _is_int(self.topk) else 1536
            raise ValueError(f"topk must be a positive multiple of {TILE} (SPEC section 3: "
                             f"K % 128 == 0, K >= 128; got {self.topk!r}); try topk={near}")
        for name, allowed in (("scorer", SCORERS), ("selection", SELECTIONS), ("gqa", GQA_MODES),
                              ("short_seq", SHORT_SEQ), ("backend", BACKENDS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; "
                                 f"choose one of {', '.join(map(repr, allowed))}")
        if not isinstance(self.deterministic, bool):
            raise ValueError(f"deterministic must be True or False (got {self.deterministic!r})")
        if not _is_int(self.dilation) or self.dilation < 1:
            raise ValueError(f"dilation must be an integer >= 1 (got {self.dilation!r}); try 4")

    # ------------------------------------------------------------------ planning math
    @property
    def num_tiles(self) -> int:
        """``T = K / 128``: tiles of the coarsest level, each selecting on its own."""
        return self.topk // TILE

    @property
    def coarsest_window(self) -> int:
        """``p^(L-1)``: base tokens covered by one coarsest-level entry."""
        return self.pooling_factor ** (self.num_levels - 1)

    @property
    def seq_len_multiple(self) -> int:
        """Every valid sequence length is a multiple of this."""
        if self.num_levels == 1:
            return 1
        step = self.coarsest_window * self.num_tiles
        return math.lcm(step, self.dilation) if self.scorer == "dilated" else step

    @property
    def min_seq_len(self) -> int:
        """Shortest valid sequence length: every tile needs 128 coarsest entries."""
        if self.num_levels == 1:
            return 1
        shortest = TILE * self.num_tiles * self.coarsest_window
        return -(-shortest // self.seq_len_multiple) * self.seq_len_multiple

    def is_short(self, seq_len: int) -> bool:
        """True when ``seq_len`` is too short for the budget (fewer than 128 coarsest entries
        per tile); such sequences raise, or fall back to dense with ``short_seq="dense"``."""
        return seq_len < self.min_seq_len

    def level_counts(self, seq_len: int) -> list[int]:
        """Gathered entries of each level ``0 .. L-1`` (they sum to the gathered length)."""
        self.validate(seq_len)
        L, p = self.num_levels, self.pooling_factor
        if L == 1:
            return [seq_len]
        refined = self.num_tiles * TILE * p
        return [refined] * (L - 1) + [seq_len // self.coarsest_window]

    def gathered_length(self, seq_len: int) -> int:
        """``S = N / p^(L-1) + (L-1) * p * K`` (SPEC section 3); validates ``seq_len``."""
        return sum(self.level_counts(seq_len))

    def attention_flops_ratio(self, seq_len: int) -> float:
        """Causal attention FLOPs on the gathered sequence over dense causal FLOPs at ``seq_len``
        (``S(S+1) / (N(N+1))``: query-key pairs under the causal mask)."""
        s = self.gathered_length(seq_len)
        return s * (s + 1) / (seq_len * (seq_len + 1))

    # ------------------------------------------------------------------ validation
    def validate(self, seq_len: int) -> None:
        """Check ``seq_len`` against SPEC section 3; raise ``ValueError`` naming the broken
        rule and the nearest valid ``seq_len`` (and ``topk`` where one exists)."""
        if not _is_int(seq_len) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer (got {seq_len!r})")
        if self.num_levels == 1:
            return
        L, p, T = self.num_levels, self.pooling_factor, self.num_tiles
        step = self.coarsest_window * T
        if seq_len < self.min_seq_len:
            per_tile = seq_len / self.coarsest_window / T
            raise ValueError(
                f"seq_len {seq_len} is too short for the budget: each of the T = {T} tiles gets "
                f"{per_tile:g} coarsest entries, and the rule N_(L-1)/T >= 128 needs at least "
                f"128 (seq_len >= {self.min_seq_len}). {self._alternatives(seq_len)}"
                + ("" if self.short_seq == "dense" else
                   " Or set short_seq='dense' to fall back to dense attention."))
        if seq_len % step:
            raise ValueError(
                f"seq_len {seq_len} breaks the rule N % (p^(L-1) * T) == 0 with p^(L-1) = "
                f"{p}^{L - 1} and T = topk/128 = {T}: it must be a multiple of {step}. "
                f"{self._alternatives(seq_len)}")
        if self.scorer == "dilated" and seq_len % self.dilation:
            raise ValueError(
                f"seq_len {seq_len} breaks the dilated scorer's rule N % dilation == 0 "
                f"(dilation = {self.dilation}). {self._alternatives(seq_len)}")

    def valid_topks(self, seq_len: int) -> list[int]:
        """All budgets ``K`` that are valid at ``seq_len`` with this config's L and p."""
        if self.num_levels == 1 or seq_len % self.coarsest_window:
            return []
        coarse = seq_len // self.coarsest_window
        divisors, d = set(), 1  # tile counts T: divisors of `coarse` with coarse / T >= 128
        while d * d <= coarse:
            if coarse % d == 0:
                divisors.update((d, coarse // d))
            d += 1
        return [t * TILE for t in sorted(divisors) if coarse // t >= TILE]

    def nearest_seq_lens(self, seq_len: int) -> list[int]:
        """The valid sequence lengths just below and above ``seq_len``."""
        m = self.seq_len_multiple
        below = seq_len // m * m
        above = below if below == seq_len else below + m
        out = [n for n in (below, above) if n >= self.min_seq_len]
        return out or [self.min_seq_len]

    def _alternatives(self, seq_len: int) -> str:
        lens = " or ".join(str(n) for n in sorted(set(self.nearest_seq_lens(seq_len))))
        msg = f"Nearest valid seq_len: {lens}"
        topks = [k for k in self.valid_topks(seq_len) if k != self.topk]
        if topks:
            best = min(topks, key=lambda k: (abs(k - self.topk), k))
            msg += f"; or keep seq_len and use topk={best}"
        return msg + "."

    def to_dict(self) -> dict:
        """Plain ``dict`` of the fields (JSON-ready); ``LighthouseConfig(**d)`` restores it."""
        return asdict(self)
