"""`run.py promote | rollback | history`: operations on a model's production version.

Each move goes through foundry.promotion.move_production, as a gated promotion does: journaled,
MLflow alias and ZenML stage together, and recorded as an MLflow run (who as user@host, when, why,
from which version to which) that `history` lists.
"""

from __future__ import annotations

import click

from cli.environment import ensure_stack, fail_with, prepare_environment
from foundry.errors import FoundryError

MODEL_OPTION = click.option("--model", "model_name", required=True, help="registered model name (MLflow)")
REASON_OPTION = click.option("--reason", required=True, help="why: recorded with the change and shown by `history`")


def _registry():
    ensure_stack(prepare_environment())
    from steps.tracking import stack_registry

    return stack_registry()


def _move(registry, model_name: str, version: str, action: str, reason: str) -> None:
    from foundry.promotion import move_production
    from steps.tracking import move_zenml_production

    try:
        version, _, _ = registry.engine_dir(model_name, version)  # the model and the version exist
        if registry.production_version(model_name) == version:
            raise FoundryError(f"{model_name} version {version} is already production; nothing to move")
        previous = move_production(
            registry,
            model_name,
            version,
            lambda: move_zenml_production(model_name, version),
            action=action,
            reason=reason,
        )
    except FoundryError as error:
        fail_with(error)
    click.echo(
        f"{model_name}: production v{previous or 'none'} → v{version} ({action}: {reason}); "
        "MLflow alias and ZenML stage moved, recorded in `run.py history`"
    )


@click.command(help="Force a version to production, bypassing the gates (recorded with --reason, who and when).")
@MODEL_OPTION
@click.option("--version", required=True, help="MLflow model version to promote")
@REASON_OPTION
def promote(model_name: str, version: str, reason: str) -> None:
    _move(_registry(), model_name, version, "promote (forced, gates bypassed)", reason)


@click.command(help="Move production back: to the previous production version (from the history) or --to-version N.")
@MODEL_OPTION
@click.option("--to-version", default=None, help="MLflow model version (default: the one production had before)")
@REASON_OPTION
def rollback(model_name: str, to_version: str | None, reason: str) -> None:
    from foundry.promotion import rollback_target

    registry = _registry()
    if to_version is None:
        try:
            to_version = rollback_target(registry, model_name)
        except FoundryError as error:
            fail_with(error)
    _move(registry, model_name, to_version, "rollback", reason)


@click.command(help="Every production change of a model: when, what, from → to, who, why, the gate decision.")
@MODEL_OPTION
def history(model_name: str) -> None:
    registry = _registry()
    if model_name not in registry.model_names():
        fail_with(
            FoundryError(
                f"--model: no registered model {model_name!r}; registered: "
                f"{', '.join(registry.model_names()) or 'none yet'}"
            )
        )
    changes = registry.production_history(model_name)
    if not changes:
        click.echo(f"{model_name}: no production change recorded yet")
        return
    for change in changes:
        click.echo(
            f"{change.get('when', '?')}  {change.get('action', '?'):<34} v{change.get('from_version', '?')} → "
            f"v{change.get('to_version', '?')}  by {change.get('who', '?')}  gate {change.get('gate', '-')}  "
            f"why: {change.get('reason', '')}" + (f"  (run {change['run']})" if change.get("run") else "")
        )
    click.echo(f"production now: v{registry.production_version(model_name) or 'none'}")
