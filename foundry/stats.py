"""Deciding champion vs challenger with a stated confidence.

Measurements come in interleaved rounds (A B A B ...) on the same seeded workload and machine, so
machine-state drift hits both sides of a round alike. For a metric, the per-round ratio
challenger/champion cancels that drift; a bootstrap over rounds gives a confidence interval for their
geometric mean (percentile method, seeded). A relative gate is a non-inferiority test: with margin
m (e.g. 5 %) and a lower-is-better metric, it passes when the interval's upper bound is below 1 + m,
fails when its lower bound is above 1 + m, and is inconclusive otherwise (more rounds narrow it).
For paired yes/no outcomes (top-1 agreement per position, task items), McNemar's exact test.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np

Verdict = Literal["pass", "fail", "inconclusive"]
METHOD = (
    "ratio challenger/champion per interleaved round, geometric mean over rounds with a 95 % "
    "percentile-bootstrap interval over rounds "
    "(2,000 resamples, seeded); non-inferiority: pass if the interval's worse bound is within the margin, "
    "fail if its better bound is beyond it, else inconclusive"
)


@dataclass(frozen=True)
class RatioInterval:
    ratio: float  # geometric mean over rounds of challenger / champion
    low: float
    high: float
    rounds: int


def ratio_interval(
    challenger: Sequence[float],
    champion: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> RatioInterval:
    """Bootstrap interval of the geometric-mean round ratio challenger/champion (rounds resampled)."""
    a, b = np.asarray(champion, dtype=float), np.asarray(challenger, dtype=float)
    if a.shape != b.shape or a.size < 2:
        raise ValueError(f"need paired rounds (>= 2 each), got {a.size} champion and {b.size} challenger values")
    log_ratios = np.log(b / a)
    rng = np.random.default_rng(seed)
    means = log_ratios[rng.integers(0, a.size, size=(resamples, a.size))].mean(axis=1)
    tail = (1.0 - confidence) / 2.0
    return RatioInterval(
        float(np.exp(log_ratios.mean())),
        float(np.exp(np.quantile(means, tail))),
        float(np.exp(np.quantile(means, 1.0 - tail))),
        int(a.size),
    )


def non_inferiority(interval: RatioInterval, margin_pct: float, lower_is_better: bool) -> Verdict:
    """Is the challenger no more than `margin_pct` worse than the champion, with the interval's confidence?"""
    if lower_is_better:  # latency: worse = larger ratio
        bound = 1.0 + margin_pct / 100.0
        if interval.high <= bound:
            return "pass"
        return "fail" if interval.low > bound else "inconclusive"
    bound = 1.0 - margin_pct / 100.0  # throughput: worse = smaller ratio
    if interval.low >= bound:
        return "pass"
    return "fail" if interval.high < bound else "inconclusive"


def mcnemar_exact(champion_only: int, challenger_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: items only the champion got right,
    and items only the challenger got right."""
    n = champion_only + challenger_only
    if n == 0:
        return 1.0
    k = min(champion_only, challenger_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)
