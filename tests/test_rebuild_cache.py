"""Scheduled rebuilds resolve the checkpoint afresh: a glob picks the newest checkpoint each run;
unchanged bytes → ingest, calibrate and build come from the cache; changed bytes → a rebuild.
Also an MLflow-registry source (a registered model version) resolved to its checkpoint.

Runs `python run.py` in a subprocess on the tiny random Llama (fast) with its own state dir.
"""

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file, save_file

from foundry.checkpoint import resolve_checkpoint_source, source_fingerprint
from foundry.config import CheckpointSource, parse_config
from foundry.errors import FoundryError
from foundry.registry import Registry, sqlite_tracking_uri

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-rebuild"
TASK = ROOT / "configs" / "tasks" / "everyday_facts.jsonl"
EXPENSIVE = ("ingest_checkpoint", "calibrate_checkpoint", "build_engine")
DATA_DEPENDENT = ("validate_calibration_data", "prepare_data", "calibrate_checkpoint", "build_engine")


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


def tiny_config(source: dict, calibration_text: Path | None = None) -> dict:
    data = {"source": "text", "path": str(calibration_text)} if calibration_text else {}
    return {
        "model": {"name": MODEL, "source": source},
        "calibration": {"num_samples": 4, "seq_len": 32, **data},
        # the shipped task rides along: every run scores it, and a re-measured champion on its items too
        "evaluation": {
            "num_samples": 2,
            "seq_len": 32,
            "tasks": [{"name": "everyday_facts", "path": str(TASK), "limit": 10}],
        },
        "build": {"backend": "reference", "max_seq_len": 128},
        "benchmark": {
            "num_requests": 2,
            "warmup_requests": 0,
            "input_len": {"min": 8, "max": 12},
            "output_len": {"min": 2, "max": 4},
            "concurrency": [1],
            "baseline": False,
            "champion_rounds": 6,  # enough for an interval; the verdict is not what this test checks
        },
        "gates": {
            **{k: None for k in ("max_perplexity_ratio", "max_mean_kld", "min_top1_agreement")},
            # a random tiny model scores near chance: judge flips and the champion pairing, not the score
            "min_task_score_pct_of_unquantized": None,
            "max_task_flips": 20,
            "max_quality_regression": {"task_score": 0.5},
        },
    }


def perturbed_copy(src: Path, dst: Path) -> None:
    """Same model, one weight changed: new content, so a rebuild is due."""
    shutil.copytree(src, dst)
    weights = dst / "model.safetensors"
    tensors = load_file(weights)
    tensors["model.norm.weight"] = tensors["model.norm.weight"] * 1.5
    save_file(tensors, weights, metadata={"format": "pt"})


def write_calibration_text(path: Path, topic: str) -> None:
    path.write_text(
        "\n\n".join(f"Note {i} on {topic}: a calibration paragraph about {topic}, number {i}." for i in range(40))
    )


def cached_steps(result: subprocess.CompletedProcess) -> str:
    assert result.returncode in (0, 3), result.stdout[-4000:] + result.stderr[-4000:]
    # the summary wraps at 120 columns: read up to the next table
    return " ".join(re.search(r"steps cached: (.*?)\n\s*Identity", result.stdout, re.S).group(1).split())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_llama_hf_dir):
    root = tmp_path_factory.mktemp("rebuild")
    checkpoints = root / "checkpoints"
    checkpoints.mkdir()
    shutil.copytree(tiny_llama_hf_dir, checkpoints / "run-001")
    write_calibration_text(root / "calibration.txt", "rivers")
    config = root / "tiny.yaml"
    config.write_text(
        yaml.safe_dump(
            tiny_config(
                {"kind": "hf_dir", "path": str(checkpoints / "run-*")}, calibration_text=root / "calibration.txt"
            )
        )
    )
    return root, checkpoints, config


def test_glob_picks_the_newest_match(tmp_path, tiny_llama_hf_dir):
    for age_s, name in ((100, "b-old"), (0, "a-new")):  # copytree keeps the source's mtime: set it
        shutil.copytree(tiny_llama_hf_dir, tmp_path / name)
        os.utime(tmp_path / name, (time.time() - age_s, time.time() - age_s))
    (tmp_path / "c-file").write_text("not a directory")
    resolved = resolve_checkpoint_source(CheckpointSource(kind="hf_dir", path=str(tmp_path / "*")))
    assert resolved.path == str(tmp_path / "a-new")
    with pytest.raises(FoundryError, match="matches no directories"):
        resolve_checkpoint_source(CheckpointSource(kind="hf_dir", path=str(tmp_path / "zzz-*")))


def test_mlflow_model_source_resolves_the_registered_version(tmp_path, tiny_llama_hf_dir):
    registry = Registry(sqlite_tracking_uri(tmp_path / "mlflow"))
    registry.ensure_registered_model("trained-llama")
    registry.client.create_model_version("trained-llama", source=str(tiny_llama_hf_dir))
    registry.client.set_registered_model_alias("trained-llama", "latest-trained", "1")
    source = CheckpointSource(
        kind="mlflow_model",
        registered_model="trained-llama",
        alias="latest-trained",
        tracking_uri=registry.tracking_uri,
    )
    resolved = resolve_checkpoint_source(source)
    assert (resolved.kind, resolved.path) == ("hf_dir", str(tiny_llama_hf_dir))
    assert source_fingerprint(resolved) == source_fingerprint(
        CheckpointSource(kind="hf_dir", path=str(tiny_llama_hf_dir))
    )
    with pytest.raises(FoundryError, match="is not resolved yet.*resolve_checkpoint_source"):
        source_fingerprint(source)  # hashed once, after resolving: never a second lookup
    missing = source.model_copy(update={"alias": "nope"})
    with pytest.raises(FoundryError, match="no model 'trained-llama' with alias 'nope'"):
        resolve_checkpoint_source(missing)


def test_mlflow_model_source_fields_are_validated():
    with pytest.raises(FoundryError, match="exactly one of alias or version"):
        parse_config({"model": {"source": {"kind": "mlflow_model", "registered_model": "m"}}})
    with pytest.raises(FoundryError, match="only apply to kind 'mlflow_model'"):
        parse_config({"model": {"source": {"kind": "hf_dir", "path": "/x", "alias": "a"}}})


@pytest.mark.slow
def test_unchanged_content_is_cached_and_changed_content_rebuilds(workspace, tmp_path_factory):
    root, checkpoints, config = workspace
    state = tmp_path_factory.mktemp("rebuild-state")
    first = run_cli(state, "--config", str(config), "--run-name", "rebuild-1")
    assert not any(step in cached_steps(first) for step in EXPENSIVE)

    unchanged = cached_steps(run_cli(state, "--config", str(config), "--run-name", "rebuild-2"))
    for step in EXPENSIVE:
        assert step in unchanged, unchanged

    # The calibration file rewritten at the same path: its bytes are in the cache key, so everything
    # that reads it runs again (the checkpoint is unchanged: ingest stays cached).
    write_calibration_text(root / "calibration.txt", "mountains")
    third = run_cli(state, "--config", str(config), "--run-name", "rebuild-3")
    new_data = cached_steps(third)
    # a new engine against production's: the champion is re-measured and scored on the task's items
    assert "re-measured in" in third.stdout and "task_score[everyday_facts]" in third.stdout, third.stdout[-7000:]
    assert "ingest_checkpoint" in new_data, new_data
    for step in DATA_DEPENDENT:
        assert step not in new_data, new_data

    perturbed_copy(checkpoints / "run-001", checkpoints / "run-002")
    os.utime(checkpoints / "run-001", (time.time() - 100, time.time() - 100))  # run-002 is the newest match
    changed = cached_steps(run_cli(state, "--config", str(config), "--run-name", "rebuild-4"))
    for step in EXPENSIVE:
        assert step not in changed, changed

    registry = Registry(sqlite_tracking_uri(state))
    v1, v2, v3, v4 = (registry.version_tags(MODEL, v) for v in ("1", "2", "3", "4"))
    first_metrics = registry.client.get_run(registry.client.get_model_version(MODEL, "1").run_id).data.metrics
    third_metrics = registry.client.get_run(registry.client.get_model_version(MODEL, "3").run_id).data.metrics
    assert "task everyday_facts flips" in first.stdout, first.stdout[-4000:]
    assert 0.0 <= first_metrics["task_everyday_facts_engine_score"] <= 1.0
    assert "task_everyday_facts_champion_score" not in first_metrics  # nothing in production yet
    assert 0.0 <= third_metrics["task_everyday_facts_champion_score"] <= 1.0
    assert v1["checkpoint_source_fingerprint"] == v2["checkpoint_source_fingerprint"]
    assert v1["calibration_data_hash"] == v2["calibration_data_hash"]
    assert v3["calibration_data_hash"] != v2["calibration_data_hash"], "the tag must name the data actually used"
    assert v3["checkpoint_source_fingerprint"] == v2["checkpoint_source_fingerprint"]
    assert v4["checkpoint_source_fingerprint"] != v3["checkpoint_source_fingerprint"]
    assert v4["engine_content_hash"] != v3["engine_content_hash"]
