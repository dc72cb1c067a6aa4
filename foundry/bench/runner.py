"""The load generator: sends a request list to a target under a load mode and records timings.

Pieces, so new ones slot in without touching the rest:
* request source — a list of `Request` (foundry.bench.workload);
* target — anything with the `Engine` protocol's `generate(input_ids, n, on_token)` (an HTTP
  client target only has to offer the same method);
* load mode — `ConcurrencyLoad` (N clients, one request in flight each); a Poisson request-rate
  mode is another class with the same `run(...)` that sets `scheduled_s` from its arrival plan;
* metrics — `summarize_level` over the `RequestRecord`s (foundry.bench.metrics).
"""

from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from queue import Empty, SimpleQueue
from typing import Protocol, Sequence

import torch

from foundry.bench.metrics import BenchmarkReport, MachineInfo, RequestRecord, summarize_level
from foundry.bench.workload import Request, WorkloadDescription, describe_requests
from foundry.errors import FoundryError
from foundry.runtime.base import Engine

clock_s = time.perf_counter  # monotonic, sub-microsecond resolution


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


def send_request(
    target: Engine, request: Request, scheduled_s: float, epoch_s: float, concurrency: int
) -> RequestRecord:
    """Run one request to completion; an exception from the target becomes a failed record."""
    arrivals_s: list[float] = []
    streamed: list[int] = []

    def on_token(token_id: int) -> None:
        arrivals_s.append(clock_s())  # timestamp first: the append below is not part of latency
        streamed.append(int(token_id))

    try:
        returned = target.generate(request.input_ids, request.output_tokens, on_token)
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
    )


class LoadMode(Protocol):
    name: str

    def run(self, target: Engine, requests: Sequence[Request], epoch_s: float) -> list[RequestRecord]: ...


@dataclass(frozen=True)
class ConcurrencyLoad:
    """N client threads, each with exactly one request in flight, pulling from a shared queue.
    A request is scheduled when a client picks it up, so TTFT includes no client-side queueing
    beyond the target's own."""

    concurrency: int
    name: str = "concurrency"

    def run(self, target: Engine, requests: Sequence[Request], epoch_s: float) -> list[RequestRecord]:
        pending: SimpleQueue[Request] = SimpleQueue()
        for request in requests:
            pending.put(request)
        records: list[RequestRecord] = []
        records_lock = threading.Lock()

        def client() -> None:
            while True:
                try:
                    request = pending.get_nowait()
                except Empty:
                    return
                record = send_request(target, request, clock_s(), epoch_s, self.concurrency)
                with records_lock:
                    records.append(record)

        clients = [threading.Thread(target=client, name=f"bench-client-{i}", daemon=True)
                   for i in range(min(self.concurrency, len(requests)))]
        for thread in clients:
            thread.start()
        for thread in clients:
            thread.join()
        if len(records) != len(requests):
            raise FoundryError(f"load generator lost requests: sent {len(requests)}, recorded {len(records)}")
        return sorted(records, key=lambda r: r.request_id)


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


def _validate_run(requests: Sequence[Request], concurrency_levels: Sequence[int], warmup_requests: int) -> None:
    if not concurrency_levels:
        raise FoundryError("concurrency_levels must name at least one level")
    if any(level < 1 for level in concurrency_levels):
        raise FoundryError(f"concurrency levels must be >= 1, got {list(concurrency_levels)}")
    if warmup_requests < 0:
        raise FoundryError(f"warmup_requests must be >= 0, got {warmup_requests}")
    if len(requests) <= warmup_requests:
        raise FoundryError(
            f"the workload has {len(requests)} requests but warmup_requests={warmup_requests}: "
            "no request would be timed"
        )


def run_benchmark(
    engine: Engine,
    requests: Sequence[Request],
    concurrency_levels: Sequence[int],
    warmup_requests: int,
    *,
    model: str = "",
    workload: WorkloadDescription | None = None,
) -> BenchmarkReport:
    """Run every concurrency level on the same requests. At each level the first
    `warmup_requests` requests run first at that concurrency and are excluded from statistics;
    the timed requests follow."""
    _validate_run(requests, concurrency_levels, warmup_requests)
    warmup, timed = list(requests[:warmup_requests]), list(requests[warmup_requests:])
    workload = workload or describe_requests(requests, warmup_requests)
    epoch_s = clock_s()
    levels, all_records = [], []
    for concurrency in concurrency_levels:
        load = ConcurrencyLoad(concurrency)
        warmup_records = load.run(engine, warmup, epoch_s) if warmup else []
        records = load.run(engine, timed, epoch_s)
        levels.append(summarize_level(records, concurrency, load_mode=load.name, warmup_records=warmup_records))
        all_records.extend(records)
    return BenchmarkReport(
        backend=engine.backend,
        model=model or str(getattr(engine, "name", "")),
        workload=workload,
        levels=levels,
        machine=machine_info(engine),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        records=all_records,
    )
