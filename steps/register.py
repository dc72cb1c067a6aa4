import importlib.metadata
from typing import Annotated

from zenml import get_step_context, log_metadata, step

from foundry.artifacts import EngineArtifact, HFCheckpoint, TrtllmCheckpoint
from foundry.bench.session import BenchmarkResults
from foundry.gates import gate_measurements
from foundry.quality import QualityReport
from foundry.registry import log_to_active_run
from steps.tracking import stack_registry

_VERSIONED_PACKAGES = ("llm-engine-foundry", "torch", "transformers", "nvidia-modelopt", "zenml", "mlflow")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _VERSIONED_PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "absent"
    return versions


@step(experiment_tracker=True, enable_cache=False)  # side effect: a new MLflow version each run
def register_engine(
    engine: EngineArtifact,
    checkpoint: HFCheckpoint,
    trtllm_checkpoint: TrtllmCheckpoint,
    data_lineage: dict,
    benchmark_results: BenchmarkResults,
    quality_report: QualityReport,
    run_config: dict,
    config_hash: str,
    model_name: str,
) -> Annotated[dict, "registered_version"]:
    """MLflow run (params, metrics, reports) + a model version pointing at the engine artifact."""
    context = get_step_context()
    engine_info = engine.manifest.get("engine", {})
    lineage = {
        "checkpoint_content_hash": checkpoint.content_hash,
        "checkpoint_source_fingerprint": checkpoint.manifest.get("source_fingerprint", ""),
        "trtllm_checkpoint_content_hash": trtllm_checkpoint.content_hash,
        "engine_content_hash": engine.content_hash,
        "calibration_data_hash": data_lineage["calibration_data_hash"],
        "evaluation_data_hash": data_lineage["evaluation_data_hash"],
        "config_hash": config_hash,
        "zenml_run_id": str(context.pipeline_run.id),
        "zenml_run_name": context.pipeline_run.name,
        "zenml_model_version": f"{context.model.name}:{context.model.version}",
        "backend": engine_info.get("backend", ""),
        "served_by": benchmark_results.served_by,
        "evaluated_served_by": quality_report.served_by,
        "quant_algo": str(engine_info.get("quant_algo")),
        **{f"version.{name}": version for name, version in package_versions().items()},
    }
    metrics = {
        **{k: v for k, v in benchmark_results.headline.items() if v is not None},
        **{k: v for k, v in gate_measurements({}, quality_report).items() if v is not None},
        **({"engine_perplexity": quality_report.engine_perplexity} if quality_report.engine_perplexity else {}),
    }
    run_id = log_to_active_run(
        params=_flatten(run_config),
        metrics=metrics,
        json_artifacts={
            "benchmark": benchmark_results.model_dump(mode="json"),
            "quality": quality_report.model_dump(mode="json"),
            "engine_manifest": engine.manifest,
            "data_lineage": data_lineage,
        },
        tags=lineage,
    )
    registered = stack_registry().register_engine(model_name, engine.artifact_uri or str(engine.path), run_id, lineage)
    result = {
        "model_name": model_name,
        "version": registered.version,
        "source": registered.source,
        "mlflow_run_id": run_id,
        "engine_content_hash": engine.content_hash,
    }
    log_metadata(metadata={"mlflow": result}, infer_model=True)
    return result


def _flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat
