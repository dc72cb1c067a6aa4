"""Directory artifacts that flow between pipeline steps: checkpoints and engines.

Each is a local directory holding its files and a foundry manifest (per-file SHA-256 and a
content hash). ZenML's materializer in materializers/ stores and verifies them; these classes stay
free of ZenML so foundry/ runs where ZenML is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from foundry.hashing import read_manifest, write_manifest


@dataclass
class ModelDirectory:
    path: Path
    # Set when loaded from an artifact store: where the bytes live (MLflow versions point here).
    artifact_uri: str | None = None
    # True when `path` is a scratch directory the materializer may move instead of copy.
    scratch: bool = field(default=False, compare=False)
    kind: ClassVar[str] = "directory"

    def __post_init__(self) -> None:
        self.path = Path(self.path)

    @property
    def manifest(self) -> dict:
        return read_manifest(self.path)

    @property
    def content_hash(self) -> str:
        return self.manifest["content_hash"]

    def seal(self, extra: dict | None = None) -> dict:
        """Hash the files and write the manifest; call once the directory is complete."""
        return write_manifest(self.path, {"kind": self.kind, **(extra or {})})


class HFCheckpoint(ModelDirectory):
    """A normalized Hugging Face checkpoint: config.json, model.safetensors, tokenizer files."""

    kind = "hf_checkpoint"


class TrtllmCheckpoint(ModelDirectory):
    """A TensorRT-LLM checkpoint: config.json + rank{N}.safetensors (input of trtllm-build)."""

    kind = "trtllm_checkpoint"


class EngineArtifact(ModelDirectory):
    """A built engine: engine.json (backend, versions) plus the backend's files."""

    kind = "engine"
