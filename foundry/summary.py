"""Headline numbers for gates, metadata and the console summary at the end of a run."""

from __future__ import annotations

from foundry.bench.metrics import BenchmarkReport, ComparisonRow


def _worst(values: list[float | None], pick) -> float | None:
    present = [v for v in values if v is not None]
    return pick(present) if present else None


def benchmark_headline(report: BenchmarkReport, comparison: list[ComparisonRow]) -> dict[str, float | None]:
    """Gate inputs: the worst p99 latencies across levels and the smallest speedup; plus the
    numbers at concurrency 1 (the interactive view) for the summary."""
    levels = report.levels
    first = min(levels, key=lambda level: level.concurrency)
    headline = {
        "ttft_p99_ms": _worst([lv.ttft.p99_ms if lv.ttft else None for lv in levels], max),
        "tpot_p99_ms": _worst([lv.tpot.p99_ms if lv.tpot else None for lv in levels], max),
        "speedup_output_tok_s": _worst([row.speedup_output_tok_s for row in comparison], min),
        "c1_ttft_p50_ms": first.ttft.p50_ms if first.ttft else None,
        "c1_ttft_p99_ms": first.ttft.p99_ms if first.ttft else None,
        "c1_tpot_p50_ms": first.tpot.p50_ms if first.tpot else None,
        "c1_tpot_p99_ms": first.tpot.p99_ms if first.tpot else None,
        "c1_output_tok_s": first.output_token_throughput_tok_s,
        "max_output_tok_s": max(lv.output_token_throughput_tok_s for lv in levels),
        "failed_requests": float(sum(lv.failed for lv in levels)),
        "failure_rate_max": max(lv.failure_rate for lv in levels),
        "max_output_tok_s_within_slo": report.max_output_tok_s_within_slo,
        "goodput_req_s_max": _worst([lv.goodput_req_s for lv in levels], max),
        "mbu_c1": first.mbu,
    }
    return headline
