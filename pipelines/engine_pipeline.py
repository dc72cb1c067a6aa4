"""The default pipeline: wiring only; each step is a thin adapter over foundry/."""

from zenml import pipeline

from foundry.config import (
    BenchmarkConfig,
    BuildConfig,
    CalibrationConfig,
    CheckpointSource,
    EvaluationConfig,
    GateConfig,
    RuntimeConfig,
)
from steps import (
    benchmark_engine,
    build_engine,
    calibrate_checkpoint,
    champion_for_evaluation,
    compare_with_production,
    evaluate_engine_quality,
    find_champion,
    fingerprint_data,
    gate_and_promote,
    ingest_checkpoint,
    prepare_data,
    register_engine,
    resolve_source,
    validate_calibration_data,
)


@pipeline
def engine_pipeline(
    model_name: str,
    source: CheckpointSource,
    submitted_source_path: str,
    calibration: CalibrationConfig,
    evaluation: EvaluationConfig,
    build: BuildConfig,
    benchmark: BenchmarkConfig,
    gates: GateConfig,
    runtime: RuntimeConfig,
    run_config: dict,
    config_hash: str,
    compare_with_run: str | None = None,
) -> None:
    # Resolved on every run (a glob's newest match, an MLflow model version): content-hashed outputs,
    # so unchanged bytes hit the ingest/calibrate/build cache and changed bytes rebuild.
    resolved_source, resolved_fingerprint = resolve_source(source, submitted_source_path, calibration, build)
    checkpoint = ingest_checkpoint(source=resolved_source, source_fingerprint=resolved_fingerprint)
    # Great Expectations on the raw calibration documents; prepare_data refuses a failed suite, so
    # nothing is calibrated, and the result (with its HTML page) is kept either way.
    # The data files' bytes, hashed now: a rewritten file at the same path must not hit the cache.
    calibration_fingerprint, dataset_fingerprint, task_fingerprint = fingerprint_data(
        calibration, benchmark, evaluation
    )
    calibration_data_validation, _ = validate_calibration_data(checkpoint, calibration, calibration_fingerprint)
    calibration_windows, evaluation_windows, data_lineage = prepare_data(
        checkpoint, calibration, evaluation, calibration_data_validation, calibration_fingerprint
    )
    trtllm_checkpoint, _ = calibrate_checkpoint(checkpoint, calibration_windows, calibration)
    # Where build/benchmark/evaluate run (a GPU node, the TensorRT-LLM image) is set by stacks/placement.py.
    engine = build_engine(trtllm_checkpoint, build, checkpoint)
    # The engine runs as it will serve (runtime.served_by): in process, or trtllm-serve / a server process.
    # The production engine (the champion), re-measured beside this one where it can run.
    production_engine = find_champion(model_name)
    benchmark_results, _, _, _ = benchmark_engine(
        engine, checkpoint, benchmark, runtime, model_name, dataset_fingerprint, production_engine, gates
    )
    quality_report, _, _ = evaluate_engine_quality(
        engine,
        checkpoint,
        evaluation_windows,
        data_lineage,
        evaluation,
        runtime,
        model_name,
        champion_for_evaluation(engine, production_engine),
        task_fingerprint,
    )
    registered = register_engine(
        engine,
        checkpoint,
        trtllm_checkpoint,
        data_lineage,
        benchmark_results,
        quality_report,
        run_config,
        config_hash,
        model_name,
    )
    _, compared_production, champion_comparison = compare_with_production(
        registered, benchmark_results, quality_report, gates, compare_with_run
    )
    gate_and_promote(registered, benchmark_results, quality_report, gates, compared_production, champion_comparison)
