"""The comparison report: every gate metric side by side with production, deltas and verdicts."""

import pytest

from foundry.comparison import GATE_METRICS, compare_metrics, render_comparison_html
from foundry.config import GateConfig

CANDIDATE = {
    "perplexity_ratio": 1.02,
    "mean_kld": 0.01,
    "top1_agreement": 0.95,
    "ttft_p99_ms": 120.0,
    "tpot_p99_ms": 20.0,
    "speedup_output_tok_s": 1.5,
    "c1_output_tok_s": 50.0,
    "failed_requests": 0.0,
    "unquantized_perplexity": 9.0,
}
PRODUCTION = {
    "perplexity_ratio": 1.04,
    "mean_kld": 0.01,
    "top1_agreement": 0.97,
    "ttft_p99_ms": 100.0,
    "tpot_p99_ms": 25.0,
    "speedup_output_tok_s": 1.4,
    "c1_output_tok_s": 40.0,
    "failed_requests": 0.0,
    "unquantized_perplexity": 9.0,
}


def rows(report):
    return {row.metric: row for row in report.rows}


def test_every_gate_metric_has_a_row_with_delta_and_verdict():
    report = compare_metrics("m", CANDIDATE, PRODUCTION, GateConfig(max_ttft_p99_ms=200), "run", "production v3")
    by_metric = rows(report)
    assert set(GATE_METRICS) <= set(by_metric)
    assert by_metric["perplexity_ratio"].delta == pytest.approx(-0.02)
    assert by_metric["perplexity_ratio"].verdict == "better"  # lower is better
    assert by_metric["top1_agreement"].verdict == "worse"  # higher is better, it dropped
    assert by_metric["ttft_p99_ms"].verdict == "worse" and by_metric["ttft_p99_ms"].delta_pct == pytest.approx(20.0)
    assert by_metric["ttft_p99_ms"].threshold == "<= 200"
    assert by_metric["tpot_p99_ms"].threshold is None  # gate off
    assert by_metric["mean_kld"].verdict == "same"
    assert by_metric["c1_output_tok_s"].verdict == "better" and not by_metric["c1_output_tok_s"].is_gate_metric
    assert by_metric["unquantized_perplexity"].verdict == "same"  # the base model's sanity gate
    assert report.regressions == ["top1_agreement", "ttft_p99_ms"]


def test_html_shows_the_table_deltas_and_a_plot():
    report = compare_metrics("m", CANDIDATE, PRODUCTION, GateConfig(), "this run (v4)", "production (v3)")
    page = render_comparison_html(report)
    assert "this run (v4)" in page and "production (v3)" in page
    assert "+20.0%" in page and "Worse than production (v3) on:" in page and "<svg" in page
    assert page.count("<tr") == len(report.rows) + 1


def test_no_production_yet_says_so_and_shows_this_run_only():
    report = compare_metrics("m", CANDIDATE, None, GateConfig(), "this run", None)
    assert report.baseline_label is None and report.regressions == []
    assert all(row.verdict == "n/a" and row.baseline is None for row in report.rows)
    page = render_comparison_html(report)
    assert "Nothing is in production yet" in page and "<svg" not in page


def test_a_metric_missing_on_one_side_is_not_judged():
    report = compare_metrics("m", {"perplexity_ratio": 1.0}, {"mean_kld": 0.1}, GateConfig(), "a", "b")
    by_metric = rows(report)
    assert by_metric["perplexity_ratio"].verdict == "n/a" and by_metric["mean_kld"].candidate is None
