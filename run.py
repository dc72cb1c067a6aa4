"""LLM Engine Foundry command line.


    python run.py --config configs/default.yaml [--no-cache] [--run-name NAME]
    python run.py run --config ...            the same, spelled out
    python run.py schedule --cron "0 2 * * *" --config ...
                                              nightly rebuild on the active stack (needs an
                                              orchestrator that runs schedules, e.g. kubernetes)
    python run.py stack register local        create/activate the local stack (idempotent)
    python run.py stack register kubernetes-gpu --file my-k8s.yaml [--set]
                                              Kubernetes + S3 + remote MLflow + GPU step operator
    python run.py status                      production version per model, MLflow vs ZenML
    python run.py dashboard [--port 8237] [--stop]
                                              local ZenML dashboard (runs, DAGs, reports)
    python run.py mlflow-ui [--port 5000] [--stop]
                                              MLflow UI on the project's tracking database
    python run.py export-triton --model NAME [--version N] --out DIR
                                              Triton model repository from a registered engine


State lives in $FOUNDRY_STATE_DIR (default .foundry/): ZenML store, MLflow database, artifacts.


Exit codes:
    0  promoted (or the command succeeded)
    3  gates failed: the version is registered, nothing promoted
    2  invalid input: config, checkpoint, flags, cron, stack definition, credentials, port in use,
       or a stack that cannot do what was asked (e.g. a schedule on the local orchestrator)
    1  error: the pipeline failed, or `status` found the two registries disagreeing
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

PROJECT_ROOT = Path(__file__).resolve().parent
CALLER_CWD = Path.cwd()  # relative paths on the command line and in configs mean the caller's directory
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
    """The stack the user activated (`run.py stack register <name> --set`) if any, else the local
    stack, registered idempotently. No `zenml init`: a .zen/ in the checkout would pin an active
    stack id that belongs to one state directory; the source root is the project root either way."""
    from zenml.client import Client

    from stacks.local import STACK_NAME, ensure_local_stack

    active = Client().active_stack_model.name
    if active not in ("default", STACK_NAME):
        return active
    return ensure_local_stack(state)


def _check_builder_where_it_runs(config) -> None:
    """With a step operator the build runs on its GPU node and checks the environment there;
    without one it runs here, so check here, before any work."""
    from zenml.client import Client

    from foundry.builders import get_builder

    if Client().active_stack.step_operator is None:
        get_builder(config.build.backend).check_environment()


def _fail(message: str, code: int) -> None:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def _preflight(config_path: str):
    """Everything that can be checked in seconds, before any expensive work (foundry/preflight.py)."""
    from foundry.preflight import run_preflight

    checked = run_preflight(config_path, base_dir=CALLER_CWD)
    return checked.config, checked.source_fingerprint


def _pipeline_parameters(config, fingerprint: str, compare_with_run: str | None = None) -> dict:
    return dict(
        compare_with_run=compare_with_run,
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


def _run_pipeline(config_path: str, no_cache: bool, run_name: str | None, compare_with: str | None = None) -> int:
    state = _prepare_environment()
    from foundry.errors import FoundryError

    try:
        config, fingerprint = _preflight(config_path)
    except FoundryError as error:
        _fail(str(error), EXIT_INVALID_INPUT)

    _ensure_stack(state)
    try:
        _check_builder_where_it_runs(config)
        if compare_with:  # an unknown name fails now, not after registration
            from steps.tracking import stack_registry

            stack_registry().run_metrics_by_name(compare_with)
    except FoundryError as error:
        _fail(str(error), EXIT_INVALID_INPUT)
    from zenml import Model

    from pipelines import engine_pipeline

    pipeline = engine_pipeline.with_options(
        enable_cache=not no_cache,
        run_name=run_name,
        model=Model(name=config.model.name, description="LLM engines built by LLM Engine Foundry"),
    )
    started = time.perf_counter()
    try:
        from foundry.console import pipeline_progress

        with pipeline_progress():
            run = pipeline(**_pipeline_parameters(config, fingerprint, compare_with))
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
        calibration=dict(output("calibrate_checkpoint", "trtllm_checkpoint").run_metadata.get("calibration") or {}),
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
COMPARE_OPTION = click.option(
    "--compare-with", "compare_with", default=None, metavar="RUN_NAME",
    help="also compare this run's gate metrics with an earlier run (its name) in the comparison report",
)


@click.group(invoke_without_command=True, help=__doc__)
@CONFIG_OPTION
@NO_CACHE_OPTION
@RUN_NAME_OPTION
@COMPARE_OPTION
@click.pass_context
def cli(ctx: click.Context, config_path: str, no_cache: bool, run_name: str | None, compare_with: str | None) -> None:
    if ctx.invoked_subcommand is None:
        sys.exit(_run_pipeline(config_path, no_cache, run_name, compare_with))


@cli.command("run", help="Run the pipeline: ingest → calibrate → build → benchmark → evaluate → register → gate → promote.")
@CONFIG_OPTION
@NO_CACHE_OPTION
@RUN_NAME_OPTION
@COMPARE_OPTION
def run_command(config_path: str, no_cache: bool, run_name: str | None, compare_with: str | None) -> None:
    sys.exit(_run_pipeline(config_path, no_cache, run_name, compare_with))


@cli.group(help="Register and activate stacks from stacks/.")
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
@click.option("--set/--no-set", "activate", default=None, help="activate it after registering (default: local yes, kubernetes-gpu no)")
@click.option("--file", "definition_file", type=click.Path(dir_okay=False), default=None,
              help="kubernetes-gpu: stack definition YAML (see stacks/kubernetes_gpu.example.yaml)")
def stack_register(name: str, activate: bool | None, definition_file: str | None) -> None:
    state = _prepare_environment()
    if name == "local":
        if definition_file:
            _fail("--file applies to kubernetes-gpu only; the local stack has no definition file", EXIT_INVALID_INPUT)
        from stacks.local import ensure_local_stack

        activate = True if activate is None else activate
        click.echo(f"stack {ensure_local_stack(state, activate=activate)} is registered" + (" and active" if activate else ""))
        return
    from foundry.errors import FoundryError
    from stacks.kubernetes_gpu import GPU_STEPS, load_definition, register_kubernetes_gpu_stack

    try:
        definition = load_definition(definition_file)
        registered = register_kubernetes_gpu_stack(definition, activate=bool(activate))
    except FoundryError as error:
        _fail(str(error), EXIT_INVALID_INPUT)
    click.echo(f"stack {registered} is registered" + (" and active" if activate else " (activate it with --set)"))
    click.echo(f"  GPU steps on step operator {definition.component_name('gpu')}: {', '.join(GPU_STEPS)}")


@cli.command(
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
    _prepare_environment()
    from foundry.config import load_config
    from foundry.errors import FoundryError
    from foundry.schedule import next_fire_times, require_schedule_support, validate_cron

    try:
        cron = validate_cron(cron)
        config = load_config(CALLER_CWD / config_path).with_paths_resolved(CALLER_CWD)
    except FoundryError as error:
        _fail(str(error), EXIT_INVALID_INPUT)
    from zenml import Model
    from zenml.client import Client
    from zenml.config.schedule import Schedule
    from zenml.enums import StackComponentType

    stack_model = Client().active_stack_model
    orchestrator = stack_model.components[StackComponentType.ORCHESTRATOR][0]
    try:
        require_schedule_support(orchestrator.flavor_name, stack_model.name)
    except FoundryError as error:
        _fail(str(error), EXIT_INVALID_INPUT)
    from pipelines import engine_pipeline
    from stacks.kubernetes_gpu import definition_of_stack, gpu_step_configurations

    definition = definition_of_stack(stack_model)
    name = schedule_name or f"foundry-{config.model.name}-" + cron.replace(" ", "_").replace("*", "x")
    pipeline = engine_pipeline.with_options(
        schedule=Schedule(name=name, cron_expression=cron),
        model=Model(name=config.model.name, description="LLM engines built by LLM Engine Foundry"),
        steps=gpu_step_configurations(definition) if definition else None,
    )
    try:
        pipeline(**_pipeline_parameters(config, ""))  # "": the source is resolved by each run
    except FoundryError as error:
        _fail(str(error), EXIT_INVALID_INPUT)
    except Exception as error:
        _fail(f"could not register the schedule on stack '{stack_model.name}': {type(error).__name__}: {error}", EXIT_ERROR)
    upcoming = ", ".join(t.strftime("%Y-%m-%d %H:%M UTC") for t in next_fire_times(cron))
    click.echo(f"schedule {name} ({cron}) registered on stack {stack_model.name}; next runs: {upcoming}")


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
        serving = load_config(CALLER_CWD / config_path).serving
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



def _port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        return probe.connect_ex((host, port)) == 0


def _wait_for_port(port: int, timeout_s: float, alive=lambda: True) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        if _port_in_use(port):
            return True
        time.sleep(0.5)
    return _port_in_use(port)


def _local_dashboard_url() -> str | None:
    """URL of this state directory's running local ZenML server, or None."""
    from zenml.zen_server.deploy.deployer import LocalServerDeployer
    from zenml.zen_server.deploy.exceptions import ServerDeploymentNotFoundError

    try:
        server = LocalServerDeployer().get_server()
    except ServerDeploymentNotFoundError:
        return None
    return server.status.url if server.is_running and server.status else None


def _skip_onboarding_survey() -> None:
    """The local dashboard opens on a marketing survey for a user who has not answered it; mark the
    (local, single) user as done with e-mail opt-in off, so a reviewer lands on the runs."""
    from zenml.client import Client

    client = Client()
    user = client.active_user
    metadata = dict(user.user_metadata or {})
    if metadata.get("finished_onboarding_survey") and user.email_opted_in is not None:
        return
    client.update_user(user.id, updated_email_opt_in=bool(user.email_opted_in),
                       updated_metadata={**metadata, "finished_onboarding_survey": True})


PORT_OPTION_HELP = "TCP port on 127.0.0.1"


@cli.command(
    help="Start the local ZenML dashboard (`zenml login --local`: a background server on 127.0.0.1, no "
    "Docker) for this state directory, print its URL and how to stop it. Runs started while it is up are "
    "recorded through it: DAGs, cache hits, step logs, metadata and the HTML reports (calibration, data "
    "validation, benchmark, quality, comparison with production, gate decision). --stop shuts it down "
    "(`zenml logout --local`).",
)
@click.option("--port", default=8237, show_default=True, type=click.IntRange(1024, 65535), help=PORT_OPTION_HELP)
@click.option("--stop", is_flag=True, help="stop the running dashboard")
def dashboard(port: int, stop: bool) -> None:
    import subprocess

    state = _prepare_environment()
    os.environ.setdefault("ZENML_AUTO_OPEN_DASHBOARD", "false")
    zenml_cli = str(Path(sys.executable).parent / "zenml")
    if stop:
        if _local_dashboard_url() is None:
            click.echo("no dashboard is running for this state directory")
            return
        result = subprocess.run([zenml_cli, "logout", "--local"], capture_output=True, text=True)
        if result.returncode != 0:
            _fail(f"`zenml logout --local` failed: {(result.stderr or result.stdout)[-2000:]}", EXIT_ERROR)
        click.echo("dashboard stopped; runs go to the local store directly again")
        return
    running = _local_dashboard_url()
    if running:
        click.echo(f"the dashboard is already running: {running}\nstop it with: python run.py dashboard --stop")
        return
    if _port_in_use(port):
        _fail(f"port {port} on 127.0.0.1 is already in use by another program; pick a free port with "
              f"`python run.py dashboard --port <N>` or stop whatever listens there", EXIT_INVALID_INPUT)
    _ensure_stack(state)  # the dashboard shows the project's stack from the first run on
    _skip_onboarding_survey()  # before login: the server's user endpoint drops email_opted_in updates
    from rich.console import Console

    with Console(stderr=True).status(f"starting the ZenML server on 127.0.0.1:{port} ..."):
        result = subprocess.run(
            [zenml_cli, "login", "--local", "--port", str(port), "--ip-address", "127.0.0.1"],
            capture_output=True, text=True,
        )
    if result.returncode != 0:
        _fail(f"`zenml login --local` failed: {(result.stderr or result.stdout)[-3000:]}", EXIT_ERROR)
    url = _local_dashboard_url() or f"http://127.0.0.1:{port}"
    click.echo(f"ZenML dashboard: {url}\n"
               f"  runs started from now on (python run.py ...) appear there\n"
               f"  stop it with: python run.py dashboard --stop")


def _mlflow_ui_pidfile(state: Path) -> Path:
    return state / "mlflow-ui.json"


def _running_mlflow_ui(state: Path) -> dict | None:
    import json

    pidfile = _mlflow_ui_pidfile(state)
    if not pidfile.is_file():
        return None
    info = json.loads(pidfile.read_text())
    try:
        os.kill(info["pid"], 0)
    except (ProcessLookupError, PermissionError):
        pidfile.unlink(missing_ok=True)
        return None
    return info


@cli.command(
    "mlflow-ui",
    help="Start the MLflow UI on the project's tracking database (the local stack's SQLite under the "
    "state directory) in the background on 127.0.0.1, print its URL and how to stop it (--stop).",
)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1024, 65535), help=PORT_OPTION_HELP)
@click.option("--stop", is_flag=True, help="stop the MLflow UI started from this state directory")
def mlflow_ui(port: int, stop: bool) -> None:
    import json
    import signal
    import subprocess

    state = _prepare_environment()
    running = _running_mlflow_ui(state)
    if stop:
        if running is None:
            click.echo("no MLflow UI is running for this state directory")
            return
        os.killpg(running["pid"], signal.SIGTERM)  # its own session: the server and its workers
        _mlflow_ui_pidfile(state).unlink(missing_ok=True)
        click.echo(f"MLflow UI (pid {running['pid']}) stopped")
        return
    if running is not None:
        click.echo(f"the MLflow UI is already running: {running['url']}\nstop it with: python run.py mlflow-ui --stop")
        return
    if _port_in_use(port):
        _fail(f"port {port} on 127.0.0.1 is already in use by another program; pick a free port with "
              f"`python run.py mlflow-ui --port <N>` or stop whatever listens there", EXIT_INVALID_INPUT)
    from foundry.registry import sqlite_tracking_uri

    tracking_uri = sqlite_tracking_uri(state)
    log_path = state / "mlflow-ui.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", tracking_uri,
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    from rich.console import Console

    with Console(stderr=True).status(f"starting the MLflow UI on 127.0.0.1:{port} ..."):
        up = _wait_for_port(port, 90, alive=lambda: process.poll() is None)
    if not up:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        _fail(f"the MLflow UI did not start; its log ({log_path}) ends with:\n{log_path.read_text()[-2000:]}", EXIT_ERROR)
    url = f"http://127.0.0.1:{port}"
    _mlflow_ui_pidfile(state).write_text(json.dumps({"pid": process.pid, "port": port, "url": url}))
    click.echo(f"MLflow UI: {url}  (tracking database {tracking_uri})\n  stop it with: python run.py mlflow-ui --stop")

if __name__ == "__main__":
    cli()
