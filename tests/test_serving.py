"""The served-engine path on real processes: ManagedServer, the reference engine behind
foundry.bench.server through open_engine (the same path a trtllm-serve engine takes), and the
trtllm-serve 1.2.x command line against its contract fixture."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from foundry.bench.session import LoadPlan, already_open, run_session
from foundry.bench.workload import synthetic_workload_with_description
from foundry.builders.reference import ReferenceBuilder
from foundry.calibrate import calibrate_to_trtllm_checkpoint
from foundry.config import BuildConfig, CalibrationConfig, RuntimeConfig
from foundry.errors import FoundryError, InfrastructureError
from foundry.generation_quality import InProcessContinuations, evaluate_generation
from foundry.runtime.hf import HFEngine
from foundry.server_process import ManagedServer, ServerStartError, expand_command, free_port
from foundry.serving import open_engine
from foundry.trtllm_serve import MANAGED_FLAGS, SERVE_FLAGS, check_extra_args, trtllm_serve_argv

FIXTURE = Path(__file__).parent / "fixtures" / "trtllm_serve_1_2_cli.json"


def _pid_alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


def test_a_server_that_never_listens_fails_with_its_log_and_is_killed(tmp_path):
    script = "import sys, time; print('loading weights ...', flush=True); time.sleep(120)"
    server = ManagedServer(
        [sys.executable, "-c", script], free_port(), tmp_path / "server.log", startup_timeout_s=2, shutdown_grace_s=1
    )
    with pytest.raises(ServerStartError, match="did not answer .*/health with 200 within 2 s") as caught:
        server.start()
    assert "loading weights ..." in str(caught.value)
    assert server.process is None and not _pid_alive(server.pid)


def test_a_server_that_exits_at_start_names_its_exit_code(tmp_path):
    server = ManagedServer(
        [sys.executable, "-c", "import sys; print('CUDA error: no device'); sys.exit(3)"],
        free_port(),
        tmp_path / "server.log",
        startup_timeout_s=30,
    )
    with pytest.raises(ServerStartError, match="exited with code 3 before it was healthy") as caught:
        server.start()
    assert "CUDA error: no device" in str(caught.value)


def test_sigterm_is_escalated_to_sigkill(tmp_path):
    """A server that ignores SIGTERM is killed after the grace period; no process remains."""
    script = (
        "import signal, http.server, sys\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n        self.send_response(200); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
    )
    port = free_port()
    with ManagedServer(
        [sys.executable, "-c", script, str(port)], port, tmp_path / "s.log", startup_timeout_s=30, shutdown_grace_s=1
    ) as server:
        pid = server.process.pid
        assert server.alive()
    assert not _pid_alive(pid)


def test_a_server_dying_as_its_clients_fail_is_named_once_it_has_exited(tmp_path):
    """Clients see the connection drop before the dying server has exited (later on a loaded
    machine): require_alive waits up to settle_s for the exit, then names it."""
    script = (
        "import http.server, os, sys, threading\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n        self.send_response(200); self.end_headers()\n"
        "    def log_message(self, *a): pass\n"
        "threading.Timer(3.0, lambda: os._exit(1)).start()\n"
        "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n"
    )
    port = free_port()
    with ManagedServer(
        [sys.executable, "-c", script, str(port)], port, tmp_path / "s.log", startup_timeout_s=30
    ) as server:
        server.require_alive("the benchmark")  # not dead yet: no wait, no error
        with pytest.raises(InfrastructureError, match="died during the benchmark with exit code 1"):
            server.require_alive("the benchmark", settle_s=30)


def test_command_templates_name_unknown_placeholders():
    assert expand_command("vllm serve {engine_dir} --port {port}", {"engine_dir": "/e", "port": "9"}) == [
        "vllm",
        "serve",
        "/e",
        "--port",
        "9",
    ]
    with pytest.raises(FoundryError, match=r"unknown placeholder 'gpu'"):
        expand_command("serve --gpu {gpu}", {"engine_dir": "/e"})


def test_trtllm_serve_argv_uses_only_1_2_flags_and_the_engine_values(tmp_path):
    spec = json.loads(FIXTURE.read_text())["flags"]
    known = {name for flag, meta in spec.items() for name in [flag, *meta.get("aliases", [])]}
    assert {flag for flag in SERVE_FLAGS} == set(spec), "foundry/trtllm_serve.py and the fixture disagree"
    (tmp_path / "tok").mkdir()
    (tmp_path / "tok" / "config.json").write_text("{}")
    info = {"max_batch_size": 16, "engine_build_config": {"max_num_tokens": 4096}, "tp_size": 2, "pp_size": 1}
    argv = trtllm_serve_argv(
        tmp_path / "engine", tmp_path / "tok", "127.0.0.1", 8123, info, ["--free_gpu_memory_fraction", "0.8"]
    )
    assert argv[:3] == ["trtllm-serve", "serve", str(tmp_path / "engine")]
    flags = [a for a in argv if a.startswith("--")]
    assert set(flags) <= known
    assert argv[argv.index("--backend") + 1] == "tensorrt" and argv[argv.index("--max_batch_size") + 1] == "16"
    assert argv[argv.index("--max_num_tokens") + 1] == "4096" and argv[argv.index("--tensor_parallel_size") + 1] == "2"
    for flag, value in (("--backend", "choices"), ("--log_level", "choices")):
        assert argv[argv.index(flag) + 1] in spec[flag][value]
    with pytest.raises(FoundryError, match="--max_batch_sizes is not a trtllm-serve 1.2.x option"):
        check_extra_args(["--max_batch_sizes", "4"])
    with pytest.raises(FoundryError, match="--port is set by the pipeline"):
        check_extra_args(["--port", "9"])
    assert set(MANAGED_FLAGS) <= set(SERVE_FLAGS)
    with pytest.raises(FoundryError, match="no config.json"):
        trtllm_serve_argv(tmp_path / "engine", tmp_path, "127.0.0.1", 1, info)


@pytest.fixture(scope="module")
def reference_engine_dir(tiny_fp16_exact_dir, smollm2_tokenizer, tmp_path_factory) -> Path:
    """The tiny Llama calibrated (SmoothQuant) and built by the reference builder."""
    from foundry import data

    root = tmp_path_factory.mktemp("served-reference")
    windows = data.token_windows(data.builtin_documents("calibration"), smollm2_tokenizer, 4, 32, "calibration")
    calibrate_to_trtllm_checkpoint(tiny_fp16_exact_dir, CalibrationConfig(alpha=0.8), windows.input_ids, root / "ckpt")
    ReferenceBuilder().build(root / "ckpt", root / "engine", BuildConfig(max_seq_len=128))
    return root / "engine"


def test_reference_engine_behind_foundry_server_matches_it_in_process(
    reference_engine_dir, tiny_fp16_exact_dir, tiny_llama_hf_dir, smollm2_tokenizer, tmp_path
):
    """Same engine, same prompts: the served continuations are the in-process ones, token for token,
    and a benchmark session through the server completes every request."""
    info = json.loads((reference_engine_dir / "engine.json").read_text())
    unquantized = HFEngine.load(tiny_fp16_exact_dir)
    prompts = [
        [int(t) for t in torch.randint(10, 1000, (8,), generator=torch.Generator().manual_seed(s))] for s in range(2)
    ]
    runtime = RuntimeConfig(served_by="foundry_server", startup_timeout_s=120)
    eos = [smollm2_tokenizer.eos_token_id]
    with open_engine(
        reference_engine_dir, info, "hash-x", runtime, tiny_llama_hf_dir, tmp_path / "server.log", "tiny", eos_ids=eos
    ) as served:
        served_quality = evaluate_generation(served.continuations, unquantized, prompts, 5, top_logprobs=3, eos_ids=eos)
        pid = served.server.process.pid
        assert served.served_by == "foundry.bench.server (reference runtime)"
    assert not _pid_alive(pid)
    from foundry.builders import load_engine

    local = InProcessContinuations(load_engine(reference_engine_dir), eos)
    local_quality = evaluate_generation(local, unquantized, prompts, 5, top_logprobs=3, eos_ids=eos)
    for field in ("token_agreement", "exact_match_rate", "first_divergence_mean"):
        assert getattr(served_quality, field) == getattr(local_quality, field), field
    assert served_quality.trajectory_kld == pytest.approx(local_quality.trajectory_kld, abs=1e-6)
    assert served_quality.sampled_logprob_gap == pytest.approx(local_quality.sampled_logprob_gap, abs=1e-6)

    requests, workload = synthetic_workload_with_description(0, 2, 0, 6, 8, 3, 3, vocab_size=len(smollm2_tokenizer))
    opened = open_engine(
        reference_engine_dir, info, "hash-x", runtime, tiny_llama_hf_dir, tmp_path / "bench.log", "tiny", eos_ids=eos
    )
    results = run_session(
        opened, requests, workload, LoadPlan(concurrency=[1], warmup_requests=0, telemetry=False), "tiny"
    )
    assert results.served_by == "foundry.bench.server (reference runtime)" and results.engine_content_hash == "hash-x"
    assert results.engine.levels[0].completed == 2 and results.engine.served_by == results.served_by


def test_an_in_process_session_says_so():
    from foundry.bench.synthetic import SyntheticEngine

    engine = SyntheticEngine(ttft_ms=1, itl_ms=1)
    requests, workload = synthetic_workload_with_description(0, 2, 0, 4, 4, 2, 2, vocab_size=100)
    results = run_session(already_open(engine), requests, workload, LoadPlan([1], 0, telemetry=False), "synthetic")
    assert results.served_by == f"in-process {engine.backend}" and results.engine.levels[0].completed == 2


def test_trtllm_engines_cannot_run_in_process():
    with pytest.raises(ValueError, match="cannot run a TensorRT-LLM engine"):
        RuntimeConfig(served_by="in_process").resolved_for("trtllm")
    assert RuntimeConfig().resolved_for("trtllm") == "trtllm_serve"
    assert RuntimeConfig().resolved_for("reference") == "in_process"
