"""Promotion gates: each configured threshold against the measured value, pass/fail and why; and
the relative gates against the production engine re-measured in the same run (foundry/champion.py),
each ending pass, fail or inconclusive (an inconclusive gate does not pass).

Latency gates use the worst p99 across the benchmarked concurrency levels and the speedup gate
the smallest speedup: a gate that passes must hold at every load the run measured.
"""

from __future__ import annotations

import html
from typing import Literal

from pydantic import BaseModel, ConfigDict

from foundry.champion import ChampionComparison
from foundry.config import GateConfig
from foundry.quality import QualityReport
from foundry.stats import non_inferiority, score_ratio_interval
from foundry.task_accuracy import TaskAccuracyReport


class GateResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    comparison: Literal["<=", ">=", "=="]
    threshold: float
    measured: float | None  # None: the run did not measure it, which fails the gate
    passed: bool
    detail: str | None = None  # a gate that is no threshold (engine identity, relative gates) says why here
    # Relative gates: the champion compared with; `measured` is the interval's worse bound as a
    # regression in `margin_unit`, `threshold` the margin; the verdict may be inconclusive.
    relative_to: str | None = None
    margin_unit: str = ""
    verdict: Literal["pass", "fail", "inconclusive"] | None = None

    @property
    def outcome(self) -> Literal["pass", "fail", "inconclusive"]:
        return self.verdict or ("pass" if self.passed else "fail")

    @property
    def condition(self) -> str:
        if self.relative_to:
            return f"worse than {self.relative_to} by <= {self.threshold:g}{self.margin_unit} (interval bound)"
        return (
            "benchmarked = evaluated = registered"
            if self.comparison == "=="
            else f"{self.comparison} {self.threshold:g}"
        )

    @property
    def reason(self) -> str:
        if self.relative_to and self.detail:
            return f"{self.name}: {self.detail}"
        if self.detail:
            return f"{self.name}: {self.detail} → {'ok' if self.passed else 'FAILED'}"
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


# absolute gate field in GateConfig → (metric name in the measurements, comparison)
ABSOLUTE_GATES: dict[str, tuple[str, Literal["<=", ">="]]] = {
    "max_unquantized_perplexity": ("unquantized_perplexity", "<="),
    "max_perplexity_ratio": ("perplexity_ratio", "<="),
    "max_mean_kld": ("mean_kld", "<="),
    "min_top1_agreement": ("top1_agreement", ">="),
    "min_token_agreement": ("token_agreement", ">="),
    "max_continuation_perplexity_ratio": ("continuation_perplexity_ratio", "<="),
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


def gate_measurements(benchmark_headline: dict, quality: QualityReport) -> dict[str, float | None]:
    """The numbers the gates judge: the benchmark headline plus the quality headline."""
    generation = quality.generation
    return {
        **benchmark_headline,
        "unquantized_perplexity": quality.unquantized_perplexity,
        "perplexity_ratio": quality.perplexity_ratio,
        "mean_kld": quality.mean_kld,
        "top1_agreement": quality.top1_agreement,
        "token_agreement": generation.token_agreement if generation else None,
        "continuation_perplexity_ratio": generation.continuation_perplexity_ratio if generation else None,
        "exact_match_rate": generation.exact_match_rate if generation else None,
        "output_length_ratio": generation.output_length_ratio if generation else None,
        **(quality.tasks.headline() if quality.tasks else {}),
    }


def engine_identity_result(
    registered_hash: str, benchmarked_hash: str | None, evaluated_hash: str | None
) -> GateResult | None:
    """The engine promoted must be the one benchmarked and evaluated: a failing result naming the
    mismatch, or None when all three agree."""
    problems = [
        f"{what} ran on engine {(found or 'unknown')[:16]}"
        for what, found in (("the benchmark", benchmarked_hash), ("the evaluation", evaluated_hash))
        if found != registered_hash
    ]
    if not problems:
        return None
    return GateResult(
        name="engine_identity",
        comparison="==",
        threshold=0.0,
        measured=None,
        passed=False,
        detail=f"registered engine {registered_hash[:16]} but " + " and ".join(problems),
    )


def relative_gate_results(comparison: ChampionComparison) -> tuple[list[GateResult], list[str]]:
    """One result per relative gate the comparison judged; the not-judged ones (nothing in
    production, the champion not re-measured here) as unchecked entries with the reason."""
    results, unchecked = [], []
    relative_to = f"champion v{comparison.plan.version}"
    for row in comparison.results:
        if row.margin is None:
            continue
        if not row.judged:
            unchecked.append(f"{row.gate_field}.{row.label} ({row.reason})")
            continue
        regression = row.regression
        results.append(
            GateResult(
                name=f"{row.label} vs champion",
                comparison="<=",
                threshold=row.margin,
                measured=regression,
                passed=row.verdict == "pass",
                detail=row.reason,
                relative_to=relative_to,
                margin_unit="%" if row.estimate_kind == "ratio" else f" {row.unit}",
                verdict=row.verdict,
            )
        )
    return results, unchecked


def task_gate_results(tasks: TaskAccuracyReport | None, gates: GateConfig) -> tuple[list[GateResult], list[str]]:
    """Per configured task (evaluation.tasks), against the unquantized model on the same items:
    `min_task_score_pct_of_unquantized` as a non-inferiority test on the score ratio's bootstrap
    interval (pass / fail / inconclusive, like the champion gates), and `max_task_flips` on the
    number of items whose correctness differs (McNemar's p says which way they lean)."""
    fields = ("min_task_score_pct_of_unquantized", "max_task_flips")
    if tasks is None or not tasks.tasks:
        return [], []  # no task configured: nothing to judge (not a gate switched off)
    results, unchecked = [], [field for field in fields if getattr(gates, field) is None]
    relative_to = "the unquantized model"
    for task in tasks.tasks:
        flips = (
            f"{task.unquantized_only_correct} item(s) only the unquantized model got right, {task.engine_only_correct} "
            f"only the engine (McNemar exact p = {task.mcnemar_p:.3g})"
        )
        threshold_pct = gates.min_task_score_pct_of_unquantized
        if threshold_pct is not None:
            scores = f"{task.metric} {task.engine_score:.2%} vs {task.unquantized_score:.2%} on {task.num_items} items"
            margin_pct = 100.0 - threshold_pct
            if task.score_ratio is None:
                verdict, measured = "inconclusive", None
                detail = (
                    f"{scores}: the unquantized model scores 0, so no ratio; the task cannot tell the engines apart"
                )
            else:
                interval = score_ratio_interval(task.engine_correct, task.unquantized_correct, gates.confidence)
                verdict = non_inferiority(interval, margin_pct, lower_is_better=False)
                measured = (1.0 - interval.low) * 100.0
                limit = threshold_pct / 100.0
                why = {
                    "pass": f"pass: the interval's lower bound {interval.low:.2%} is >= {limit:.0%}",
                    "fail": f"FAIL: even the interval's upper bound {interval.high:.2%} is below {limit:.0%}",
                    "inconclusive": f"inconclusive: the interval straddles {limit:.0%}; more items would narrow it",
                }[verdict]
                detail = (
                    f"{scores}; engine/unquantized {interval.ratio:.2%} ({gates.confidence:.0%} CI "
                    f"{interval.low:.2%}–{interval.high:.2%}); {flips}; {why}"
                )
            results.append(
                GateResult(
                    name=f"task {task.name} score",
                    comparison=">=",
                    threshold=margin_pct,
                    measured=measured,
                    passed=verdict == "pass",
                    detail=detail,
                    relative_to=relative_to,
                    margin_unit="%",
                    verdict=verdict,
                )
            )
        if gates.max_task_flips is not None:
            results.append(
                GateResult(
                    name=f"task {task.name} flips",
                    comparison="<=",
                    threshold=float(gates.max_task_flips),
                    measured=float(task.flips),
                    passed=task.flips <= gates.max_task_flips,
                    detail=f"{task.flips} flip(s) <= {gates.max_task_flips}: {flips}",
                )
            )
    return results, unchecked


def evaluate_gates(
    gates: GateConfig,
    measurements: dict[str, float | None],
    extra_results: list[GateResult] = (),
    champion: ChampionComparison | None = None,
    tasks: TaskAccuracyReport | None = None,
) -> GateDecision:
    """`measurements` maps metric names (perplexity_ratio, ttft_p99_ms, ...) to measured values;
    `extra_results` are checks that are no threshold (the engine identity); `champion`: this run
    against the production engine, for the relative gates; `tasks`: task accuracy against the
    unquantized model (evaluation.tasks)."""
    results, unchecked = list(extra_results), []
    if champion is not None:
        results, unchecked = relative_gate_results(champion)
        results = list(extra_results) + results
    task_results, task_unchecked = task_gate_results(tasks, gates)
    results, unchecked = results + task_results, unchecked + task_unchecked
    for field, (metric, comparison) in ABSOLUTE_GATES.items():
        threshold = getattr(gates, field)
        if threshold is None:
            unchecked.append(field)
            continue
        results.append(_check(metric, comparison, threshold, measurements.get(metric)))
    return GateDecision(passed=all(r.passed for r in results), results=results, unchecked=unchecked)


def render_gates_html(decision: GateDecision, promoted: bool) -> str:
    colors = {"pass": "#e8f5e9", "fail": "#ffebee", "inconclusive": "#fff8e1"}
    rows = "".join(
        f"<tr style='background:{colors[r.outcome]}'><td>{html.escape(r.name)}</td><td>{html.escape(r.condition)}</td>"
        f"<td>{'—' if r.measured is None else f'{r.measured:.4g}'}</td><td><b>{r.outcome.upper() if r.outcome != 'pass' else 'pass'}</b>"
        f"{'<br>' + html.escape(r.detail) if r.relative_to and r.detail else ''}</td></tr>"
        for r in decision.results
    )
    unchecked = html.escape("; ".join(decision.unchecked) or "none")
    verdict = "PROMOTED to production" if promoted else "NOT promoted"
    return (
        "<html><body style='font-family:sans-serif'>"
        f"<h2>Gate decision: {verdict}</h2>"
        "<table border='1' cellpadding='6' style='border-collapse:collapse'>"
        f"<tr><th>gate</th><th>threshold</th><th>measured</th><th>result</th></tr>{rows}</table>"
        f"<p>Gates not configured (null): {unchecked}</p></body></html>"
    )
