"""This run's engine (the challenger) against the production engine (the champion), measured in the
same run on the same machine, decided with a stated confidence.

* `plan_champion` decides whether the champion can be re-measured here (same backend, the engine on
  a local path, TensorRT-LLM's node guard passes, the workload fits it), or says why not; an engine
  identical to the challenger's (same content hash) is measured once.
* The benchmark step then runs both interleaved in rounds (foundry/bench/rounds.py) and the
  evaluation scores both on the same held-out windows (foundry/quality.py, `champion_pair`).
* `compare_with_champion` turns that into one `RelativeResult` per metric: the challenger/champion
  ratio (latency, throughput) or difference (quality) with its interval and a verdict against the
  configured margin (gates.max_regression_pct, gates.max_quality_regression). foundry/stats.py holds
  the statistics; the method is stated in `stats.METHOD`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from foundry.bench.rounds import ChampionRounds, SideRound
from foundry.builders.base import guard_trtllm_engine, read_engine_info
from foundry.config import GateConfig
from foundry.errors import FoundryError
from foundry.quality import PairedQuality
from foundry.stats import (
    METHOD,
    difference_interval,
    judge_interval,
    mcnemar_exact,
    paired_round_ratio,
    round_ratio_interval,
)
from foundry.task_accuracy import TaskAccuracyReport

Better = Literal["lower", "higher"]
RelativeVerdict = Literal["pass", "fail", "inconclusive", "not judged"]
# metric → (better, measured per request (paired by request) or per round, unit of its values)
LATENCY_METRICS: dict[str, tuple[Better, bool, str]] = {
    "ttft_ms": ("lower", True, "ms"),
    "tpot_ms": ("lower", True, "ms"),
    "e2e_ms": ("lower", True, "ms"),
    "ttft_p99_ms": ("lower", False, "ms"),
    "tpot_p99_ms": ("lower", False, "ms"),
    "output_tok_s": ("higher", False, "tok/s"),
}
QUALITY_METRICS: dict[str, tuple[Better, str]] = {
    "mean_kld": ("lower", "nats/token"),
    "top1_agreement": ("higher", "fraction"),
    "task_score": ("higher", "fraction of items"),  # per task in evaluation.tasks
}


class ChampionPlan(BaseModel):
    """Whether (and which) production engine this run re-measures, or why not."""

    model_config = ConfigDict(frozen=True)

    model_name: str
    version: str | None  # the production version when the run looked; None: nothing in production
    status: Literal["no_production", "re_measure", "same_engine", "not_re_measured"]
    reason: str
    engine_dir: str | None = None
    engine_content_hash: str | None = None
    backend: str | None = None
    recorded_metrics: dict[str, float] = {}  # the champion's MLflow metrics from its own run (another day)

    @property
    def re_measure(self) -> bool:
        return self.status == "re_measure"

    def summary_line(self, rounds: int | None = None) -> str:
        """The one console line: what happened to the champion in this run."""
        if self.status == "no_production":
            return "no champion: nothing is in production yet"
        if self.status == "same_engine":
            return f"champion v{self.version} has this run's engine ({(self.engine_content_hash or '')[:12]}): measured once"
        if self.status == "not_re_measured":
            return f"champion v{self.version} not re-measured: {self.reason}"
        if rounds is None:
            return f"champion v{self.version} to be re-measured"
        return f"champion v{self.version} re-measured in {rounds} rounds"


class ProductionEngine(BaseModel):
    """What the registry says about the production version when the run looked (read where MLflow
    is; the plan is made where the engines run)."""

    model_config = ConfigDict(frozen=True)

    model_name: str
    version: str | None  # None: nothing in production
    engine_dir: str | None = None
    engine_content_hash: str | None = None
    locate_error: str | None = None  # why the registry could not name a local engine directory
    recorded_metrics: dict[str, float] = {}


def plan_champion(
    production: ProductionEngine,
    challenger_info: dict,
    challenger_content_hash: str,
    *,
    remeasure: bool,
    longest_request_tokens: int = 0,
    node=None,
) -> ChampionPlan:
    """Can the production engine run here beside this run's? `challenger_info`: this run's engine.json;
    `node`: a foundry.compat.NodeTarget for the TensorRT-LLM guard (default: this node, probed)."""
    model_name, production_version = production.model_name, production.version
    champion_engine_dir = Path(production.engine_dir) if production.engine_dir else None
    champion_engine_content_hash, locate_error = production.engine_content_hash, production.locate_error
    recorded_metrics = production.recorded_metrics
    base = {"model_name": model_name, "version": production_version, "recorded_metrics": recorded_metrics}
    if production_version is None:
        return ChampionPlan(**base, status="no_production", reason="nothing is in production yet")
    base |= {"engine_content_hash": champion_engine_content_hash}
    if champion_engine_content_hash == challenger_content_hash:
        return ChampionPlan(
            **base,
            status="same_engine",
            reason=f"production v{production_version} holds this run's engine: measured once",
            engine_dir=str(champion_engine_dir) if champion_engine_dir else None,
            backend=challenger_info.get("backend"),
        )

    def not_here(why: str, **extra) -> ChampionPlan:
        return ChampionPlan(**base, status="not_re_measured", reason=why, **extra)

    if not remeasure:
        return not_here("benchmark.remeasure_champion is false")
    if locate_error or champion_engine_dir is None:
        return not_here(locate_error or "the registry names no engine directory")
    if not champion_engine_dir.is_dir():
        return not_here(f"its engine directory {champion_engine_dir} is not reachable from this node")
    try:
        info = read_engine_info(Path(champion_engine_dir))
    except (FoundryError, OSError, ValueError) as error:
        return not_here(f"its engine at {champion_engine_dir} cannot be read ({error})")
    backend, wanted = info.get("backend"), challenger_info.get("backend")
    extra = {"engine_dir": str(champion_engine_dir), "backend": backend}
    if backend != wanted:
        return not_here(f"its backend is {backend!r}, this run's is {wanted!r}: not comparable on one node", **extra)
    if backend == "trtllm":
        try:
            guard_trtllm_engine(Path(champion_engine_dir), info, node)
        except FoundryError as error:
            return not_here(f"the TensorRT-LLM guard refuses it here: {error}", **extra)
    max_seq_len = info.get("max_seq_len")
    if max_seq_len is not None and max_seq_len < longest_request_tokens:
        return not_here(
            f"its max_seq_len {max_seq_len} is shorter than this workload's longest request ({longest_request_tokens})",
            **extra,
        )
    return ChampionPlan(**base, status="re_measure", reason="runs on this node", **extra)


class RelativeResult(BaseModel):
    """One metric, challenger against champion: estimate, interval, verdict and why."""

    model_config = ConfigDict(frozen=True)

    metric: str
    kind: Literal["latency", "quality"]
    better: Better
    estimate_kind: Literal["ratio", "difference"]  # challenger/champion, or challenger - champion
    unit: str  # of the champion/challenger values
    margin: float | None  # % for ratios, the metric's unit for differences; None: not gated
    task: str | None = None  # task_score: which task (evaluation.tasks[].name)
    champion: float | None = None
    challenger: float | None = None
    estimate: float | None = None
    low: float | None = None
    high: float | None = None
    verdict: RelativeVerdict
    reason: str
    champion_per_round: list[float | None] = []
    challenger_per_round: list[float | None] = []
    mcnemar_p: float | None = None  # top-1 flips, task item flips (quality)

    @property
    def label(self) -> str:
        """The metric as the reports and gates name it (task scores carry their task)."""
        return f"{self.metric}[{self.task}]" if self.task else self.metric

    @property
    def gate_field(self) -> str:
        """The config field (under gates) holding this metric's margin."""
        return "max_regression_pct" if self.kind == "latency" else "max_quality_regression"

    @property
    def limit(self) -> float | None:
        """The worst acceptable estimate: 1 ± margin % for ratios, ± margin for differences."""
        if self.margin is None:
            return None
        sign = 1.0 if self.better == "lower" else -1.0
        return 1.0 + sign * self.margin / 100.0 if self.estimate_kind == "ratio" else sign * self.margin

    @property
    def margin_text(self) -> str:
        if self.margin is None:
            return "off"
        if self.estimate_kind == "ratio":
            return f"≤ {self.margin:g}% {'slower' if self.better == 'lower' else 'less'}"
        return f"≤ {self.margin:g} {self.unit} {'more' if self.better == 'lower' else 'less'}"

    @property
    def regression(self) -> float | None:
        """The interval's worse bound as a regression in margin units (% for ratios)."""
        if self.low is None or self.high is None:
            return None
        if self.estimate_kind == "ratio":
            return (self.high - 1.0) * 100.0 if self.better == "lower" else (1.0 - self.low) * 100.0
        return self.high if self.better == "lower" else -self.low

    @property
    def judged(self) -> bool:
        return self.margin is not None and self.verdict != "not judged"


class ChampionComparison(BaseModel):
    model_config = ConfigDict(frozen=True)

    plan: ChampionPlan
    rounds: int = 0
    rounds_wall_s: float | None = None
    confidence: float = 0.95
    results: list[RelativeResult] = []
    method: str
    sequential_note: str | None = None
    quality_note: str | None = None  # why the champion's quality was not re-measured

    @property
    def headline(self) -> str:
        return self.plan.summary_line(self.rounds if self.plan.re_measure else None)

    @property
    def judged(self) -> list[RelativeResult]:
        return [result for result in self.results if result.judged]


def _series(side: SideRound, metric: str) -> list[float | None] | float | None:
    return getattr(side, metric)


def _geomean(values: list[float | None]) -> float | None:
    import math

    present = [v for v in values if v is not None and v > 0]
    return math.exp(sum(math.log(v) for v in present) / len(present)) if present else None


def _round_values(rounds: ChampionRounds, metric: str) -> tuple[list[float | None], list[float | None], list[float]]:
    """(champion per round, challenger per round, challenger/champion ratio per round with values)."""
    per_request = LATENCY_METRICS[metric][1]
    champion, challenger, ratios = [], [], []
    for a, b in zip(rounds.champion, rounds.challenger, strict=True):
        if per_request:
            champion.append(_geomean(_series(a, metric)))
            challenger.append(_geomean(_series(b, metric)))
            ratio = paired_round_ratio(_series(b, metric), _series(a, metric))
        else:
            champion.append(_series(a, metric))
            challenger.append(_series(b, metric))
            ratio = challenger[-1] / champion[-1] if champion[-1] and challenger[-1] else None
        if ratio is not None:
            ratios.append(ratio)
    return champion, challenger, ratios


def _without_interval(common: dict, why: str) -> RelativeResult:
    """A metric measured too few times for an interval: inconclusive where gated."""
    return RelativeResult(
        **common, verdict="inconclusive" if common["margin"] is not None else "not judged", reason=why
    )


def _judged(common: dict, estimate: float, low: float, high: float, measured: str, narrow: str) -> RelativeResult:
    """A metric with its interval and, where a margin is set, the non-inferiority verdict and why
    (`narrow`: what would narrow an inconclusive interval)."""
    result = RelativeResult(**common, estimate=estimate, low=low, high=high, verdict="not judged", reason="")
    if result.limit is None:
        return result.model_copy(update={"reason": f"{measured}; no margin set (gates.{result.gate_field})"})
    lower = result.better == "lower"
    verdict = judge_interval(low, high, result.limit, lower_is_better=lower)
    worse, better_bound = (high, low) if lower else (low, high)
    if verdict == "pass":
        why = f"pass: the interval's worse bound {worse:.4g} is within {result.limit:.4g}"
    elif verdict == "fail":
        why = f"FAIL: even the interval's better bound {better_bound:.4g} is beyond {result.limit:.4g}"
    else:
        why = f"inconclusive: the interval straddles {result.limit:.4g} (worse bound {worse:.4g}); {narrow}"
    return result.model_copy(
        update={"verdict": verdict, "reason": f"{measured}; margin {result.margin_text.removeprefix('≤ ')}; {why}"}
    )


def latency_results(rounds: ChampionRounds, gates: GateConfig, seed: int = 0) -> list[RelativeResult]:
    """Every latency/throughput metric from the rounds; those with a margin get a verdict."""
    results = []
    for metric, (better, per_request, unit) in LATENCY_METRICS.items():
        champion, challenger, ratios = _round_values(rounds, metric)
        common = dict(
            metric=metric,
            kind="latency",
            better=better,
            estimate_kind="ratio",
            unit=unit,
            margin=gates.max_regression_pct.get(metric),
            champion=_geomean(champion),
            challenger=_geomean(challenger),
            champion_per_round=champion,
            challenger_per_round=challenger,
        )
        if len(ratios) < 2:
            results.append(_without_interval(common, f"{len(ratios)} round(s) with a value on both sides: no interval"))
            continue
        interval = round_ratio_interval(ratios, gates.confidence, seed=seed)
        pairing = "paired by request, " if per_request else ""
        measured = (
            f"challenger/champion {interval.ratio:.4f} ({gates.confidence:.0%} CI {interval.low:.4f}–"
            f"{interval.high:.4f}; {pairing}{interval.rounds} rounds)"
        )
        narrow = "more rounds would narrow it (gates.on_inconclusive: more_rounds)"
        results.append(_judged(common, interval.ratio, interval.low, interval.high, measured, narrow))
    return results


def _paired_difference(
    common: dict, champion: list[float], challenger: list[float], items: str, flips: str, gates: GateConfig, seed: int
) -> RelativeResult:
    """challenger − champion over paired items (held-out windows, task items) with a bootstrap interval."""
    if len(champion) < 2:
        return _without_interval(common, f"{len(champion)} {items}: no interval{flips}")
    interval = difference_interval(challenger, champion, gates.confidence, seed=seed)
    measured = (
        f"challenger − champion {interval.difference:+.4g} {common['unit']} ({gates.confidence:.0%} CI "
        f"{interval.low:+.4g} to {interval.high:+.4g}; {interval.items} {items}){flips}"
    )
    narrow = f"more {items} would narrow it"
    return _judged(common, interval.difference, interval.low, interval.high, measured, narrow)


def quality_results(pair: PairedQuality, gates: GateConfig, seed: int = 0) -> list[RelativeResult]:
    """Mean KLD and top-1 agreement of the challenger minus the champion's, per held-out window,
    with a bootstrap interval over windows; McNemar's exact test on the top-1 flips per position."""
    p_value = mcnemar_exact(pair.champion_only_top1, pair.challenger_only_top1)
    series = {
        "mean_kld": (pair.champion_window_kld, pair.challenger_window_kld),
        "top1_agreement": (pair.champion_window_top1, pair.challenger_window_top1),
    }
    results = []
    for metric, (champion, challenger) in series.items():
        better, unit = QUALITY_METRICS[metric]
        champion, challenger = list(champion), list(challenger)
        top1 = metric == "top1_agreement"
        flips = (
            f"; top-1 flips: {pair.champion_only_top1} positions only the champion got, "
            f"{pair.challenger_only_top1} only the challenger (McNemar exact p = {p_value:.3g})"
            if top1
            else ""
        )
        common = dict(
            metric=metric,
            kind="quality",
            better=better,
            estimate_kind="difference",
            unit=unit,
            margin=gates.max_quality_regression.get(metric),
            champion=sum(champion) / len(champion),
            challenger=sum(challenger) / len(challenger),
            champion_per_round=champion,
            challenger_per_round=challenger,
            mcnemar_p=p_value if top1 else None,
        )
        results.append(_paired_difference(common, champion, challenger, "held-out windows", flips, gates, seed))
    return results


def task_results(tasks: TaskAccuracyReport, gates: GateConfig, seed: int = 0) -> list[RelativeResult]:
    """Per task scored on both engines: the challenger's score minus the champion's over the same
    items, with a bootstrap interval over items and McNemar's exact test on the items that flip."""
    results = []
    for task in tasks.tasks:
        pair = task.champion
        if pair is None:
            continue
        flips = (
            f"; item flips: {pair.champion_only_correct} only the champion got right, "
            f"{pair.challenger_only_correct} only the challenger (McNemar exact p = {pair.mcnemar_p:.3g})"
        )
        better, unit = QUALITY_METRICS["task_score"]
        common = dict(
            metric="task_score",
            task=task.name,
            kind="quality",
            better=better,
            estimate_kind="difference",
            unit=unit,
            margin=gates.max_quality_regression.get("task_score"),
            champion=pair.champion_score,
            challenger=task.engine_score,
            mcnemar_p=pair.mcnemar_p,
        )
        results.append(
            _paired_difference(common, pair.champion_correct, task.engine_correct, "task items", flips, gates, seed)
        )
    return results


def rounds_to_add(rounds: ChampionRounds, gates: GateConfig, max_rounds: int, batch: int) -> int:
    """Sequential testing: with gates.on_inconclusive 'more_rounds', while a gated latency metric is
    inconclusive and the budget allows, `batch` more rounds (at most up to `max_rounds`)."""
    if gates.on_inconclusive != "more_rounds" or rounds.rounds >= max_rounds:
        return 0
    if not any(r.verdict == "inconclusive" for r in latency_results(rounds, gates)):
        return 0
    return min(max(batch, 1), max_rounds - rounds.rounds)


def _gated_metrics(gates: GateConfig, task_names: list[str]) -> list[dict]:
    """The relative gates as RelativeResult fields, one task_score per task."""
    rows = []
    for metric, margin in gates.max_regression_pct.items():
        better, _, unit = LATENCY_METRICS[metric]
        rows.append(dict(metric=metric, kind="latency", better=better, estimate_kind="ratio", unit=unit, margin=margin))
    for metric, margin in gates.max_quality_regression.items():
        better, unit = QUALITY_METRICS[metric]
        common = dict(
            metric=metric, kind="quality", better=better, estimate_kind="difference", unit=unit, margin=margin
        )
        rows += [common | {"task": name} for name in task_names] if metric == "task_score" else [common]
    return rows


def _unjudged(
    gates: GateConfig, task_names: list[str], verdict: RelativeVerdict, reason: str, kind: str | None = None
) -> list[RelativeResult]:
    """Every relative gate (of `kind`, or all) with the same verdict and reason: nothing was compared."""
    return [
        RelativeResult(**row, verdict=verdict, reason=reason)
        for row in _gated_metrics(gates, task_names)
        if kind is None or row["kind"] == kind
    ]


def compare_with_champion(
    plan: ChampionPlan,
    rounds: ChampionRounds | None,
    pair: PairedQuality | None,
    gates: GateConfig,
    quality_note: str | None = None,
    tasks: TaskAccuracyReport | None = None,
) -> ChampionComparison:
    """Every relative metric with its verdict. Nothing in production: no relative result. The same
    engine: each relative gate passes (one engine, measured once). The champion not re-measured:
    each relative gate is not judged, with the reason (its recorded metrics are context only).
    `tasks`: this run's task accuracy; a task the champion was scored on gets a task_score result."""
    base = dict(plan=plan, confidence=gates.confidence, method=METHOD.format(confidence=gates.confidence))
    task_names = [task.name for task in tasks.tasks] if tasks is not None else []
    if plan.status == "no_production":
        return ChampionComparison(**base)
    if plan.status == "same_engine":
        why = f"same engine as champion v{plan.version} ({(plan.engine_content_hash or '')[:12]}): measured once"
        return ChampionComparison(**base, results=_unjudged(gates, task_names, "pass", why))
    if plan.status == "not_re_measured":
        why = f"champion v{plan.version} not re-measured: {plan.reason}"
        return ChampionComparison(**base, results=_unjudged(gates, task_names, "not judged", why))
    if rounds is None:
        raise FoundryError(
            f"champion v{plan.version} was to be re-measured but the benchmark carries no rounds; re-run the benchmark"
        )
    results = latency_results(rounds, gates)
    unmeasured = f"champion v{plan.version}'s quality not re-measured: {quality_note or 'no paired evaluation'}"
    if pair is not None:
        results += quality_results(pair, gates)
        quality_note = None
    else:
        results += _unjudged(gates, [], "not judged", unmeasured, "quality")  # no task names: no task rows
    scored = task_results(tasks, gates) if tasks is not None else []
    missing = [name for name in task_names if name not in {r.task for r in scored}]
    results += scored + [r for r in _unjudged(gates, missing, "not judged", unmeasured, "quality") if r.task]
    return ChampionComparison(
        **base,
        rounds=rounds.rounds,
        rounds_wall_s=rounds.wall_s,
        results=results,
        sequential_note=rounds.sequential_note,
        quality_note=quality_note,
    )
