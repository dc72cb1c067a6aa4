"""Normalize a `trtllm-bench ... --report_json R.json` report into this project's BenchmarkReport.

Fields read (TensorRT-LLM `tensorrt_llm/bench/dataclasses/reporting.py`, `get_statistics_dict`):
* `request_info`: `num_requests`, `avg_num_concurrent_requests`, `avg_input_length`, `avg_output_length`;
* `performance`: `total_latency_ms`, `request_throughput_req_s`, `system_output_throughput_tok_s`,
  `request_latency_percentiles_ms` {p50, p90, p95, p99, minimum, maximum, average};
* `streaming_metrics` (only with `--streaming`): `ttft_percentiles`, `tpot_percentiles` (same keys, ms);
* `engine` (`model`, `backend`, `version`, `dtype`, `quantization`) and `world_info.max_batch_size`.
trtllm-bench reports no per-request records and no failures, so the normalized report has one level,
`failed = 0` by construction (stated in `errors`), and no ITL. A missing or non-numeric field is an
error naming it, never a silent zero.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from foundry.bench.metrics import BenchmarkReport, LatencyStats, LevelSummary, MachineInfo
from foundry.bench.workload import WorkloadDescription
from foundry.errors import FoundryError
from foundry.hashing import sha256_json

_PERCENTILE_KEYS = {
    "p50_ms": "p50",
    "p90_ms": "p90",
    "p95_ms": "p95",
    "p99_ms": "p99",
    "min_ms": "minimum",
    "max_ms": "maximum",
    "mean_ms": "average",
}


def _get(data: dict, path: str, source: Path):
    node = data
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise FoundryError(f"{source}: not a trtllm-bench report: missing field {path!r}")
        node = node[part]
    return node


def _number(data: dict, path: str, source: Path) -> float:
    value = _get(data, path, source)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise FoundryError(f"{source}: field {path!r} must be a finite number >= 0, got {value!r}")
    return float(value)


def _stats(data: dict, path: str, source: Path, count: int) -> LatencyStats:
    _get(data, path, source)
    values = {ours: _number(data, f"{path}.{theirs}", source) for ours, theirs in _PERCENTILE_KEYS.items()}
    return LatencyStats(**values, count=count)


def normalize_trtllm_bench_report(data: object, source: Path | str = "<report>") -> BenchmarkReport:
    source = Path(source)
    if not isinstance(data, dict):
        raise FoundryError(f"{source}: a trtllm-bench report is a JSON object, got {type(data).__name__}")
    num_requests = _number(data, "request_info.num_requests", source)
    if num_requests < 1 or num_requests != int(num_requests):
        raise FoundryError(f"{source}: request_info.num_requests must be a positive integer, got {num_requests}")
    num_requests = int(num_requests)
    duration_s = _number(data, "performance.total_latency_ms", source) / 1e3
    output_tok_s = _number(data, "performance.system_output_throughput_tok_s", source)
    avg_output = _number(data, "request_info.avg_output_length", source)
    avg_input = _number(data, "request_info.avg_input_length", source)
    streaming = "streaming_metrics" in data
    ttft = _stats(data, "streaming_metrics.ttft_percentiles", source, num_requests) if streaming else None
    tpot = _stats(data, "streaming_metrics.tpot_percentiles", source, num_requests) if streaming else None
    e2e = _stats(data, "performance.request_latency_percentiles_ms", source, num_requests)
    concurrency = data.get("request_info", {}).get("avg_num_concurrent_requests")
    level = LevelSummary(
        load_mode="trtllm-bench",
        concurrency=int(round(concurrency)) if isinstance(concurrency, (int, float)) else 0,
        num_requests=num_requests,
        completed=num_requests,
        failed=0,
        failure_rate=0.0,
        duration_s=duration_s,
        total_output_tokens=int(round(avg_output * num_requests)),
        ttft=ttft,
        tpot=tpot,
        e2e=e2e,
        itl=None,
        output_token_throughput_tok_s=output_tok_s,
        request_throughput_req_s=_number(data, "performance.request_throughput_req_s", source),
        errors=[]
        if streaming
        else ["report has no streaming_metrics (run trtllm-bench with --streaming for TTFT/TPOT)"],
    )
    engine = data.get("engine") or {}
    workload = WorkloadDescription(
        source=f"trtllm-bench:{data.get('dataset', {}).get('dataset_path', source.name) if isinstance(data.get('dataset'), dict) else source.name}",
        seed=None,
        num_requests=num_requests,
        warmup_requests=0,
        input_len_min=int(avg_input),
        input_len_max=int(math.ceil(avg_input)),
        output_len_min=int(avg_output),
        output_len_max=int(math.ceil(avg_output)),
        vocab_size=None,
        workload_hash=sha256_json(data.get("dataset") or {"avg_input": avg_input, "avg_output": avg_output}),
        input_len_distribution="dataset-average",
        output_len_distribution="dataset-average",
    )
    return BenchmarkReport(
        backend=f"tensorrt-llm:{engine.get('backend', 'unknown')}",
        model=str(engine.get("model", "")),
        workload=workload,
        levels=[level],
        machine=MachineInfo(
            cpu_count=None,
            torch_version="n/a",
            device_name=str(engine.get("version", "trtllm-bench")),
            torch_threads=0,
            platform="trtllm-bench report",
        ),
        created_at=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        target=f"trtllm-bench report {source.name}",
    )


def load_trtllm_bench_report(path: Path | str) -> BenchmarkReport:
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise FoundryError(f"{path}: cannot read trtllm-bench report: {error}") from None
    except ValueError as error:
        raise FoundryError(f"{path}: trtllm-bench report is not valid JSON: {error}") from None
    return normalize_trtllm_bench_report(data, path)
