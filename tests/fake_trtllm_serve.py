"""A fake `trtllm-serve` (TensorRT-LLM 1.2.x) for tests at its process boundary; no TensorRT-LLM here.

It parses its command line with the 1.2.x `serve` options from tests/fixtures/trtllm_serve_1_2_cli.json
(aliases included) and exits 2 on any other, as click does. It accepts only what the real one
accepts for an engine: MODEL an engine directory (config.json with pretrained_config and
build_config), `--backend tensorrt`, a tokenizer directory holding config.json. It serves the
routes and shapes of tensorrt_llm/serve/openai_server.py: `/health` (200, empty body; HTTP only
once the "engine" has loaded), `/version`, `/v1/models`, `/v1/completions` (non-streaming and SSE,
token_ids only with `detokenize: false`, the usage chunk typed chat.completion.chunk, `logprobs: 1`
the sampled token's logprob only and `logprobs > 1` a 400, unknown request fields a 400, errors as
{"object": "error", ...}).

Its tokens are real: the fake trtllm-build stores the checkpoint's rank{r}.safetensors bytes as
rank{r}.engine, and this server executes them with the reference runtime (greedy).

FAKE_TRTLLM_SERVE_MODE selects a failure: `never_healthy` (never binds), `die_after:N` (exits
after N completions), `short_stream` (streams one token fewer than asked), `crash_on_start`.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

FIXTURE = Path(__file__).parent / "fixtures" / "trtllm_serve_1_2_cli.json"


def parse_argv(argv: list[str]) -> tuple[str, dict]:
    spec = json.loads(FIXTURE.read_text())["flags"]
    names = {}
    for flag, meta in spec.items():
        for name in [flag, *meta.get("aliases", [])]:
            names[name] = (flag, meta)
    args = list(argv)
    if args and args[0] == "serve":
        args = args[1:]
    positional, options = [], {}
    while args:
        arg = args.pop(0)
        if not arg.startswith("--"):
            positional.append(arg)
            continue
        name, _, inline = arg.partition("=")
        if name not in names:
            print(f"Usage: trtllm-serve serve [OPTIONS] MODEL\nError: No such option: {name}", file=sys.stderr)
            sys.exit(2)
        flag, meta = names[name]
        if meta["type"] == "flag":
            options[flag] = True
            continue
        value = inline or (args.pop(0) if args else None)
        if value is None:
            print(f"Error: Option '{name}' requires an argument.", file=sys.stderr)
            sys.exit(2)
        if "choices" in meta and value not in meta["choices"]:
            print(f"Error: Invalid value for '{name}': {value!r} is not one of {meta['choices']}.", file=sys.stderr)
            sys.exit(2)
        if meta["type"] == "int":
            value = int(value)
        elif meta["type"] == "float":
            value = float(value)
        options[flag] = value
    if len(positional) != 1:
        print(
            "Error: Missing argument 'MODEL'."
            if not positional
            else f"Error: Got unexpected extra argument ({positional[1]})",
            file=sys.stderr,
        )
        sys.exit(2)
    return positional[0], options


def load_engine(model: str, options: dict):
    """The reference runtime on the engine's stored checkpoint (a stand-in for tensorrt_llm._tensorrt_engine.LLM)."""
    engine_dir = Path(model)
    config = json.loads((engine_dir / "config.json").read_text())
    if "pretrained_config" not in config or "build_config" not in config:
        raise SystemExit(f"ValueError: {engine_dir} is not a TensorRT-LLM engine directory")
    if options.get("--backend") not in ("tensorrt", "trt"):
        raise SystemExit("this fake serves TensorRT engines only: pass --backend tensorrt")
    mapping = config["pretrained_config"]["mapping"]
    if options.get("--tensor_parallel_size", 1) not in (1, mapping.get("tp_size", 1)):
        raise SystemExit(f"ValueError: tp_size {options['--tensor_parallel_size']} does not match the engine's mapping")
    tokenizer_dir = Path(options.get("--tokenizer") or model)
    if not (tokenizer_dir / "config.json").is_file():
        raise SystemExit(
            "AttributeError: 'NoneType' object has no attribute 'model_type' (no config.json in --tokenizer)"
        )
    from transformers import AutoTokenizer

    from foundry.runtime.reference import ReferenceEngine

    checkpoint = Path(tempfile.mkdtemp(prefix="fake-trtllm-serve-"))
    (checkpoint / "config.json").write_text(json.dumps(config["pretrained_config"]))
    for plan in engine_dir.glob("rank*.engine"):
        (checkpoint / plan.name.replace(".engine", ".safetensors")).write_bytes(plan.read_bytes())
    return ReferenceEngine.load(checkpoint), AutoTokenizer.from_pretrained(str(tokenizer_dir)), config


def build_app(engine, tokenizer, model_name: str, mode: str):
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response, StreamingResponse
    from starlette.routing import Route

    fields = set(json.loads(FIXTURE.read_text())["completion_request_fields"])
    completions_served = [0]
    die_after = int(mode.split(":", 1)[1]) if mode.startswith("die_after:") else None

    def error(message: str, code: int = 400) -> JSONResponse:
        return JSONResponse(
            {"object": "error", "message": message, "type": "BadRequestError", "param": None, "code": code},
            status_code=code,
        )

    def logprobs_of(prompt, tokens, k):
        from foundry.generation_quality import logprobs_of as compute

        sampled, _ = compute(engine, prompt, tokens, 1)
        return {
            "text_offset": [0] * len(tokens),
            "token_logprobs": sampled,
            "tokens": [tokenizer.decode([t]) for t in tokens],
            "top_logprobs": [],
        }

    async def completions(request: Request):
        body = json.loads(await request.body())
        unknown = sorted(set(body) - fields)
        if unknown:
            return error(f"1 validation error: Extra inputs are not permitted: {unknown}")
        if "model" not in body or "prompt" not in body:
            return error("1 validation error: Field required: model, prompt")
        if body.get("stream_options") and not body.get("stream"):
            return error("Stream options can only be defined when `stream=True`.")
        logprobs = body.get("logprobs") or 0
        if logprobs > 1:
            return error("`logprobs` must be 1 or `gather_generation_logits` must be `True` to use `logprobs` > 1")
        prompt = body["prompt"]
        ids = list(tokenizer.encode(prompt, add_special_tokens=False)) if isinstance(prompt, str) else list(prompt)
        max_tokens = body.get("max_tokens") or 16
        completions_served[0] += 1
        if die_after is not None and completions_served[0] > die_after:
            os._exit(1)  # the server process dies mid-run
        tokens = await asyncio.to_thread(engine.generate, ids, max_tokens)
        eos = tokenizer.eos_token_id
        if not body.get("ignore_eos", False) and eos in tokens[body.get("min_tokens", 0) :]:
            tokens = tokens[: tokens.index(eos, body.get("min_tokens", 0)) + 1]
        detokenize = body.get("detokenize", True)
        created, cid = int(time.time()), f"cmpl-{uuid.uuid4().hex}"
        finish = "length" if len(tokens) == max_tokens else "stop"
        usage = {
            "prompt_tokens": len(ids),
            "total_tokens": len(ids) + len(tokens),
            "completion_tokens": len(tokens),
            "prompt_tokens_details": {"cached_tokens": 0},
        }

        def choice(piece, finish_reason, lp=None):
            return {
                "index": 0,
                "text": tokenizer.decode(piece) if detokenize else "",
                "token_ids": None if detokenize else list(piece),
                "logprobs": lp,
                "finish_reason": finish_reason,
                "stop_reason": None,
                "avg_decoded_tokens_per_iter": None,
            }

        if not body.get("stream"):
            lp = await asyncio.to_thread(logprobs_of, ids, tokens, logprobs) if logprobs else None
            return JSONResponse(
                {
                    "id": cid,
                    "object": "text_completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [{**choice(tokens, finish, lp), "context_logits": None, "disaggregated_params": None}],
                    "usage": usage,
                    "prompt_token_ids": None,
                }
            )
        streamed = tokens[:-1] if mode == "short_stream" else tokens

        async def events():
            for i, token in enumerate(streamed):
                last = i == len(streamed) - 1
                chunk = {
                    "id": cid,
                    "object": "text_completion",
                    "created": created,
                    "model": body["model"],
                    "choices": [choice([token], finish if last else None)],
                    "usage": None,
                }
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            if (body.get("stream_options") or {}).get("include_usage", True) and body.get("stream_options"):
                usage_chunk = {
                    "id": f"chatcmpl-{uuid.uuid4().hex}",
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": body["model"],
                    "choices": [],
                    "usage": usage,
                }
                yield f"data: {json.dumps(usage_chunk)}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream")

    async def health(_request):
        return Response(status_code=200)

    async def version(_request):
        return JSONResponse({"version": os.environ.get("FAKE_TRTLLM_VERSION", "1.2.1")})

    async def models(_request):
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": model_name, "object": "model", "created": int(time.time()), "owned_by": "tensorrt_llm"}
                ],
            }
        )

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/version", version, methods=["GET"]),
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/completions", completions, methods=["POST"]),
        ]
    )


def main(argv: list[str]) -> None:
    model, options = parse_argv(argv)
    mode = os.environ.get("FAKE_TRTLLM_SERVE_MODE", "ok")
    log = Path(os.environ["FAKE_TRTLLM_SERVE_ARGV_LOG"]) if os.environ.get("FAKE_TRTLLM_SERVE_ARGV_LOG") else None
    if log is not None:
        with log.open("a") as handle:
            handle.write(json.dumps(argv) + "\n")
    print(f"[TensorRT-LLM] TensorRT-LLM version: {os.environ.get('FAKE_TRTLLM_VERSION', '1.2.1')}", flush=True)
    if mode == "crash_on_start":
        raise SystemExit("RuntimeError: [TensorRT-LLM][ERROR] Assertion failed: engine plan deserialization failed")
    engine, tokenizer, _ = load_engine(model, options)
    if mode == "never_healthy":
        print("loading engine ... (this fake never finishes)", flush=True)
        time.sleep(3600)
    import uvicorn

    print(
        f"INFO:     Uvicorn running on http://{options.get('--host', 'localhost')}:{options.get('--port', 8000)}",
        flush=True,
    )
    uvicorn.run(
        build_app(engine, tokenizer, Path(model).name, mode),
        host=options.get("--host", "localhost"),
        port=options.get("--port", 8000),
        log_level="warning",
        timeout_keep_alive=5,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
