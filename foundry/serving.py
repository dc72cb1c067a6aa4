"""An engine as it will serve, opened for the benchmark and the quality evaluation.

`open_engine(...)` is the one place that decides how an engine runs while it is measured
(`runtime.served_by`): in the step's process (the reference engine), or as a managed server process
(foundry/server_process.py) speaking the OpenAI completions API — `trtllm-serve` for TensorRT-LLM
engines, `python -m foundry.bench.server` for the reference engine, or a user-given command for
vLLM / Triton's OpenAI frontend / NIM. Either way it yields a `ServedEngine`: a load-generator
target, a source of greedy continuations for the evaluation, and a description of what served it,
which every report carries. The server is always stopped when the block ends.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from foundry.bench.http_client import OpenAICompletionsClient, OpenAICompletionsTarget
from foundry.config import RuntimeConfig
from foundry.errors import FoundryError
from foundry.generation_quality import InProcessContinuations
from foundry.server_process import NO_PROXY_OPENER, ManagedServer, expand_command, free_port
from foundry.trtllm_serve import REQUEST_EXTRAS, trtllm_serve_argv


@dataclass
class ServedEngine:
    served_by: str  # "in-process reference", "trtllm-serve 1.2.1 (TensorRT backend)", the command
    target: object  # an AsyncTarget (foundry.bench.runner) or an in-process Engine
    continuations: object  # a ContinuationSource (foundry.generation_quality)
    engine_content_hash: str
    server: ManagedServer | None = None
    engine: object | None = None  # the in-process engine, when there is one (teacher-forced metrics)
    details: dict = field(default_factory=dict)

    def require_alive(self, during: str, settle_s: float = 0.0) -> None:
        if self.server is not None:
            self.server.require_alive(during, settle_s)


def _server_argv(
    served_by: str,
    runtime: RuntimeConfig,
    engine_dir: Path,
    tokenizer_dir: Path,
    host: str,
    port: int,
    model_name: str,
    engine_info: dict,
) -> tuple[list[str], str]:
    """The command line and the description of what serves the engine."""
    if served_by == "trtllm_serve":
        argv = trtllm_serve_argv(engine_dir, tokenizer_dir, host, port, engine_info, runtime.trtllm_serve_args)
        return argv, "trtllm-serve (TensorRT backend)"
    if served_by == "foundry_server":
        argv = [
            sys.executable,
            "-m",
            "foundry.bench.server",
            "--engine-dir",
            str(engine_dir),
            "--tokenizer",
            str(tokenizer_dir),
            "--host",
            host,
            "--port",
            str(port),
            "--model-name",
            model_name,
        ]
        return argv, "foundry.bench.server (reference runtime)"
    values = {
        "engine_dir": str(engine_dir),
        "tokenizer_dir": str(tokenizer_dir),
        "host": host,
        "port": str(port),
        "model_name": model_name,
        "python": sys.executable,
    }
    argv = expand_command(runtime.command, values)
    return argv, f"command: {runtime.command}"


def server_version(base_url: str) -> str | None:
    """trtllm-serve's `GET /version` ({"version": "1.2.1"}), None if it does not answer."""
    import json

    try:
        with NO_PROXY_OPENER.open(base_url + "/version", timeout=5) as response:
            return str(json.loads(response.read()).get("version")) or None
    except (OSError, ValueError, AttributeError):
        return None


@contextlib.contextmanager
def open_engine(
    engine_dir: Path,
    engine_info: dict,
    engine_content_hash: str,
    runtime: RuntimeConfig,
    tokenizer_dir: Path,
    log_path: Path,
    model_name: str,
    eos_ids=(),
    device: str | None = None,
    host: str = "127.0.0.1",
) -> Iterator[ServedEngine]:
    """The engine as `runtime.served_by` says, for the duration of the block."""
    try:
        served_by = runtime.resolved_for(engine_info["backend"])
    except ValueError as error:
        raise FoundryError(str(error)) from None
    if served_by == "in_process":
        from foundry.builders import load_engine

        engine = load_engine(engine_dir, device=device)
        try:
            yield ServedEngine(
                served_by=f"in-process {engine.backend}",
                target=engine,
                continuations=InProcessContinuations(engine, eos_ids),
                engine_content_hash=engine_content_hash,
                engine=engine,
            )
        finally:  # stop its scheduler thread, which holds the weights and the KV pool
            getattr(engine, "close", lambda: None)()
        return
    port = runtime.port or free_port(host)
    argv, description = _server_argv(served_by, runtime, engine_dir, tokenizer_dir, host, port, model_name, engine_info)
    server = ManagedServer(
        argv,
        port,
        log_path,
        host=host,
        startup_timeout_s=runtime.startup_timeout_s,
        shutdown_grace_s=runtime.shutdown_grace_s,
    )
    # Token ids instead of text: trtllm-serve and foundry.bench.server both take it; a user's server may not.
    extras = {} if served_by == "command" else dict(REQUEST_EXTRAS)
    with server:
        if served_by == "trtllm_serve":
            description = f"trtllm-serve {server_version(server.base_url) or '1.2.x'} (TensorRT backend)"
        client = OpenAICompletionsClient(
            server.base_url,
            model=model_name,
            timeout_s=runtime.request_timeout_s,
            served_by=description,
            extra_body=extras,
        )
        target = OpenAICompletionsTarget(
            server.base_url,
            model=model_name,
            timeout_s=runtime.request_timeout_s,
            backend=engine_info["backend"],
            extra_body=extras,
        )
        yield ServedEngine(
            served_by=description,
            target=target,
            continuations=client,
            engine_content_hash=engine_content_hash,
            server=server,
            details={"argv": argv, "port": port, "startup_s": server.startup_s},
        )


def tokenizer_dir_of(engine_dir: Path, engine_info: dict, checkpoint_dir: Path) -> Path:
    """A TensorRT-LLM engine carries its tokenizer (tokenizer/, written by build_engine); a reference
    engine is read with the ingested checkpoint's."""
    own = Path(engine_dir) / "tokenizer"
    return own if engine_info.get("backend") == "trtllm" and own.is_dir() else Path(checkpoint_dir)


def server_log_text(log_path: Path) -> str:
    """The server's log for the step's artifact (an in-process engine has none)."""
    return log_path.read_text(errors="replace") if log_path.is_file() else "(in process: no server was started)"
