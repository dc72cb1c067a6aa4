"""The command line: one module per command group, joined here with click's add_command."""

from __future__ import annotations

import click

from cli.export import export_triton
from cli.production import history, promote, rollback
from cli.run_pipeline import RunOptions, run_command, run_options, run_pipeline
from cli.schedule import schedule
from cli.stack import stack
from cli.status import status
from cli.ui import dashboard, mlflow_ui

USAGE = """\bLLM Engine Foundry command line.


    python run.py --config configs/default.yaml [--no-cache] [--run-name NAME]
    python run.py run --config ...            the same, spelled out
    python run.py schedule --cron "0 2 * * *" --config ...
                                              nightly rebuild on the active stack (needs an
                                              orchestrator that runs schedules, e.g. kubernetes)
    python run.py stack register local        create/activate the local stack (idempotent)
    python run.py stack register kubernetes-gpu --file my-k8s.yaml [--set]
                                              Kubernetes + S3 + remote MLflow + GPU step operator
    python run.py status [--repair]           production version per model, MLflow vs ZenML
    python run.py promote --model M --version N --reason TEXT    forced (gates bypassed)
    python run.py rollback --model M [--to-version N] --reason TEXT
    python run.py history --model M           every production change: who, when, why
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
    2  invalid input: config, checkpoint, data, flags, cron, stack definition, credentials, port in
       use, or a stack that cannot do what was asked (e.g. a schedule on the local orchestrator)
    4  infrastructure: a stored artifact fails its manifest (re-run with --no-cache), the tracking
       database stays locked, the state directory is not writable
    1  error: an unexpected failure (a bug: the step log has the traceback), or `status` found the
       two registries disagreeing
"""


@click.group(invoke_without_command=True, help=USAGE)
@run_options
@click.pass_context
def cli(
    ctx: click.Context, config_path: str, no_cache: bool, run_name: str | None, compare_with: str | None, verbose: bool
) -> None:
    if ctx.invoked_subcommand is None:
        raise SystemExit(run_pipeline(RunOptions(config_path, no_cache, run_name, compare_with, verbose)))


for command in (run_command, stack, schedule, status, promote, rollback, history, export_triton, dashboard, mlflow_ui):
    cli.add_command(command)
