"""Load generator and metrics for engine benchmarks (MLPerf/AIPerf metric definitions).

Importable with torch + transformers + pydantic + numpy + pandas only (no zenml/mlflow), so
`python -m foundry.bench` runs on the GPU machine as is.
"""

from foundry.bench.metrics import (
    BenchmarkReport,
    ComparisonRow,
    LatencyStats,
    LevelSummary,
    MachineInfo,
    RequestRecord,
    compare_reports,
    load_records_csv,
    load_report_json,
    save_records_csv,
    save_report_json,
)
from foundry.bench.runner import ConcurrencyLoad, run_benchmark
from foundry.bench.workload import Request, WorkloadDescription, synthetic_workload

__all__ = [
    "BenchmarkReport",
    "ComparisonRow",
    "ConcurrencyLoad",
    "LatencyStats",
    "LevelSummary",
    "MachineInfo",
    "Request",
    "RequestRecord",
    "WorkloadDescription",
    "compare_reports",
    "load_records_csv",
    "load_report_json",
    "run_benchmark",
    "save_records_csv",
    "save_report_json",
    "synthetic_workload",
]
