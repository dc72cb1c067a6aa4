"""Per-file SHA-256 manifests and content hashes for checkpoint / engine directories."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from foundry.errors import ArtifactTamperedError, FoundryError

MANIFEST_NAME = "foundry-manifest.json"
_CHUNK_BYTES = 8 * 1024 * 1024


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def sha256_json(obj: object) -> str:
    """Hash of a JSON-serialisable object with sorted keys (stable across runs)."""
    return sha256_text(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str))


def list_files(directory: Path) -> list[str]:
    """Relative POSIX paths of every regular file, sorted, excluding the manifest and its views."""
    return sorted(
        p.relative_to(directory).as_posix()
        for p in directory.rglob("*")
        if p.is_file() and not p.name.startswith(MANIFEST_NAME)
    )


def file_hashes(directory: Path) -> dict[str, str]:
    return {rel: sha256_file(directory / rel) for rel in list_files(directory)}


def content_hash(hashes: dict[str, str]) -> str:
    """One hash over (relative path, file hash) pairs: identical bytes give the identical key."""
    return sha256_json(sorted(hashes.items()))


def write_manifest(directory: Path, extra: dict | None = None) -> dict:
    """Hash every file in `directory` and write the manifest next to them."""
    hashes = file_hashes(directory)
    manifest = {"files": hashes, "content_hash": content_hash(hashes), **(extra or {})}
    (directory / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def read_manifest(directory: Path) -> dict:
    path = directory / MANIFEST_NAME
    if not path.is_file():
        raise FoundryError(f"{path}: manifest missing; this directory was not written by foundry")
    return json.loads(path.read_text())


def verify_manifest(directory: Path) -> dict:
    """Re-hash every file and refuse any difference from the manifest, naming the file."""
    manifest = read_manifest(directory)
    expected = manifest["files"]
    actual_files = set(list_files(directory))
    missing = sorted(set(expected) - actual_files)
    extra = sorted(actual_files - set(expected))
    rebuild = "rebuild it: run again with --no-cache (a cached run would reuse the damaged artifact)"
    if missing:
        raise ArtifactTamperedError(f"{directory}: files listed in the manifest are missing: {missing}; {rebuild}")
    if extra:
        raise ArtifactTamperedError(f"{directory}: files not in the manifest (tampered?): {extra}; {rebuild}")
    for rel, want in expected.items():
        got = sha256_file(directory / rel)
        if got != want:
            raise ArtifactTamperedError(
                f"{directory / rel}: SHA-256 {got[:12]}… does not match the manifest's {want[:12]}…; "
                f"the file was modified after it was written — {rebuild}"
            )
    return manifest
