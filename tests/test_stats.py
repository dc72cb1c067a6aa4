"""Champion vs challenger statistics, proven on seeded trials of a latency model whose distributions
are set: per-round machine drift shared by both sides of a round (±25 %, what this 2-core CPU shows
run to run) and per-measurement noise (3 %)."""

from __future__ import annotations

import numpy as np
import pytest

from foundry.stats import mcnemar_exact, non_inferiority, ratio_interval

# 12 rounds: with 3 % noise per measurement, 6 rounds leave ~13 % of A/A trials inconclusive at a 5 % margin.
ROUNDS, MARGIN_PCT, TRIALS = 12, 5.0, 200


def rounds_of(rng, slowdown: float, rounds: int = ROUNDS, tpot_ms: float = 40.0):
    drift = rng.lognormal(0.0, 0.25, rounds)  # the machine, this round: both sides see it
    champion = tpot_ms * drift * rng.lognormal(0.0, 0.03, rounds)
    challenger = tpot_ms * slowdown * drift * rng.lognormal(0.0, 0.03, rounds)
    return challenger, champion


def verdicts(slowdown: float) -> list[str]:
    out = []
    for trial in range(TRIALS):
        rng = np.random.default_rng(trial)
        challenger, champion = rounds_of(rng, slowdown)
        out.append(non_inferiority(ratio_interval(challenger, champion, seed=trial), MARGIN_PCT, lower_is_better=True))
    return out


def test_an_a_a_comparison_passes_the_default_margin_in_95_percent_of_trials():
    results = verdicts(1.0)
    assert results.count("pass") / TRIALS >= 0.95, {v: results.count(v) for v in set(results)}
    assert results.count("fail") == 0


def test_a_challenger_10_percent_slower_is_caught_in_95_percent_of_trials():
    results = verdicts(1.10)
    assert results.count("fail") / TRIALS >= 0.95, {v: results.count(v) for v in set(results)}
    assert results.count("pass") == 0


def test_non_inferiority_directions_and_inconclusive():
    from foundry.stats import RatioInterval

    assert non_inferiority(RatioInterval(1.0, 0.98, 1.03, 6), 5, lower_is_better=True) == "pass"
    assert non_inferiority(RatioInterval(1.1, 1.07, 1.13, 6), 5, lower_is_better=True) == "fail"
    assert non_inferiority(RatioInterval(1.04, 1.0, 1.08, 6), 5, lower_is_better=True) == "inconclusive"
    assert non_inferiority(RatioInterval(0.9, 0.88, 0.93, 6), 5, lower_is_better=False) == "fail"  # throughput dropped
    with pytest.raises(ValueError, match="paired rounds"):
        ratio_interval([1.0], [1.0])


def test_mcnemar_exact():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(5, 5) == pytest.approx(1.0)
    assert mcnemar_exact(10, 0) == pytest.approx(2 / 2**10)
    assert mcnemar_exact(12, 3) < 0.05 < mcnemar_exact(8, 4)
