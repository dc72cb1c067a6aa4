"""The load generator: sends a request list to a target under a load mode and records timings.

Pieces, so new ones slot in without touching the rest:
* request source — a list of `Request` (foundry.bench.workload: synthetic or a trtllm-bench JSONL);
* target — an `AsyncTarget` (`async stream(request, on_token)`): `EngineTarget` wraps any in-process
  `Engine` (its blocking `generate` runs in a worker thread, or its `agenerate` on the loop), and
  `foundry.bench.http_client.OpenAICompletionsTarget` talks to any OpenAI-compatible SSE endpoint;
* load mode — `ConcurrencyLoad` (N clients, one request in flight each) or `RequestRateLoad`
  (seeded Poisson arrivals, optional concurrency cap); both are asyncio, one event loop per run;
* metrics — `summarize_level` over the `RequestRecord`s (foundry.bench.metrics).

Timestamps: a token's arrival time is read by `on_token` where the token is seen — in the engine's
worker thread for in-process engines, right after the socket read for HTTP — never after a hop
through the event loop's queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import gc
import os
import platform
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Callable, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from foundry.bench.metrics import (
    SLO,
    BenchmarkReport,
    MachineInfo,
    ModelBytes,
    RequestRecord,
    decode_mbu,
    max_throughput_within_slo,
    summarize_level,
)
from foundry.bench.workload import Request, WorkloadDescription, describe_requests
from foundry.errors import FoundryError
from foundry.runtime.base import Engine

clock_s = time.perf_counter  # monotonic, sub-microsecond resolution (CLOCK_MONOTONIC: one clock per host)
# The scheduled send time (clock_s) of the request being sent, for targets that can forward it
# (OpenAICompletionsTarget(send_schedule=True), used by the synthetic-endpoint overhead test).
current_scheduled_s: contextvars.ContextVar[float | None] = contextvars.ContextVar("current_scheduled_s", default=None)
LOAD_MODES = ("concurrency", "request_rate")


def output_error(request: Request, returned: Sequence[int], streamed: Sequence[int]) -> str | None:
    """Why a request that did not raise still does not count as completed (None = it does)."""
    wanted = request.output_tokens
    if len(streamed) != wanted:
        return f"streamed {len(streamed)} tokens via on_token, requested exactly {wanted}"
    if len(returned) != wanted:
        return f"returned {len(returned)} tokens, requested exactly {wanted}"
    if list(returned) != list(streamed):
        return "tokens returned by generate() differ from the tokens streamed via on_token"
    return None


@runtime_checkable
class AsyncTarget(Protocol):
    backend: str

    async def stream(self, request: Request, on_token: Callable[[int], None]) -> list[int]:
        """Generate exactly request.output_tokens tokens, calling on_token(token_id) as each arrives;
        return them all. Raise on failure (the request is counted as failed, the run goes on)."""
        ...


class EngineTarget:
    """An in-process `Engine` as an async target. Blocking `generate` calls run in a thread pool
    sized to the highest concurrency (a thread per request in flight, as before); an engine with an
    `agenerate(input_ids, n)` async iterator (e.g. AsyncSyntheticEngine) runs on the loop itself."""

    def __init__(self, engine: Engine, max_workers: int = 1):
        self.engine = engine
        self.backend = engine.backend
        self.name = str(getattr(engine, "name", ""))
        self.device = getattr(engine, "device", "cpu")
        self._executor = ThreadPoolExecutor(max_workers=max(1, max_workers), thread_name_prefix="bench-client")

    def close(self) -> None:
        self._executor.shutdown(wait=True)

    async def stream(self, request: Request, on_token: Callable[[int], None]) -> list[int]:
        agenerate = getattr(self.engine, "agenerate", None)
        if agenerate is not None:
            tokens = []
            async for token in agenerate(request.input_ids, request.output_tokens):
                on_token(int(token))
                tokens.append(int(token))
            return tokens
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self.engine.generate, request.input_ids, request.output_tokens, on_token
        )


async def send_request(
    target: AsyncTarget,
    request: Request,
    scheduled_s: float,
    epoch_s: float,
    concurrency: int,
    load_mode: str = "concurrency",
    request_rate: float | None = None,
) -> RequestRecord:
    """Run one request to completion; an exception from the target becomes a failed record."""
    arrivals_s: list[float] = []
    streamed: list[int] = []

    def on_token(token_id: int) -> None:
        arrivals_s.append(clock_s())  # timestamp first: the append below is not part of latency
        streamed.append(int(token_id))

    current_scheduled_s.set(scheduled_s)
    try:
        returned = await target.stream(request, on_token)
        error = output_error(request, returned, streamed)
    except Exception as exc:  # any target failure is data, not a crash of the benchmark
        error = f"{type(exc).__name__}: {exc}"
    end_s = clock_s()
    return RequestRecord(
        request_id=request.request_id,
        concurrency=concurrency,
        scheduled_s=scheduled_s - epoch_s,
        first_token_s=arrivals_s[0] - epoch_s if arrivals_s else None,
        token_arrival_s=[t - epoch_s for t in arrivals_s],
        end_s=end_s - epoch_s,
        input_tokens=len(request.input_ids),
        requested_output_tokens=request.output_tokens,
        output_tokens=len(arrivals_s),
        error=error,
        load_mode=load_mode,
        request_rate=request_rate,
    )


def _check_complete(requests: Sequence[Request], records: Sequence[RequestRecord]) -> list[RequestRecord]:
    if len(records) != len(requests):
        raise FoundryError(f"load generator lost requests: sent {len(requests)}, recorded {len(records)}")
    return sorted(records, key=lambda r: r.request_id)


@dataclass(frozen=True)
class ConcurrencyLoad:
    """N clients, each with exactly one request in flight, pulling from a shared queue. A request
    is scheduled when a client picks it up, so TTFT includes no client-side queueing beyond the
    target's own."""

    concurrency: int
    name: str = "concurrency"

    @property
    def request_rate(self) -> float | None:
        return None

    async def arun(self, target: AsyncTarget, requests: Sequence[Request], epoch_s: float) -> list[RequestRecord]:
        pending = deque(requests)
        records: list[RequestRecord] = []

        async def client() -> None:
            while pending:
                request = pending.popleft()
                records.append(await send_request(target, request, clock_s(), epoch_s, self.concurrency))

        await asyncio.gather(*(client() for _ in range(min(self.concurrency, len(requests)))))
        return _check_complete(requests, records)

    def run(self, target, requests: Sequence[Request], epoch_s: float) -> list[RequestRecord]:
        return asyncio.run(self.arun(_as_target(target, self.concurrency), requests, epoch_s))


@dataclass(frozen=True)
class RequestRateLoad:
    """Poisson arrivals at `rate` requests/s (exponential inter-arrival times from `seed`), as in
    MLPerf's server scenario. A request's scheduled time is its planned arrival, so a request that
    waits for the `max_concurrency` cap (or a late client) has that wait in its TTFT."""

    rate: float
    seed: int = 0
    max_concurrency: int | None = None
    name: str = "request_rate"

    def __post_init__(self):
        if not self.rate > 0 or not np.isfinite(self.rate):
            raise FoundryError(f"request rate must be a positive number of requests/s, got {self.rate}")
        if self.max_concurrency is not None and self.max_concurrency < 1:
            raise FoundryError(f"max_concurrency must be >= 1, got {self.max_concurrency}")

    @property
    def request_rate(self) -> float:
        return self.rate

    @property
    def concurrency(self) -> int:
        return self.max_concurrency or 0

    def arrival_offsets_s(self, count: int) -> np.ndarray:
        """Seeded: the first request at 0, then cumulative exponential gaps with mean 1/rate."""
        gaps = np.random.default_rng(self.seed).exponential(1.0 / self.rate, size=count)
        return np.concatenate([[0.0], np.cumsum(gaps[:-1])]) if count else np.zeros(0)

    async def arun(self, target: AsyncTarget, requests: Sequence[Request], epoch_s: float) -> list[RequestRecord]:
        cap = asyncio.Semaphore(self.max_concurrency) if self.max_concurrency else None
        start_s = clock_s()

        async def one(request: Request, offset_s: float) -> RequestRecord:
            scheduled_s = start_s + offset_s
            delay_s = scheduled_s - clock_s()
            if delay_s > 0:
                await asyncio.sleep(delay_s)
            if cap is None:
                return await send_request(target, request, scheduled_s, epoch_s, 0, self.name, self.rate)
            async with cap:
                return await send_request(target, request, scheduled_s, epoch_s, self.concurrency, self.name, self.rate)

        offsets = self.arrival_offsets_s(len(requests))
        records = await asyncio.gather(*(one(r, float(o)) for r, o in zip(requests, offsets)))
        return _check_complete(requests, list(records))

    def run(self, target, requests: Sequence[Request], epoch_s: float) -> list[RequestRecord]:
        return asyncio.run(self.arun(_as_target(target, self.max_concurrency or len(requests)), requests, epoch_s))


def _as_target(target, max_workers: int) -> AsyncTarget:
    return target if hasattr(target, "stream") else EngineTarget(target, max_workers)


def _cpu_model_name() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown cpu"


def machine_info(target: Engine | None = None) -> MachineInfo:
    device = str(getattr(target, "device", "cpu"))
    if device.startswith("cuda") and torch.cuda.is_available():
        device_name = torch.cuda.get_device_name(torch.device(device))
    else:
        device_name = f"cpu: {_cpu_model_name()}"
    return MachineInfo(
        cpu_count=os.cpu_count(),
        torch_version=torch.__version__,
        device_name=device_name,
        torch_threads=torch.get_num_threads(),
        platform=platform.platform(),
    )


def _validate_run(
    requests: Sequence[Request],
    concurrency_levels: Sequence[int],
    warmup_requests: int,
    mode: str,
    request_rates: Sequence[float] | None,
) -> None:
    if mode not in LOAD_MODES:
        raise FoundryError(f"unknown load mode {mode!r}; use one of {LOAD_MODES}")
    if mode == "concurrency":
        if not concurrency_levels:
            raise FoundryError("concurrency_levels must name at least one level")
        if any(level < 1 for level in concurrency_levels):
            raise FoundryError(f"concurrency levels must be >= 1, got {list(concurrency_levels)}")
    else:
        if not request_rates:
            raise FoundryError("mode 'request_rate' needs at least one request rate (requests/s)")
        if any(not (rate > 0 and np.isfinite(rate)) for rate in request_rates):
            raise FoundryError(f"request rates must be positive numbers of requests/s, got {list(request_rates)}")
    if warmup_requests < 0:
        raise FoundryError(f"warmup_requests must be >= 0, got {warmup_requests}")
    if len(requests) <= warmup_requests:
        raise FoundryError(
            f"the workload has {len(requests)} requests but warmup_requests={warmup_requests}: "
            "no request would be timed"
        )


@contextlib.contextmanager
def garbage_collection_frozen():
    """Cheap cyclic-GC passes while timing: everything alive before the run (torch, the model, the
    harness) moves to the permanent generation, so a full collection during the run walks only the
    run's own objects instead of stalling every client for milliseconds (latency the engine would be
    charged with). GC stays on, so a long run cannot pile up cycles. Unfrozen after."""
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def load_levels(
    mode: str,
    concurrency_levels: Sequence[int],
    request_rates: Sequence[float] | None,
    max_concurrency: int | None,
    arrival_seed: int,
) -> list:
    if mode == "concurrency":
        return [ConcurrencyLoad(c) for c in concurrency_levels]
    return [RequestRateLoad(rate, seed=arrival_seed, max_concurrency=max_concurrency) for rate in request_rates]


def run_benchmark(
    engine,
    requests: Sequence[Request],
    concurrency_levels: Sequence[int] = (),
    warmup_requests: int = 0,
    *,
    model: str = "",
    workload: WorkloadDescription | None = None,
    mode: str = "concurrency",
    request_rates: Sequence[float] | None = None,
    max_concurrency: int | None = None,
    arrival_seed: int = 0,
    slo: SLO | dict | str | None = None,
    telemetry=None,
    model_bytes: ModelBytes | None = None,
    peak_bandwidth_gb_s: float | None = None,
) -> BenchmarkReport:
    """Run every load level (a sweep: concurrency values or request rates) on the same requests.
    At each level the first `warmup_requests` requests run first under that level's load and are
    excluded from statistics; the timed requests follow. `engine` is an in-process Engine or an
    AsyncTarget (e.g. an HTTP endpoint). `telemetry`: a started-on-enter foundry.bench.telemetry
    GPUTelemetry (or None)."""
    _validate_run(requests, concurrency_levels, warmup_requests, mode, request_rates)
    slo = SLO.parse(slo)
    loads = load_levels(mode, concurrency_levels, request_rates, max_concurrency, arrival_seed)
    warmup, timed = list(requests[:warmup_requests]), list(requests[warmup_requests:])
    workload = workload or describe_requests(requests, warmup_requests)
    max_in_flight = max((load.concurrency or len(timed)) for load in loads)
    owns_target = not hasattr(engine, "stream")
    target = EngineTarget(engine, max_in_flight) if owns_target else engine

    epoch_s = clock_s()

    async def run_all():
        results = []
        for load in loads:
            warmup_records = await load.arun(target, warmup, epoch_s) if warmup else []
            records = await load.arun(target, timed, epoch_s)
            results.append((load, warmup_records, records))
        return results

    if telemetry is not None:
        telemetry.start()
    try:
        with garbage_collection_frozen():
            results = asyncio.run(run_all())
    finally:
        if telemetry is not None:
            telemetry.stop()
        if owns_target:
            target.close()
    telemetry_summary = telemetry.summary() if telemetry is not None else None
    if peak_bandwidth_gb_s is None and telemetry_summary is not None:
        peak_bandwidth_gb_s = telemetry_summary.peak_bandwidth_gb_s
    levels, all_records = [], []
    for load, warmup_records, records in results:
        level = summarize_level(
            records,
            load.concurrency,
            load_mode=load.name,
            warmup_records=warmup_records,
            request_rate=load.request_rate,
            slo=slo,
        )
        mbu, achieved = decode_mbu(level, model_bytes, peak_bandwidth_gb_s, records)
        levels.append(level.model_copy(update={"mbu": mbu, "achieved_bandwidth_gb_s": achieved}))
        all_records.extend(records)
    best_tok_s, best_label = max_throughput_within_slo(levels) if slo is not None else (None, None)
    return BenchmarkReport(
        backend=target.backend,
        model=model or str(getattr(engine, "name", "")),
        workload=workload,
        levels=levels,
        machine=machine_info(engine),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        slo=slo,
        max_output_tok_s_within_slo=best_tok_s,
        best_level_within_slo=best_label,
        telemetry=telemetry_summary.model_dump() if telemetry_summary is not None else None,
        model_bytes=model_bytes,
        target=getattr(engine, "url", None) or "in-process",
        batching=engine.batching if isinstance(getattr(engine, "batching", None), str) else None,
        clock_epoch_s=epoch_s,
        records=all_records,
    )


def _lookup_only_bytes(model) -> int:
    """The input embedding table of an HF model whose lm_head is a separate matrix: a decode step
    reads one row of it per token, not the table (tied tables are read whole, as the lm_head)."""
    get_input, get_output = getattr(model, "get_input_embeddings", None), getattr(model, "get_output_embeddings", None)
    if get_input is None or get_output is None or get_input() is None:
        return 0
    table, head = get_input().weight, getattr(get_output(), "weight", None)
    if head is not None and head.data_ptr() == table.data_ptr():
        return 0
    return table.numel() * table.element_size()


def engine_model_bytes(engine) -> ModelBytes | None:
    """Weight bytes a decode step reads and KV bytes per token of an in-process HF or reference
    engine (None if unknown)."""
    model = getattr(engine, "model", None)
    config = getattr(engine, "config", None) or getattr(model, "config", None)
    if model is not None and hasattr(model, "parameters"):
        weight_bytes = sum(p.numel() * p.element_size() for p in model.parameters()) - _lookup_only_bytes(model)
        dtype_bytes = next(model.parameters()).element_size()
        layers = getattr(config, "num_hidden_layers", None)
        kv_heads = getattr(config, "num_key_value_heads", None)
        head = getattr(config, "head_dim", None) or (config.hidden_size // config.num_attention_heads)
    elif hasattr(engine, "weight_bytes") and hasattr(engine, "kv_bytes_per_token"):  # the reference engine
        return ModelBytes(weight_bytes=engine.weight_bytes(), kv_bytes_per_token=engine.kv_bytes_per_token())
    else:
        return None
    if not (layers and kv_heads and head):
        return None
    return ModelBytes(
        weight_bytes=int(weight_bytes), kv_bytes_per_token=int(2 * layers * kv_heads * head * dtype_bytes)
    )
