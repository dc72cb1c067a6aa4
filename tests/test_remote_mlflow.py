"""Remote MLflow for real: `mlflow server` on 127.0.0.1 in a subprocess, and registration, the
comparison metrics and promotion/rollback (foundry/registry.py + foundry/promotion.py) over HTTP."""

import os
import socket
import subprocess
import sys
import time
import urllib.request

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
