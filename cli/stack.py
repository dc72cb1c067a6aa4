"""`run.py stack register local|kubernetes-gpu`."""

from __future__ import annotations

import click

from cli.environment import EXIT_INVALID_INPUT, fail, prepare_environment


@click.group(help="Register and activate stacks from stacks/.")
def stack() -> None:
    pass


@stack.command(
    "register",
    help="Register a stack from its definition in stacks/ (idempotent: re-running updates it). "
    "NAME is `local` (embedded default; activated unless --no-set) or `kubernetes-gpu` (Kubernetes "
    "orchestrator, S3 artifact store, remote MLflow with credentials from ZenML secrets, container "
    "registry, Kaniko image builder, GPU step operator; activated only with --set). The kubernetes-gpu "
    "definition comes from --file and/or FOUNDRY_K8S_<FIELD> environment variables and is validated "
    "before anything is registered; MLflow credentials come from the ZenML secret <stack>-mlflow or "
    "FOUNDRY_MLFLOW_USERNAME/FOUNDRY_MLFLOW_PASSWORD (stored as that secret).",
)
@click.argument("name", type=click.Choice(["local", "kubernetes-gpu"]))
@click.option(
    "--set/--no-set",
    "activate",
    default=None,
    help="activate it after registering (default: local yes, kubernetes-gpu no)",
)
@click.option(
    "--file",
    "definition_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="kubernetes-gpu: stack definition YAML (see stacks/kubernetes_gpu.example.yaml)",
)
def stack_register(name: str, activate: bool | None, definition_file: str | None) -> None:
    state = prepare_environment()
    if name == "local":
        if definition_file:
            fail("--file applies to kubernetes-gpu only; the local stack has no definition file", EXIT_INVALID_INPUT)
        from stacks.local import ensure_local_stack

        activate = True if activate is None else activate
        click.echo(
            f"stack {ensure_local_stack(state, activate=activate)} is registered" + (" and active" if activate else "")
        )
        return
    from foundry.errors import FoundryError
    from stacks.kubernetes_gpu import GPU_STEPS, load_definition, register_kubernetes_gpu_stack

    try:
        definition = load_definition(definition_file)
        registered = register_kubernetes_gpu_stack(definition, activate=bool(activate))
    except FoundryError as error:
        fail(str(error), EXIT_INVALID_INPUT)
    click.echo(f"stack {registered} is registered" + (" and active" if activate else " (activate it with --set)"))
    click.echo(f"  GPU steps on step operator {definition.component_name('gpu')}: {', '.join(GPU_STEPS)}")
