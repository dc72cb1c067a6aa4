"""LLM Engine Foundry command line.

    python run.py --config configs/default.yaml [--no-cache] [--run-name NAME]
    python run.py run --config ...        (the same, spelled out)
    python run.py stack register local    (create/activate the local stack; idempotent)
    python run.py status                  (production version per model, MLflow vs ZenML)
    python run.py export-triton --model NAME [--version N] --out DIR   (Triton model repository)

Exit codes: 0 promoted (or the command succeeded) · 3 gates failed, nothing promoted ·
2 invalid input (config, checkpoint, flags) · 1 the pipeline failed.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

PROJECT_ROOT = Path(__file__).resolve().parent
EXIT_PROMOTED, EXIT_ERROR, EXIT_INVALID_INPUT, EXIT_GATE_FAILED = 0, 1, 2, 3


def _prepare_environment() -> Path:
    """Project-local state: ZenML's store and MLflow's database live under .foundry/ (or
    $FOUNDRY_STATE_DIR), so runs never touch a user's global ZenML config. Must run before zenml
    is imported."""
    os.chdir(PROJECT_ROOT)
    sys.path.insert(0, str(PROJECT_ROOT))
    from foundry.state import state_dir

    state = state_dir()
    os.environ.setdefault("ZENML_CONFIG_PATH", str(state / "zenml"))
    os.environ.setdefault("ZENML_ANALYTICS_OPT_IN", "false")
    os.environ.setdefault("ZENML_ENABLE_RICH_TRACEBACK", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("AUTO_MLFLOW_LOGGING", "false")
    return state


def _ensure_stack(state: Path) -> str:
    # No `zenml init`: a .zen/ in the checkout would pin an active stack id that belongs to one
    # state directory; the source root is the project root (we chdir there) either way.
    from stacks.local import ensure_local_stack

    return ensure_local_stack(state)


def _fail(message: str, code: int) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def _preflight(config_path: str):
    """Everything that can be checked in seconds, before any expensive work."""
    from foundry.builders import get_builder
    from foundry.checkpoint import source_fingerprint
    from foundry.config import load_config

    config = load_config(config_path)
    get_builder(config.build.backend).check_environment()
    fingerprint = source_fingerprint(config.model.source)
    return config, fingerprint


def _run_pipeline(config_path: str, no_cache: bool, run_name: str | None) -> int:
    state = _prepare_environment()
    from foundry.errors import FoundryError

    try:
        config, fingerprint = _preflight(config_path)
    except FoundryError as error:
        _fail(str(error), EXIT_INVALID_INPUT)

    _ensure_stack(state)
    from zenml import Model

    from pipelines import engine_pipeline

    pipeline = engine_pipeline.with_options(
        enable_cache=not no_cache,
        run_name=run_name,
        model=Model(name=config.model.name, description="LLM engines built by LLM Engine Foundry"),
    )
    started = time.perf_counter()
    try:
        run = pipeline(
            model_name=config.model.name,
            source=config.model.source,
            source_fingerprint=fingerprint,
            calibration=config.calibration,
            evaluation=config.evaluation,
            build=config.build,
            benchmark=config.benchmark,
            gates=config.gates,
            run_config=config.model_dump(mode="json"),
            config_hash=config.config_hash(),
        )
    except FoundryError as error:
        _fail(str(error), EXIT_INVALID_INPUT)
    except Exception as error:  # the step's own log above has the traceback
        _fail_with_step_error(error)

    promotion = _print_summary(run.id, config, time.perf_counter() - started)
    return EXIT_PROMOTED if promotion.promoted else EXIT_GATE_FAILED


def _fail_with_step_error(error: Exception) -> None:
    """ZenML reports 'failure in step(s): X'; show the step's own error instead. A FoundryError
    raised inside a step is still bad input (data, checkpoint): exit 2, else 1."""
    from zenml.client import Client

    failed = []
    try:
        run = Client().get_pipeline("engine_pipeline").last_run
        failed = [(name, step.exception_info) for name, step in run.steps.items() if step.exception_info]
    except Exception:  # the store itself may be what failed; fall back to ZenML's message
        pass
    if not failed:
        _fail(f"pipeline failed: {type(error).__name__}: {error}", EXIT_ERROR)
    lines = [f"step {name} failed: {info.traceback.strip().splitlines()[-1]}" for name, info in failed]
    bad_input = any("foundry.errors" in (info.source or "") or "FoundryError" in info.traceback for _, info in failed)
    _fail("\n".join(lines), EXIT_INVALID_INPUT if bad_input else EXIT_ERROR)


def _print_summary(run_id, config, wall_seconds: float):
    """Read the run's artifacts back from ZenML (what the dashboard shows) and print the summary."""
    from zenml.client import Client

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
        engine={**output("build_engine", "engine").run_metadata.get("engine", {}),
                "content_hash": output("build_engine", "engine").run_metadata.get("content_hash")},
        benchmark_results=output("benchmark_engine", "benchmark_results").load(),
        quality=output("evaluate_engine_quality", "quality_report").load(),
        gates=config.gates,
        promotion=promotion,
        tracking_uri=stack_tracking_uri(),
    )
    return promotion


CONFIG_OPTION = click.option(
    "--config", "config_path", type=click.Path(dir_okay=False), default="configs/default.yaml",
    show_default=True, help="run config YAML (validated before any work)",
)
NO_CACHE_OPTION = click.option("--no-cache", is_flag=True, help="re-run every step instead of reusing cached results")
RUN_NAME_OPTION = click.option("--run-name", default=None, help="name of the ZenML run (default: generated)")


@click.group(invoke_without_command=True, help=__doc__)
@CONFIG_OPTION
@NO_CACHE_OPTION
@RUN_NAME_OPTION
@click.pass_context
def cli(ctx: click.Context, config_path: str, no_cache: bool, run_name: str | None) -> None:
    if ctx.invoked_subcommand is None:
        sys.exit(_run_pipeline(config_path, no_cache, run_name))


@cli.command("run", help="Run the pipeline: ingest → calibrate → build → benchmark → evaluate → register → gate → promote.")
@CONFIG_OPTION
@NO_CACHE_OPTION
@RUN_NAME_OPTION
def run_command(config_path: str, no_cache: bool, run_name: str | None) -> None:
    sys.exit(_run_pipeline(config_path, no_cache, run_name))


@cli.group(help="Register and activate stacks from stacks/.")
def stack() -> None:
    pass


@stack.command("register", help="Register a stack from its definition (idempotent). Known: local.")
@click.argument("name", type=click.Choice(["local"]))
@click.option("--set/--no-set", "activate", default=True, help="activate it after registering")
def stack_register(name: str, activate: bool) -> None:
    state = _prepare_environment()
    from stacks.local import ensure_local_stack

    click.echo(f"stack {ensure_local_stack(state, activate=activate)} is registered" + (" and active" if activate else ""))


@cli.command(help="Show, per model, the production version in MLflow and in ZenML and flag drift.")
def status() -> None:
    state = _prepare_environment()
    _ensure_stack(state)
    from zenml.client import Client
    from zenml.enums import ModelStages

    from steps.tracking import stack_registry

    registry = stack_registry()
    drift = False
    for model in registry.client.search_registered_models():
        mlflow_version = registry.production_version(model.name)
        try:
            zenml_version = Client().get_model_version(model.name, ModelStages.PRODUCTION)
            zenml_production = f"{zenml_version.number}"
            zenml_mlflow = (zenml_version.run_metadata.get("mlflow") or {}).get("version")
        except KeyError:
            zenml_production, zenml_mlflow = None, None
        agrees = zenml_mlflow == mlflow_version
        drift |= not agrees
        click.echo(
            f"{model.name}: MLflow production = version {mlflow_version or 'none'}; ZenML production = "
            f"model version {zenml_production or 'none'} (MLflow version {zenml_mlflow or 'none'})"
            + ("" if agrees else "  ← DRIFT: the two registries disagree")
        )
    sys.exit(EXIT_ERROR if drift else 0)


@cli.command("export-triton", help=(
    "Export a registered TensorRT-LLM engine (the production version, or --version N) as a Triton "
    "tensorrtllm_backend model repository in --out. Serving knobs come from the config's serving: section. "
    "The engine must match the serving node: this node, or the one named by --target-node."
))
@click.option("--model", "model_name", required=True, help="registered model name (MLflow)")
@click.option("--version", "version", default=None, help="MLflow model version (default: the one with alias production)")
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="new directory for the repository")
@CONFIG_OPTION
@click.option("--target-node", default=None, help="serving node as TRTLLM_VERSION@COMPUTE_CAPABILITY, e.g. 1.2.1@9.0 (default: this node)")
@click.option("--mount", default="/models", show_default=True, help="where --out is mounted in the Triton container")
def export_triton(model_name: str, version: str | None, out_dir: str, config_path: str, target_node: str | None, mount: str) -> None:
    state = _prepare_environment()
    from foundry.compat import NodeTarget
    from foundry.config import load_config
    from foundry.errors import FoundryError

    try:
        serving = load_config(config_path).serving
        node = NodeTarget.parse(target_node) if target_node else None
    except FoundryError as error:
        _fail(str(error), EXIT_INVALID_INPUT)
    _ensure_stack(state)
    from foundry.triton import export_triton_repository
    from steps.tracking import stack_registry

    registry = stack_registry()
    try:
        version = version or registry.production_version(model_name)
        if version is None:
            raise FoundryError(f"model {model_name!r} has no production version in MLflow; pass --version N")
        source = registry.client.get_model_version(model_name, version).source
        engine_dir = Path(source.removeprefix("file://"))
        if not engine_dir.is_dir():
            raise FoundryError(
                f"{model_name} version {version}: engine source {source} is not a local directory; run the export "
                "where the artifact store is mounted"
            )
        record = export_triton_repository(
            engine_dir, Path(out_dir), serving, node=node, mount=mount,
            source={"model": model_name, "version": str(version), "engine_uri": source},
        )
    except FoundryError as error:
        _fail(str(error), EXIT_INVALID_INPUT)
    except Exception as error:  # MLflow lookups: unknown model / version
        _fail(f"export failed: {type(error).__name__}: {error}", EXIT_ERROR)
    click.echo(
        f"exported {model_name} version {version} ({', '.join(record['models'])}) to {out_dir}; "
        f"Triton container: {record['triton_container']['image'] or 'unknown (see README.md there)'}"
    )


if __name__ == "__main__":
    cli()
