"""A small OpenAI-compatible completions server for any in-process `Engine` (Starlette + uvicorn).

    python -m foundry.bench.server --engine-dir ENGINE [--tokenizer HF_DIR] [--device cuda] --port 8000
    python -m foundry.bench.server --hf-dir HF_DIR --port 8000
    python -m foundry.bench.server --synthetic 200,20 --port 8000      # TTFT 200 ms, ITL 20 ms

Endpoints: `POST /v1/completions` (`prompt` as text — needs a tokenizer — or a list of token ids;
`max_tokens`; `stream: true` answers with server-sent events, one chunk per token, then
`data: [DONE]`; `stream_options.include_usage` adds a usage chunk), `GET /v1/models`, `GET /health`,
and for synthetic engines `GET /foundry/emissions` (when each token was actually written, per prompt,
in the host's CLOCK_MONOTONIC: the truth a same-host client's measurements are checked against).
Greedy decoding. A completion stops after the first EOS at or past `min_tokens` unless `ignore_eos`
is true (`finish_reason: "stop"`), else it has exactly `max_tokens` tokens (`"length"`). Chunks carry
`token_ids` next to `text`, as vLLM's `return_token_ids` does, so a client can count tokens without a
tokenizer (`detokenize: false` leaves `text` empty, as trtllm-serve does). `logprobs: k` (in-process
engines with logits) returns OpenAI's legacy logprobs: each token's logprob, and for k > 1 the top-k
per position keyed `token_id:N` (vLLM's return_tokens_as_token_ids spelling). `echo: true` with
`logprobs: k` (not streamed) also returns the prompt, as vLLM does: `text` and `token_ids` start
with the prompt, `token_logprobs` holds None for the first prompt token, then every following
token's logprob, and `top_logprobs` the top-k per position — what lm-evaluation-harness's
completions model reads to score multiple-choice tasks. Sampling parameters other than greedy are
refused rather than ignored.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import AsyncIterator, Sequence

from foundry.errors import FoundryError

MAX_TOKENS_LIMIT = 1_000_000


class CompletionRequestError(ValueError):
    """A client error (HTTP 400) with a message naming the field."""


@dataclass(frozen=True)
class CompletionParams:
    prompt_ids: list[int]
    max_tokens: int
    stream: bool = False
    include_usage: bool = False
    ignore_eos: bool = False
    min_tokens: int = 0
    logprobs: int = 0
    detokenize: bool = True
    echo: bool = False


def parse_completion_request(body: object, tokenizer) -> CompletionParams:
    """The parameters of an OpenAI /v1/completions body, each checked with a message naming the field."""
    if not isinstance(body, dict):
        raise CompletionRequestError("the body must be a JSON object")
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
        prompt = prompt[0]  # a batch of one
    if isinstance(prompt, str):
        if tokenizer is None:
            raise CompletionRequestError("prompt: text prompts need a server started with --tokenizer; send token ids")
        ids = list(tokenizer.encode(prompt, add_special_tokens=False))
    elif isinstance(prompt, list) and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt):
        ids = list(prompt)
    else:
        raise CompletionRequestError("prompt: must be a string or a list of token ids >= 0 (one prompt per request)")
    if not ids:
        raise CompletionRequestError("prompt: is empty")
    max_tokens = body.get("max_tokens", 16)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or not 1 <= max_tokens <= MAX_TOKENS_LIMIT:
        raise CompletionRequestError(f"max_tokens: must be an integer in [1, {MAX_TOKENS_LIMIT}], got {max_tokens!r}")
    if body.get("n", 1) != 1 or body.get("best_of", 1) != 1:
        raise CompletionRequestError("n/best_of: only 1 is supported")
    temperature = body.get("temperature")
    if (
        temperature not in (None, 0, 0.0)
        or body.get("top_k", -1) not in (-1, 1)
        or body.get("top_p", 1) not in (1, 1.0)
    ):
        raise CompletionRequestError("sampling: only greedy decoding is served (temperature 0 or unset)")
    stream = bool(body.get("stream", False))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage", False))
    logprobs = body.get("logprobs") or 0
    if not isinstance(logprobs, int) or isinstance(logprobs, bool) or not 0 <= logprobs <= 20:
        raise CompletionRequestError(f"logprobs: must be an integer in [0, 20], got {logprobs!r}")
    echo = body.get("echo", False)
    if not isinstance(echo, bool):
        raise CompletionRequestError(f"echo: must be true or false, got {echo!r}")
    if echo and stream:
        raise CompletionRequestError("echo: not served with stream: true; send stream: false")
    min_tokens = body.get("min_tokens") or 0
    if not isinstance(min_tokens, int) or isinstance(min_tokens, bool) or min_tokens < 0:
        raise CompletionRequestError(f"min_tokens: must be an integer >= 0, got {min_tokens!r}")
    return CompletionParams(
        ids,
        max_tokens,
        stream,
        include_usage,
        bool(body.get("ignore_eos", False)),
        min_tokens,
        logprobs,
        bool(body.get("detokenize", True)),
        echo,
    )


async def stream_engine_tokens(
    engine, input_ids: Sequence[int], max_tokens: int, start_s: float | None = None
) -> AsyncIterator[int]:
    """Tokens of `engine` as an async iterator: `agenerate` if the engine has it, else its blocking
    `generate` in a thread whose on_token hands each token to the loop. `start_s` (synthetic
    engines only) anchors the exact schedule at the client's scheduled send time."""
    agenerate = getattr(engine, "agenerate", None)
    if agenerate is not None:
        kwargs = {"start_s": start_s} if start_s is not None else {}
        # closing the stream early (EOS reached, client gone) closes the engine's iterator, which
        # cancels the request and frees its KV slot
        async with contextlib.aclosing(agenerate(input_ids, max_tokens, **kwargs)) as tokens:
            async for token in tokens:
                yield int(token)
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue = asyncio.Queue()
    done = object()

    def work() -> None:
        try:
            engine.generate(list(input_ids), max_tokens, lambda t: loop.call_soon_threadsafe(queue.put_nowait, int(t)))
            loop.call_soon_threadsafe(queue.put_nowait, done)
        except BaseException as error:  # handed to the request coroutine, which ends the stream
            loop.call_soon_threadsafe(queue.put_nowait, error)

    threading.Thread(target=work, name="serve-generate", daemon=True).start()
    while True:
        item = await queue.get()
        if item is done:
            return
        if isinstance(item, BaseException):
            raise item
        yield item


class TextDecoder:
    """Incremental detokenization: the text a new token adds to the decoded output."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.text = ""

    def add(self, token: int) -> str:
        if self.tokenizer is None:
            return ""
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        if text.endswith("\ufffd"):  # an incomplete UTF-8 sequence: wait for the next token
            return ""
        new, self.text = text[len(self.text) :], text
        return new


class WriteLog:
    """When the server finished sending each streamed token's chunk, per prompt (time.perf_counter)."""

    def __init__(self):
        self._written_s: dict[tuple[int, ...], list[float]] = {}

    def start(self, prompt: Sequence[int]) -> list[float]:
        self._written_s[tuple(prompt)] = written = []
        return written

    def by_prompt(self) -> dict[tuple[int, ...], list[float]]:
        return dict(self._written_s)


def legacy_logprobs(engine, prompt: Sequence[int], tokens: Sequence[int], k: int, echo: bool = False) -> dict:
    """OpenAI legacy completions logprobs of `tokens`; top-k keyed `token_id:N` when k > 1. With
    `echo` (as vLLM answers `echo: true`), of the prompt and its completion together: None for the
    first prompt token (nothing precedes it), then each token's logprob and its top-k (k >= 1)."""
    from foundry.generation_quality import logprobs_of

    context, scored = (prompt[:1], [*prompt[1:], *tokens]) if echo else (prompt, tokens)
    sampled, top = logprobs_of(engine, context, scored, k)
    top_keyed = [{f"token_id:{t}": lp for t, lp in entry.items()} for entry in top]
    lead = [None] if echo else []
    return {
        "tokens": [f"token_id:{t}" for t in ([*prompt, *tokens] if echo else tokens)],
        "token_logprobs": [*lead, *sampled],
        "text_offset": [],
        "top_logprobs": [*lead, *top_keyed] if echo or k > 1 else [],
    }


def build_app(engine, model_name: str, tokenizer=None, anchor_to_client_schedule: bool = False):
    """A Starlette app serving `engine` under the OpenAI completions API. `anchor_to_client_schedule`
    (synthetic engines, same host): start a request's exact schedule at the client's scheduled send
    time from the `X-Foundry-Scheduled-S` header instead of when the handler runs, so server-side
    request handling is absorbed into the known TTFT rather than added to it."""
    from starlette.applications import Starlette
    from starlette.requests import Request as HTTPRequest
    from starlette.responses import JSONResponse, StreamingResponse
    from starlette.routing import Route

    written_log = WriteLog()
    eos_ids = {tokenizer.eos_token_id} if tokenizer is not None and tokenizer.eos_token_id is not None else set()

    def error(status: int, message: str, kind: str = "invalid_request_error") -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)

    async def completions(request: HTTPRequest):
        try:
            body = json.loads(await request.body())
        except ValueError as exc:
            return error(400, f"body is not valid JSON: {exc}")
        try:
            params = parse_completion_request(body, tokenizer)
            if params.logprobs and not hasattr(engine, "logits"):
                raise CompletionRequestError(f"logprobs: the {engine.backend} engine gives no logits")
        except CompletionRequestError as exc:
            return error(400, str(exc))
        requested_model = body.get("model")
        if requested_model not in (None, model_name):
            return error(
                404,
                f"model {requested_model!r} is not served here; this server serves {model_name!r}",
                "model_not_found",
            )
        ids, max_tokens = params.prompt_ids, params.max_tokens
        start_s = None
        if anchor_to_client_schedule and request.headers.get("x-foundry-scheduled-s"):
            start_s = float(request.headers["x-foundry-scheduled-s"])
        completion_id = f"cmpl-{uuid.uuid4().hex[:24]}"
        created = int(time.time())

        def stops_after(token: int, count: int) -> bool:
            return not params.ignore_eos and token in eos_ids and count >= params.min_tokens

        def chunk(text: str, token_ids: list[int], finish_reason: str | None, logprobs=None) -> dict:
            return {
                "id": completion_id,
                "object": "text_completion",
                "created": created,
                "model": model_name,
                "choices": [
                    {
                        "index": 0,
                        "text": text if params.detokenize else "",
                        "token_ids": token_ids,
                        "logprobs": logprobs,
                        "finish_reason": finish_reason,
                    }
                ],
            }

        usage = lambda n: {"prompt_tokens": len(ids), "completion_tokens": n, "total_tokens": len(ids) + n}  # noqa: E731

        if not params.stream:
            decoder, tokens = TextDecoder(tokenizer), []
            try:
                async for token in stream_engine_tokens(engine, ids, max_tokens):
                    tokens.append(token)
                    decoder.add(token)
                    if stops_after(token, len(tokens)):
                        break
                logprobs = (
                    await asyncio.to_thread(legacy_logprobs, engine, ids, tokens, params.logprobs, params.echo)
                    if params.logprobs
                    else None
                )
            except Exception as exc:
                return error(500, f"{type(exc).__name__}: {exc}", "server_error")
            finish = "stop" if len(tokens) < max_tokens else "length"
            text, token_ids = decoder.text, tokens
            if params.echo:
                prompt_text = tokenizer.decode(ids) if tokenizer is not None else ""
                text, token_ids = prompt_text + text, [*ids, *tokens]
            body = chunk(text, token_ids, finish, logprobs)
            body["usage"] = usage(len(tokens))
            return JSONResponse(body)

        async def events() -> AsyncIterator[bytes]:
            decoder, count = TextDecoder(tokenizer), 0
            written_s = written_log.start(ids)
            try:
                async for token in stream_engine_tokens(engine, ids, max_tokens, start_s):
                    count += 1
                    stop = stops_after(token, count)
                    finish = "stop" if stop else "length" if count == max_tokens else None
                    yield f"data: {json.dumps(chunk(decoder.add(token), [token], finish))}\n\n".encode()
                    written_s.append(time.perf_counter())  # resumed: the server has sent that chunk
                    if stop:
                        break
            except Exception as exc:  # an error event, then the stream ends without [DONE]
                yield f"data: {json.dumps({'error': {'message': f'{type(exc).__name__}: {exc}', 'type': 'server_error'}})}\n\n".encode()
                return
            if params.include_usage:
                yield f"data: {json.dumps({'id': completion_id, 'object': 'text_completion', 'created': created, 'model': model_name, 'choices': [], 'usage': usage(count)})}\n\n".encode()
            yield b"data: [DONE]\n\n"

        return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def models(_request):
        return JSONResponse({"object": "list", "data": [{"id": model_name, "object": "model", "owned_by": "foundry"}]})

    async def health(_request):
        return JSONResponse({"status": "ok", "backend": engine.backend, "model": model_name})

    async def emissions(_request):
        written = written_log.by_prompt()
        return JSONResponse(
            {
                "emissions": [
                    entry | {"written_s": written.get(tuple(entry["prompt"]), [])} for entry in engine.emission_log()
                ]
            }
        )

    routes = [
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/health", health, methods=["GET"]),
    ]
    if hasattr(engine, "emission_log"):
        routes.append(Route("/foundry/emissions", emissions, methods=["GET"]))
    return Starlette(routes=routes)


def serve(
    engine,
    model_name: str,
    tokenizer=None,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "warning",
    anchor_to_client_schedule: bool = False,
) -> None:
    import uvicorn

    uvicorn.run(
        build_app(engine, model_name, tokenizer, anchor_to_client_schedule),
        host=host,
        port=port,
        log_level=log_level,
        backlog=4096,
        timeout_keep_alive=30,
        access_log=False,
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m foundry.bench.server", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--engine-dir", type=Path, help="reference engine (TensorRT-LLM checkpoint) directory")
    source.add_argument("--hf-dir", type=Path, help="HF model directory (transformers)")
    source.add_argument(
        "--synthetic", metavar="TTFT_MS,ITL_MS[,SPREAD_MS]", help="AsyncSyntheticEngine with exact delays"
    )
    parser.add_argument("--tokenizer", type=Path, help="HF tokenizer directory for text prompts/outputs")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: engine.json's device")
    parser.add_argument("--model-name", default=None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--anchor-to-client-schedule",
        action="store_true",
        help="synthetic only, same host: start each schedule at the client's X-Foundry-Scheduled-S",
    )
    args = parser.parse_args(argv)
    if args.anchor_to_client_schedule and not args.synthetic:
        parser.error("--anchor-to-client-schedule applies only to --synthetic")
    return args


def load_engine_from_args(args: argparse.Namespace):
    if args.synthetic:
        from foundry.bench.synthetic import AsyncSyntheticEngine

        try:
            values = [float(v) for v in args.synthetic.split(",")]
            if len(values) not in (2, 3):
                raise ValueError(f"{len(values)} numbers")
            ttft_ms, itl_ms, spread_ms = (values + [0.0])[:3]
        except ValueError:
            raise FoundryError(
                f"--synthetic: write TTFT_MS,ITL_MS[,TTFT_SPREAD_MS] (e.g. 200,20), got {args.synthetic!r}"
            ) from None
        engine = AsyncSyntheticEngine(ttft_ms=ttft_ms, itl_ms=itl_ms, ttft_spread_ms=spread_ms)
        return engine, engine.name
    if args.engine_dir is not None:
        from foundry.builders.base import load_engine

        return load_engine(args.engine_dir, device=args.device), args.engine_dir.name
    from foundry.runtime.hf import HFEngine

    return HFEngine.load(args.hf_dir, device=args.device or "cpu"), args.hf_dir.name


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        engine, name = load_engine_from_args(args)
        tokenizer = None
        tokenizer_dir = args.tokenizer or args.hf_dir
        if tokenizer_dir is not None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    except FoundryError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(
        f"serving {engine.backend} {args.model_name or name} on http://{args.host}:{args.port}/v1/completions",
        flush=True,
    )
    serve(
        engine,
        args.model_name or name,
        tokenizer,
        args.host,
        args.port,
        anchor_to_client_schedule=args.anchor_to_client_schedule,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
