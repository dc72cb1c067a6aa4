"""`run.py export-triton`: a Triton model repository from a registered engine."""

from __future__ import annotations

import click

from cli.environment import CALLER_CWD, CONFIG_OPTION, ensure_stack, fail_with, prepare_environment
from foundry.compat import NodeTarget
from foundry.config import load_config
from foundry.errors import FoundryError


@click.command(
    "export-triton",
    help=(
        "Export a registered TensorRT-LLM engine (the production version, or --version N) as a Triton "
        "tensorrtllm_backend model repository in --out. Serving knobs come from the config's serving: section. "
        "The engine must match the serving node: this node, or the one named by --target-node."
    ),
)
@click.option("--model", "model_name", required=True, help="registered model name (MLflow)")
@click.option(
    "--version", "version", default=None, help="MLflow model version (default: the one with alias production)"
)
@click.option(
    "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="new directory for the repository"
)
@CONFIG_OPTION
@click.option(
    "--target-node",
    default=None,
    help="serving node as TRTLLM_VERSION@COMPUTE_CAPABILITY, e.g. 1.2.1@9.0 (default: this node)",
)
@click.option("--mount", default="/models", show_default=True, help="where --out is mounted in the Triton container")
def export_triton(
    model_name: str, version: str | None, out_dir: str, config_path: str, target_node: str | None, mount: str
) -> None:
    state = prepare_environment()
    try:
        serving = load_config(CALLER_CWD / config_path).serving
        node = NodeTarget.parse(target_node) if target_node else None
    except FoundryError as error:
        fail_with(error)
    ensure_stack(state)
    from foundry.triton import export_triton_repository
    from steps.tracking import stack_registry

    try:
        version, engine_dir, source = stack_registry().engine_dir(model_name, version)
        record = export_triton_repository(
            engine_dir,
            CALLER_CWD / out_dir,
            serving,
            node=node,
            mount=mount,
            source={"model": model_name, "version": version, "engine_uri": source},
        )
    except FoundryError as error:
        fail_with(error)
    click.echo(
        f"exported {model_name} version {version} ({', '.join(record['models'])}) to {out_dir}; "
        f"Triton container: {record['triton_container']['image'] or 'unknown (see README.md there)'}"
    )
