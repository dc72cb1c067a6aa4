"""ZenML steps: thin adapters from artifacts to foundry/ calls, metadata and visualizations."""

from steps.benchmark import benchmark_engine
from steps.build import build_engine
from steps.calibrate import calibrate_checkpoint
from steps.champion import champion_for_evaluation, find_champion
from steps.compare import compare_with_production
from steps.data import prepare_data
from steps.evaluate import evaluate_engine_quality
from steps.fingerprint_data import fingerprint_data
from steps.ingest import ingest_checkpoint
from steps.promote import gate_and_promote
from steps.register import register_engine
from steps.resolve_source import resolve_source
from steps.validate_data import validate_calibration_data

__all__ = [
    "benchmark_engine",
    "build_engine",
    "calibrate_checkpoint",
    "compare_with_production",
    "evaluate_engine_quality",
    "champion_for_evaluation",
    "find_champion",
    "fingerprint_data",
    "gate_and_promote",
    "ingest_checkpoint",
    "prepare_data",
    "register_engine",
    "resolve_source",
    "validate_calibration_data",
]
