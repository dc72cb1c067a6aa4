from typing import Annotated

import pandas as pd
from zenml import log_metadata, step
from zenml.types import HTMLString

from foundry.artifacts import EngineArtifact, HFCheckpoint
from foundry.bench.metrics import compare_reports, records_dataframe
from foundry.bench.report import render_html
from foundry.bench.runner import engine_model_bytes, run_benchmark
from foundry.bench.telemetry import GPUTelemetry
from foundry.bench.validation import require_valid_results
from foundry.bench.workload import workload_from_config
from foundry.builders import load_engine
from foundry.builders.base import read_engine_info
from foundry.config import BenchmarkConfig
from foundry.runtime.hf import HFEngine
from foundry.summary import benchmark_headline


def _run(runtime, requests, workload, benchmark: BenchmarkConfig, model_name: str):
    return run_benchmark(
        runtime, requests, benchmark.concurrency, benchmark.warmup_requests, model=model_name, workload=workload,
        mode=benchmark.mode, request_rates=benchmark.request_rates, max_concurrency=benchmark.max_concurrency,
        arrival_seed=benchmark.seed, slo=benchmark.slo.model_dump(exclude_none=True) or None,
        telemetry=GPUTelemetry(0) if benchmark.telemetry else None, model_bytes=engine_model_bytes(runtime),
    )


# Never cached: a benchmark measures this machine now; the gates must not pass on yesterday's numbers.
@step(enable_cache=False)
def benchmark_engine(
    engine: EngineArtifact, checkpoint: HFCheckpoint, benchmark: BenchmarkConfig, model_name: str,
    benchmark_dataset_fingerprint: str = "synthetic",
) -> tuple[
    Annotated[dict, "benchmark_results"],
    Annotated[pd.DataFrame, "benchmark_requests"],
    Annotated[HTMLString, "benchmark_report"],
]:
    """Same workload (seeded synthetic or a trtllm-bench dataset) on the engine and (optionally) the
    HF transformers baseline, under the configured load mode; results validated with GX."""
    runtime = load_engine(engine.path)
    baseline_runtime = HFEngine.load(checkpoint.path) if benchmark.baseline else None
    vocab_size, special_ids, tokenizer = baseline_vocab(checkpoint)
    requests, workload = workload_from_config(benchmark, vocab_size, special_ids, tokenizer=tokenizer,
                                              max_seq_len=read_engine_info(engine.path).get("max_seq_len"))
    report = _run(runtime, requests, workload, benchmark, model_name)
    frames = [records_dataframe(report.records).assign(backend=report.backend)]
    baseline_report, comparison = None, []
    if baseline_runtime is not None:
        del runtime  # one model in memory at a time is enough on small machines
        baseline_report = _run(baseline_runtime, requests, workload, benchmark, model_name)
        comparison = compare_reports(report, baseline_report)
        frames.append(records_dataframe(baseline_report.records).assign(backend=baseline_report.backend))
    frame = pd.concat(frames, ignore_index=True)
    validation = require_valid_results(frame, benchmark.min_completion_rate)
    headline = benchmark_headline(report, comparison)
    results = {
        "engine": report.model_dump(mode="json"),
        "baseline": baseline_report.model_dump(mode="json") if baseline_report else None,
        "comparison": [row.model_dump(mode="json") for row in comparison],
        "headline": headline,
        "validation": validation.as_dict(),
        "dataset_fingerprint": benchmark_dataset_fingerprint,
    }
    log_metadata(metadata={"benchmark": {k: v for k, v in headline.items() if v is not None}, "backend": report.backend,
                           "benchmark_validation": {"success": validation.success, "rows": validation.checked_rows}})
    html = render_html(report, baseline=baseline_report, comparison=comparison)
    return results, frame, HTMLString(html)


def baseline_vocab(checkpoint: HFCheckpoint):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
    return len(tokenizer), list(tokenizer.all_special_ids), tokenizer
