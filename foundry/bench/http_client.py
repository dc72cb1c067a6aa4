"""A load-generator target for any OpenAI-compatible streaming endpoint (`/v1/completions`, SSE):
trtllm-serve, Triton's OpenAI frontend, NIM, vLLM, or foundry.bench.server.

The client is plain asyncio streams (one connection per request, HTTP/1.1, `Connection: close`) with
an incremental chunked-transfer and SSE parser: no HTTP library sits between the socket read and the
token timestamp, and it runs where only the standard library is available (the GPU machine).

Token counting: a chunk's `token_ids` (this project's server, vLLM with `return_token_ids`) count
one token each; otherwise a chunk with non-empty `text` counts as one token (each SSE chunk of these
servers carries one token when streaming). If the server sends `usage.completion_tokens` (we ask
with `stream_options.include_usage`), it must agree with the count, or the request fails. Requests
ask for exactly `output_tokens` tokens: `max_tokens` = `min_tokens` = n and `ignore_eos` (vLLM,
TensorRT-LLM), so outputs are not truncated; the harness checks the count either way.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from typing import Callable
from urllib.parse import urlsplit

from foundry.bench.workload import Request
from foundry.errors import FoundryError


class EndpointError(RuntimeError):
    """The endpoint refused the request, answered with an error, or dropped the stream."""


class _ChunkedDecoder:
    """Incremental `Transfer-Encoding: chunked` decoder."""

    def __init__(self):
        self.buffer = b""
        self.finished = False

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = []
        while not self.finished:
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                break
            size_text = self.buffer[:line_end].split(b";", 1)[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise EndpointError(f"malformed chunked encoding: chunk size {size_text[:20]!r}") from None
            if size == 0:
                self.finished = True
                break
            if len(self.buffer) < line_end + 2 + size + 2:
                break
            start = line_end + 2
            out.append(self.buffer[start : start + size])
            self.buffer = self.buffer[start + size + 2 :]
        return b"".join(out)


class OpenAICompletionsTarget:
    """`AsyncTarget` for `POST {base}/v1/completions` with `stream: true`."""

    backend = "openai-http"

    def __init__(
        self,
        url: str,
        model: str | None = None,
        timeout_s: float = 600.0,
        extra_body: dict | None = None,
        backend: str | None = None,
        send_schedule: bool = False,
    ):
        parts = urlsplit(url if "://" in url else f"http://{url}")
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise FoundryError(f"endpoint {url!r}: need http(s)://host[:port][/v1/completions]")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.tls = parts.scheme == "https"
        path = parts.path.rstrip("/")
        self.path = path if path.endswith("/completions") else f"{path}/v1/completions"
        self.model = model
        self.timeout_s = timeout_s
        self.extra_body = extra_body or {}
        self.name = model or url
        # Test hook: forward the scheduled send time (same-host monotonic clock) in a header, so a
        # synthetic server can anchor its exact token schedule to it (see tests/test_http_bench.py).
        self.send_schedule = send_schedule
        if backend:
            self.backend = backend

    def request_body(self, request: Request) -> dict:
        body = {
            "prompt": list(request.input_ids),
            "max_tokens": request.output_tokens,
            "min_tokens": request.output_tokens,
            "ignore_eos": True,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if self.model:
            body["model"] = self.model
        return body | self.extra_body

    async def stream(self, request: Request, on_token: Callable[[int], None]) -> list[int]:
        return await asyncio.wait_for(self._stream(request, on_token), self.timeout_s)

    async def _stream(self, request: Request, on_token: Callable[[int], None]) -> list[int]:
        payload = json.dumps(self.request_body(request)).encode()
        schedule = ""
        if self.send_schedule:
            from foundry.bench.runner import current_scheduled_s

            if current_scheduled_s.get() is not None:
                schedule = f"X-Foundry-Scheduled-S: {current_scheduled_s.get()!r}\r\n"
        head = (
            f"POST {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{schedule}"
            f"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
        ).encode()
        try:
            reader, writer = await asyncio.open_connection(
                self.host, self.port, ssl=ssl.create_default_context() if self.tls else None, limit=1 << 20
            )
        except OSError as error:
            raise EndpointError(f"cannot connect to {self.host}:{self.port}: {error}") from None
        try:
            writer.write(head + payload)
            await writer.drain()
            try:
                header_block = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
                raise EndpointError(f"connection closed before a response header: {error}") from None
            status, headers = _parse_head(header_block)
            if status != 200:
                body = await _read_some(reader)
                raise EndpointError(f"HTTP {status}: {body[:300].decode(errors='replace')}")
            chunked = "chunked" in headers.get("transfer-encoding", "").lower()
            return await self._read_events(reader, chunked, on_token, request)
        finally:
            writer.close()

    async def _read_events(self, reader, chunked: bool, on_token, request: Request) -> list[int]:
        decoder = _ChunkedDecoder() if chunked else None
        buffer = b""
        tokens: list[int] = []
        usage_tokens = None
        while True:
            data = await reader.read(65536)
            if not data:
                raise EndpointError(f"stream dropped after {len(tokens)} of {request.output_tokens} tokens (no [DONE])")
            if decoder is not None:
                data = decoder.feed(data)
            buffer += data
            while True:
                cut = _event_end(buffer)
                if cut is None:
                    break
                event, buffer = buffer[: cut[0]], buffer[cut[1] :]
                for line in event.splitlines():
                    if not line.startswith(b"data:"):
                        continue  # comments, event:, id:, retry:
                    payload = line[5:].strip()
                    if payload == b"[DONE]":
                        if usage_tokens is not None and usage_tokens != len(tokens):
                            raise EndpointError(
                                f"usage.completion_tokens={usage_tokens} but {len(tokens)} tokens were streamed"
                            )
                        return tokens
                    try:
                        message = json.loads(payload)
                    except ValueError:
                        raise EndpointError(f"malformed SSE data: {payload[:120]!r}") from None
                    if "error" in message:
                        raise EndpointError(f"endpoint error mid-stream: {message['error']}")
                    usage = message.get("usage")
                    if usage and usage.get("completion_tokens") is not None:
                        usage_tokens = int(usage["completion_tokens"])
                    for choice in message.get("choices") or []:
                        ids = choice.get("token_ids")
                        if ids:
                            for token in ids:
                                on_token(int(token))
                                tokens.append(int(token))
                        elif choice.get("text"):
                            on_token(-1)  # token id unknown: counted, not identified
                            tokens.append(-1)
            if decoder is not None and decoder.finished:
                raise EndpointError(f"stream ended after {len(tokens)} tokens without [DONE]")


def _event_end(buffer: bytes) -> tuple[int, int] | None:
    """(end of the first complete SSE event, start of the rest), for \\n\\n or \\r\\n\\r\\n separators."""
    candidates = [(i, i + len(sep)) for sep in (b"\n\n", b"\r\n\r\n") if (i := buffer.find(sep)) >= 0]
    return min(candidates) if candidates else None


def _parse_head(block: bytes) -> tuple[int, dict[str, str]]:
    lines = block.decode("latin-1").split("\r\n")
    try:
        status = int(lines[0].split(" ", 2)[1])
    except (IndexError, ValueError):
        raise EndpointError(f"malformed HTTP status line {lines[0][:80]!r}") from None
    headers = {}
    for line in lines[1:]:
        if ":" in line:
            key, value = line.split(":", 1)
            headers[key.strip().lower()] = value.strip()
    return status, headers


async def _read_some(reader, limit: int = 4096) -> bytes:
    try:
        return await asyncio.wait_for(reader.read(limit), 5.0)
    except (asyncio.TimeoutError, OSError):
        return b""


def _token_id_key(key: str) -> int | None:
    """`token_id:123` (vLLM's return_tokens_as_token_ids, foundry.bench.server) → 123; text keys → None."""
    if isinstance(key, str) and key.startswith("token_id:") and key[9:].isdigit():
        return int(key[9:])
    return None


class OpenAICompletionsClient:
    """Greedy continuations from an OpenAI-compatible `/v1/completions` (non-streaming), for the
    generation-based quality evaluation (foundry.generation_quality.ContinuationSource). Token ids come
    from the choice's `token_ids` (trtllm-serve with `detokenize: false`, foundry.bench.server, vLLM's
    `return_token_ids`); a server that returns only text is refused, since text cannot be compared
    token by token."""

    def __init__(
        self, url: str, model: str | None, served_by: str, timeout_s: float = 600.0, extra_body: dict | None = None
    ):
        self.target = OpenAICompletionsTarget(url, model=model, timeout_s=timeout_s)
        self.url = f"http://{self.target.host}:{self.target.port}{self.target.path}"
        self.model = model
        self.served_by = served_by
        self.timeout_s = timeout_s
        self.extra_body = extra_body or {}

    def request_body(self, prompt, max_tokens: int, stop_at_eos: bool, top_logprobs: int) -> dict:
        body = {"prompt": list(prompt), "max_tokens": max_tokens, "temperature": 0, "ignore_eos": not stop_at_eos}
        if not stop_at_eos:
            body["min_tokens"] = max_tokens
        if top_logprobs:
            body["logprobs"] = top_logprobs
        if self.model:
            body["model"] = self.model
        return body | self.extra_body

    def complete(self, prompt, max_tokens: int, stop_at_eos: bool, top_logprobs: int):
        import urllib.error
        import urllib.request

        from foundry.generation_quality import Continuation

        data = json.dumps(self.request_body(prompt, max_tokens, stop_at_eos, top_logprobs)).encode()
        request = urllib.request.Request(self.url, data=data, headers={"Content-Type": "application/json"})
        from foundry.server_process import NO_PROXY_OPENER

        try:
            with NO_PROXY_OPENER.open(request, timeout=self.timeout_s) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise EndpointError(
                f"{self.served_by}: HTTP {error.code}: {error.read()[:500].decode(errors='replace')}"
            ) from None
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise EndpointError(f"{self.served_by}: {self.url} failed: {error}") from None
        choice = (body.get("choices") or [{}])[0]
        token_ids = choice.get("token_ids")
        if not isinstance(token_ids, list):
            raise EndpointError(
                f"{self.served_by}: the completion carries no token_ids (text only); the evaluation "
                "compares tokens — serve with token ids (trtllm-serve: detokenize false)"
            )
        logprobs = choice.get("logprobs") or {}
        sampled = logprobs.get("token_logprobs") or None
        top = None
        if top_logprobs > 1 and logprobs.get("top_logprobs"):
            parsed = [{_token_id_key(k): v for k, v in (entry or {}).items()} for entry in logprobs["top_logprobs"]]
            if all(None not in entry for entry in parsed):
                top = parsed
        return Continuation(
            [int(t) for t in token_ids],
            top,
            choice.get("finish_reason"),
            [float(v) for v in sampled] if sampled else None,
        )

    def continue_prompts(self, prompts, max_tokens: int, stop_at_eos: bool, top_logprobs: int):
        return [self.complete(prompt, max_tokens, stop_at_eos, top_logprobs) for prompt in prompts]
