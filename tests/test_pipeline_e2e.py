"""The whole pipeline as a user runs it: `python run.py --config ...` in a subprocess, on CPU,
with the real model, real ZenML (local stack), real MLflow (SQLite) and real ModelOpt.

One state directory for the module: first run promotes, second run is served from the cache,
a run whose gates fail registers its version but promotes nothing and exits 3.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from foundry.registry import Registry, sqlite_tracking_uri

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "configs" / "smoke.yaml"
MODEL = "smollm2-smoke"

pytestmark = pytest.mark.slow


def run_cli(state_dir: Path, *args: str, timeout_s: int = 900) -> subprocess.CompletedProcess:
    env = {**os.environ, "FOUNDRY_STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1"}
    env.pop("ZENML_CONFIG_PATH", None)
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("foundry-state")


@pytest.fixture(scope="module")
def registry(state_dir) -> Registry:
    return Registry(sqlite_tracking_uri(state_dir))


@pytest.fixture(scope="module")
def first_run(state_dir):
    return run_cli(state_dir, "--config", str(SMOKE), "--run-name", "e2e-first")


def test_first_run_promotes_and_prints_the_summary(first_run, registry):
    out = first_run.stdout
    assert first_run.returncode == 0, first_run.stdout[-4000:] + first_run.stderr[-4000:]
    for expected in (
        "Identity",
        "Benchmark",
        "TTFT p99 ms",
        "Quality",
        "perplexity ratio",
        "top-1 agreement",
        "Gates",
        "PROMOTED",
    ):
        assert expected in out
    assert registry.production_version(MODEL) == "1"
    tags = registry.version_tags(MODEL, "1")
    for key in ("checkpoint_content_hash", "calibration_data_hash", "config_hash", "zenml_run_id", "version.torch"):
        assert tags[key], key
    version = registry.client.get_model_version(MODEL, "1")
    assert Path(version.source).is_dir(), "the model version points at the engine artifact, not a copy"
    assert (Path(version.source) / "engine.json").is_file()


def test_mlflow_run_artifacts_stay_in_the_state_dir(first_run, state_dir):
    reports = list((state_dir / "mlflow-artifacts").rglob("reports/quality.json"))
    assert reports, "MLflow artifacts must live under the state dir, not ./mlruns of the working directory"


def test_second_run_reuses_ingest_calibrate_and_build(first_run, state_dir, registry):
    second = run_cli(state_dir, "--config", str(SMOKE), "--run-name", "e2e-cached")
    assert second.returncode == 0, second.stdout[-4000:] + second.stderr[-4000:]
    cached_line = re.search(r"steps cached: (.*)", second.stdout).group(1)
    # the evaluation too: production (v1) holds this very engine, so its input says "no champion"
    for step in (
        "ingest_checkpoint",
        "prepare_data",
        "calibrate_checkpoint",
        "build_engine",
        "evaluate_engine_quality",
    ):
        assert step in cached_line
    for step in ("benchmark_engine", "register_engine", "gate_and_promote"):  # measure and act anew
        assert step not in cached_line
    # Same engine bytes → same source; a new version is registered and promoted again.
    v1, v2 = (registry.client.get_model_version(MODEL, v) for v in ("1", "2"))
    assert v1.tags["engine_content_hash"] == v2.tags["engine_content_hash"]


def test_failed_gate_registers_but_does_not_promote(first_run, state_dir, registry, tmp_path):
    strict = yaml.safe_load(SMOKE.read_text())
    strict["gates"]["min_top1_agreement"] = 0.9999  # int8 SmoothQuant never agrees on every token
    path = tmp_path / "strict.yaml"
    path.write_text(yaml.safe_dump(strict))
    before = registry.production_version(MODEL)
    result = run_cli(state_dir, "--config", str(path), "--run-name", "e2e-strict")
    assert result.returncode == 3, result.stdout[-4000:] + result.stderr[-4000:]
    assert "NOT PROMOTED" in result.stdout and "top1_agreement" in result.stdout
    assert registry.production_version(MODEL) == before
    newest = registry.list_versions(MODEL)[-1]
    assert newest.tags["gate"] == "failed"


def test_invalid_config_fails_before_any_work(state_dir, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("calibration: {alpha: 2.0}\n")
    result = run_cli(state_dir, "--config", str(bad))
    assert result.returncode == 2
    assert "calibration.alpha" in result.stderr and str(bad) in result.stderr
    assert "Pipeline run" not in result.stdout


def test_missing_checkpoint_fails_before_any_work(state_dir, tmp_path):
    config = tmp_path / "missing.yaml"
    config.write_text(yaml.safe_dump({"model": {"source": {"kind": "gguf", "path": str(tmp_path / "nope.gguf")}}}))
    result = run_cli(state_dir, "--config", str(config))
    assert result.returncode == 2
    assert "nope.gguf" in result.stderr


def test_trtllm_backend_refuses_on_a_node_without_tensorrt_llm(state_dir, tmp_path):
    config = tmp_path / "trt.yaml"
    config.write_text(yaml.safe_dump({"build": {"backend": "trtllm"}}))
    result = run_cli(state_dir, "--config", str(config))
    assert result.returncode == 2
    assert "tensorrt_llm is not installed" in result.stderr


def test_bad_data_found_inside_a_step_names_the_step_and_the_fix(first_run, state_dir, tmp_path):
    config = yaml.safe_load(SMOKE.read_text())
    config["evaluation"] = {"num_samples": 5000, "seq_len": 256}
    path = tmp_path / "too-much-eval.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli(state_dir, "--config", str(path))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "step prepare_data failed" in result.stderr and "lower evaluation.num_samples" in result.stderr


def test_forced_promotion_rollback_and_history(first_run, state_dir, registry, tmp_path):
    """Operations on production after the runs above (v1 promoted, v2 promoted by the cached run,
    v3 registered with failed gates): each move keeps MLflow and ZenML together and is recorded."""
    failed = next(v.version for v in registry.list_versions(MODEL) if v.tags.get("gate") == "failed")
    before = registry.production_version(MODEL)
    forced = run_cli(
        state_dir, "promote", "--model", MODEL, "--version", str(failed), "--reason", "hotfix for ticket 42"
    )
    assert forced.returncode == 0, forced.stdout + forced.stderr
    assert registry.production_version(MODEL) == str(failed)

    back = run_cli(state_dir, "rollback", "--model", MODEL, "--reason", "hotfix regressed p99")
    assert back.returncode == 0, back.stdout + back.stderr
    assert registry.production_version(MODEL) == before
    agree = run_cli(state_dir, "status")  # both moves kept MLflow and ZenML together
    assert agree.returncode == 0 and f"(MLflow version {before})" in agree.stdout, agree.stdout

    history = run_cli(state_dir, "history", "--model", MODEL)
    assert history.returncode == 0, history.stderr
    lines = history.stdout.splitlines()
    assert any("promote (gates passed)" in line and "gate passed" in line for line in lines)
    assert any(
        "promote (forced, gates bypassed)" in line
        and f"v{before} → v{failed}" in line
        and "hotfix for ticket 42" in line
        for line in lines
    )
    assert any(line.split()[1] == "rollback" and f"v{failed} → v{before}" in line for line in lines)
    assert "@" in lines[-2] and f"production now: v{before}" in lines[-1]

    unknown = run_cli(state_dir, "promote", "--model", MODEL, "--version", "999", "--reason", "x")
    assert unknown.returncode == 2 and "has no version 999" in unknown.stderr
    missing_reason = run_cli(state_dir, "rollback", "--model", MODEL)
    assert missing_reason.returncode == 2 and "--reason" in missing_reason.stderr


def test_a_kill_between_the_two_moves_is_detected_and_repaired(first_run, state_dir, registry):
    """A (cached) run SIGKILLed inside the injectable pause between the MLflow alias move and the
    ZenML stage move: `status` finds the journaled intent, `status --repair` finishes it."""
    import os
    import signal
    import time

    from foundry.promotion import PAUSE_ENV

    env = {**os.environ, "FOUNDRY_STATE_DIR": str(state_dir), "PYTHONUNBUFFERED": "1", PAUSE_ENV: "300"}
    env.pop("ZENML_CONFIG_PATH", None)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "--config", str(SMOKE), "--run-name", "e2e-killed"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline, seen = time.monotonic() + 600, []
    for line in process.stdout:
        seen.append(line)
        if "between the MLflow and the ZenML move" in line or time.monotonic() > deadline:
            break
    assert "between the MLflow and the ZenML move" in seen[-1], "".join(seen[-40:])
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    moved_to = registry.list_versions(MODEL)[-1].version  # MLflow moved, ZenML did not
    assert registry.production_version(MODEL) == str(moved_to)

    detected = run_cli(state_dir, "status")
    assert detected.returncode == 1, detected.stdout + detected.stderr
    assert (
        f"INTERRUPTED production move to version {moved_to}" in detected.stdout and "status --repair" in detected.stdout
    )
    repaired = run_cli(state_dir, "status", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert f"finished the interrupted move of {MODEL} to version {moved_to}" in repaired.stdout
    assert f"(MLflow version {moved_to})" in repaired.stdout
    assert registry.version_tags(MODEL, str(moved_to))["gate"] == "passed"
