"""Confidence intervals over seeds: Student t intervals of a mean, and the verdict word they
give a paired difference (arm minus baseline, lower loss is better)."""

from __future__ import annotations

import math
import statistics
from functools import cache

LEVEL = 0.95
"""Two-sided confidence level of every interval in the report."""

VERDICTS = ("better", "worse", "not distinguishable")


def _t_pdf(x: float, df: int) -> float:
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(x * x / df))


def _t_cdf_upper_half(t: float, df: int, steps: int = 4000) -> float:
    """P(0 < T < t) by Simpson's rule (smooth integrand; exact to ~1e-10 for t <= 100)."""
    h = t / steps
    s = _t_pdf(0.0, df) + _t_pdf(t, df)
    s += sum((4 if i % 2 else 2) * _t_pdf(i * h, df) for i in range(1, steps))
    return s * h / 3


@cache
def t_quantile(df: int, level: float = LEVEL) -> float:
    """The two-sided ``level`` quantile of Student's t with ``df`` degrees of freedom
    (``t_quantile(3) = 3.182``).

    Raises:
        ValueError: ``df < 1`` or ``level`` outside (0, 1).
    """
    if df < 1 or not 0 < level < 1:
        raise ValueError(f"t_quantile needs df >= 1 and 0 < level < 1 (got {df}, {level})")
    if df == 1:
        return math.tan(math.pi * level / 2)
    target, lo, hi = level / 2, 0.0, 100.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if _t_cdf_upper_half(mid, df) < target:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mean_interval(values: list[float], level: float = LEVEL) -> dict:
    """``n``, ``mean``, ``sd`` and the t interval ``ci_low``/``ci_high`` of the mean of
    ``values`` (``None`` values are dropped; no interval below two values)."""
    xs = [float(x) for x in values if x is not None]
    out = {"n": len(xs), "mean": statistics.fmean(xs) if xs else None, "sd": None,
           "ci_low": None, "ci_high": None, "level": level}
    if len(xs) > 1:
        sd = statistics.stdev(xs)
        half = t_quantile(len(xs) - 1, level) * sd / math.sqrt(len(xs))
        out.update(sd=sd, ci_low=out["mean"] - half, ci_high=out["mean"] + half)
    return out


def paired_interval(diffs: list[float], level: float = LEVEL) -> dict:
    """:func:`mean_interval` of paired differences (arm minus baseline, one per seed) with a
    ``verdict``: ``better`` when the interval lies below 0, ``worse`` above, ``not
    distinguishable`` when it covers 0, ``None`` with one seed (no interval)."""
    out = mean_interval(diffs, level)
    if out["ci_low"] is None:
        out["verdict"] = None
    elif out["ci_high"] < 0:
        out["verdict"] = "better"
    elif out["ci_low"] > 0:
        out["verdict"] = "worse"
    else:
        out["verdict"] = "not distinguishable"
    return out


def describe_interval(stats: dict, unit: str = "") -> str:
    """``"-0.045 [95% CI -0.110, +0.019], n=4"``, or ``"-0.045 (n=1: one seed, no interval)"``.
    """
    if stats["mean"] is None:
        return "no pairs"
    if stats["ci_low"] is None:
        return f"{stats['mean']:+.3f}{unit} (n={stats['n']}: one seed, no interval)"
    return (f"{stats['mean']:+.3f}{unit} [{100 * stats['level']:.0f}% CI "
            f"{stats['ci_low']:+.3f}, {stats['ci_high']:+.3f}], n={stats['n']}")
