"""The directory materializer through ZenML's real local artifact store, in a subprocess so the
test's ZenML store is its own (ZENML_CONFIG_PATH must be set before zenml is imported)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from zenml.artifact_stores import LocalArtifactStore, LocalArtifactStoreConfig
    from zenml.enums import StackComponentType
    from foundry.artifacts import EngineArtifact
    from foundry.errors import FoundryError
    from materializers import ModelDirectoryMaterializer
    from datetime import datetime
    from uuid import uuid4

    work = Path(sys.argv[1])
    store = LocalArtifactStore(
        name="t", id=uuid4(), config=LocalArtifactStoreConfig(path=str(work / "store")), flavor="local",
        type=StackComponentType.ARTIFACT_STORE, user=uuid4(), created=datetime.now(), updated=datetime.now(),
    )
    src = work / "engine"
    (src / "sub").mkdir(parents=True)
    (src / "engine.json").write_text('{"backend": "reference"}')
    (src / "sub" / "rank0.safetensors").write_bytes(bytes(range(256)) * 1000)
    artifact = EngineArtifact(path=src)
    artifact.seal()

    uri = str(work / "store" / "engine_artifact")
    materializer = ModelDirectoryMaterializer(uri=uri, artifact_store=store)
    materializer.save(artifact)
    assert materializer.compute_content_hash(artifact) == artifact.content_hash
    meta = materializer.extract_metadata(artifact)
    assert meta["num_files"] == 2, meta
    materializer.save_visualizations(artifact)

    loaded = materializer.load(EngineArtifact)
    assert loaded.content_hash == artifact.content_hash and loaded.artifact_uri == uri
    assert (Path(uri) / "sub" / "rank0.safetensors").read_bytes() == bytes(range(256)) * 1000
    assert not list(Path(uri).glob("*.tar.gz")), "no tarball"

    (Path(uri) / "sub" / "rank0.safetensors").write_bytes(b"tampered")
    try:
        materializer.load(EngineArtifact)
    except FoundryError as error:
        assert "sub/rank0.safetensors" in str(error) and "does not match the manifest" in str(error), error
    else:
        raise AssertionError("a tampered file was loaded")

    # scratch directories are moved, not copied, into a local store
    scratch = work / "scratch"
    scratch.mkdir()
    (scratch / "config.json").write_text("{}")
    moved = EngineArtifact(path=scratch, scratch=True)
    moved.seal()
    ModelDirectoryMaterializer(uri=str(work / "store" / "moved"), artifact_store=store).save(moved)
    assert not scratch.exists() and moved.path == work / "store" / "moved"
    print("OK")
    """
)


def test_materializer_round_trip_hash_and_tamper_refusal(tmp_path):
    env = {
        **os.environ,
        "ZENML_CONFIG_PATH": str(tmp_path / "zenml"),
        "ZENML_ANALYTICS_OPT_IN": "false",
        "PYTHONPATH": str(ROOT),
    }
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0 and "OK" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]


def test_manifest_refuses_missing_and_extra_files(tmp_path):
    import pytest

    from foundry.errors import FoundryError
    from foundry.hashing import verify_manifest, write_manifest

    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "b.bin").write_bytes(b"b")
    write_manifest(tmp_path)
    verify_manifest(tmp_path)
    (tmp_path / "c.bin").write_bytes(b"c")
    with pytest.raises(FoundryError, match="c.bin"):
        verify_manifest(tmp_path)
    (tmp_path / "c.bin").unlink()
    (tmp_path / "a.bin").unlink()
    with pytest.raises(FoundryError, match="a.bin"):
        verify_manifest(tmp_path)
