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


# ---- the pipeline's decision (foundry.champion) on the same kind of seeded trials -----------------
# A latency model with the structure of a round: per round a machine drift both sides share (±25 %),
# per side of a round 3 % (the machine between the two halves), per request 5 %; TTFT, TPOT and the
# round's output tok/s all follow from it. The decision is the one the gate takes: every metric with
# a default margin (gates.max_regression_pct) must pass; one fail catches the challenger.


def model_rounds(rng, slowdown: float, rounds: int, requests: int = 7):
    from foundry.bench.rounds import ChampionRounds, SideRound

    base_ttft_ms = 30.0 * rng.uniform(1.0, 2.0, requests)
    output_tokens = rng.integers(16, 33, requests)
    sides = {"champion": [], "challenger": []}
    for index in range(rounds):
        drift = rng.lognormal(0.0, 0.25)
        for side, factor in (("champion", 1.0), ("challenger", slowdown)):
            machine = drift * rng.lognormal(0.0, 0.03) * factor
            ttft = base_ttft_ms * machine * rng.lognormal(0.0, 0.05, requests)
            tpot = 40.0 * machine * rng.lognormal(0.0, 0.05, requests)
            e2e = ttft + tpot * (output_tokens - 1)
            sides[side].append(
                SideRound(
                    side=side,
                    round_index=index,
                    ran_first=(index % 2 == 0) == (side == "champion"),
                    ttft_ms=ttft.tolist(),
                    tpot_ms=tpot.tolist(),
                    e2e_ms=e2e.tolist(),
                    ttft_p99_ms=float(np.percentile(ttft, 99)),
                    tpot_p99_ms=float(np.percentile(tpot, 99)),
                    output_tok_s=float(output_tokens.sum() / e2e.sum() * 1e3),
                    failed_requests=0,
                    wall_s=float(e2e.sum() / 1e3),
                )
            )
    return ChampionRounds(
        champion_version="1",
        champion_engine_content_hash="c" * 64,
        champion_served_by="model",
        challenger_served_by="model",
        concurrency=1,
        request_ids=list(range(requests)),
        champion=sides["champion"],
        challenger=sides["challenger"],
        wall_s=0.0,
    )


def gate_outcomes(slowdown: float, rounds: int) -> dict[str, int]:
    from foundry.champion import latency_results
    from foundry.config import GateConfig

    gates, outcomes = GateConfig(), {"pass": 0, "fail": 0, "inconclusive": 0}
    for trial in range(TRIALS):
        judged = [
            r.verdict
            for r in latency_results(model_rounds(np.random.default_rng(trial), slowdown, rounds), gates, seed=trial)
            if r.judged
        ]
        assert len(judged) == len(gates.max_regression_pct)
        outcomes["fail" if "fail" in judged else "inconclusive" if "inconclusive" in judged else "pass"] += 1
    return outcomes


def test_default_rounds_a_a_passes_every_default_margin_in_95_percent_of_trials():
    from foundry.config import BenchmarkConfig

    outcomes = gate_outcomes(1.0, BenchmarkConfig().champion_rounds)
    assert outcomes["pass"] / TRIALS >= 0.95, outcomes
    assert outcomes["fail"] == 0, outcomes


def test_default_rounds_catch_a_challenger_10_percent_slower_in_95_percent_of_trials():
    from foundry.config import BenchmarkConfig

    outcomes = gate_outcomes(1.10, BenchmarkConfig().champion_rounds)
    assert outcomes["fail"] / TRIALS >= 0.95, outcomes
    assert outcomes["pass"] == 0, outcomes


def test_paired_round_ratio_pairs_by_request_and_drops_missing():
    from foundry.stats import paired_round_ratio

    assert paired_round_ratio([2.0, 8.0, None], [1.0, 2.0, 5.0]) == pytest.approx((2.0 * 4.0) ** 0.5)
    assert paired_round_ratio([None], [1.0]) is None


def test_difference_interval_and_its_non_inferiority():
    """A difference (KLD, top-1 agreement, task score) is judged against ± the margin."""
    from foundry.stats import difference_interval, judge_interval

    interval = difference_interval([0.02, 0.03, 0.025, 0.021], [0.02, 0.029, 0.024, 0.02])
    assert interval.low <= interval.difference <= interval.high
    assert judge_interval(interval.low, interval.high, 0.01, lower_is_better=True) == "pass"
    assert judge_interval(-0.06, -0.04, -0.01, lower_is_better=False) == "fail"  # agreement dropped 5 points
    assert judge_interval(-0.02, 0.0, -0.01, lower_is_better=False) == "inconclusive"
