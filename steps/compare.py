from typing import Annotated

from zenml import log_metadata, step
from zenml.types import HTMLString

from foundry.comparison import compare_metrics, render_comparison_html
from foundry.config import GateConfig
from foundry.quality import QualityReport
from steps.tracking import stack_registry


def gate_measurements(benchmark_results: dict, quality_report: QualityReport) -> dict[str, float | None]:
    """The numbers the gates judge (the same composition gate_and_promote uses)."""
    return {
        **benchmark_results["headline"],
        "perplexity_ratio": quality_report.perplexity_ratio,
        "mean_kld": quality_report.mean_kld,
        "top1_agreement": quality_report.top1_agreement,
    }


@step(enable_cache=False)  # production moves between runs: compare against it now
def compare_with_production(
    registered_version: dict, benchmark_results: dict, quality_report: QualityReport, gates: GateConfig
) -> Annotated[HTMLString, "comparison_report"]:
    """This run's gate metrics against the current production engine's (its MLflow run metrics)."""
    registry = stack_registry()
    model_name = registered_version["model_name"]
    production = registry.production_version(model_name)
    baseline = registry.version_run_metrics(model_name, production) if production else None
    report = compare_metrics(
        model_name=model_name,
        candidate=gate_measurements(benchmark_results, quality_report),
        baseline=baseline,
        gates=gates,
        candidate_label=f"this run (MLflow version {registered_version['version']})",
        baseline_label=f"production (MLflow version {production})" if production else None,
    )
    log_metadata(
        metadata={
            "comparison": {
                "production_version": production or "none",
                "regressions": report.regressions,
                "deltas": {r.metric: r.delta for r in report.rows if r.delta is not None},
            }
        }
    )
    return HTMLString(render_comparison_html(report))
