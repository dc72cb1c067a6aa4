"""The local stack (embedded default): ZenML local orchestrator and artifact store, MLflow
experiment tracker and model registry on SQLite, all under the project's state directory.

`ensure_local_stack()` is idempotent: it creates what is missing, leaves what exists, and
activates the stack. `python run.py stack register local` calls it; so does the first run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from zenml.client import Client
from zenml.enums import StackComponentType

from foundry.registry import ensure_experiment, sqlite_tracking_uri

STACK_NAME = "foundry-local"
PIPELINE_EXPERIMENT = "engine_pipeline"  # the pipeline's name: ZenML's MLflow tracker uses it as the experiment


@dataclass(frozen=True)
class ComponentSpec:
    name: str
    flavor: str
    component_type: StackComponentType
    configuration: dict


def local_stack_components(state_dir: Path) -> list[ComponentSpec]:
    return [
        ComponentSpec("foundry-local-orchestrator", "local", StackComponentType.ORCHESTRATOR, {}),
        ComponentSpec(
            "foundry-local-artifacts",
            "local",
            StackComponentType.ARTIFACT_STORE,
            {"path": str((state_dir / "artifacts").resolve())},
        ),
        ComponentSpec(
            "foundry-mlflow-tracker",
            "mlflow",
            StackComponentType.EXPERIMENT_TRACKER,
            {"tracking_uri": sqlite_tracking_uri(state_dir)},
        ),
        ComponentSpec("foundry-mlflow-registry", "mlflow", StackComponentType.MODEL_REGISTRY, {}),
    ]


def _ensure_component(client: Client, spec: ComponentSpec):
    try:
        component = client.get_stack_component(spec.component_type, spec.name, allow_name_prefix_match=False)
    except KeyError:
        return client.create_stack_component(spec.name, spec.flavor, spec.component_type, spec.configuration)
    if component.flavor_name != spec.flavor or any(
        component.configuration.get(k) != v for k, v in spec.configuration.items()
    ):
        # The state directory moved (or someone edited it): bring it back to the definition.
        return client.update_stack_component(spec.name, spec.component_type, configuration=spec.configuration)
    return component


def ensure_local_stack(state_dir: Path, activate: bool = True) -> str:
    client = Client()
    components = {spec.component_type: _ensure_component(client, spec).id for spec in local_stack_components(state_dir)}
    try:
        client.get_stack(STACK_NAME, allow_name_prefix_match=False)
    except KeyError:
        client.create_stack(STACK_NAME, components=components)
    else:
        client.update_stack(STACK_NAME, component_updates={k: [v] for k, v in components.items()})
    if activate and client.active_stack_model.name != STACK_NAME:
        client.activate_stack(STACK_NAME)
    # ZenML's MLflow tracker names the experiment after the pipeline; keep its artifacts in the state dir.
    ensure_experiment(sqlite_tracking_uri(state_dir), PIPELINE_EXPERIMENT, state_dir / "mlflow-artifacts")
    return STACK_NAME
