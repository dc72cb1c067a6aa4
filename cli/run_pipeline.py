"""`run.py run` (and bare `run.py --config ...`): preflight, the pipeline, the summary, the exit code."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import click
from zenml import Model
from zenml.client import Client

from cli.environment import (
    CALLER_CWD,
    CONFIG_OPTION,
    EXIT_ERROR,
    EXIT_GATE_FAILED,
    EXIT_PROMOTED,
    ensure_stack,
    fail,
    fail_with,
    prepare_environment,
)
from foundry.errors import FoundryError, exit_code_of


@dataclass(frozen=True)
class RunOptions:
    config_path: str
    no_cache: bool = False
    run_name: str | None = None
    compare_with: str | None = None
    verbose: bool = False


def run_options(command):
    """The options of a pipeline run; `run.py run` and the bare `run.py` share them."""
    for option in reversed(
        [
            CONFIG_OPTION,
            click.option("--no-cache", is_flag=True, help="re-run every step instead of reusing cached results"),
            click.option("--run-name", default=None, help="name of the ZenML run (default: generated)"),
            click.option(
                "--compare-with",
                "compare_with",
                default=None,
                metavar="RUN_NAME",
                help="also compare this run's gate metrics with an earlier run (its name) in the comparison report",
            ),
            click.option(
                "--verbose", is_flag=True, help="show ZenML's tracebacks on the console (always kept in the step logs)"
            ),
        ]
    ):
        command = option(command)
    return command


class _WithoutTraceback(logging.Formatter):
    """Wraps the console formatter: a failing step's traceback stays in the step's log (ZenML's
    log handler still gets the full record) but not on the user's console."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        saved = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:
            record.exc_info, record.exc_text = saved


def _hide_tracebacks_on_console() -> None:
    from zenml.logger import ZenMLConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, ZenMLConsoleHandler) and not isinstance(handler.formatter, _WithoutTraceback):
            handler.setFormatter(_WithoutTraceback(handler.formatter))


def pipeline_parameters(config, submitted_source_path: str, compare_with_run: str | None = None) -> dict:
    return dict(
        compare_with_run=compare_with_run,
        model_name=config.model.name,
        source=config.model.source,
        submitted_source_path=submitted_source_path,
        calibration=config.calibration,
        evaluation=config.evaluation,
        build=config.build,
        benchmark=config.benchmark,
        gates=config.gates,
        runtime=config.runtime,
        run_config=config.model_dump(mode="json"),
        config_hash=config.config_hash(),
    )


def _check_before_the_run(config, compare_with: str | None) -> None:
    """Checks that need the stack: the builder where it runs, a --compare-with run that exists."""
    from foundry.builders import get_builder
    from steps.tracking import stack_registry

    # With a step operator the build runs on its GPU node and checks the environment there.
    if Client().active_stack.step_operator is None:
        get_builder(config.build.backend).check_environment()
        if config.build.device == "cuda":
            from foundry.builders.reference import require_cuda_device

            require_cuda_device()
    if compare_with:  # an unknown name fails now, not after registration
        stack_registry().run_metrics_by_name(compare_with)


def _stack_tracking_uri(state) -> str:
    """The active stack's MLflow (the stack made ready first): the registry an mlflow_model source
    without its own tracking_uri is resolved in, by preflight and by the resolve_source step alike."""
    from steps.tracking import stack_tracking_uri

    ensure_stack(state)
    return stack_tracking_uri()


def run_pipeline(options: RunOptions) -> int:
    from foundry.preflight import run_preflight  # here: it brings torch, which the other commands do not need

    state = prepare_environment()
    try:
        checked = run_preflight(
            options.config_path, base_dir=CALLER_CWD, stack_tracking_uri=lambda: _stack_tracking_uri(state)
        )
    except FoundryError as error:
        fail_with(error)
    config = checked.config
    for caveat in checked.caveats:
        click.secho(f"warning: {caveat}", fg="yellow", err=True)
    ensure_stack(state)
    try:
        _check_before_the_run(config, options.compare_with)
    except FoundryError as error:
        fail_with(error)
    from pipelines import engine_pipeline  # imports every step's libraries (ModelOpt, GX, ...)

    if not options.verbose:
        _hide_tracebacks_on_console()
    from stacks.placement import step_placements

    pipeline = engine_pipeline.with_options(
        enable_cache=not options.no_cache,
        run_name=options.run_name,
        model=Model(name=config.model.name, description="LLM engines built by LLM Engine Foundry"),
        steps=step_placements(config.build, config.calibration.tp_size, Client().active_stack_model) or None,
    )
    started = time.perf_counter()
    try:
        from foundry.console import pipeline_progress

        with pipeline_progress():
            run = pipeline(**pipeline_parameters(config, checked.submitted_source_path, options.compare_with))
    except FoundryError as error:
        fail_with(error)
    except Exception as error:
        fail_with_step_error(error, options.verbose)
    promotion = print_summary(run.id, config, time.perf_counter() - started)
    return EXIT_PROMOTED if promotion.promoted else EXIT_GATE_FAILED


def _exception_type(source: str | None):
    """The class a failed step raised, loaded from the source path ZenML recorded."""
    if not source:
        return None
    from zenml.utils import source_utils

    try:
        loaded = source_utils.load(source)
    except Exception:  # a class that cannot be imported here: not one of ours
        return None
    return loaded if isinstance(loaded, type) else None


def fail_with_step_error(error: Exception, verbose: bool) -> None:
    """ZenML reports 'failure in step(s): X'; show each failed step's own error and its fix instead.
    The exit code comes from the exception's type: 2 bad input, 4 infrastructure, 1 anything else."""
    failed = []
    try:
        run = Client().get_pipeline("engine_pipeline").last_run
        failed = [(name, step.exception_info) for name, step in run.steps.items() if step.exception_info]
    except Exception:  # the store itself may be what failed; fall back to ZenML's message
        pass
    if not failed:
        fail(f"pipeline failed: {type(error).__name__}: {error}", exit_code_of(type(error)))
    lines = []
    for name, info in failed:
        message = info.message or info.traceback.strip().splitlines()[-1]
        lines.append(f"step {name} failed: {message}")
        if verbose:
            lines.append(info.traceback)
    if not verbose:
        lines.append("(the traceback is in the step's log: the ZenML dashboard, or re-run with --verbose)")
    fail("\n".join(lines), exit_code_of(_exception_type(failed[0][1].source)))


def print_summary(run_id, config, wall_seconds: float):
    """Read the run's artifacts back from ZenML (what the dashboard shows) and print the summary."""
    from foundry.console import print_run_summary
    from steps.tracking import stack_tracking_uri

    run = Client().get_pipeline_run(run_id)

    def output(step: str, name: str):
        return run.steps[step].outputs[name][0]

    promotion = output("gate_and_promote", "promotion").load()
    print_run_summary(
        run_name=run.name,
        wall_seconds=wall_seconds,
        step_statuses={name: step.status.value for name, step in run.steps.items()},
        checkpoint=dict(output("ingest_checkpoint", "checkpoint").run_metadata),
        calibration=dict(output("calibrate_checkpoint", "trtllm_checkpoint").run_metadata.get("calibration") or {}),
        engine={
            **output("build_engine", "engine").run_metadata.get("engine", {}),
            "content_hash": output("build_engine", "engine").run_metadata.get("content_hash"),
        },
        benchmark_results=output("benchmark_engine", "benchmark_results").load(),
        quality=output("evaluate_engine_quality", "quality_report").load(),
        decision=output("gate_and_promote", "gate_decision").load(),
        promotion=promotion,
        tracking_uri=stack_tracking_uri(),
    )
    return promotion


@click.command(
    "run", help="Run the pipeline: ingest → calibrate → build → benchmark → evaluate → register → gate → promote."
)
@run_options
def run_command(
    config_path: str, no_cache: bool, run_name: str | None, compare_with: str | None, verbose: bool
) -> None:
    raise SystemExit(run_pipeline(RunOptions(config_path, no_cache, run_name, compare_with, verbose)))


__all__ = ["EXIT_ERROR", "RunOptions", "pipeline_parameters", "run_command", "run_options", "run_pipeline"]
