"""`trtllm-serve` of TensorRT-LLM 1.2.x serving a built engine: its command line and what it answers.

The contract, read from upstream's sources (tensorrt_llm/commands/serve.py, serve/openai_server.py,
serve/openai_protocol.py; kept as tests/fixtures/trtllm_serve_1_2_cli.json, which the fake
trtllm-serve of the tests parses its argv with):

* `trtllm-serve serve MODEL --backend tensorrt --tokenizer DIR --host H --port P ...`: MODEL is the
  engine directory (recognised by a config.json with `pretrained_config` and `build_config`, loaded
  by `tensorrt_llm._tensorrt_engine.LLM`; the engine's build config wins). The tokenizer directory
  must hold the HF `config.json` too: the server reads the model type from it.
* `--max_batch_size` / `--max_num_tokens` default to 2048 / 8192 and still reach the executor for an
  engine, so the engine's own values are passed; tp/pp must match the engine's mapping.
* HTTP is up only once the engine has loaded; `GET /health` answers 200 (empty body), `/version`
  `{"version": "1.2.1"}`. Requests are validated with `extra="forbid"`: an unknown field is a 400.
* `/v1/completions` returns token ids only with `detokenize: false`. On the TensorRT backend,
  `logprobs: 1` gives the sampled token's logprob only (`top_logprobs: []`); `logprobs > 1` is a 400
  unless the engine gathers generation logits (`gather_generation_logits: true` in `--config`).
"""

from __future__ import annotations

from pathlib import Path

from foundry.errors import FoundryError

EXECUTABLE = "trtllm-serve"
# Every `serve` option of 1.2.x (primary name first, then its aliases); user extras are checked against it.
SERVE_FLAGS: dict[str, tuple[str, ...]] = {
    "--tokenizer": (),
    "--custom_tokenizer": (),
    "--host": (),
    "--port": (),
    "--backend": (),
    "--custom_module_dirs": (),
    "--log_level": (),
    "--max_beam_width": (),
    "--max_batch_size": (),
    "--max_num_tokens": (),
    "--max_seq_len": (),
    "--tensor_parallel_size": ("--tp_size",),
    "--pipeline_parallel_size": ("--pp_size",),
    "--context_parallel_size": ("--cp_size",),
    "--moe_expert_parallel_size": ("--ep_size",),
    "--moe_cluster_parallel_size": ("--cluster_size",),
    "--gpus_per_node": (),
    "--free_gpu_memory_fraction": ("--kv_cache_free_gpu_memory_fraction",),
    "--num_postprocess_workers": (),
    "--trust_remote_code": (),
    "--revision": (),
    "--config": ("--extra_llm_api_options",),
    "--reasoning_parser": (),
    "--tool_parser": (),
    "--metadata_server_config_file": (),
    "--server_role": (),
    "--fail_fast_on_attention_window_too_large": (),
    "--otlp_traces_endpoint": (),
    "--disagg_cluster_uri": (),
    "--enable_chunked_prefill": (),
    "--media_io_kwargs": (),
    "--chat_template": (),
}
# Set by the pipeline from the engine and the managed process; a user extra may not override them.
MANAGED_FLAGS = (
    "--tokenizer",
    "--host",
    "--port",
    "--backend",
    "--max_batch_size",
    "--max_num_tokens",
    "--max_beam_width",
    "--tensor_parallel_size",
    "--pipeline_parallel_size",
)
# Sent with every request: trtllm-serve streams token ids only when it does not detokenize.
REQUEST_EXTRAS = {"detokenize": False}


def _primary(flag: str) -> str | None:
    name = flag.split("=", 1)[0]
    for primary, aliases in SERVE_FLAGS.items():
        if name == primary or name in aliases:
            return primary
    return None


def check_extra_args(extra_args: list[str]) -> None:
    """User-given trtllm-serve flags must exist in 1.2.x and must not fight the managed ones."""
    for arg in extra_args:
        if not arg.startswith("--"):
            continue
        primary = _primary(arg)
        if primary is None:
            raise FoundryError(
                f"runtime.trtllm_serve_args: {arg.split('=', 1)[0]} is not a trtllm-serve 1.2.x option "
                f"(tensorrt_llm/commands/serve.py); options: {', '.join(SERVE_FLAGS)}"
            )
        if primary in MANAGED_FLAGS:
            raise FoundryError(
                f"runtime.trtllm_serve_args: {primary} is set by the pipeline from the engine "
                "(and the managed port); remove it"
            )


def trtllm_serve_argv(
    engine_dir: Path, tokenizer_dir: Path, host: str, port: int, engine_info: dict, extra_args: list[str] = ()
) -> list[str]:
    """The command line that serves `engine_dir` with the TensorRT backend."""
    check_extra_args(list(extra_args))
    if not (Path(tokenizer_dir) / "config.json").is_file():
        raise FoundryError(
            f"{tokenizer_dir}: no config.json; trtllm-serve 1.2.x reads the model type from the "
            "tokenizer directory of an engine — rebuild the engine (build_engine stores it)"
        )
    return [
        EXECUTABLE,
        "serve",
        str(engine_dir),
        "--backend",
        "tensorrt",
        "--tokenizer",
        str(tokenizer_dir),
        "--host",
        host,
        "--port",
        str(port),
        "--max_batch_size",
        str(engine_info.get("max_batch_size", 1)),
        "--max_num_tokens",
        str(
            (engine_info.get("engine_build_config") or {}).get("max_num_tokens")
            or (engine_info.get("build_config") or {}).get("max_num_tokens")
            or 8192
        ),
        "--max_beam_width",
        str(engine_info.get("max_beam_width", 1)),
        "--tensor_parallel_size",
        str(engine_info.get("tp_size", 1)),
        "--pipeline_parallel_size",
        str(engine_info.get("pp_size", 1)),
        "--log_level",
        "info",
        *extra_args,
    ]
