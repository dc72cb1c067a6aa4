"""Promotion gates: each configured threshold against the measured value, pass/fail and why.

Latency gates use the worst p99 across the benchmarked concurrency levels and the speedup gate
the smallest speedup: a gate that passes must hold at every load the run measured.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from foundry.config import GateConfig


class GateResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    comparison: Literal["<=", ">="]
    threshold: float
    measured: float | None  # None: the run did not measure it, which fails the gate
    passed: bool

    @property
    def reason(self) -> str:
        if self.measured is None:
            return f"{self.name}: not measured in this run (threshold {self.comparison} {self.threshold:g})"
        verdict = "ok" if self.passed else "FAILED"
        return f"{self.name}: {self.measured:.4g} {self.comparison} {self.threshold:g} → {verdict}"


class GateDecision(BaseModel):
    model_config = ConfigDict(frozen=True)

    passed: bool
    results: list[GateResult]
    unchecked: list[str]  # gates set to null in the config

    @property
    def failure_reasons(self) -> list[str]:
        return [result.reason for result in self.results if not result.passed]


# gate field in GateConfig → (metric name in the measurements, comparison)
_GATES: dict[str, tuple[str, Literal["<=", ">="]]] = {
    "max_perplexity_ratio": ("perplexity_ratio", "<="),
    "max_mean_kld": ("mean_kld", "<="),
    "min_top1_agreement": ("top1_agreement", ">="),
    "max_ttft_p99_ms": ("ttft_p99_ms", "<="),
    "max_tpot_p99_ms": ("tpot_p99_ms", "<="),
    "min_speedup_vs_baseline": ("speedup_output_tok_s", ">="),
}


def _check(name: str, comparison: Literal["<=", ">="], threshold: float, measured: float | None) -> GateResult:
    if measured is None:
        passed = False
    elif comparison == "<=":
        passed = measured <= threshold
    else:
        passed = measured >= threshold
    return GateResult(name=name, comparison=comparison, threshold=threshold, measured=measured, passed=passed)


def evaluate_gates(gates: GateConfig, measurements: dict[str, float | None]) -> GateDecision:
    """`measurements` maps metric names (perplexity_ratio, ttft_p99_ms, ...) to measured values."""
    results, unchecked = [], []
    for field, (metric, comparison) in _GATES.items():
        threshold = getattr(gates, field)
        if threshold is None:
            unchecked.append(field)
            continue
        results.append(_check(metric, comparison, threshold, measurements.get(metric)))
    return GateDecision(passed=all(r.passed for r in results), results=results, unchecked=unchecked)
