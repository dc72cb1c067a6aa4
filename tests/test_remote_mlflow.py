"""Remote MLflow for real: `mlflow server` on 127.0.0.1 in a subprocess, and registration, the
comparison metrics and promotion/rollback (foundry/registry.py + foundry/promotion.py) over HTTP."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest

from foundry.config import GateConfig
from foundry.gates import evaluate_gates
from foundry.promotion import promote_if_passed
from foundry.registry import Registry


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"mlflow server did not start: {(root / 'server.log').read_text()[-3000:]}")
        time.sleep(0.5)
    yield url
    os.killpg(process.pid, 15)
    process.wait(timeout=30)
    log.close()


def passed_decision(ratio: float):
    return evaluate_gates(GateConfig(max_mean_kld=None, min_top1_agreement=None), {"perplexity_ratio": ratio})


def test_register_compare_promote_and_roll_back_over_http(server):
    registry = Registry(server)
    assert registry.tracking_uri.startswith("http://127.0.0.1:")
    mlflow.set_tracking_uri(server)
    mlflow.set_experiment("remote-test")
    versions = []
    for ratio in (1.02, 1.01):
        with mlflow.start_run() as run:
            mlflow.log_metrics({"perplexity_ratio": ratio, "ttft_p99_ms": 10.0})
        versions.append(
            registry.register_engine(
                "remote-engine", f"s3://bucket/engines/{ratio}", run.info.run_id, {"engine_content_hash": f"h{ratio}"}
            ).version
        )
    assert versions == ["1", "2"]
    assert registry.version_tags("remote-engine", "1")["engine_content_hash"] == "h1.02"
    assert registry.version_run_metrics("remote-engine", "1")["perplexity_ratio"] == pytest.approx(1.02)

    first = promote_if_passed(registry, "remote-engine", "1", passed_decision(1.02), lambda: None)
    assert first.promoted and registry.production_version("remote-engine") == "1"

    def second_registry_fails():
        raise RuntimeError("ZenML stage move failed")

    with pytest.raises(RuntimeError):
        promote_if_passed(registry, "remote-engine", "2", passed_decision(1.01), second_registry_fails)
    assert registry.production_version("remote-engine") == "1", "alias rolled back over HTTP"

    failed = promote_if_passed(registry, "remote-engine", "2", passed_decision(1.5), lambda: None)
    assert not failed.promoted and registry.version_tags("remote-engine", "2")["gate"] == "failed"
    promoted = promote_if_passed(registry, "remote-engine", "2", passed_decision(1.01), lambda: None)
    assert promoted.promoted and promoted.previous_production == "1"
    assert registry.production_version("remote-engine") == "2"
    assert [v.version for v in registry.list_versions("remote-engine")] == ["1", "2"]


def test_mlflow_model_source_without_tracking_uri_resolves_in_the_stack_registry(
    server, tiny_llama_hf_dir, tmp_path, monkeypatch, request
):
    """An mlflow_model source without tracking_uri on a stack whose MLflow is remote (artifacts in the
    server's store, as a training pipeline logs them): preflight and the pipeline's resolve_source
    step both ask that registry, never the local SQLite one. Preflight only looks (nothing is
    downloaded); the step fetches, checks and hashes the checkpoint once. Without a registry to
    ask, preflight says how to give one."""
    import importlib

    import yaml

    from foundry.checkpoint import source_fingerprint
    from foundry.config import BuildConfig, CalibrationConfig, CheckpointSource
    from foundry.errors import FoundryError
    from foundry.preflight import run_preflight

    state = tmp_path / "state"
    monkeypatch.setenv("FOUNDRY_STATE_DIR", str(state))  # its local SQLite registry stays empty
    mlflow.set_tracking_uri(server)
    mlflow.set_experiment("training")
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(tiny_llama_hf_dir), artifact_path="checkpoint")
    registry = Registry(server)
    registry.ensure_registered_model("trained-on-remote")
    registry.client.create_model_version(
        "trained-on-remote", source=f"{run.info.artifact_uri}/checkpoint", run_id=run.info.run_id
    )
    registry.client.set_registered_model_alias("trained-on-remote", "latest-trained", "1")
    source = {"kind": "mlflow_model", "registered_model": "trained-on-remote", "alias": "latest-trained"}
    config_file = tmp_path / "run.yaml"
    config_file.write_text(yaml.safe_dump({"model": {"source": source}, "build": {"max_seq_len": 512}}))

    checked = run_preflight(config_file, base_dir=tmp_path, stack_tracking_uri=lambda: server)
    assert checked.submitted_source_path == "" and not (state / "downloads").exists()
    with pytest.raises(FoundryError, match="needs a registry; set model.source.tracking_uri"):
        run_preflight(config_file, base_dir=tmp_path)

    from zenml.utils import source_utils

    # ZenML resolves step sources from the main module's folder; a pytest-xdist worker's has no file
    source_utils.set_custom_source_root(str(Path(__file__).resolve().parents[1]))
    request.addfinalizer(lambda: source_utils.set_custom_source_root(None))
    resolve_step = importlib.import_module("steps.resolve_source")  # the module (steps/ exports the step by that name)
    monkeypatch.setattr(resolve_step, "stack_tracking_uri", lambda: server)
    logged = []
    monkeypatch.setattr(resolve_step, "log_metadata", lambda metadata: logged.append(metadata))
    resolved, fingerprint = resolve_step.resolve_source.entrypoint(
        CheckpointSource(**source), checked.submitted_source_path, CalibrationConfig(), BuildConfig(max_seq_len=512)
    )
    assert resolved.kind == "hf_dir" and resolved.path == str(state / "downloads" / "trained-on-remote-v1")
    assert fingerprint == source_fingerprint(CheckpointSource(kind="hf_dir", path=str(tiny_llama_hf_dir)))
    assert logged[0]["checkpoint_source"]["changed_since_submission"] is False
