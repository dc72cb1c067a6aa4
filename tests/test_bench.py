"""The benchmark harness: metric definitions on hand-computed numbers, workload determinism,
measurement accuracy against an engine with exactly known latencies, failures, persistence, HTML."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from foundry.bench.metrics import (
    BenchmarkReport,
    LatencyStats,
    LevelSummary,
    MachineInfo,
    RequestRecord,
    benchmark_duration_s,
    compare_reports,
    e2e_ms,
    inter_token_gaps_ms,
    latency_stats,
    load_records_csv,
    load_report_json,
    save_records_csv,
    save_report_json,
    summarize_level,
    tpot_ms,
    ttft_ms,
)
from foundry.bench.report import render_html
from foundry.bench.runner import output_error, run_benchmark
from foundry.bench.synthetic import SyntheticEngine
from foundry.bench.workload import (
    Request,
    describe_requests,
    synthetic_workload,
    synthetic_workload_with_description,
    workload_from_config,
)
from foundry.config import BenchmarkConfig
from foundry.errors import FoundryError
from foundry.runtime.base import Engine
from tests.bench_truth import harness_error_ms, true_latencies_ms

# ---- metric definitions ----------------------------------------------------------------------


def record(request_id, scheduled_s, arrivals_s, error=None, requested=None):
    return RequestRecord(
        request_id=request_id,
        concurrency=1,
        scheduled_s=scheduled_s,
        first_token_s=arrivals_s[0] if arrivals_s else None,
        token_arrival_s=arrivals_s,
        end_s=arrivals_s[-1] if arrivals_s else scheduled_s + 0.5,
        input_tokens=4,
        requested_output_tokens=requested or len(arrivals_s),
        output_tokens=len(arrivals_s),
        error=error,
    )


HAND_RECORDS = [
    record(0, 0.00, [0.10, 0.12, 0.14, 0.16]),  # TTFT 100, e2e 160, TPOT 60/3 = 20
    record(1, 0.05, [0.30, 0.34, 0.38]),  # queued: TTFT 250 (from scheduled), e2e 330, TPOT 80/2 = 40
    record(2, 0.10, [0.20]),  # 1 token: TTFT 100, e2e 100, TPOT undefined
    record(3, 0.15, [], error="RuntimeError: boom"),  # failed: in no latency, not in throughput
]


def test_per_request_formulas():
    assert ttft_ms(1.0, 1.25) == pytest.approx(250.0)
    assert e2e_ms(1.0, 1.5) == pytest.approx(500.0)
    assert tpot_ms(160.0, 100.0, 4) == pytest.approx(20.0)
    assert tpot_ms(100.0, 100.0, 1) is None
    assert inter_token_gaps_ms([0.1, 0.12, 0.15]) == pytest.approx([20.0, 30.0])


def test_percentiles_use_linear_interpolation():
    stats = latency_stats([100.0, 250.0, 100.0])
    # sorted [100, 100, 250]: p90 at rank 0.9·2 = 1.8 → 100 + 0.8·150
    assert stats.p50_ms == pytest.approx(100.0)
    assert stats.p90_ms == pytest.approx(220.0)
    assert stats.p95_ms == pytest.approx(235.0)
    assert stats.p99_ms == pytest.approx(247.0)
    assert (stats.min_ms, stats.max_ms, stats.mean_ms, stats.count) == (100.0, 250.0, 150.0, 3)
    assert latency_stats([]) is None


def test_level_summary_on_hand_computed_records():
    level = summarize_level(HAND_RECORDS, concurrency=2)
    assert (level.num_requests, level.completed, level.failed) == (4, 3, 1)
    assert level.failure_rate == pytest.approx(0.25)
    assert level.ttft.p50_ms == pytest.approx(100.0) and level.ttft.max_ms == pytest.approx(250.0)
    assert level.e2e.mean_ms == pytest.approx((160 + 330 + 100) / 3)
    # the 1-token request is excluded from TPOT: only 20 and 40
    assert level.tpot.count == 2 and level.tpot.p50_ms == pytest.approx(30.0)
    assert level.tpot.p90_ms == pytest.approx(38.0)
    # pooled ITL: three 20 ms gaps and two 40 ms gaps
    assert level.itl.count == 5 and level.itl.mean_ms == pytest.approx(28.0)
    # duration: first scheduled send (0.0) → last token of a completed request (0.38)
    assert benchmark_duration_s(HAND_RECORDS) == pytest.approx(0.38)
    assert level.duration_s == pytest.approx(0.38)
    assert level.total_output_tokens == 8
    assert level.output_token_throughput_tok_s == pytest.approx(8 / 0.38)
    assert level.request_throughput_req_s == pytest.approx(3 / 0.38)
    assert level.errors == ["RuntimeError: boom"]


def test_tpot_is_none_when_every_output_has_one_token():
    level = summarize_level([record(0, 0.0, [0.1]), record(1, 0.0, [0.2])], concurrency=1)
    assert level.tpot is None and level.itl is None and level.ttft.count == 2


def test_output_error_names_the_problem():
    request = Request(0, [1, 2], 3)
    assert output_error(request, [1, 2, 3], [1, 2, 3]) is None
    assert "streamed 2 tokens" in output_error(request, [1, 2, 3], [1, 2])
    assert "returned 2 tokens" in output_error(request, [1, 2], [1, 2, 3])
    assert "differ" in output_error(request, [1, 2, 4], [1, 2, 3])


# ---- workload --------------------------------------------------------------------------------


def test_synthetic_workload_is_seeded_and_respects_ranges():
    args = dict(
        num_requests=50,
        input_len_min=3,
        input_len_max=7,
        output_len_min=2,
        output_len_max=4,
        vocab_size=20,
        special_ids=(0, 1, 2),
    )
    first, again, other = (synthetic_workload(seed, **args) for seed in (7, 7, 8))
    assert first == again and first != other
    assert {len(r.input_ids) for r in first} == {3, 4, 5, 6, 7}
    assert {r.output_tokens for r in first} == {2, 3, 4}
    assert {t for r in first for t in r.input_ids} <= set(range(3, 20))
    assert [r.request_id for r in first] == list(range(50))


def test_workload_description_and_hash():
    requests, description = synthetic_workload_with_description(3, 5, 2, 4, 8, 2, 6, vocab_size=100)
    assert len(requests) == 7 and description.num_requests == 5 and description.warmup_requests == 2
    assert (description.seed, description.input_len_min, description.output_len_max) == (3, 4, 6)
    again, _ = synthetic_workload_with_description(3, 5, 2, 4, 8, 2, 6, vocab_size=100)
    assert describe_requests(again, 2).workload_hash == description.workload_hash
    config = BenchmarkConfig(
        seed=3, num_requests=5, warmup_requests=2, input_len={"min": 4, "max": 8}, output_len={"min": 2, "max": 6}
    )
    assert workload_from_config(config, vocab_size=100)[1] == description


@pytest.mark.parametrize(
    "override, field",
    [
        ({"input_len_min": 0}, "input_len_min"),
        ({"output_len_max": 0}, "output_len_max"),
        ({"input_len_min": 9, "input_len_max": 8}, "input_len_min"),
        ({"output_len_min": 5, "output_len_max": 4}, "output_len_min"),
        ({"num_requests": 0}, "num_requests"),
        ({"vocab_size": 0}, "vocab_size"),
        ({"vocab_size": 2, "special_ids": (0, 1)}, "special_ids"),
    ],
)
def test_synthetic_workload_validation_names_the_field(override, field):
    args = dict(
        seed=0, num_requests=4, input_len_min=2, input_len_max=8, output_len_min=1, output_len_max=4, vocab_size=50
    )
    with pytest.raises(FoundryError, match=field):
        synthetic_workload(**{**args, **override})


# ---- harness accuracy on an engine with known latencies --------------------------------------

TTFT_TRUTH_MS, ITL_TRUTH_MS, OUTPUT_TOKENS = 20.0, 5.0, 6
# The engine's own emission log is the truth (tests/bench_truth.py): on 2 CPU cores shared with other
# jobs the engine's threads deliver late by up to tens of ms now and then (seen in CI: TTFT p50 21.2 ms
# for a 20 ms schedule). That is latency the harness must report. Harness error is only the gap between
# the engine handing a token over and the harness timestamping it, in the same thread here: µs.


def p50_tolerance_ms(truth_ms: float) -> float:
    return max(0.01 * truth_ms, 0.5)


@pytest.fixture(scope="module")
def synthetic_runs() -> dict:
    """concurrency → (report, requests, emission log); one engine per level, so each log is that level's."""
    runs = {}
    for concurrency in (1, 8):
        engine = SyntheticEngine(ttft_ms=TTFT_TRUTH_MS, itl_ms=ITL_TRUTH_MS)
        requests, workload = synthetic_workload_with_description(
            seed=1,
            num_requests=24,
            warmup_requests=1,
            input_len_min=4,
            input_len_max=8,
            output_len_min=OUTPUT_TOKENS,
            output_len_max=OUTPUT_TOKENS,
            vocab_size=engine.vocab_size,
        )
        report = run_benchmark(engine, requests, [concurrency], warmup_requests=1, workload=workload)
        runs[concurrency] = (report, requests, engine.emission_log())
    return runs


@pytest.fixture(scope="module")
def synthetic_report(synthetic_runs) -> BenchmarkReport:
    return synthetic_runs[1][0]


def test_synthetic_engine_implements_engine_protocol():
    engine = SyntheticEngine(ttft_ms=0, itl_ms=0)
    assert isinstance(engine, Engine)
    streamed = []
    tokens = engine.generate([5], 4, streamed.append)
    assert tokens == streamed == [6, 7, 8, 9]
    import torch

    assert engine.logits(torch.tensor([[5]]))[0, -1].argmax().item() == 6
    (entry,) = engine.emission_log()
    assert entry["prompt"] == [5] and len(entry["emitted_s"]) == 4 and entry["emitted_s"] == sorted(entry["emitted_s"])


def test_synthetic_engine_never_emits_before_its_schedule():
    engine = SyntheticEngine(ttft_ms=3, itl_ms=2)
    before_s = time.perf_counter()
    engine.generate([7, 8], 4)
    emitted_s = np.asarray(engine.emission_log()[0]["emitted_s"])
    assert np.all(emitted_s - before_s >= np.asarray(engine.token_schedule_s(4)) - 1e-6)


@pytest.mark.parametrize("concurrency", [1, 8])
def test_harness_measures_what_the_engine_delivered(synthetic_runs, concurrency):
    report, requests, emission_log = synthetic_runs[concurrency]
    level = report.level(concurrency)
    assert (level.completed, level.failed) == (24, 0)
    truth = true_latencies_ms(report, requests, emission_log)
    for stats, true_values in ((level.ttft, truth["ttft"]), (level.tpot, truth["tpot"]), (level.e2e, truth["e2e"])):
        for name, q in (("p50_ms", 50), ("p90_ms", 90), ("p99_ms", 99)):
            true_value = float(np.percentile(true_values, q))
            assert abs(getattr(stats, name) - true_value) <= p50_tolerance_ms(true_value), (name, stats, true_value)
    # every token is timestamped after the engine handed it over and, in process, within 0.5 ms (p50)
    error_ms = harness_error_ms(report, requests, emission_log)
    assert error_ms.min() >= -1e-3 and np.median(error_ms) <= 0.5, np.percentile(error_ms, [50, 99])
    # the schedule is a floor: TTFT and e2e never below it (the engine may be late, never early)
    e2e_floor_ms = TTFT_TRUTH_MS + (OUTPUT_TOKENS - 1) * ITL_TRUTH_MS
    assert level.ttft.min_ms >= TTFT_TRUTH_MS - 0.05 and level.e2e.min_ms >= e2e_floor_ms - 0.05
    assert level.output_token_throughput_tok_s == pytest.approx(24 * OUTPUT_TOKENS / level.duration_s)
    # c clients each run ceil(24/c) requests back to back: the duration is at least that many e2e floors
    assert level.duration_s >= math.ceil(24 / concurrency) * e2e_floor_ms / 1e3 * 0.999
    assert level.warmup_requests == 1


# ---- failures and warmup ---------------------------------------------------------------------


class FaultyEngine(SyntheticEngine):
    """Raises on one prompt, streams one token short on another."""

    def __init__(self, raise_on_first_token: int, short_on_first_token: int):
        super().__init__(ttft_ms=1, itl_ms=0.5)
        self.raise_on, self.short_on = raise_on_first_token, short_on_first_token

    def generate(self, input_ids, max_new_tokens, on_token=None):
        if input_ids[0] == self.raise_on:
            raise RuntimeError("simulated engine crash")
        if input_ids[0] == self.short_on:
            max_new_tokens -= 1
        return super().generate(input_ids, max_new_tokens, on_token)


def distinct_first_token_requests(count: int, output_tokens: int = 3) -> list[Request]:
    return [Request(i, [100 + i, 1, 2], output_tokens) for i in range(count)]


def test_failed_requests_are_counted_and_the_run_goes_on():
    requests = distinct_first_token_requests(6)
    engine = FaultyEngine(raise_on_first_token=102, short_on_first_token=104)
    report = run_benchmark(engine, requests, [1, 3], warmup_requests=0)
    for level in report.levels:
        assert (level.num_requests, level.completed, level.failed) == (6, 4, 2)
        assert level.failure_rate == pytest.approx(2 / 6)
        assert level.total_output_tokens == 4 * 3
        assert any("simulated engine crash" in e for e in level.errors)
        assert any("streamed 2 tokens via on_token, requested exactly 3" in e for e in level.errors)
    by_id = {r.request_id: r for r in report.records if r.concurrency == 1}
    assert by_id[2].error.startswith("RuntimeError") and by_id[2].first_token_s is None
    assert by_id[4].output_tokens == 2 and by_id[4].requested_output_tokens == 3


class SlowFirstCallEngine(SyntheticEngine):
    """The first call at each level is slow (like a cold cache / JIT); warmup must absorb it."""

    def __init__(self):
        super().__init__(ttft_ms=2, itl_ms=1)
        self.seen_first_tokens: list[int] = []
        self.lock = threading.Lock()

    def generate(self, input_ids, max_new_tokens, on_token=None):
        with self.lock:
            cold = len(self.seen_first_tokens) in (0, 5)  # first call of each of the two levels
            self.seen_first_tokens.append(input_ids[0])
        if cold:
            time.sleep(0.15)
        return super().generate(input_ids, max_new_tokens, on_token)


def test_warmup_requests_run_first_and_are_excluded():
    engine = SlowFirstCallEngine()
    requests = distinct_first_token_requests(5)
    report = run_benchmark(engine, requests, [1, 2], warmup_requests=1)
    # the cold (150 ms) call of each level is request 0's, and request 0 is in no level's statistics
    assert engine.seen_first_tokens[0] == 100 and engine.seen_first_tokens[5] == 100
    assert sorted(r.request_id for r in report.records) == [1, 1, 2, 2, 3, 3, 4, 4]
    for level in report.levels:
        assert level.num_requests == 4 and level.warmup_requests == 1 and level.warmup_failed == 0
    assert report.workload.num_requests == 4 and report.workload.warmup_requests == 1


def test_run_benchmark_validates_its_arguments():
    requests = distinct_first_token_requests(2)
    engine = SyntheticEngine(0, 0)
    with pytest.raises(FoundryError, match="no request would be timed"):
        run_benchmark(engine, requests, [1], warmup_requests=2)
    with pytest.raises(FoundryError, match="concurrency"):
        run_benchmark(engine, requests, [0], warmup_requests=0)


# ---- persistence, comparison, HTML -----------------------------------------------------------


def test_report_json_and_records_csv_round_trip(synthetic_report, tmp_path):
    save_report_json(synthetic_report, tmp_path / "report.json")
    loaded = load_report_json(tmp_path / "report.json")
    assert loaded.model_dump() == synthetic_report.model_dump()
    assert loaded.backend == "synthetic" and loaded.machine.torch_threads >= 1
    records = HAND_RECORDS + synthetic_report.records
    save_records_csv(records, tmp_path / "requests.csv")
    assert load_records_csv(tmp_path / "requests.csv") == records


def test_load_report_json_errors_are_foundry_errors(tmp_path):
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(FoundryError, match="bad.json"):
        load_report_json(tmp_path / "bad.json")


def stats(p50_ms: float, p99_ms: float) -> LatencyStats:
    return LatencyStats(
        p50_ms=p50_ms,
        p90_ms=p99_ms,
        p95_ms=p99_ms,
        p99_ms=p99_ms,
        min_ms=p50_ms,
        max_ms=p99_ms,
        mean_ms=p50_ms,
        count=10,
    )


def hand_report(
    backend: str, tok_s: float, ttft: LatencyStats, tpot: LatencyStats, workload_hash: str = "abc"
) -> BenchmarkReport:
    level = LevelSummary(
        concurrency=4,
        num_requests=10,
        completed=10,
        failed=0,
        failure_rate=0.0,
        duration_s=2.0,
        total_output_tokens=int(tok_s * 2),
        ttft=ttft,
        tpot=tpot,
        e2e=stats(500, 900),
        itl=tpot,
        output_token_throughput_tok_s=tok_s,
        request_throughput_req_s=5.0,
    )
    _, workload = synthetic_workload_with_description(0, 10, 0, 4, 8, 2, 6, vocab_size=50)
    return BenchmarkReport(
        backend=backend,
        model="tiny",
        workload=workload.model_copy(update={"workload_hash": workload_hash}),
        levels=[level],
        created_at="2025-01-01T00:00:00+00:00",
        machine=MachineInfo(cpu_count=2, torch_version="x", device_name="cpu", torch_threads=2, platform="p"),
    )


def test_compare_reports_ratios_are_engine_over_baseline():
    engine = hand_report("reference", 300.0, stats(50, 80), stats(10, 16))
    baseline = hand_report("hf-transformers", 100.0, stats(200, 400), stats(40, 64))
    (row,) = compare_reports(engine, baseline)
    assert row.concurrency == 4 and (row.engine_backend, row.baseline_backend) == ("reference", "hf-transformers")
    assert row.speedup_output_tok_s == pytest.approx(3.0)
    assert row.ttft_p50_ratio == pytest.approx(0.25) and row.ttft_p99_ratio == pytest.approx(0.2)
    assert row.tpot_p50_ratio == pytest.approx(0.25) and row.tpot_p99_ratio == pytest.approx(0.25)
    with pytest.raises(FoundryError, match="different workloads"):
        compare_reports(engine, hand_report("hf-transformers", 1.0, stats(1, 1), stats(1, 1), "other"))


def test_render_html_contains_the_key_numbers():
    engine = hand_report("reference", 312.345, stats(51.234, 80.5), stats(10.111, 16.25))
    baseline = hand_report("hf-transformers", 104.1, stats(200.0, 400.0), stats(40.0, 64.0))
    page = render_html(engine, baseline, compare_reports(engine, baseline))
    assert page.startswith("<!DOCTYPE html>") and "<svg" in page and "<script" not in page
    for text in (
        "312.3",
        "104.1",
        "51.23",
        "80.50",
        "10.11",
        "16.25",
        "3.00",  # 312.345/104.1 = 3.00
        "reference",
        "hf-transformers",
        engine.workload.workload_hash,
        "numpy linear interpolation",
    ):
        assert text in page, text


def test_render_html_without_baseline(synthetic_report):
    page = render_html(synthetic_report)
    assert "<svg" in page and "Comparison" not in page
    assert f"{synthetic_report.levels[0].ttft.p50_ms:.2f}" in page
