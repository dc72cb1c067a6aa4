"""The metrics layer: per-request records in, MLPerf/AIPerf-defined statistics out.

Definitions (docs/benchmark-definitions.md), all times from `time.perf_counter`:
* TTFT = first token arrival − time the request was *scheduled* to be sent (client queueing counts).
* e2e (request latency) = last token arrival − scheduled send time.
* TPOT = (e2e − TTFT) / (output_tokens − 1); undefined (excluded) for 1-token outputs.
* ITL (pooled) = every gap between consecutive token arrivals of a request, pooled over requests
  (vLLM's "ITL"); a different statistic from the per-request TPOT, hence the separate name.
* output_token_throughput_tok_s = Σ output tokens of completed requests / duration, where duration =
  last token arrival − first scheduled send (so it includes TTFT).
* request_throughput_req_s = completed requests / duration.
* goodput_req_s = completed requests meeting every configured SLO (TTFT, TPOT, e2e; per request,
  vLLM `--goodput`) / duration; slo_attainment = that count / timed requests.
* meets_slo_p99: the MLPerf rule, p99 TTFT and p99 TPOT (and e2e if set) under the limits, no failures.
* max_output_tok_s_within_slo: the highest output token throughput among the sweep's levels that
  meet the p99 rule (the NIM "latency budget" view).
* MBU = (weight bytes + KV bytes read per decode step) / TPOT / peak bandwidth (Databricks), taken at
  TPOT p50 for one sequence; KV bytes at the mean context (input + output/2) of completed requests.
Percentiles use numpy's linear interpolation (`np.percentile(method="linear")`).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
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
    load_mode: str = "concurrency"
    request_rate: float | None = None  # requests/s of the level (request_rate mode)

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


class SLO(BaseModel):
    """Latency limits (ms). Unknown keys are refused; unset ones are not checked."""

    model_config = ConfigDict(extra="forbid")

    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)

    @classmethod
    def parse(cls, spec: "SLO | dict | str | None") -> "SLO | None":
        """From a dict, or a CLI string like 'ttft_ms:500,tpot_ms:50' (vLLM's 'ttft:500' also works)."""
        if spec is None or isinstance(spec, SLO):
            return spec
        if isinstance(spec, str):
            pairs = {}
            for item in filter(None, (part.strip() for part in spec.replace(" ", ",").split(","))):
                key, sep, value = item.partition(":")
                if not sep:
                    raise FoundryError(f"SLO {item!r}: write key:value_ms, e.g. ttft_ms:500")
                key = key if key.endswith("_ms") else f"{key}_ms"
                try:
                    pairs[key] = float(value)
                except ValueError:
                    raise FoundryError(f"SLO {item!r}: {value!r} is not a number of milliseconds") from None
            spec = pairs
        try:
            slo = cls.model_validate(spec)
        except ValueError as error:
            raise FoundryError(f"invalid SLO {spec!r}: keys are ttft_ms, tpot_ms, e2e_ms (> 0): {error}") from None
        return slo if slo.model_dump(exclude_none=True) else None


class LevelSummary(BaseModel):
    """Statistics of one load level (a concurrency, or a Poisson request rate) over its timed requests."""

    model_config = ConfigDict(extra="forbid")

    load_mode: str = "concurrency"
    concurrency: int  # concurrency mode: N; request_rate mode: the cap (0 = uncapped)
    request_rate: float | None = None  # requests/s (request_rate mode)
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
    goodput_req_s: float | None = None  # None when no SLO is configured
    slo_attainment: float | None = None
    meets_slo_p99: bool | None = None
    mbu: float | None = None  # None unless model bytes and peak bandwidth are known
    achieved_bandwidth_gb_s: float | None = None

    @property
    def label(self) -> str:
        if self.load_mode == "request_rate":
            cap = f", cap {self.concurrency}" if self.concurrency else ""
            return f"rate {self.request_rate:g}/s{cap}"
        return f"concurrency {self.concurrency}"

    @property
    def key(self) -> tuple:
        return (self.load_mode, self.concurrency, self.request_rate)


class ModelBytes(BaseModel):
    """What one decode step must read: the weights (an untied input embedding table not: one row
    of it per token) and, per token of context, the KV cache."""

    model_config = ConfigDict(extra="forbid")

    weight_bytes: int
    kv_bytes_per_token: int


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
    slo: SLO | None = None
    max_output_tok_s_within_slo: float | None = None  # None: no SLO, or no level met it
    best_level_within_slo: str | None = None
    telemetry: dict | None = None  # foundry.bench.telemetry.TelemetrySummary as a dict
    model_bytes: ModelBytes | None = None
    target: str | None = None  # "in-process" or the endpoint URL
    served_by: str | None = None  # "trtllm-serve 1.2.1 (TensorRT backend)", "in-process reference", a command
    engine_content_hash: str | None = None  # the engine artifact these numbers belong to
    # How an in-process HF engine served concurrent requests: "per_request" or "static_batch"
    # (foundry/runtime/hf.py); None for engines without that choice.
    batching: str | None = None
    # time.perf_counter() (CLOCK_MONOTONIC) at the records' time origin: aligns them with a server's
    # log or telemetry taken on the same host.
    clock_epoch_s: float | None = None
    # Per-request records go to requests.csv, not report.json (they can be large).
    records: list[RequestRecord] = Field(default_factory=list, exclude=True)

    def level(self, concurrency: int) -> LevelSummary | None:
        return next((lv for lv in self.levels if lv.concurrency == concurrency and lv.load_mode == "concurrency"), None)

    def level_by_key(self, key: tuple) -> LevelSummary | None:
        return next((lv for lv in self.levels if lv.key == key), None)


class ComparisonRow(BaseModel):
    """Engine vs baseline at one concurrency. Every ratio is engine / baseline:
    speedup > 1 means the engine is faster; latency ratios < 1 mean the engine is faster."""

    model_config = ConfigDict(extra="forbid")

    concurrency: int
    load_mode: str = "concurrency"
    request_rate: float | None = None
    engine_backend: str
    baseline_backend: str
    baseline_batching: str | None = None  # BenchmarkReport.batching of the baseline
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
        p50_ms=float(p50),
        p90_ms=float(p90),
        p95_ms=float(p95),
        p99_ms=float(p99),
        min_ms=float(values.min()),
        max_ms=float(values.max()),
        mean_ms=float(values.mean()),
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


def request_meets_slo(record: RequestRecord, slo: SLO) -> bool:
    """Per request (vLLM goodput): completed and every set limit met; TPOT is not checked for
    1-token outputs (undefined there)."""
    if not record.completed:
        return False
    first = ttft_ms(record.scheduled_s, record.first_token_s)
    total = e2e_ms(record.scheduled_s, record.token_arrival_s[-1])
    per_token = tpot_ms(total, first, record.output_tokens)
    if slo.ttft_ms is not None and first > slo.ttft_ms:
        return False
    if slo.e2e_ms is not None and total > slo.e2e_ms:
        return False
    if slo.tpot_ms is not None and per_token is not None and per_token > slo.tpot_ms:
        return False
    return True


def level_meets_slo_p99(level: LevelSummary, slo: SLO) -> bool:
    """MLPerf: valid only if p99 TTFT and p99 TPOT (and e2e, if set) are under the limits; a level
    with failed requests or without the statistic never passes."""
    if level.failed or level.completed == 0:
        return False
    for limit, stats in ((slo.ttft_ms, level.ttft), (slo.tpot_ms, level.tpot), (slo.e2e_ms, level.e2e)):
        if limit is not None and (stats is None or stats.p99_ms > limit):
            return False
    return True


def decode_mbu(
    level: LevelSummary,
    model_bytes: ModelBytes | None,
    peak_bandwidth_gb_s: float | None,
    records: Sequence[RequestRecord],
) -> tuple[float | None, float | None]:
    """(MBU, achieved GB/s) for one sequence at TPOT p50; None where an input is unknown."""
    if model_bytes is None or level.tpot is None or level.tpot.p50_ms <= 0:
        return None, None
    completed = [r for r in records if r.completed]
    if not completed:
        return None, None
    mean_context = float(np.mean([r.input_tokens + r.output_tokens / 2 for r in completed]))
    bytes_per_step = model_bytes.weight_bytes + model_bytes.kv_bytes_per_token * mean_context
    achieved_gb_s = bytes_per_step / (level.tpot.p50_ms / 1e3) / 1e9
    if not peak_bandwidth_gb_s:
        return None, achieved_gb_s
    return achieved_gb_s / peak_bandwidth_gb_s, achieved_gb_s


def apply_slo(level: LevelSummary, records: Sequence[RequestRecord], slo: SLO | None) -> LevelSummary:
    if slo is None:
        return level
    good = sum(1 for r in records if request_meets_slo(r, slo))
    return level.model_copy(
        update={
            "goodput_req_s": good / level.duration_s if level.duration_s > 0 else 0.0,
            "slo_attainment": good / len(records) if records else 0.0,
            "meets_slo_p99": level_meets_slo_p99(level, slo),
        }
    )


def max_throughput_within_slo(levels: Sequence[LevelSummary]) -> tuple[float | None, str | None]:
    passing = [lv for lv in levels if lv.meets_slo_p99]
    if not passing:
        return None, None
    best = max(passing, key=lambda lv: lv.output_token_throughput_tok_s)
    return best.output_token_throughput_tok_s, best.label


def summarize_level(
    records: Sequence[RequestRecord],
    concurrency: int,
    *,
    load_mode: str = "concurrency",
    warmup_records: Sequence[RequestRecord] = (),
    request_rate: float | None = None,
    slo: SLO | None = None,
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
    level = LevelSummary(
        load_mode=load_mode,
        concurrency=concurrency,
        request_rate=request_rate,
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
    return apply_slo(level, records, slo)


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
        base = baseline.level_by_key(level.key)
        if base is None:
            continue
        rows.append(
            ComparisonRow(
                concurrency=level.concurrency,
                load_mode=level.load_mode,
                request_rate=level.request_rate,
                engine_backend=engine.backend,
                baseline_backend=baseline.backend,
                baseline_batching=baseline.batching,
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
            f"no common load level: engine {[lv.label for lv in engine.levels]}, "
            f"baseline {[lv.label for lv in baseline.levels]}"
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


def _record_row(record: RequestRecord) -> dict:
    row = record.model_dump()
    row["token_arrival_s"] = json.dumps(record.token_arrival_s)  # one CSV cell
    # derived per-request metrics (ms), empty when undefined
    first = ttft_ms(record.scheduled_s, record.first_token_s) if record.first_token_s is not None else None
    total = e2e_ms(record.scheduled_s, record.token_arrival_s[-1]) if record.token_arrival_s else None
    row["ttft_ms"] = first
    row["e2e_ms"] = total
    row["tpot_ms"] = tpot_ms(total, first, record.output_tokens) if first is not None and total is not None else None
    row["completed"] = record.completed
    return row


RECORD_COLUMNS = list(RequestRecord.model_fields) + ["ttft_ms", "e2e_ms", "tpot_ms", "completed"]


def records_dataframe(records: Sequence[RequestRecord]):
    """Per-request DataFrame (needs pandas; the CSV writer below does not)."""
    import pandas as pd

    return pd.DataFrame([_record_row(r) for r in records], columns=RECORD_COLUMNS)


def save_records_csv(records: Sequence[RequestRecord], path: Path) -> None:
    """Plain csv module, so `python -m foundry.bench` needs no pandas."""
    with Path(path).open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=RECORD_COLUMNS)
        writer.writeheader()
        for record in records:
            writer.writerow({k: ("" if v is None else v) for k, v in _record_row(record).items()})


def load_records_csv(path: Path) -> list[RequestRecord]:
    records = []
    with Path(path).open(newline="") as handle:
        for row in csv.DictReader(handle):
            for derived in ("ttft_ms", "e2e_ms", "tpot_ms", "completed"):
                row.pop(derived, None)
            parsed = dict(row)
            parsed["token_arrival_s"] = json.loads(row["token_arrival_s"])
            parsed["first_token_s"] = float(row["first_token_s"]) if row["first_token_s"] != "" else None
            parsed["error"] = row["error"] if row["error"] != "" else None
            parsed["request_rate"] = float(row["request_rate"]) if row.get("request_rate") else None
            records.append(RequestRecord.model_validate(parsed))
    return records
