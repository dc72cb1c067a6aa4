"""The metrics layer: per-request records in, MLPerf/AIPerf-defined statistics out.

Definitions (shared/reference/benchmarking.md), all times from `time.perf_counter`:
* TTFT = first token arrival − time the request was *scheduled* to be sent (client queueing counts).
* e2e (request latency) = last token arrival − scheduled send time.
* TPOT = (e2e − TTFT) / (output_tokens − 1); undefined (excluded) for 1-token outputs.
* ITL (pooled) = every gap between consecutive token arrivals of a request, pooled over requests
  (vLLM's "ITL"); a different statistic from the per-request TPOT, hence the separate name.
* output_token_throughput_tok_s = Σ output tokens of completed requests / duration, where duration =
  last token arrival − first scheduled send (so it includes TTFT).
* request_throughput_req_s = completed requests / duration.
Percentiles use numpy's linear interpolation (`np.percentile(method="linear")`).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from foundry.bench.workload import WorkloadDescription
from foundry.errors import FoundryError

PERCENTILE_METHOD = "linear"


class RequestRecord(BaseModel):
    """What the load generator observed for one request (times in seconds since the run epoch)."""

    model_config = ConfigDict(extra="forbid")

    request_id: int
    concurrency: int
    scheduled_s: float  # when the request was due to be sent (concurrency mode: client pickup)
    first_token_s: float | None
    token_arrival_s: list[float]
    end_s: float  # when generate() returned or raised
    input_tokens: int
    requested_output_tokens: int
    output_tokens: int  # tokens actually streamed
    error: str | None = None

    @property
    def completed(self) -> bool:
        return self.error is None


class LatencyStats(BaseModel):
    model_config = ConfigDict(extra="forbid")

    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    count: int


class LevelSummary(BaseModel):
    """Statistics of one load level (one concurrency value) over its timed requests."""

    model_config = ConfigDict(extra="forbid")

    load_mode: str = "concurrency"
    concurrency: int
    num_requests: int
    completed: int
    failed: int
    failure_rate: float
    warmup_requests: int = 0
    warmup_failed: int = 0
    duration_s: float
    total_output_tokens: int
    ttft: LatencyStats | None
    tpot: LatencyStats | None  # None when every completed output had 1 token
    e2e: LatencyStats | None
    itl: LatencyStats | None
    output_token_throughput_tok_s: float
    request_throughput_req_s: float
    errors: list[str] = Field(default_factory=list, description="distinct error messages, max 10")


class MachineInfo(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cpu_count: int | None
    torch_version: str
    device_name: str
    torch_threads: int
    platform: str


class BenchmarkReport(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: str  # which runtime produced every number in this report
    model: str
    workload: WorkloadDescription
    levels: list[LevelSummary]
    machine: MachineInfo
    created_at: str
    # Per-request records go to requests.csv, not report.json (they can be large).
    records: list[RequestRecord] = Field(default_factory=list, exclude=True)

    def level(self, concurrency: int) -> LevelSummary | None:
        return next((lv for lv in self.levels if lv.concurrency == concurrency), None)


class ComparisonRow(BaseModel):
    """Engine vs baseline at one concurrency. Every ratio is engine / baseline:
    speedup > 1 means the engine is faster; latency ratios < 1 mean the engine is faster."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int
    engine_backend: str
    baseline_backend: str
    engine_output_tok_s: float
    baseline_output_tok_s: float
    speedup_output_tok_s: float | None  # engine / baseline
    ttft_p50_ratio: float | None  # engine / baseline
    ttft_p99_ratio: float | None
    tpot_p50_ratio: float | None
    tpot_p99_ratio: float | None


# ---- per-request metrics -------------------------------------------------------------------


def ttft_ms(scheduled_s: float, first_token_s: float) -> float:
    return (first_token_s - scheduled_s) * 1e3


def e2e_ms(scheduled_s: float, last_token_s: float) -> float:
    return (last_token_s - scheduled_s) * 1e3


def tpot_ms(e2e_latency_ms: float, ttft_latency_ms: float, output_tokens: int) -> float | None:
    """(e2e − TTFT) / (n − 1); None for 1-token outputs, where it is undefined."""
    if output_tokens < 2:
        return None
    return (e2e_latency_ms - ttft_latency_ms) / (output_tokens - 1)


def inter_token_gaps_ms(token_arrival_s: Sequence[float]) -> list[float]:
    return [(later - earlier) * 1e3 for earlier, later in zip(token_arrival_s, token_arrival_s[1:])]


# ---- aggregation ---------------------------------------------------------------------------


def latency_stats(values_ms: Sequence[float]) -> LatencyStats | None:
    """p50/p90/p95/p99 (numpy linear interpolation) + min/max/mean; None for no values."""
    if len(values_ms) == 0:
        return None
    values = np.asarray(values_ms, dtype=np.float64)
    p50, p90, p95, p99 = np.percentile(values, [50, 90, 95, 99], method=PERCENTILE_METHOD)
    return LatencyStats(
        p50_ms=float(p50), p90_ms=float(p90), p95_ms=float(p95), p99_ms=float(p99),
        min_ms=float(values.min()), max_ms=float(values.max()), mean_ms=float(values.mean()),
        count=int(values.size),
    )


def benchmark_duration_s(records: Sequence[RequestRecord]) -> float:
    """First scheduled send → last token arrival (of completed requests; if none completed, the
    last request end), so the duration includes TTFT."""
    if not records:
        return 0.0
    start_s = min(r.scheduled_s for r in records)
    last_tokens = [r.token_arrival_s[-1] for r in records if r.completed and r.token_arrival_s]
    end_s = max(last_tokens) if last_tokens else max(r.end_s for r in records)
    return end_s - start_s


def _distinct_errors(records: Sequence[RequestRecord], limit: int = 10) -> list[str]:
    seen: list[str] = []
    for record in records:
        if record.error and record.error not in seen:
            seen.append(record.error)
    return seen[:limit]


def summarize_level(
    records: Sequence[RequestRecord],
    concurrency: int,
    *,
    load_mode: str = "concurrency",
    warmup_records: Sequence[RequestRecord] = (),
) -> LevelSummary:
    completed = [r for r in records if r.completed]
    ttfts = [ttft_ms(r.scheduled_s, r.first_token_s) for r in completed]
    e2es = [e2e_ms(r.scheduled_s, r.token_arrival_s[-1]) for r in completed]
    tpots = [
        value
        for r, first, total in zip(completed, ttfts, e2es)
        if (value := tpot_ms(total, first, r.output_tokens)) is not None
    ]
    itls = [gap for r in completed for gap in inter_token_gaps_ms(r.token_arrival_s)]
    duration_s = benchmark_duration_s(records)
    total_output_tokens = sum(r.output_tokens for r in completed)
    failed = len(records) - len(completed)
    return LevelSummary(
        load_mode=load_mode,
        concurrency=concurrency,
        num_requests=len(records),
        completed=len(completed),
        failed=failed,
        failure_rate=failed / len(records) if records else 0.0,
        warmup_requests=len(warmup_records),
        warmup_failed=sum(1 for r in warmup_records if not r.completed),
        duration_s=duration_s,
        total_output_tokens=total_output_tokens,
        ttft=latency_stats(ttfts),
        tpot=latency_stats(tpots),
        e2e=latency_stats(e2es),
        itl=latency_stats(itls),
        output_token_throughput_tok_s=total_output_tokens / duration_s if duration_s > 0 else 0.0,
        request_throughput_req_s=len(completed) / duration_s if duration_s > 0 else 0.0,
        errors=_distinct_errors(list(warmup_records) + list(records)),
    )


# ---- comparison ----------------------------------------------------------------------------


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or denominator is None or denominator == 0 or math.isnan(denominator):
        return None
    return numerator / denominator


def _stat(stats: LatencyStats | None, name: str) -> float | None:
    return getattr(stats, name) if stats is not None else None


def compare_reports(engine: BenchmarkReport, baseline: BenchmarkReport) -> list[ComparisonRow]:
    """One row per concurrency level present in both reports; ratios are engine / baseline.
    Refuses to compare different workloads (the ratios would mean nothing)."""
    if engine.workload.workload_hash != baseline.workload.workload_hash:
        raise FoundryError(
            "cannot compare reports of different workloads: workload_hash "
            f"{engine.workload.workload_hash[:12]} (engine) vs {baseline.workload.workload_hash[:12]} (baseline)"
        )
    rows = []
    for level in engine.levels:
        base = baseline.level(level.concurrency)
        if base is None:
            continue
        rows.append(
            ComparisonRow(
                concurrency=level.concurrency,
                engine_backend=engine.backend,
                baseline_backend=baseline.backend,
                engine_output_tok_s=level.output_token_throughput_tok_s,
                baseline_output_tok_s=base.output_token_throughput_tok_s,
                speedup_output_tok_s=_ratio(level.output_token_throughput_tok_s, base.output_token_throughput_tok_s),
                ttft_p50_ratio=_ratio(_stat(level.ttft, "p50_ms"), _stat(base.ttft, "p50_ms")),
                ttft_p99_ratio=_ratio(_stat(level.ttft, "p99_ms"), _stat(base.ttft, "p99_ms")),
                tpot_p50_ratio=_ratio(_stat(level.tpot, "p50_ms"), _stat(base.tpot, "p50_ms")),
                tpot_p99_ratio=_ratio(_stat(level.tpot, "p99_ms"), _stat(base.tpot, "p99_ms")),
            )
        )
    if not rows:
        raise FoundryError(
            f"no common concurrency level: engine {[lv.concurrency for lv in engine.levels]}, "
            f"baseline {[lv.concurrency for lv in baseline.levels]}"
        )
    return rows


# ---- persistence ---------------------------------------------------------------------------


def save_report_json(report: BenchmarkReport, path: Path) -> None:
    Path(path).write_text(report.model_dump_json(indent=2))


def load_report_json(path: Path) -> BenchmarkReport:
    try:
        return BenchmarkReport.model_validate_json(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise FoundryError(f"cannot read benchmark report {path}: {error}") from error


def save_comparison_json(rows: Sequence[ComparisonRow], path: Path) -> None:
    Path(path).write_text(json.dumps([row.model_dump() for row in rows], indent=2))


def records_dataframe(records: Sequence[RequestRecord]) -> pd.DataFrame:
    rows = []
    for record in records:
        row = record.model_dump()
        row["token_arrival_s"] = json.dumps(record.token_arrival_s)  # one CSV cell
        rows.append(row)
    return pd.DataFrame(rows, columns=list(RequestRecord.model_fields))


def save_records_csv(records: Sequence[RequestRecord], path: Path) -> None:
    records_dataframe(records).to_csv(path, index=False)


def load_records_csv(path: Path) -> list[RequestRecord]:
    frame = pd.read_csv(path, keep_default_na=False, na_values={"first_token_s": [""], "error": [""]})
    records = []
    for row in frame.to_dict(orient="records"):
        row["token_arrival_s"] = json.loads(row["token_arrival_s"])
        row["first_token_s"] = None if pd.isna(row["first_token_s"]) else float(row["first_token_s"])
        row["error"] = None if pd.isna(row["error"]) else str(row["error"])
        records.append(RequestRecord.model_validate(row))
    return records
