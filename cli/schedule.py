"""`run.py schedule --cron ...`: a nightly rebuild on the active stack."""

from __future__ import annotations

import click

from cli.environment import CALLER_CWD, CONFIG_OPTION, EXIT_ERROR, EXIT_INVALID_INPUT, fail, prepare_environment
from cli.run_pipeline import pipeline_parameters


@click.command(
    help="Register a cron Schedule for the pipeline on the ACTIVE stack (not the local one: its "
    "orchestrator ignores schedules, so this refuses it and names the orchestrators that run them). "
    "The checkpoint source is resolved afresh on every scheduled run (a directory, a glob's newest "
    "match, or an MLflow model version); unchanged bytes are served from the cache. On a stack "
    "registered as kubernetes-gpu, calibrate/build/benchmark go to its GPU step operator.",
)
@click.option("--cron", required=True, help='five-field cron expression in UTC, e.g. "0 2 * * *" (daily at 02:00)')
@CONFIG_OPTION
@click.option("--name", "schedule_name", default=None, help="schedule name (default: foundry-<model>-<cron>)")
def schedule(cron: str, config_path: str, schedule_name: str | None) -> None:
    prepare_environment()
    from foundry.config import load_config
    from foundry.errors import FoundryError
    from foundry.schedule import next_fire_times, require_schedule_support, validate_cron

    try:
        cron = validate_cron(cron)
        config = load_config(CALLER_CWD / config_path).with_paths_resolved(CALLER_CWD)
    except FoundryError as error:
        fail(str(error), EXIT_INVALID_INPUT)
    from zenml import Model
    from zenml.client import Client
    from zenml.config.schedule import Schedule
    from zenml.enums import StackComponentType

    stack_model = Client().active_stack_model
    orchestrator = stack_model.components[StackComponentType.ORCHESTRATOR][0]
    try:
        require_schedule_support(orchestrator.flavor_name, stack_model.name)
    except FoundryError as error:
        fail(str(error), EXIT_INVALID_INPUT)
    from pipelines import engine_pipeline
    from stacks.placement import step_placements

    name = schedule_name or f"foundry-{config.model.name}-" + cron.replace(" ", "_").replace("*", "x")
    pipeline = engine_pipeline.with_options(
        schedule=Schedule(name=name, cron_expression=cron),
        model=Model(name=config.model.name, description="LLM engines built by LLM Engine Foundry"),
        steps=step_placements(config.build, config.calibration.tp_size, stack_model) or None,
    )
    try:
        pipeline(**pipeline_parameters(config, ""))  # "": the source is resolved (and checked) by each run
    except FoundryError as error:
        fail(str(error), EXIT_INVALID_INPUT)
    except Exception as error:
        fail(
            f"could not register the schedule on stack '{stack_model.name}': {type(error).__name__}: {error}",
            EXIT_ERROR,
        )
    upcoming = ", ".join(t.strftime("%Y-%m-%d %H:%M UTC") for t in next_fire_times(cron))
    click.echo(f"schedule {name} ({cron}) registered on stack {stack_model.name}; next runs: {upcoming}")
