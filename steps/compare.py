from typing import Annotated

from zenml import log_metadata, step
from zenml.types import HTMLString

from foundry.bench.session import BenchmarkResults
from foundry.comparison import compare_metrics, render_comparison_html
from foundry.config import GateConfig
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
) -> tuple[Annotated[HTMLString, "comparison_report"], Annotated[str, "compared_production_version"]]:
    """This run's gate metrics against the current production engine's (its MLflow run metrics)
    and, when asked, against a named earlier run."""
    registry = stack_registry()
    model_name = registered_version["model_name"]
    production = registry.production_version(model_name)
    baseline = registry.version_run_metrics(model_name, production) if production else None
    candidate = gate_measurements(benchmark_results.headline, quality_report)
    candidate_label = f"this run (MLflow version {registered_version['version']})"
    report = compare_metrics(
        model_name=model_name,
        candidate=candidate,
        baseline=baseline,
        gates=gates,
        candidate_label=candidate_label,
        baseline_label=f"production (MLflow version {production})" if production else None,
    )
    html = render_comparison_html(report)
    if compare_with_run:
        named = compare_metrics(
            model_name=model_name,
            candidate=candidate,
            baseline=registry.run_metrics_by_name(compare_with_run),
            gates=gates,
            candidate_label=candidate_label,
            baseline_label=f"run {compare_with_run}",
        )
        html += render_comparison_html(named)
    log_metadata(
        metadata={
            "comparison": {
                "production_version": production or "none",
                "regressions": report.regressions,
                "deltas": {r.metric: r.delta for r in report.rows if r.delta is not None},
            }
        }
    )
    # "" = nothing in production: the gate promotes only if that is still so (compare-and-set)
    return HTMLString(html), production or ""
