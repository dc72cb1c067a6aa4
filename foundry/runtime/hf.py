"""The HF transformers baseline: exactly what an HF user runs (eager attention as loaded, dynamic
KV cache, `model.generate` with greedy decoding), so "speedup vs baseline" means speedup vs that.

Two ways to serve concurrent requests (`batching`):

* ``per_request``: each `generate` call runs its own `model.generate` (batch of 1) in the caller's
  thread; concurrent callers run concurrent batch-1 generates that share the cores / GPU.
* ``static_batch``: HF at its best under concurrency. Concurrent `generate` calls are queued; one
  worker thread takes up to `max_batch_size` of them, left-pads them (with an attention mask) and
  runs them together in ONE `model.generate`. A batch is launched when it holds as many requests as
  were in flight during the previous batch (in a closed loop of N clients: N) and no request came
  for `batch_quiet_ms`, or `batch_window_ms` after its first request arrived (StaticBatcher);
  requests that arrive while a batch runs wait for the next one (static batching: no request joins
  a running batch). A lone request is a batch of 1, the same `model.generate` as per_request.
  Requests of one batch may ask for different output lengths: the batch generates the longest and
  each request is truncated to its own length; its caller returns as soon as its last token is
  streamed (its slot stays busy until the batch ends, as in any static batch). Greedy tokens equal
  per_request's: the attention mask keeps padding out of attention and out of the position ids.

`HFEngine` defaults to per_request (quality evaluation and scripts call it one request at a time);
the benchmark's baseline defaults to static_batch (`benchmark.baseline_batching`, `--baseline-batching`).
"""

from __future__ import annotations

import functools
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Sequence

import torch
from transformers import AutoModelForCausalLM, GenerationConfig
from transformers.generation.streamers import BaseStreamer

from foundry.errors import FoundryError
from foundry.runtime.base import TokenCallback

Batching = Literal["per_request", "static_batch"]
BATCHING_MODES: tuple[str, ...] = ("per_request", "static_batch")


class TokenCallbackStreamer(BaseStreamer):
    """Forwards each newly generated token to `on_token`. `generate` first puts the whole prompt;
    that call is skipped."""

    def __init__(self, on_token: TokenCallback | None):
        self.on_token = on_token
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        if self.on_token is not None:
            for token_id in value.reshape(-1).tolist():  # batch of 1: one token per step
                self.on_token(int(token_id))

    def end(self) -> None:
        pass


@dataclass(eq=False)
class BatchRequest:
    """One caller's request inside a static batch; `done` is set when it has all its tokens or
    failed (`error`)."""

    input_ids: list[int]
    max_new_tokens: int
    on_token: TokenCallback | None = None
    arrival_s: float = field(default_factory=time.perf_counter)
    tokens: list[int] = field(default_factory=list)
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def deliver(self, token_id: int) -> None:
        """One generated token; ignored once the request has its length (the batch generates the
        longest request's length) or has failed. A callback that raises fails only this request."""
        if self.done.is_set():
            return
        self.tokens.append(token_id)
        if self.on_token is not None:
            try:
                self.on_token(token_id)
            except BaseException as error:  # the caller sees it; the batch goes on for the others
                self.finish(error)
                return
        if len(self.tokens) == self.max_new_tokens:
            self.finish()

    def finish(self, error: BaseException | None = None) -> None:
        if not self.done.is_set():
            self.error = error
            self.done.set()


class BatchTokenStreamer(BaseStreamer):
    """Hands step t's token of batch row i to requests[i]. The first `put` is the prompt: skipped."""

    def __init__(self, requests: Sequence[BatchRequest]):
        self.requests = list(requests)
        self.prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for request, token_id in zip(self.requests, value.reshape(-1).tolist()):
            request.deliver(int(token_id))

    def end(self) -> None:
        pass


def left_padded_batch(prompts: Sequence[Sequence[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[batch, longest] input ids, prompts right-aligned after `pad_token_id`, and the attention
    mask (0 on padding) that keeps the padding out of attention and out of the position ids."""
    width = max(len(prompt) for prompt in prompts)
    input_ids = torch.full((len(prompts), width), int(pad_token_id), dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        input_ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        attention_mask[row, width - len(prompt) :] = 1
    return input_ids, attention_mask


def generate_static_batch(model, device: torch.device, requests: Sequence[BatchRequest]) -> None:
    """One greedy `model.generate` for all `requests`, exactly the longest request's length (EOS
    suppressed, as in per-request mode), streaming each row to its request. Every request is
    finished when this returns, except one the batch left short (StaticBatcher fails it)."""
    try:
        input_ids, attention_mask = left_padded_batch(
            [request.input_ids for request in requests], model.generation_config.pad_token_id
        )
        new_tokens = max(request.max_new_tokens for request in requests)
        with torch.inference_mode():
            model.generate(
                input_ids.to(device),
                attention_mask=attention_mask.to(device),
                max_new_tokens=new_tokens,
                min_new_tokens=new_tokens,
                do_sample=False,
                streamer=BatchTokenStreamer(requests),
            )
    except Exception as error:  # handed to each caller of the batch
        for request in requests:
            request.finish(error)


class StaticBatcher:
    """Collects concurrent requests into static batches run one at a time by a worker thread.

    A batch is launched when it is full (`max_batch_size`); or when it holds as many requests as
    were in flight since the previous launch and none has arrived for `batch_quiet_ms` (the quiet
    period lets a burst of simultaneous arrivals, e.g. N clients starting together, land in one
    batch even when the previous batch was smaller); or `batch_window_ms` after its first request
    arrived, whatever it holds.

    The worker starts with the first request and exits after `idle_exit_s` without one, so an
    engine nobody uses holds no thread (and no reference to the model). It is not a daemon: at
    interpreter exit it finishes its batch and leaves within `idle_exit_s`."""

    def __init__(
        self,
        run_batch: Callable[[list[BatchRequest]], None],
        max_batch_size: int,
        batch_window_ms: float,
        batch_quiet_ms: float = 2.0,
        idle_exit_s: float = 0.5,
    ):
        self.run_batch = run_batch
        self.max_batch_size = max_batch_size
        self.batch_window_s = batch_window_ms / 1e3
        self.batch_quiet_s = batch_quiet_ms / 1e3
        self.idle_exit_s = idle_exit_s
        self._condition = threading.Condition()
        self._queue: list[BatchRequest] = []
        self._in_flight = 0  # callers inside run(): queued or in the running batch
        # The most in flight since the last launch: how many requests the next batch waits for.
        # The first batch has no history, so it waits for a full batch or the window.
        self._peak_in_flight = max_batch_size
        self._last_arrival_s = 0.0
        self._worker: threading.Thread | None = None
        self.batch_sizes: list[int] = []  # every launched batch's size, for tests and diagnostics

    def run(self, request: BatchRequest) -> None:
        """Queue `request` and block until it is finished (tokens or error)."""
        with self._condition:
            self._in_flight += 1
            self._peak_in_flight = max(self._peak_in_flight, self._in_flight)
            self._last_arrival_s = request.arrival_s
            self._queue.append(request)
            if self._worker is None:
                self._worker = threading.Thread(target=self._work, name="hf-static-batch")
                self._worker.start()
            self._condition.notify_all()
        try:
            request.done.wait()
        finally:
            with self._condition:
                self._in_flight -= 1

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            try:
                self.run_batch(batch)
            finally:  # no caller waits forever, whatever the batch did
                for request in batch:
                    request.finish(
                        FoundryError(f"the batch ended after {len(request.tokens)} of {request.max_new_tokens} tokens")
                    )

    def _launch_wait_s(self, now_s: float) -> float:
        """Seconds until the queued requests should launch as a batch (<= 0: now). Lock held."""
        if len(self._queue) >= self.max_batch_size:
            return 0.0
        window_end_s = self._queue[0].arrival_s + self.batch_window_s
        if len(self._queue) < min(self.max_batch_size, self._peak_in_flight):
            return window_end_s - now_s
        return min(window_end_s, self._last_arrival_s + self.batch_quiet_s) - now_s

    def _next_batch(self) -> list[BatchRequest] | None:
        with self._condition:
            if not self._condition.wait_for(lambda: self._queue, timeout=self.idle_exit_s):
                self._worker = None
                return None
            while (wait_s := self._launch_wait_s(time.perf_counter())) > 0:
                self._condition.wait(wait_s)
            batch = self._queue[: self.max_batch_size]
            del self._queue[: self.max_batch_size]
            self._peak_in_flight = self._in_flight
            self.batch_sizes.append(len(batch))
            return batch


def static_batch_size_for(concurrency_levels: Sequence[int], max_concurrency: int | None = None) -> int:
    """A max batch size for a benchmark's load: at least 32, and every concurrency level fits in one
    batch, so a static-batch baseline is never split below the load it is measured at."""
    return max([32, *concurrency_levels, max_concurrency or 0])


def _special_token_ids(config, generation_config: GenerationConfig) -> tuple[int, ...]:
    ids: set[int] = set()
    for source in (config, generation_config):
        for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
            value = getattr(source, name, None)
            if value is None:
                continue
            ids.update([value] if isinstance(value, int) else list(value))
    return tuple(sorted(ids))


class HFEngine:
    """Implements the Engine protocol on a transformers causal LM; `batching` says how concurrent
    `generate` calls are served (module docstring)."""

    backend = "hf-transformers"

    def __init__(
        self,
        model,
        device: torch.device,
        name: str = "",
        batching: Batching = "per_request",
        max_batch_size: int = 32,
        batch_window_ms: float = 20.0,
        batch_quiet_ms: float = 2.0,
    ):
        if batching not in BATCHING_MODES:
            raise FoundryError(f"batching {batching!r}: use one of {BATCHING_MODES}")
        if max_batch_size < 1:
            raise FoundryError(f"max_batch_size must be >= 1, got {max_batch_size}")
        if not (batch_window_ms >= 0 and batch_quiet_ms >= 0):
            raise FoundryError(
                f"batch_window_ms and batch_quiet_ms must be >= 0, got {batch_window_ms}, {batch_quiet_ms}"
            )
        self.model = model
        self.device = device
        self.name = name
        self.batching = batching
        self.max_batch_size = max_batch_size
        self.vocab_size = int(model.config.vocab_size)
        # Installed on the model (as an HF user would set it) so generate() gets only kwargs.
        model.generation_config = self._greedy_generation_config(model)
        self.special_token_ids = _special_token_ids(model.config, model.generation_config)
        self.batcher = (
            StaticBatcher(
                functools.partial(generate_static_batch, model, device), max_batch_size, batch_window_ms, batch_quiet_ms
            )
            if batching == "static_batch"
            else None
        )

    @classmethod
    def load(
        cls,
        hf_dir: Path,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        batching: Batching = "per_request",
        max_batch_size: int = 32,
    ) -> "HFEngine":
        hf_dir = Path(hf_dir)
        if not (hf_dir / "config.json").is_file():
            raise FoundryError(f"{hf_dir} is not a Hugging Face model directory (no config.json)")
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise FoundryError("device 'cuda' requested but torch.cuda.is_available() is False")
        model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=dtype).to(device).eval()
        return cls(model, device, name=hf_dir.name, batching=batching, max_batch_size=max_batch_size)

    @staticmethod
    def _greedy_generation_config(model) -> GenerationConfig:
        """Greedy, and a pad id (the EOS id when the checkpoint has none) so generate() does not
        warn; the per-call min/max_new_tokens make EOS irrelevant to the output length."""
        config = GenerationConfig.from_dict(model.generation_config.to_dict())
        config.do_sample = False
        for name in ("temperature", "top_p", "top_k"):  # sampling knobs would warn under greedy
            setattr(config, name, None)
        config.max_length = None
        if config.pad_token_id is None:
            eos = config.eos_token_id if config.eos_token_id is not None else model.config.eos_token_id
            config.pad_token_id = eos[0] if isinstance(eos, (list, tuple)) else eos
        return config

    def generate(
        self, input_ids: Sequence[int], max_new_tokens: int, on_token: TokenCallback | None = None
    ) -> list[int]:
        """Thread-safe in both modes: in static_batch, concurrent callers share batches."""
        if max_new_tokens < 1:
            raise FoundryError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        if len(input_ids) == 0:
            raise FoundryError("input_ids is empty")
        if self.batcher is None:
            return self._generate_one(input_ids, max_new_tokens, on_token)
        request = BatchRequest(list(input_ids), max_new_tokens, on_token)
        self.batcher.run(request)
        if request.error is not None:
            raise request.error
        return list(request.tokens)

    def _generate_one(self, input_ids: Sequence[int], max_new_tokens: int, on_token: TokenCallback | None) -> list[int]:
        prompt = torch.tensor([list(input_ids)], dtype=torch.long, device=self.device)
        # inference_mode is thread-local and the model is only read, so several client threads
        # may call generate at once; each call gets its own cache and streamer.
        with torch.inference_mode():
            output = self.model.generate(
                prompt,
                attention_mask=torch.ones_like(prompt),
                max_new_tokens=max_new_tokens,
                min_new_tokens=max_new_tokens,
                do_sample=False,
                streamer=TokenCallbackStreamer(on_token),
            )
        return output[0, prompt.shape[1] :].tolist()

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(input_ids.to(self.device)).logits.float()
