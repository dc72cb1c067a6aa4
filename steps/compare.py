from typing import Annotated

from zenml import log_metadata, step
from zenml.types import HTMLString

from foundry.bench.session import BenchmarkResults
from foundry.champion import ChampionComparison, compare_with_champion
from foundry.comparison import champion_metadata, compare_metrics, render_champion_html, render_comparison_html
from foundry.config import GateConfig
from foundry.errors import FoundryError
from foundry.gates import gate_measurements
from foundry.quality import QualityReport
from steps.tracking import stack_registry


@step(enable_cache=False)  # production moves between runs: compare against it now
def compare_with_production(
    registered_version: dict,
    benchmark_results: BenchmarkResults,
    quality_report: QualityReport,
    gates: GateConfig,
    compare_with_run: str | None = None,
) -> tuple[
    Annotated[HTMLString, "comparison_report"],
    Annotated[str, "compared_production_version"],
    Annotated[ChampionComparison, "champion_comparison"],
]:
    """This run against the production engine (the champion): re-measured in this run where it could
    run here (intervals and verdicts for the relative gates), and beside its recorded MLflow metrics;
    when asked, also against a named earlier run."""
    plan = benchmark_results.champion_plan
    if plan is None:
        raise FoundryError("the benchmark results carry no champion plan; re-run the benchmark step (--no-cache)")
    champion = compare_with_champion(
        plan,
        benchmark_results.champion_rounds,
        quality_report.champion_pair,
        gates,
        quality_note=quality_report.champion_quality_note,
        tasks=quality_report.tasks,
    )
    model_name = registered_version["model_name"]
    production = plan.version  # the champion this run measured: promotion is compare-and-set against it
    candidate = gate_measurements(benchmark_results.headline, quality_report)
    candidate_label = f"this run (MLflow version {registered_version['version']})"
    recorded = "recorded in its own run, not re-measured" if not plan.re_measure else "recorded in its own run"
    report = compare_metrics(
        model_name=model_name,
        candidate=candidate,
        baseline=plan.recorded_metrics if production else None,
        gates=gates,
        candidate_label=candidate_label,
        baseline_label=f"production v{production} ({recorded})" if production else None,
    )
    html = render_champion_html(champion) + render_comparison_html(report)
    if compare_with_run:
        named = compare_metrics(
            model_name=model_name,
            candidate=candidate,
            baseline=stack_registry().run_metrics_by_name(compare_with_run),
            gates=gates,
            candidate_label=candidate_label,
            baseline_label=f"run {compare_with_run}",
        )
        html += render_comparison_html(named)
    log_metadata(
        metadata={
            "champion": champion_metadata(champion),
            "comparison": {
                "production_version": production or "none",
                "regressions_vs_recorded": report.regressions,
                "deltas_vs_recorded": {r.metric: r.delta for r in report.rows if r.delta is not None},
            },
        }
    )
    # "" = nothing in production: the gate promotes only if that is still so (compare-and-set)
    return HTMLString(html), production or "", champion
