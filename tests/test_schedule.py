"""Scheduled rebuilds: cron is validated first; a stack whose orchestrator ignores schedules (the
local one) is refused with the orchestrators that support them, and nothing runs."""

import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

from foundry.errors import FoundryError, NotSupportedError
from foundry.schedule import SCHEDULE_ORCHESTRATORS, next_fire_times, require_schedule_support, validate_cron

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    "expression, expected", [("0 2 * * *", "0 2 * * *"), ("  */15  * * * mon-fri ", "*/15 * * * mon-fri")]
)
def test_valid_cron_is_normalized(expression, expected):
    assert validate_cron(expression) == expected


@pytest.mark.parametrize(
    "expression, message",
    [
        ("0 2 * *", "has 5 fields"),
        ("0 0 2 * * *", "got 6"),
        ("61 2 * * *", "bad field: minute='61'"),
        ("0 25 * * *", "bad field: hour='25'"),
        ("0 2 * * funday", "day-of-week"),
        ("", "got 0"),
    ],
)
def test_invalid_cron_names_the_problem_and_an_example(expression, message):
    with pytest.raises(FoundryError, match="0 2 \\* \\* \\*") as error:
        validate_cron(expression)
    assert message in str(error.value)


def test_next_fire_times_follow_the_expression():
    start = datetime(2026, 1, 1, 3, 0, tzinfo=timezone.utc)
    assert [t.isoformat() for t in next_fire_times("0 2 * * *", 2, start)] == [
        "2026-01-02T02:00:00+00:00",
        "2026-01-03T02:00:00+00:00",
    ]


def test_local_orchestrator_is_refused_naming_those_that_schedule():
    require_schedule_support("kubernetes", "k8s")  # fine
    with pytest.raises(NotSupportedError) as error:
        require_schedule_support("local", "foundry-local")
    for flavor in SCHEDULE_ORCHESTRATORS:
        assert flavor in str(error.value)
    assert "foundry-local" in str(error.value) and "stack register kubernetes-gpu" in str(error.value)


@pytest.fixture(scope="module")
def state_env(tmp_path_factory):
    state = tmp_path_factory.mktemp("schedule-state")
    env = {**os.environ, "FOUNDRY_STATE_DIR": str(state)}
    env.pop("ZENML_CONFIG_PATH", None)
    return env


def cli(env, *args):
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600
    )


def test_cli_refuses_invalid_cron_before_anything_else(state_env):
    result = cli(state_env, "schedule", "--cron", "0 2 * *", "--config", "configs/smoke.yaml")
    assert result.returncode == 2 and "has 5 fields" in result.stderr


def test_cli_refuses_the_local_orchestrator_and_runs_nothing(state_env):
    result = cli(state_env, "schedule", "--cron", "0 2 * * *", "--config", "configs/smoke.yaml")
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    assert "ignores schedules" in result.stderr and "kubernetes" in result.stderr and "airflow" in result.stderr
    assert "Pipeline run" not in result.stdout + result.stderr  # not run once silently
