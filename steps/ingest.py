from typing import Annotated

from zenml import log_metadata, step

from foundry import checkpoint
from foundry.artifacts import HFCheckpoint
from foundry.config import CheckpointSource
from foundry.state import scratch_dir
from materializers import ModelDirectoryMaterializer


@step(output_materializers=ModelDirectoryMaterializer)
def ingest_checkpoint(source: CheckpointSource, source_fingerprint: str) -> Annotated[HFCheckpoint, "checkpoint"]:
    """Validate the resolved checkpoint and normalize it to HF safetensors with a hashed manifest.

    `source_fingerprint` (SHA-256 of the source bytes, computed once by resolve_source) enters the
    cache key: same bytes → cache hit, changed bytes → re-ingest; ingest records it, never rehashes.
    """
    out = scratch_dir("checkpoint")
    manifest = checkpoint.ingest_checkpoint(source, out, source_fingerprint)
    log_metadata(
        metadata={
            "checkpoint": {
                "content_hash": manifest.content_hash,
                "source_fingerprint": source_fingerprint,
                "architecture": manifest.architecture,
                "parameter_count": manifest.parameter_count,
                "dtype": manifest.dtype,
            }
        }
    )
    return HFCheckpoint(path=out, scratch=True)
