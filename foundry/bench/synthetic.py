"""An engine with exactly known latencies, so tests can prove the harness measures the truth.

Token k (0-based) of a request is delivered at start + ttft + k·itl, where start is when
generate() was called. The schedule is a floor, not a promise: a loaded host delivers later, so the
engine also logs when it actually handed each token over (`emission_log`), which is the truth a
harness's measurement is checked against. Deadlines are absolute, so sleep overshoot does not accumulate; the last
`spin_s` before each deadline is a GIL-releasing `sleep(0)` loop, which is tighter than one long
sleep (Linux oversleeps by ~0.1 ms) without starving the other client threads of the GIL.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import AsyncIterator, Sequence

import torch

from foundry.errors import FoundryError
from foundry.runtime.base import TokenCallback


def wait_until(deadline_s: float, spin_s: float = 2e-4) -> None:
    remaining_s = deadline_s - time.perf_counter()
    if remaining_s > spin_s:
        time.sleep(remaining_s - spin_s)
    while time.perf_counter() < deadline_s:
        time.sleep(0)  # yields the GIL and the CPU between checks


class SyntheticEngine:
    """Implements the Engine protocol. Greedy rule: next token = (previous token + 1) mod vocab,
    and `logits` puts its maximum on exactly that token, so generate() is truly greedy."""

    def __init__(
        self,
        ttft_ms: float,
        itl_ms: float,
        backend: str = "synthetic",
        vocab_size: int = 256,
        ttft_spread_ms: float = 0.0,
    ):
        if ttft_ms < 0 or itl_ms < 0 or ttft_spread_ms < 0:
            raise FoundryError(
                f"ttft_ms, itl_ms, ttft_spread_ms must be >= 0, got {ttft_ms}, {itl_ms}, {ttft_spread_ms}"
            )
        self.ttft_ms = ttft_ms
        # TTFT of a request = ttft_ms + ttft_spread_ms × frac(first prompt token × golden ratio): known
        # exactly per request (ttft_for), and at high concurrency it spreads the first tokens (and so
        # every later token) over time instead of emitting hundreds in the same instant.
        self.ttft_spread_ms = ttft_spread_ms
        self.itl_ms = itl_ms
        self.backend = backend
        self.vocab_size = vocab_size
        self.name = f"synthetic-ttft{ttft_ms:g}ms-itl{itl_ms:g}ms"
        self.device = "cpu"
        self.special_token_ids: tuple[int, ...] = ()
        self._emitted_s: dict[tuple[int, ...], list[float]] = {}
        self._log_lock = threading.Lock()

    def _emission_list(self, input_ids: Sequence[int]) -> list[float]:
        """A fresh list for this prompt's emission times (time.perf_counter; a repeated prompt
        replaces the older entry)."""
        emitted: list[float] = []
        with self._log_lock:
            self._emitted_s[tuple(int(t) for t in input_ids)] = emitted
        return emitted

    def emission_log(self) -> list[dict]:
        """When each token was actually handed to the caller, per prompt:
        [{"prompt": [...], "emitted_s": [time.perf_counter(), ...]}]. perf_counter is
        CLOCK_MONOTONIC, one clock per host, so a client on the same host can compare."""
        with self._log_lock:
            return [{"prompt": list(prompt), "emitted_s": list(times)} for prompt, times in self._emitted_s.items()]

    def ttft_for(self, input_ids: Sequence[int]) -> float:
        """The exact TTFT (ms) of a request with this prompt."""
        if not self.ttft_spread_ms or not input_ids:
            return self.ttft_ms
        return self.ttft_ms + self.ttft_spread_ms * ((int(input_ids[0]) * 0.6180339887498949) % 1.0)

    def token_schedule_s(self, num_tokens: int, input_ids: Sequence[int] = ()) -> list[float]:
        """Offsets (seconds after the call) at which each token is delivered."""
        ttft_ms = self.ttft_for(input_ids)
        return [(ttft_ms + k * self.itl_ms) / 1e3 for k in range(num_tokens)]

    def generate(
        self, input_ids: Sequence[int], max_new_tokens: int, on_token: TokenCallback | None = None
    ) -> list[int]:
        start_s = time.perf_counter()
        if not input_ids:
            raise FoundryError("input_ids is empty")
        token = int(input_ids[-1])
        generated, emitted = [], self._emission_list(input_ids)
        for offset_s in self.token_schedule_s(max_new_tokens, input_ids):
            token = (token + 1) % self.vocab_size
            wait_until(start_s + offset_s)
            generated.append(token)
            emitted.append(time.perf_counter())
            if on_token is not None:
                on_token(token)
        return generated

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        next_ids = (input_ids.long() + 1) % self.vocab_size
        return torch.nn.functional.one_hot(next_ids, self.vocab_size).float()


async def async_wait_until(deadline_s: float) -> None:
    """Sleep on the event loop until an absolute deadline (asyncio timers fire up to ~1 ms late:
    epoll waits in whole milliseconds), never before it."""
    while (remaining_s := deadline_s - time.perf_counter()) > 0:
        await asyncio.sleep(remaining_s)


class AsyncSyntheticEngine(SyntheticEngine):
    """The same exact schedule, also offered as `agenerate`, an async iterator that waits on the
    event loop: hundreds of concurrent requests then cost no threads (the in-process harness and the
    HTTP server both use it when present)."""

    async def agenerate(
        self, input_ids: Sequence[int], max_new_tokens: int, start_s: float | None = None
    ) -> AsyncIterator[int]:
        """`start_s` (time.perf_counter) anchors the schedule; default: now."""
        start_s = time.perf_counter() if start_s is None else start_s
        if not input_ids:
            raise FoundryError("input_ids is empty")
        token = int(input_ids[-1])
        emitted = self._emission_list(input_ids)
        for offset_s in self.token_schedule_s(max_new_tokens, input_ids):
            token = (token + 1) % self.vocab_size
            await async_wait_until(start_s + offset_s)
            emitted.append(time.perf_counter())
            yield token
