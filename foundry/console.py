"""What a user reads at the end of a run: identity, benchmark and quality headlines, each gate,
and whether the engine was promoted (and if not, why). Plain data in, rich tables out."""

from __future__ import annotations

import logging
import re
import sys
from contextlib import contextmanager
from typing import Iterator

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from foundry.bench.session import BenchmarkResults
from foundry.gates import GateDecision
from foundry.promotion import PromotionResult
from foundry.quality import QualityReport


def _fmt(value: float | None, spec: str = ".2f", unit: str = "") -> str:
    return "—" if value is None else f"{value:{spec}}{unit}"


def print_run_summary(
    *,
    run_name: str,
    wall_seconds: float,
    step_statuses: dict[str, str],
    checkpoint: dict,
    engine: dict,
    benchmark_results: BenchmarkResults,
    quality: QualityReport,
    decision: GateDecision,
    promotion: PromotionResult,
    tracking_uri: str,
    calibration: dict | None = None,
    console: Console | None = None,
) -> None:
    if console is None:
        console = Console()
        if not console.is_terminal:  # logs and CI: wide enough that tables don't wrap
            console = Console(width=120)
    console.rule(f"[bold]LLM Engine Foundry · run {run_name}")
    cached = [name for name, status in step_statuses.items() if status == "cached"]
    # soft_wrap: one line however long, so logs and scripts can grep it
    console.print(
        f"wall time {wall_seconds:.1f} s · steps cached: {', '.join(cached) if cached else 'none'}", soft_wrap=True
    )

    identity = Table(title="Identity", show_header=False)
    identity.add_row(
        "checkpoint",
        f"{checkpoint.get('architecture')} · {checkpoint.get('parameter_count', 0):,} params · "
        f"content {str(checkpoint.get('content_hash'))[:16]}",
    )
    if calibration:
        candidates = calibration.get("alpha_candidates") or []
        searched = f" (best of {', '.join(f'{a:g}' for a in candidates)})" if len(candidates) > 1 else ""
        alpha = calibration.get("alpha")
        identity.add_row(
            "calibration",
            f"{calibration.get('quantization')} · alpha {alpha if alpha is None else f'{alpha:g}'}{searched} · "
            f"KV cache {calibration.get('kv_cache', 'none')} · {calibration.get('num_samples')}×{calibration.get('seq_len')} tokens",
        )
    identity.add_row(
        "engine",
        f"backend {engine.get('backend')} · quant {engine.get('quant_algo')} · "
        f"content {str(engine.get('content_hash'))[:16]}",
    )
    console.print(identity)

    baseline = benchmark_results.baseline
    bench = Table(
        title=f"Benchmark · {benchmark_results.engine.backend} served by {benchmark_results.served_by} vs "
        f"{baseline.backend if baseline else 'no baseline'}"
    )
    for column in (
        "concurrency",
        "TTFT p50 ms",
        "TTFT p99 ms",
        "TPOT p50 ms",
        "TPOT p99 ms",
        "output tok/s",
        "speedup vs baseline",
    ):
        bench.add_column(column, justify="right")
    speedups = {row.concurrency: row.speedup_output_tok_s for row in benchmark_results.comparison}
    for level in benchmark_results.engine.levels:
        ttft, tpot = level.ttft, level.tpot
        bench.add_row(
            str(level.concurrency),
            _fmt(ttft.p50_ms if ttft else None),
            _fmt(ttft.p99_ms if ttft else None),
            _fmt(tpot.p50_ms if tpot else None),
            _fmt(tpot.p99_ms if tpot else None),
            _fmt(level.output_token_throughput_tok_s, ".1f"),
            _fmt(speedups.get(level.concurrency), ".2f", "×"),
        )
    console.print(bench)
    if benchmark_results.champion_plan is not None:
        rounds = benchmark_results.champion_rounds
        line = benchmark_results.champion_plan.summary_line(rounds.rounds if rounds else None)
        console.print(escape(line), soft_wrap=True)

    qual = Table(
        title=f"Quality · {quality.engine_backend} served by {quality.served_by} vs unquantized "
        f"{quality.unquantized_backend}",
        show_header=False,
    )
    qual.add_row("unquantized perplexity", f"{quality.unquantized_perplexity:.3f} (held-out text)")
    if quality.perplexity_ratio is not None:
        qual.add_row(
            "perplexity ratio",
            f"{quality.perplexity_ratio:.4f}  ({quality.engine_perplexity:.3f} / {quality.unquantized_perplexity:.3f})",
        )
        qual.add_row("mean KL divergence", f"{quality.mean_kld:.4f} nats/token")
        qual.add_row("top-1 agreement", f"{quality.top1_agreement:.2%}")
    generation = quality.generation
    if generation is not None:
        qual.add_row(
            "token agreement",
            f"{generation.token_agreement:.2%} · exact match {generation.exact_match_rate:.0%} · "
            f"first divergence {generation.first_divergence_mean:.1f} of {generation.max_new_tokens} "
            f"({generation.num_prompts} greedy continuations)",
        )
        qual.add_row(
            "continuation ppl ratio",
            f"{generation.continuation_perplexity_ratio:.4f} (engine's text scored by the unquantized model)",
        )
    for task in quality.tasks.tasks if quality.tasks else []:
        champion = f" · champion {task.champion.champion_score:.0%}" if task.champion else ""
        qual.add_row(
            escape(f"task {task.name}"),
            f"{task.engine_score:.0%} vs unquantized {task.unquantized_score:.0%}{champion} "
            f"({task.metric}, {task.num_items} items, {task.flips} flips)",
        )
    console.print(qual)

    gate_table = Table(title="Gates")
    for column in ("gate", "threshold", "measured", "result"):
        gate_table.add_column(column)
    outcome_style = {"pass": "[green]pass", "fail": "[red]FAIL", "inconclusive": "[yellow]INCONCLUSIVE"}
    for result in decision.results:
        if result.relative_to:  # the interval's worse bound as a regression, and the estimate behind it
            measured = f"worst {_fmt(result.measured, '+.3g', result.margin_unit)}: {result.detail}"
        else:
            measured = result.detail or _fmt(result.measured, ".4g")
        gate_table.add_row(
            escape(result.name), escape(result.condition), escape(measured), outcome_style[result.outcome]
        )
    for name in decision.unchecked:  # user-named metrics and tasks may hold [brackets]: not rich markup
        gate_table.add_row(escape(name), "not set" if "(" not in name else "not judged", "", "[dim]unchecked")
    console.print(gate_table)

    if promotion.repaired:
        console.print(f"[yellow]repaired[/] {promotion.repaired}")
    if promotion.promoted:
        console.print(
            f"[bold green]PROMOTED[/] {promotion.model_name} version {promotion.version} → alias 'production' "
            f"(was {promotion.previous_production or 'none'}); ZenML model stage 'production' moved with it."
        )
    else:
        console.print(
            f"[bold red]NOT PROMOTED[/] {promotion.model_name} version {promotion.version} is registered; "
            f"production stays {promotion.previous_production or 'unset'}. Why:"
        )
        for reason in promotion.reasons:
            console.print(f"  - {escape(reason)}")
    console.print(f"MLflow: {tracking_uri} · model '{promotion.model_name}'")


class StepProgress(logging.Handler):
    """A rich progress line for the pipeline as a whole, fed by the orchestrator's own log records
    ("Step `x` has started.", "... has finished in ...", "Using cached version of step `x`."),
    so long runs show which step is running, how many are done and the elapsed time."""

    _EVENT = re.compile(
        r"Step `(?P<started>[^`]+)` has started|Step `(?P<finished>[^`]+)` has finished"
        r"|Using cached version of step `(?P<cached>[^`]+)`"
    )

    def __init__(self, progress: Progress) -> None:
        super().__init__(level=logging.INFO)
        self.progress = progress
        self.task = progress.add_task("starting the pipeline", total=None)
        self.done: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        match = self._EVENT.search(record.getMessage())
        if match is None:
            return
        if match["started"]:
            self.progress.update(self.task, description=f"running {match['started']}")
            return
        name = match["finished"] or match["cached"]
        self.done.append(name)
        suffix = " (cached)" if match["cached"] else ""
        self.progress.update(self.task, completed=len(self.done), description=f"{name} done{suffix}")


@contextmanager
def pipeline_progress(logger_name: str = "zenml", enabled: bool | None = None) -> Iterator[StepProgress | None]:
    """Show StepProgress on an interactive terminal; in logs and CI the step lines already say it all."""
    if enabled is None:
        enabled = sys.stdout.isatty()
    if not enabled:
        yield None
        return
    progress = Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        TextColumn("· {task.completed} steps done"),
        TimeElapsedColumn(),
        transient=True,
    )
    handler = StepProgress(progress)
    logger = logging.getLogger(logger_name)
    logger.addHandler(handler)
    try:
        with progress:
            yield handler
    finally:
        logger.removeHandler(handler)
