"""Fingerprint every input data file by content at run time (the data's counterpart of resolve_source)."""

from typing import Annotated

from zenml import log_metadata, step

from foundry.config import BenchmarkConfig, CalibrationConfig
from foundry.data import data_fingerprint


@step(enable_cache=False)  # must look again on every run: a file at the same path may have been rewritten
def fingerprint_data(
    calibration: CalibrationConfig, benchmark: BenchmarkConfig
) -> tuple[Annotated[str, "calibration_data_fingerprint"], Annotated[str, "benchmark_dataset_fingerprint"]]:
    """SHA-256 of the calibration data and the benchmark dataset. Both outputs are content-hashed by
    ZenML, so the steps that take them are cached only while the bytes are unchanged."""
    calibration_fingerprint = data_fingerprint(calibration.source, calibration.path)
    dataset_fingerprint = data_fingerprint("file", benchmark.dataset) if benchmark.dataset else "synthetic"
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
            }
        }
    )
    return calibration_fingerprint, dataset_fingerprint
