"""`run.py status`: the production version per model in MLflow and ZenML."""

from __future__ import annotations

import click

from cli.environment import EXIT_ERROR, ensure_stack, prepare_environment


@click.command(
    help="Show, per model, the production version in MLflow and in ZenML and flag drift, an "
    "interrupted production move, and versions left without a gate decision. --repair finishes an "
    "interrupted move (journaled before it started), so both registries agree again."
)
@click.option("--repair", is_flag=True, help="finish interrupted production moves")
def status(repair: bool) -> None:
    state = prepare_environment()
    ensure_stack(state)
    from zenml.client import Client
    from zenml.enums import ModelStages

    from foundry.promotion import finish_pending_move, pending_move
    from steps.tracking import move_zenml_production, stack_registry

    registry = stack_registry()
    drift = False
    names = registry.model_names()
    if not names:
        click.echo(f"nothing registered yet (MLflow at {registry.tracking_uri}); run the pipeline: python run.py")
        return
    for name in names:
        pending = pending_move(registry, name)
        if pending and repair:
            click.echo(
                f"{name}: {finish_pending_move(registry, name, lambda v: move_zenml_production(name, v))['message']}"
            )
        elif pending:
            drift = True
            click.echo(
                f"{name}: INTERRUPTED production move to version {pending['version']} (run {pending['run']}, "
                f"{pending['started_at']}); finish it with: python run.py status --repair"
            )
        ungated = [str(v.version) for v in registry.list_versions(name) if "gate" not in (v.tags or {})]
        if ungated:
            click.echo(
                f"{name}: version(s) {', '.join(ungated)} have no gate decision (the run stopped before its gate); "
                "they are not production candidates"
            )
        mlflow_version = registry.production_version(name)
        try:
            zenml_version = Client().get_model_version(name, ModelStages.PRODUCTION)
            zenml_production = f"{zenml_version.number}"
            zenml_mlflow = (zenml_version.run_metadata.get("mlflow") or {}).get("version")
        except KeyError:
            zenml_production, zenml_mlflow = None, None
        agrees = zenml_mlflow == mlflow_version
        drift |= not agrees
        click.echo(
            f"{name}: MLflow production = version {mlflow_version or 'none'}; ZenML production = "
            f"model version {zenml_production or 'none'} (MLflow version {zenml_mlflow or 'none'})"
            + ("" if agrees else "  ← DRIFT: the two registries disagree")
        )
    raise SystemExit(EXIT_ERROR if drift else 0)
