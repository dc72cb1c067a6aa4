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
    "Per interleaved round (champion and challenger alternating first, same seeded requests), the "
    "challenger/champion ratio — for per-request latencies the geometric mean over requests of the ratio "
    "for the same request (paired), for throughput and p99 the round's own value —, then the geometric mean "
    "over rounds with a {confidence:.0%} percentile-bootstrap interval resampling whole rounds (2,000 "
    "resamples, seeded); quality: the mean per-window difference (KLD, top-1 agreement) with a bootstrap "
    "interval over held-out windows and McNemar's exact test on per-position top-1 flips; task scores: the "
    "mean per-item difference with a bootstrap interval over the same items and McNemar's exact test on the "
    "items that flip; a relative gate "
    "passes if the interval's worse bound is within the margin, fails if its better bound is beyond it, "
    "else is inconclusive."
)


def _resample_index(size: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, size) indices drawn with replacement: one bootstrap resample per row (seeded)."""
    return np.random.default_rng(seed).integers(0, size, size=(resamples, size))


def _percentile_bounds(statistics: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile-bootstrap interval of resampled statistics."""
    tail = (1.0 - confidence) / 2.0
    return float(np.quantile(statistics, tail)), float(np.quantile(statistics, 1.0 - tail))


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
    return round_ratio_interval(b / a, confidence, resamples, seed)


def round_ratio_interval(
    round_ratios: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> RatioInterval:
    """Bootstrap interval of the geometric mean of per-round ratios challenger/champion (rounds
    resampled whole)."""
    log_ratios = np.log(np.asarray(round_ratios, dtype=float))
    if log_ratios.ndim != 1 or log_ratios.size < 2 or not np.all(np.isfinite(log_ratios)):
        raise ValueError(f"need >= 2 positive finite round ratios, got {list(np.asarray(round_ratios).ravel())}")
    means = log_ratios[_resample_index(log_ratios.size, resamples, seed)].mean(axis=1)
    low, high = _percentile_bounds(means, confidence)
    return RatioInterval(float(np.exp(log_ratios.mean())), math.exp(low), math.exp(high), int(log_ratios.size))


def paired_round_ratio(challenger: Sequence[float | None], champion: Sequence[float | None]) -> float | None:
    """One round's ratio for a per-request metric: the geometric mean over requests of
    challenger/champion for the same request (paired; a request missing on either side is dropped).
    None when no request has both."""
    pairs = [
        (float(b), float(a))
        for b, a in zip(challenger, champion, strict=True)
        if a is not None and b is not None and a > 0 and b > 0
    ]
    if not pairs:
        return None
    return float(np.exp(np.mean([math.log(b / a) for b, a in pairs])))


@dataclass(frozen=True)
class DifferenceInterval:
    difference: float  # mean over items of challenger - champion
    low: float
    high: float
    items: int


def difference_interval(
    challenger: Sequence[float],
    champion: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> DifferenceInterval:
    """Bootstrap interval of the mean paired difference challenger - champion (items, e.g. held-out
    windows, resampled)."""
    a, b = np.asarray(champion, dtype=float), np.asarray(challenger, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"need paired items (>= 2 each), got {a.size} champion and {b.size} challenger values")
    differences = b - a
    means = differences[_resample_index(a.size, resamples, seed)].mean(axis=1)
    return DifferenceInterval(float(differences.mean()), *_percentile_bounds(means, confidence), int(a.size))


def judge_interval(low: float, high: float, limit: float, lower_is_better: bool) -> Verdict:
    """Non-inferiority against `limit`, the worst acceptable value: pass when the whole interval is on
    the good side, fail when the whole interval is beyond it, else inconclusive."""
    if lower_is_better:  # worse = larger
        if high <= limit:
            return "pass"
        return "fail" if low > limit else "inconclusive"
    if low >= limit:  # worse = smaller
        return "pass"
    return "fail" if high < limit else "inconclusive"


def non_inferiority(interval: RatioInterval, margin_pct: float, lower_is_better: bool) -> Verdict:
    """Is the challenger no more than `margin_pct` worse than the champion, with the interval's confidence?"""
    limit = 1.0 + margin_pct / 100.0 if lower_is_better else 1.0 - margin_pct / 100.0
    return judge_interval(interval.low, interval.high, limit, lower_is_better)


def mcnemar_exact(champion_only: int, challenger_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs: items only the champion got right,
    and items only the challenger got right."""
    n = champion_only + challenger_only
    if n == 0:
        return 1.0
    k = min(champion_only, challenger_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2.0**n
    return min(1.0, 2.0 * tail)


def score_ratio_interval(
    challenger_correct: Sequence[float],
    unquantized_correct: Sequence[float],
    confidence: float = 0.95,
    resamples: int = 2000,
    seed: int = 0,
) -> RatioInterval:
    """Bootstrap interval of a task score ratio challenger/unquantized, items resampled in pairs
    (the same item for both sides). Per-item scores are 0/1 correctness. A resample in which the
    unquantized side scores nothing has no ratio and is dropped; `rounds` holds the number of items."""
    a, b = np.asarray(unquantized_correct, dtype=float), np.asarray(challenger_correct, dtype=float)
    if a.shape != b.shape or a.ndim != 1 or a.size < 2:
        raise ValueError(f"need paired items (>= 2 each), got {a.size} unquantized and {b.size} challenger values")
    if a.sum() <= 0:
        raise ValueError("the unquantized model scores 0 on every item: a score ratio is undefined")
    index = _resample_index(a.size, resamples, seed)
    unquantized_sums, challenger_sums = a[index].sum(axis=1), b[index].sum(axis=1)
    defined = unquantized_sums > 0
    ratios = challenger_sums[defined] / unquantized_sums[defined]
    return RatioInterval(float(b.sum() / a.sum()), *_percentile_bounds(ratios, confidence), int(a.size))
