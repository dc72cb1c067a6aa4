"""A TensorRT-LLM engine through the whole pipeline, at TensorRT-LLM's process boundary (no TensorRT-LLM
here): `python run.py` with build.backend trtllm on a described H100 node (fake NVML + tensorrt_llm
1.2.1 metadata on PYTHONPATH), the fake trtllm-build and the fake trtllm-serve (their 1.2.x command
lines from tests/fixtures) first on PATH. The fake server executes the engine's stored checkpoint
with the reference runtime, so the benchmark and the quality numbers are real.

One state directory for the module: the first run registers, gates and promotes; `export-triton`
exports that version; then each failure (server never healthy, server dies mid-benchmark, port
taken, fewer tokens streamed than asked) ends in a clear error, nothing promoted, no process left.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from foundry.registry import Registry, sqlite_tracking_uri
from tests.trtllm_fakes import install_fake_node, install_fake_trtllm_build, install_fake_trtllm_serve

ROOT = Path(__file__).resolve().parents[1]
MODEL = "tiny-trtllm"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_llama_hf_dir):
    root = tmp_path_factory.mktemp("trtllm-e2e")
    bin_dir = root / "bin"
    install_fake_trtllm_build(bin_dir)
    install_fake_trtllm_serve(bin_dir)
    node = install_fake_node(root / "node")
    env = {
        **os.environ,
        "FOUNDRY_STATE_DIR": str(root / "state"),
        "PYTHONUNBUFFERED": "1",
        "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": f"{node}{os.pathsep}{ROOT}",
        "FAKE_TRTLLM_ARGV_LOG": str(root / "build-argv.json"),
        "FAKE_TRTLLM_SERVE_ARGV_LOG": str(root / "serve-argv.jsonl"),
        "FAKE_TRTLLM_MODE": "ok",
        "FAKE_TRTLLM_VERSION": "1.2.1",
    }
    env.pop("ZENML_CONFIG_PATH", None)
    return root, env, tiny_llama_hf_dir


def config_file(root: Path, source_dir: Path, name: str, **runtime) -> Path:
    config = {
        "model": {"name": MODEL, "source": {"kind": "hf_dir", "path": str(source_dir)}},
        "calibration": {"num_samples": 4, "seq_len": 32, "alpha": 0.8},
        "evaluation": {
            "num_samples": 2,
            "seq_len": 32,
            "generation_prompts": 2,
            "generation_prompt_len": 8,
            "generation_tokens": 4,
            "top_logprobs": 1,
        },
        "build": {"backend": "trtllm", "max_seq_len": 128, "max_batch_size": 4, "max_num_tokens": 512},
        "runtime": {"served_by": "trtllm_serve", "startup_timeout_s": 120, "shutdown_grace_s": 5, **runtime},
        "benchmark": {
            "num_requests": 2,
            "warmup_requests": 0,
            "input_len": {"min": 8, "max": 12},
            "output_len": {"min": 3, "max": 4},
            "concurrency": [1],
            "baseline": False,
            "telemetry": False,
        },
        # random weights: the relative gates only (the sanity gate would rightly refuse this model)
        "gates": {
            "max_perplexity_ratio": None,
            "max_mean_kld": None,
            "min_top1_agreement": None,
            "min_token_agreement": 0.5,
            "max_continuation_perplexity_ratio": 1.5,
        },
    }
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def run_cli(env: dict, *args: str, extra_env: dict | None = None, timeout_s: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "run.py"), *args],
        cwd=ROOT,
        env={**env, **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def fake_servers_running(root: Path) -> list[str]:
    """Command lines of any process still running the fake trtllm-serve of this workspace."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            text = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root / "bin" / "trtllm-serve") in text:
            found.append(text)
    return found


@pytest.fixture(scope="module")
def promoted(workspace):
    root, env, source = workspace
    result = run_cli(env, "--config", str(config_file(root, source, "ok")), "--run-name", "trtllm-ok")
    return root, env, source, result


def test_trtllm_engine_is_served_benchmarked_evaluated_and_promoted(promoted):
    root, env, _, result = promoted
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-6000:]
    assert "PROMOTED" in result.stdout and "trtllm-serve 1.2.1 (TensorRT backend)" in result.stdout
    registry = Registry(sqlite_tracking_uri(root / "state"))
    assert registry.production_version(MODEL) == "1"
    tags = registry.version_tags(MODEL, "1")
    assert tags["backend"] == "trtllm" and tags["served_by"] == "trtllm-serve 1.2.1 (TensorRT backend)"
    quality = json.loads(
        Path(
            registry.client.download_artifacts(
                registry.client.get_model_version(MODEL, "1").run_id, "reports/quality.json", str(root)
            )
        ).read_text()
    )
    assert quality["engine_backend"] == "trtllm" and quality["engine_content_hash"] == tags["engine_content_hash"]
    assert quality["perplexity_ratio"] is None  # no logits from a served TensorRT engine
    generation = quality["generation"]
    assert generation["served_by"].startswith("trtllm-serve") and generation["sampled_logprob_gap"] is not None
    # the fake executes the stored checkpoint with the reference runtime: its greedy tokens are the
    # quantized engine's, compared with the unquantized model's for real
    assert 0.0 <= generation["token_agreement"] <= 1.0 and generation["engine_tokens"] == 2 * 4
    argv = [json.loads(line) for line in (root / "serve-argv.jsonl").read_text().splitlines()]
    assert len(argv) == 2  # the benchmark step and the evaluation step each served the engine
    assert argv[0][:1] == ["serve"] and "--backend" in argv[0] and argv[0][argv[0].index("--backend") + 1] == "tensorrt"
    assert fake_servers_running(root) == []


def test_export_triton_exports_the_promoted_version(promoted):
    root, env, _, result = promoted
    assert result.returncode == 0
    out = root / "triton-repo"
    exported = run_cli(env, "export-triton", "--model", MODEL, "--out", str(out), "--target-node", "1.2.1@9.0")
    assert exported.returncode == 0, exported.stdout[-3000:] + exported.stderr[-3000:]
    assert "exported tiny-trtllm version 1" in exported.stdout
    assert (out / "tensorrt_llm" / "config.pbtxt").is_file() and (out / "ensemble" / "config.pbtxt").is_file()


@pytest.mark.parametrize(
    "case, runtime, extra_env, fragments",
    [
        (
            "never-healthy",
            {"startup_timeout_s": 8},
            {"FAKE_TRTLLM_SERVE_MODE": "never_healthy"},
            ["did not answer", "/health", "within 8 s", "this fake never finishes"],
        ),
        (
            "dies-mid-benchmark",
            {},
            {"FAKE_TRTLLM_SERVE_MODE": "die_after:1"},
            ["died during the benchmark", "exit code 1"],
        ),
    ],
)
def test_a_failing_server_promotes_nothing_and_leaves_no_process(promoted, case, runtime, extra_env, fragments):
    root, env, source, first = promoted
    assert first.returncode == 0
    result = run_cli(
        env,
        "--config",
        str(config_file(root, source, case, **runtime)),
        "--run-name",
        f"trtllm-{case}",
        extra_env=extra_env,
    )
    message = result.stderr
    assert result.returncode in (2, 4), result.stdout[-3000:] + message[-3000:]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message[-3000:]}"
    assert "Traceback" not in message
    registry = Registry(sqlite_tracking_uri(root / "state"))
    assert registry.production_version(MODEL) == "1"  # unchanged
    assert fake_servers_running(root) == []


@pytest.fixture()
def promoted_engine(promoted, monkeypatch):
    """The promoted engine's directory and info, with the fake trtllm-serve on this process's PATH."""
    root, env, _, result = promoted
    assert result.returncode == 0
    registry = Registry(sqlite_tracking_uri(root / "state"))
    engine_dir = Path(registry.client.get_model_version(MODEL, "1").source)
    monkeypatch.setenv("PATH", env["PATH"])
    monkeypatch.setenv("PYTHONPATH", env["PYTHONPATH"])
    return root, engine_dir, json.loads((engine_dir / "engine.json").read_text())


def test_a_server_streaming_fewer_tokens_fails_those_requests(promoted_engine, monkeypatch, tmp_path):
    from foundry.bench.session import LoadPlan, run_session
    from foundry.bench.workload import synthetic_workload_with_description
    from foundry.config import RuntimeConfig
    from foundry.serving import open_engine

    root, engine_dir, info = promoted_engine
    monkeypatch.setenv("FAKE_TRTLLM_SERVE_MODE", "short_stream")
    requests, workload = synthetic_workload_with_description(0, 2, 0, 6, 8, 4, 4, vocab_size=1000)
    opened = open_engine(
        engine_dir,
        info,
        "h",
        RuntimeConfig(served_by="trtllm_serve", startup_timeout_s=120),
        engine_dir / "tokenizer",
        tmp_path / "serve.log",
        MODEL,
    )
    results = run_session(opened, requests, workload, LoadPlan([1], 0, telemetry=False), MODEL)
    level = results.engine.levels[0]
    assert (level.completed, level.failed) == (0, 2)
    assert any("usage.completion_tokens=4 but 3 tokens were streamed" in error for error in level.errors), level.errors
    assert fake_servers_running(root) == []


def test_a_taken_port_is_refused_with_the_fix(promoted_engine, tmp_path):
    from foundry.config import RuntimeConfig
    from foundry.server_process import ServerStartError
    from foundry.serving import open_engine

    root, engine_dir, info = promoted_engine
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        runtime = RuntimeConfig(served_by="trtllm_serve", port=port) if port >= 1024 else pytest.skip("privileged port")
        with pytest.raises(ServerStartError, match=f"port {port} on 127.0.0.1 is already in use.*runtime.port"):
            with open_engine(engine_dir, info, "h", runtime, engine_dir / "tokenizer", tmp_path / "s.log", MODEL):
                pass
    assert fake_servers_running(root) == []
