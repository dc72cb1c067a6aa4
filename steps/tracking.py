"""Where MLflow lives: the active stack's MLflow experiment tracker decides (local SQLite by default,
a remote tracking server on a remote stack)."""

from zenml.client import Client

from foundry.errors import FoundryError
from foundry.registry import Registry


def stack_tracking_uri() -> str:
    tracker = Client().active_stack.experiment_tracker
    if tracker is None or tracker.flavor != "mlflow":
        raise FoundryError(
            "the active ZenML stack has no MLflow experiment tracker; run `python run.py stack register local --set`"
        )
    return tracker.get_tracking_uri()


def stack_registry() -> Registry:
    return Registry(stack_tracking_uri())


def move_zenml_production(model_name: str, mlflow_version: str) -> None:
    """Give the ZenML model stage `production` to the ZenML model version registered as MLflow
    version `mlflow_version` (the register step logs that link as model metadata)."""
    from zenml.enums import ModelStages

    client = Client()
    page = 1
    while True:
        versions = client.list_model_versions(model_name_or_id=model_name, page=page, size=100, hydrate=True)
        for version in versions.items:
            if str((version.run_metadata.get("mlflow") or {}).get("version")) == str(mlflow_version):
                client.update_model_version(model_name, version.id, stage=ModelStages.PRODUCTION, force=True)
                return
        if page >= versions.total_pages:
            break
        page += 1
    raise FoundryError(
        f"ZenML model {model_name!r} has no model version linked to MLflow version {mlflow_version}; "
        "it was registered outside this pipeline"
    )
