from typing import Annotated

from zenml import get_step_context, log_metadata, step
from zenml.enums import ModelStages
from zenml.types import HTMLString

from foundry.bench.session import BenchmarkResults
from foundry.champion import ChampionComparison
from foundry.config import GateConfig
from foundry.gates import GateDecision, engine_identity_result, evaluate_gates, gate_measurements, render_gates_html
from foundry.promotion import PromotionResult, finish_pending_move, promote_if_passed
from foundry.quality import QualityReport
from steps.tracking import move_zenml_production, stack_registry


@step(enable_cache=False)  # side effect: moves the production pointers
def gate_and_promote(
    registered_version: dict,
    benchmark_results: BenchmarkResults,
    quality_report: QualityReport,
    gates: GateConfig,
    compared_production_version: str = "",
    champion_comparison: ChampionComparison | None = None,
) -> tuple[
    Annotated[PromotionResult, "promotion"],
    Annotated[GateDecision, "gate_decision"],
    Annotated[HTMLString, "gate_report"],
]:
    """Check every gate (the relative ones against the champion re-measured in this run), and that
    the benchmark and the evaluation ran on the registered engine; on
    pass move MLflow alias `production` and the ZenML model stage together, only if production is
    still the version this run compared against (else it fails: re-run to compare against it)."""
    identity = engine_identity_result(
        registered_version["engine_content_hash"],
        benchmark_results.engine_content_hash,
        quality_report.engine_content_hash,
    )
    decision = evaluate_gates(
        gates,
        gate_measurements(benchmark_results.headline, quality_report),
        extra_results=[identity] if identity else [],
        champion=champion_comparison,
        tasks=quality_report.tasks,
    )
    context = get_step_context()
    zenml_model, registry, model_name = context.model, stack_registry(), registered_version["model_name"]
    # An earlier run killed between the two moves left a journal entry: finish that move first.
    repaired = finish_pending_move(registry, model_name, lambda version: move_zenml_production(model_name, version))
    result = promote_if_passed(
        registry=registry,
        model_name=model_name,
        version=registered_version["version"],
        decision=decision,
        promote_second_registry=lambda: zenml_model.set_stage(ModelStages.PRODUCTION, force=True),
        run=context.pipeline_run.name,
        # compare-and-set: production must still be the version this run was compared with
        expected_current=(repaired["version"] if repaired else compared_production_version) or None,
    )
    if repaired:
        result = result.model_copy(update={"repaired": repaired["message"]})
    log_metadata(
        metadata={
            "gate_passed": decision.passed,
            "promoted": result.promoted,
            "gate_results": {
                r.name: {"threshold": r.condition, "measured": r.measured, "passed": r.passed, "verdict": r.outcome}
                for r in decision.results
            },
            "reasons": result.reasons,
        },
        infer_model=True,
    )
    log_metadata(metadata={"gate_passed": decision.passed, "promoted": result.promoted})
    return result, decision, HTMLString(render_gates_html(decision, result.promoted))
