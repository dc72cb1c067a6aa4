"""Bad inputs through `python run.py`, one per class: each is refused with exit 2, the message names
the file / field / tensor and the fix, it is refused before ZenML starts (no pipeline run) where only
metadata is needed, and nothing is registered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from foundry.registry import Registry, sqlite_tracking_uri
from tests.test_rebuild_cache import run_cli, tiny_config


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_llama_hf_dir):
    root = tmp_path_factory.mktemp("bad-inputs")
    short = Path(shutil.copytree(tiny_llama_hf_dir, root / "short-context"))
    config = json.loads((short / "config.json").read_text())
    config["max_position_embeddings"] = 64
    (short / "config.json").write_text(json.dumps(config))
    (root / "latin1.txt").write_bytes("caf\xe9 au lait\n\nnoch ein Absatz".encode("latin-1"))
    (root / "long.jsonl").write_text(
        json.dumps({"task_id": 0, "input_ids": list(range(5, 605)), "output_tokens": 8}) + "\n"
    )
    return root, tiny_llama_hf_dir, short


def _config(root: Path, source_dir: Path, name: str, **sections) -> Path:
    config = tiny_config({"kind": "hf_dir", "path": str(source_dir)})
    for key, value in sections.items():
        config[key] = {**config.get(key, {}), **value}
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


CASES = {
    "duplicate key": (
        lambda root, ok, short: _write(root, "dup", "calibration:\n  num_samples: 4\n  num_samples: 8\n"),
        ["key 'num_samples' is given twice"],
    ),
    "boolean alpha": (
        lambda root, ok, short: _config(root, ok, "alpha", calibration={"alpha": True}),
        ["calibration.alpha", "boolean"],
    ),
    "empty config": (lambda root, ok, short: _write(root, "empty", "\n"), ["the config is empty"]),
    "context too long": (
        lambda root, ok, short: _config(root, short, "ctx", build={"max_seq_len": 128}),
        ["build.max_seq_len: 128 exceeds max_position_embeddings 64", "config.json"],
    ),
    "non-UTF-8 calibration": (
        lambda root, ok, short: _config(
            root, ok, "latin", calibration={"source": "text", "path": str(root / "latin1.txt")}
        ),
        ["latin1.txt", "not UTF-8", "offset 3", "iconv"],
    ),
    "dataset over max_seq_len": (
        lambda root, ok, short: _config(
            root, ok, "long", benchmark={"dataset": str(root / "long.jsonl"), "num_requests": 1}
        ),
        ["long.jsonl", "request 0", "600 prompt + 8 output", "build.max_seq_len 128"],
    ),
}


def _write(root: Path, name: str, text: str) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_refused_before_any_work(workspace, case, tmp_path):
    root, ok, short = workspace
    make, fragments = CASES[case]
    state = tmp_path / "state"
    result = run_cli(state, "--config", str(make(root, ok, short)))
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr[-2000:]}"
    assert "Traceback" not in result.stderr + result.stdout
    assert "Initiating a new run" not in result.stdout, "refused only inside the pipeline"
    assert not (state / "mlflow.db").exists() or not Registry(sqlite_tracking_uri(state)).model_names()
