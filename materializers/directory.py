"""Materializer for checkpoint and engine directories.

Not the built-in Path materializer: that one tar.gz's the whole directory (slow for multi-GB
engines and twice the disk). Here each file is streamed into the artifact store as is, the
foundry manifest (per-file SHA-256) travels with it, the content hash feeds ZenML's cache so
identical bytes hit the cache, and loading re-hashes every file and refuses a tampered one.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from zenml.enums import ArtifactType, VisualizationType
from zenml.io import fileio
from zenml.materializers.base_materializer import BaseMaterializer

from foundry.artifacts import EngineArtifact, HFCheckpoint, ModelDirectory, TrtllmCheckpoint
from foundry.hashing import MANIFEST_NAME, list_files, verify_manifest, write_manifest

_COPY_CHUNK_BYTES = 16 * 1024 * 1024


def _stream_copy(src_open, dst_open) -> None:
    with src_open() as src, dst_open() as dst:
        shutil.copyfileobj(src, dst, length=_COPY_CHUNK_BYTES)


class ModelDirectoryMaterializer(BaseMaterializer):
    ASSOCIATED_TYPES: ClassVar[tuple[type[Any], ...]] = (HFCheckpoint, TrtllmCheckpoint, EngineArtifact)
    ASSOCIATED_ARTIFACT_TYPE: ClassVar[ArtifactType] = ArtifactType.MODEL

    def _is_local_store(self) -> bool:
        return Path(self.uri).is_absolute() and "://" not in self.uri

    def save(self, data: ModelDirectory) -> None:
        if not (data.path / MANIFEST_NAME).is_file():
            write_manifest(data.path, {"kind": data.kind})
        fileio.makedirs(self.uri)
        for rel in list_files(data.path) + [MANIFEST_NAME]:
            target = f"{self.uri}/{rel}"
            fileio.makedirs(target.rsplit("/", 1)[0])
            source = data.path / rel
            if data.scratch and self._is_local_store():
                shutil.move(source, target)  # same machine: a rename, no second copy on disk
            else:
                _stream_copy(lambda: open(source, "rb"), lambda: self.artifact_store.open(target, "wb"))
        if data.scratch and self._is_local_store():
            shutil.rmtree(data.path, ignore_errors=True)  # now empty: every file was moved
            data.path = Path(self.uri)

    def load(self, data_type: type[ModelDirectory]) -> ModelDirectory:
        if self._is_local_store():
            local = Path(self.uri)
        else:
            local = Path(tempfile.mkdtemp(prefix=f"foundry-{data_type.kind}-"))
            self._download(local)
        verify_manifest(local)  # refuses missing, extra or modified files, naming them
        return data_type(path=local, artifact_uri=self.uri)

    def _download(self, local: Path) -> None:
        manifest = json.loads(self.artifact_store.open(f"{self.uri}/{MANIFEST_NAME}", "r").read())
        for rel in list(manifest["files"]) + [MANIFEST_NAME]:
            (local / rel).parent.mkdir(parents=True, exist_ok=True)
            _stream_copy(lambda: self.artifact_store.open(f"{self.uri}/{rel}", "rb"), lambda: open(local / rel, "wb"))

    def compute_content_hash(self, data: ModelDirectory) -> str | None:
        return data.content_hash

    def extract_metadata(self, data: ModelDirectory) -> dict[str, Any]:
        manifest = data.manifest
        total_bytes = sum((data.path / rel).stat().st_size for rel in manifest["files"] if (data.path / rel).exists())
        facts = {k: v for k, v in manifest.items() if k != "files"}
        return {**facts, "num_files": len(manifest["files"]), "total_size_mb": round(total_bytes / 2**20, 2)}

    def save_visualizations(self, data: ModelDirectory) -> dict[str, VisualizationType]:
        manifest = data.manifest
        rows = "\n".join(f"| `{rel}` | `{digest[:16]}…` |" for rel, digest in sorted(manifest["files"].items()))
        facts = "\n".join(
            f"- **{k}**: `{v}`" for k, v in sorted(manifest.items()) if isinstance(v, (str, int, float, bool))
        )
        text = f"# {data.kind}\n\n{facts}\n\n| file | SHA-256 |\n|---|---|\n{rows}\n"
        uri = f"{self.uri}/{MANIFEST_NAME}.md"  # not hashed: see hashing.list_files
        with self.artifact_store.open(uri, "w") as handle:
            handle.write(text)
        return {uri: VisualizationType.MARKDOWN}
