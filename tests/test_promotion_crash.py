"""A run killed between the MLflow alias move and the ZenML stage move: the journaled intent is
found by `status` and finished by `status --repair`, so the two registries agree again.

Runs `python run.py` on the tiny random Llama in a subprocess with FOUNDRY_PAUSE_BETWEEN_MOVES_S
(the injectable pause), SIGKILLs it inside the pause, then uses the CLI as an operator would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from foundry.promotion import PAUSE_ENV
from foundry.registry import Registry, sqlite_tracking_uri
from tests.test_rebuild_cache import run_cli, tiny_config

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-rebuild"

pytestmark = pytest.mark.slow


def test_a_kill_between_the_two_moves_is_detected_and_repaired(tmp_path, tiny_llama_hf_dir):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config({"kind": "hf_dir", "path": str(tiny_llama_hf_dir)})))
    state = tmp_path / "state"
    env = {**os.environ, "FOUNDRY_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1", PAUSE_ENV: "300"}
    env.pop("ZENML_CONFIG_PATH", None)
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "run.py"), "--config", str(config)],
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

    registry = Registry(sqlite_tracking_uri(state))
    assert registry.production_version(MODEL) == "1"  # MLflow moved, ZenML did not
    detected = run_cli(state, "status")
    assert detected.returncode == 1, detected.stdout + detected.stderr
    assert "INTERRUPTED production move to version 1" in detected.stdout and "status --repair" in detected.stdout

    repaired = run_cli(state, "status", "--repair")
    assert "finished the interrupted move of tiny-rebuild to version 1" in repaired.stdout, (
        repaired.stdout + repaired.stderr
    )
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert "ZenML production = model version 1 (MLflow version 1)" in repaired.stdout
    assert registry.version_tags(MODEL, "1")["gate"] == "passed"
    assert run_cli(state, "status").returncode == 0
