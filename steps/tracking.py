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
