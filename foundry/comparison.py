"""This run against the current production engine, as a reviewer reads it.

Two parts. First, when production's engine was re-measured in this run (foundry/champion.py): each
relative metric, champion vs challenger with its interval, the per-round (per-window for quality)
values as a plot, and the verdict with its reason; the method in one sentence. Second, every gate
metric beside production's *recorded* MLflow metrics — measured in its own run, on another day and
maybe another machine, so labelled "not re-measured" — with deltas.

ZenML's OSS dashboard has no run-comparison table (that is ZenML Pro), so each run renders this
report as an HTML artifact. Plain Python: the step (steps/compare.py) fetches the production
version's metrics from MLflow and passes plain dicts in.
"""

from __future__ import annotations

import html
from typing import Literal

from pydantic import BaseModel, ConfigDict

from foundry.champion import ChampionComparison, RelativeResult
from foundry.config import GateConfig
from foundry.gates import ABSOLUTE_GATES

# Metric → which direction is better. Gate metrics first (in gate order), then context metrics.
GATE_METRICS: dict[str, Literal["lower", "higher"]] = {
    metric: ("lower" if comparison == "<=" else "higher") for metric, comparison in ABSOLUTE_GATES.values()
}
CONTEXT_METRICS: dict[str, Literal["lower", "higher"]] = {
    "c1_ttft_p50_ms": "lower",
    "c1_tpot_p50_ms": "lower",
    "c1_output_tok_s": "higher",
    "max_output_tok_s": "higher",
    "failed_requests": "lower",
}
_GATE_FIELD = {metric: field for field, (metric, _) in ABSOLUTE_GATES.items()}


class RecordedMetricRow(BaseModel):
    """One metric: this run's value beside another run's recorded MLflow value."""

    model_config = ConfigDict(frozen=True)

    metric: str
    better: Literal["lower", "higher"]
    is_gate_metric: bool
    threshold: str | None  # e.g. "<= 1.1"; None when the gate is off
    candidate: float | None
    baseline: float | None
    delta: float | None  # candidate - baseline
    delta_pct: float | None
    verdict: Literal["better", "worse", "same", "n/a"]


class ComparisonReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_name: str
    candidate_label: str
    baseline_label: str | None  # None: no production engine yet
    rows: list[RecordedMetricRow]

    @property
    def regressions(self) -> list[str]:
        return [row.metric for row in self.rows if row.is_gate_metric and row.verdict == "worse"]


def _row(
    metric: str, better: Literal["lower", "higher"], gates: GateConfig, candidate: float | None, baseline: float | None
) -> RecordedMetricRow:
    field = _GATE_FIELD.get(metric)
    threshold_value = getattr(gates, field) if field else None
    threshold = None
    if threshold_value is not None:
        threshold = f"{'<=' if better == 'lower' else '>='} {threshold_value:g}"
    delta = delta_pct = None
    verdict: Literal["better", "worse", "same", "n/a"] = "n/a"
    if candidate is not None and baseline is not None:
        delta = candidate - baseline
        delta_pct = (delta / abs(baseline) * 100.0) if baseline != 0 else None
        if abs(delta) <= 1e-12 * max(1.0, abs(baseline)):
            verdict = "same"
        elif (delta < 0) == (better == "lower"):
            verdict = "better"
        else:
            verdict = "worse"
    return RecordedMetricRow(
        metric=metric,
        better=better,
        is_gate_metric=field is not None,
        threshold=threshold,
        candidate=candidate,
        baseline=baseline,
        delta=delta,
        delta_pct=delta_pct,
        verdict=verdict,
    )


def compare_metrics(
    model_name: str,
    candidate: dict[str, float | None],
    baseline: dict[str, float] | None,
    gates: GateConfig,
    candidate_label: str,
    baseline_label: str | None,
) -> ComparisonReport:
    """One row per gate metric (always) and per context metric either side measured."""
    rows = []
    for metric, better in {**GATE_METRICS, **CONTEXT_METRICS}.items():
        value = candidate.get(metric)
        recorded = (baseline or {}).get(metric)
        if metric in CONTEXT_METRICS and value is None and recorded is None:
            continue
        rows.append(
            _row(
                metric,
                better,
                gates,
                None if value is None else float(value),
                None if recorded is None else float(recorded),
            )
        )
    return ComparisonReport(
        model_name=model_name,
        candidate_label=candidate_label,
        baseline_label=baseline_label if baseline is not None else None,
        rows=rows,
    )


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


_COLORS = {"better": "#e8f5e9", "worse": "#ffebee", "same": "#f5f5f5", "n/a": "#ffffff"}


def _bars_svg(report: ComparisonReport) -> str:
    """Per metric: candidate and production bars scaled to the larger of the two."""
    pairs = [r for r in report.rows if r.candidate is not None and r.baseline is not None]
    if not pairs:
        return ""
    row_h, label_w, bar_w = 34, 190, 360
    height = row_h * len(pairs) + 30
    parts = [
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{label_w + bar_w + 140}' height='{height}' "
        "role='img' aria-label='candidate vs production per metric' style='font:12px sans-serif'>"
    ]
    for i, row in enumerate(pairs):
        y = 10 + i * row_h
        scale = max(abs(row.candidate), abs(row.baseline)) or 1.0
        for j, (value, color, name) in enumerate(
            ((row.candidate, "#1976d2", "this run"), (row.baseline, "#9e9e9e", "production"))
        ):
            width = bar_w * abs(value) / scale
            parts.append(
                f"<rect x='{label_w}' y='{y + j * 13}' width='{width:.1f}' height='11' fill='{color}'>"
                f"<title>{html.escape(row.metric)} {name}: {value:.4g}</title></rect>"
            )
            parts.append(f"<text x='{label_w + width + 4:.1f}' y='{y + j * 13 + 10}'>{value:.4g}</text>")
        parts.append(f"<text x='0' y='{y + 16}'>{html.escape(row.metric)}</text>")
    legend_y = height - 8
    parts.append(
        f"<rect x='{label_w}' y='{legend_y - 9}' width='10' height='10' fill='#1976d2'/>"
        f"<text x='{label_w + 14}' y='{legend_y}'>this run</text>"
        f"<rect x='{label_w + 80}' y='{legend_y - 9}' width='10' height='10' fill='#9e9e9e'/>"
        f"<text x='{label_w + 94}' y='{legend_y}'>production</text></svg>"
    )
    return "".join(parts)


def render_comparison_html(report: ComparisonReport) -> str:
    baseline = report.baseline_label or "no production engine yet"
    head = (
        f"<h2>{html.escape(report.model_name)}: {html.escape(report.candidate_label)} vs {html.escape(baseline)}</h2>"
    )
    if report.baseline_label is None:
        head += "<p>Nothing is in production yet, so there is nothing to compare against: this run's numbers only.</p>"
    elif report.regressions:
        head += f"<p><b>Worse than {html.escape(report.baseline_label)} on:</b> {html.escape(', '.join(report.regressions))}</p>"
    else:
        head += "<p>No gate metric is worse than production.</p>"
    rows = "".join(
        f"<tr style='background:{_COLORS[r.verdict]}'><td>{html.escape(r.metric)}{' (gate)' if r.is_gate_metric else ''}</td>"
        f"<td>{r.better} is better</td><td>{html.escape(r.threshold or 'off')}</td>"
        f"<td>{_fmt(r.candidate)}</td><td>{_fmt(r.baseline)}</td><td>{_fmt(r.delta)}</td>"
        f"<td>{'—' if r.delta_pct is None else f'{r.delta_pct:+.1f}%'}</td><td>{r.verdict}</td></tr>"
        for r in report.rows
    )
    table = (
        "<table border='1' cellpadding='4' style='border-collapse:collapse;font:13px sans-serif' "
        "class='foundry-comparison'><tr><th>metric</th><th>direction</th><th>gate</th>"
        f"<th>this run</th><th>production</th><th>Δ</th><th>Δ %</th><th>verdict</th></tr>{rows}</table>"
    )
    return f"<div>{head}{table}{_bars_svg(report)}</div>"


# ---- the champion re-measured in this run ---------------------------------------------------------

_VERDICT_COLORS = {"pass": "#e8f5e9", "fail": "#ffebee", "inconclusive": "#fff8e1", "not judged": "#ffffff"}


def _interval_text(row: RelativeResult, confidence: float) -> str:
    if row.estimate is None or row.low is None or row.high is None:
        return "—"
    if row.estimate_kind == "ratio":
        return f"×{row.estimate:.4f} [{row.low:.4f}, {row.high:.4f}]"
    return f"{row.estimate:+.4g} [{row.low:+.4g}, {row.high:+.4g}]"


def _per_round_svg(row: RelativeResult, axis: str) -> str:
    """Champion (grey) and challenger (blue) per round (or per window) as two polylines."""
    points = [
        (i, a, b)
        for i, (a, b) in enumerate(zip(row.champion_per_round, row.challenger_per_round))
        if a is not None and b is not None
    ]
    if len(points) < 2:
        return ""
    width, height, pad = 260, 80, 6
    values = [v for _, a, b in points for v in (a, b)]
    low, high = min(values), max(values)
    span = (high - low) or abs(high) or 1.0
    last = points[-1][0] or 1

    def polyline(index: int, color: str, who: str) -> str:
        xy = " ".join(
            f"{pad + (width - 2 * pad) * p[0] / last:.1f},{height - pad - (height - 2 * pad) * (p[index] - low) / span:.1f}"
            for p in points
        )
        return (
            f"<polyline points='{xy}' fill='none' stroke='{color}' stroke-width='1.5'>"
            f"<title>{html.escape(row.label)} {who} per {axis}</title></polyline>"
        )

    return (
        f"<svg xmlns='http://www.w3.org/2000/svg' width='{width}' height='{height}' role='img' "
        f"aria-label='{html.escape(row.label)} per {axis}: champion grey, challenger blue' "
        "style='background:#fafafa;border:1px solid #eee'>"
        f"{polyline(1, '#9e9e9e', 'champion')}{polyline(2, '#1976d2', 'challenger')}</svg>"
    )


def render_champion_html(comparison: ChampionComparison) -> str:
    """The champion section: the headline line, the method, one row per relative metric with the
    interval, the margin, the per-round plot, the verdict and its reason."""
    plan = comparison.plan
    parts = [f"<h2>Champion vs challenger: {html.escape(comparison.headline)}</h2>"]
    if plan.status == "no_production":
        return parts[0] + "<p>Nothing is in production yet: there is no champion to compare with.</p>"
    if plan.status == "not_re_measured":
        parts.append(
            "<p><b>Not re-measured.</b> The relative gates are not judged; the table below compares with the "
            "champion's <i>recorded</i> metrics from its own run (another day, maybe another machine).</p>"
        )
    elif plan.status == "same_engine":
        parts.append("<p>Production holds this very engine (same content hash): it was measured once.</p>")
    else:
        detail = (
            f"{comparison.rounds} interleaved rounds in {comparison.rounds_wall_s:.1f} s"
            if comparison.rounds_wall_s is not None
            else f"{comparison.rounds} rounds"
        )
        parts.append(f"<p>Measured in this run on this machine: {html.escape(detail)}.</p>")
    parts.append(f"<p class='note'><b>Method.</b> {html.escape(comparison.method)}</p>")
    for note in (comparison.sequential_note, comparison.quality_note):
        if note:
            parts.append(f"<p class='note'>{html.escape(note)}</p>")
    if comparison.results:
        rows = "".join(
            f"<tr style='background:{_VERDICT_COLORS[r.verdict]}'>"
            f"<td>{html.escape(r.label)}</td><td>{r.better} is better</td>"
            f"<td>{_fmt(r.champion)}</td><td>{_fmt(r.challenger)}</td><td>{html.escape(r.unit)}</td>"
            f"<td>{html.escape(_interval_text(r, comparison.confidence))}</td><td>{html.escape(r.margin_text)}</td>"
            f"<td>{_per_round_svg(r, 'round' if r.kind == 'latency' else 'window')}</td>"
            f"<td><b>{r.verdict}</b><br><span style='font-size:12px'>{html.escape(r.reason)}</span></td></tr>"
            for r in comparison.results
        )
        parts.append(
            "<table border='1' cellpadding='4' style='border-collapse:collapse;font:13px sans-serif' "
            "class='foundry-champion'><tr><th>metric</th><th>direction</th><th>champion</th><th>challenger</th>"
            f"<th>unit</th><th>challenger vs champion ({comparison.confidence:.0%} CI)</th><th>margin</th>"
            "<th>per round / window (champion grey, challenger blue)</th><th>verdict and reason</th></tr>"
            f"{rows}</table>"
        )
    return f"<div>{''.join(parts)}</div>"


def champion_metadata(comparison: ChampionComparison) -> dict:
    """The headline numbers for step metadata."""
    return {
        "headline": comparison.headline,
        "status": comparison.plan.status,
        "champion_version": comparison.plan.version or "none",
        "rounds": comparison.rounds,
        "rounds_wall_s": comparison.rounds_wall_s,
        "metrics": {
            r.label: {
                "champion": r.champion,
                "challenger": r.challenger,
                "estimate": r.estimate,
                "low": r.low,
                "high": r.high,
                "margin": r.margin,
                "verdict": r.verdict,
            }
            for r in comparison.results
        },
    }
