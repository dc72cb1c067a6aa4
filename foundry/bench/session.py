"""One benchmark session: the engine (in process, served, or an endpoint), then the HF baseline, on
the same workload and load plan, compared. The pipeline's benchmark step and `python -m foundry.bench`
both call `run_session`, so the two can never measure differently.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable, ContextManager, Sequence

from pydantic import BaseModel, ConfigDict

from foundry.bench.metrics import BenchmarkReport, ComparisonRow, compare_reports
from foundry.bench.rounds import ChampionRounds, run_interleaved_rounds
from foundry.bench.runner import engine_model_bytes, run_benchmark
from foundry.bench.workload import Request, WorkloadDescription
from foundry.champion import ChampionPlan
from foundry.serving import ServedEngine
from foundry.summary import benchmark_headline

SERVER_EXIT_SETTLE_S = 10.0  # after failed requests, how long a dying server gets to exit


@dataclass(frozen=True)
class LoadPlan:
    """How load is applied (the same for the engine and the baseline)."""

    concurrency: Sequence[int]
    warmup_requests: int
    mode: str = "concurrency"
    request_rates: Sequence[float] | None = None
    max_concurrency: int | None = None
    arrival_seed: int = 0
    slo: dict | str | None = None
    telemetry: bool = True
    gpu_index: int = 0

    @classmethod
    def from_config(cls, benchmark) -> "LoadPlan":
        """From a foundry.config.BenchmarkConfig."""
        return cls(
            concurrency=list(benchmark.concurrency),
            warmup_requests=benchmark.warmup_requests,
            mode=benchmark.mode,
            request_rates=benchmark.request_rates,
            max_concurrency=benchmark.max_concurrency,
            arrival_seed=benchmark.seed,
            slo=benchmark.slo.model_dump(exclude_none=True) or None,
            telemetry=benchmark.telemetry,
        )


class BenchmarkResults(BaseModel):
    """What a benchmark session measured; the gate reads `headline`, reports read the rest."""

    model_config = ConfigDict(frozen=True)

    engine: BenchmarkReport
    baseline: BenchmarkReport | None = None
    comparison: list[ComparisonRow] = []
    headline: dict[str, float | None]
    served_by: str
    engine_content_hash: str | None = None
    dataset_fingerprint: str | None = None
    validation: dict | None = None
    # The production engine: what the run decided about it and, when re-measured, the interleaved rounds.
    champion_plan: ChampionPlan | None = None
    champion_rounds: ChampionRounds | None = None


def _measure(target, requests, workload, plan: LoadPlan, model_name: str) -> BenchmarkReport:
    telemetry = None
    if plan.telemetry:
        from foundry.bench.telemetry import GPUTelemetry

        telemetry = GPUTelemetry(plan.gpu_index)
    return run_benchmark(
        target,
        requests,
        plan.concurrency,
        plan.warmup_requests,
        model=model_name,
        workload=workload,
        mode=plan.mode,
        request_rates=plan.request_rates,
        max_concurrency=plan.max_concurrency,
        arrival_seed=plan.arrival_seed,
        slo=plan.slo,
        telemetry=telemetry,
        model_bytes=engine_model_bytes(target),
    )


def run_session(
    engine: ContextManager[ServedEngine],
    requests: Sequence[Request],
    workload: WorkloadDescription,
    plan: LoadPlan,
    model_name: str,
    baseline: Callable[[], object] | None = None,
    dataset_fingerprint: str | None = None,
) -> BenchmarkResults:
    """Measure the engine (its context is closed — a server stopped — before the baseline loads, so
    one model is in memory at a time), then the baseline on the same requests, and compare."""
    with engine as opened:
        report = _measure(opened.target, requests, workload, plan, model_name)
        # failed requests may mean the server is dying: give its exit a moment to say so
        failures = any(level.failed or level.warmup_failed for level in report.levels)
        opened.require_alive("the benchmark", settle_s=SERVER_EXIT_SETTLE_S if failures else 0.0)
    report = report.model_copy(
        update={"served_by": opened.served_by, "engine_content_hash": opened.engine_content_hash}
    )
    baseline_report, comparison = None, []
    if baseline is not None:
        baseline_report = _measure(baseline(), requests, workload, plan, model_name)
        baseline_report = baseline_report.model_copy(update={"served_by": "in-process hf-transformers"})
        comparison = compare_reports(report, baseline_report)
    return BenchmarkResults(
        engine=report,
        baseline=baseline_report,
        comparison=comparison,
        headline=benchmark_headline(report, comparison),
        served_by=opened.served_by,
        engine_content_hash=opened.engine_content_hash,
        dataset_fingerprint=dataset_fingerprint,
    )


def run_champion_rounds(
    challenger: ContextManager[ServedEngine],
    champion: ContextManager[ServedEngine],
    champion_version: str,
    requests: Sequence[Request],
    workload: WorkloadDescription,
    plan: LoadPlan,
    model_name: str,
    rounds: int,
    more_rounds: Callable[[ChampionRounds], int] | None = None,
) -> ChampionRounds:
    """The production engine (champion) and this run's (challenger), both open, interleaved in
    rounds on the same requests at the lowest load: the smallest concurrency level (request-rate
    mode: one request in flight)."""
    concurrency = min(plan.concurrency) if plan.mode == "concurrency" else 1
    with challenger as this_run, champion as production:
        result = run_interleaved_rounds(
            this_run.target,
            production.target,
            requests,
            plan.warmup_requests,
            concurrency,
            rounds,
            workload=workload,
            model_name=model_name,
            identity={
                "champion_version": champion_version,
                "champion_engine_content_hash": production.engine_content_hash,
                "champion_served_by": production.served_by,
                "challenger_served_by": this_run.served_by,
            },
            more_rounds=more_rounds,
        )
        this_run.require_alive("the champion rounds")
        production.require_alive("the champion rounds")
    return result


@contextlib.contextmanager
def already_open(target, engine_content_hash: str | None = None):
    """A loaded in-process engine, or a target for an endpoint someone else runs, as a session target."""
    served_by = f"endpoint {target.url}" if hasattr(target, "url") else f"in-process {target.backend}"
    yield ServedEngine(served_by=served_by, target=target, continuations=None, engine_content_hash=engine_content_hash)
