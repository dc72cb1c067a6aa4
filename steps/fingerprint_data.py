"""Fingerprint every input data file by content at run time (the data's counterpart of resolve_source)."""

from typing import Annotated

from zenml import log_metadata, step

from foundry.config import BenchmarkConfig, CalibrationConfig, EvaluationConfig
from foundry.data import data_fingerprint
from foundry.task_accuracy import tasks_fingerprint


@step(enable_cache=False)  # must look again on every run: a file at the same path may have been rewritten
def fingerprint_data(
    calibration: CalibrationConfig, benchmark: BenchmarkConfig, evaluation: EvaluationConfig | None = None
) -> tuple[
    Annotated[str, "calibration_data_fingerprint"],
    Annotated[str, "benchmark_dataset_fingerprint"],
    Annotated[str, "task_data_fingerprint"],
]:
    """SHA-256 of the calibration data, the benchmark dataset and the task files (evaluation.tasks).
    The outputs are content-hashed by ZenML, so the steps that take them are cached only while the
    bytes are unchanged."""
    calibration_fingerprint = data_fingerprint(calibration.source, calibration.path)
    dataset_fingerprint = data_fingerprint("file", benchmark.dataset) if benchmark.dataset else "synthetic"
    task_fingerprint = tasks_fingerprint(evaluation.tasks if evaluation else [])
    log_metadata(
        metadata={
            "data_fingerprints": {
                "calibration": {
                    "source": calibration.source,
                    "path": calibration.path or "(builtin)",
                    "sha256": calibration_fingerprint,
                },
                "benchmark_dataset": {
                    "path": benchmark.dataset or "(synthetic workload)",
                    "sha256": dataset_fingerprint,
                },
                "tasks": {
                    "names": [task.name for task in evaluation.tasks] if evaluation else [],
                    "sha256": task_fingerprint,
                },
            }
        }
    )
    return calibration_fingerprint, dataset_fingerprint, task_fingerprint
