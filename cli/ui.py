"""`run.py dashboard` and `run.py mlflow-ui`: the two web UIs as managed background processes."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import click

from cli.environment import EXIT_ERROR, EXIT_INVALID_INPUT, ensure_stack, fail, prepare_environment


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
    client.update_user(
        user.id,
        updated_email_opt_in=bool(user.email_opted_in),
        updated_metadata={**metadata, "finished_onboarding_survey": True},
    )


PORT_OPTION_HELP = "TCP port on 127.0.0.1"


@click.command(
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

    state = prepare_environment()
    os.environ.setdefault("ZENML_AUTO_OPEN_DASHBOARD", "false")
    zenml_cli = str(Path(sys.executable).parent / "zenml")
    if stop:
        if _local_dashboard_url() is None:
            click.echo("no dashboard is running for this state directory")
            return
        result = subprocess.run([zenml_cli, "logout", "--local"], capture_output=True, text=True)
        if result.returncode != 0:
            fail(f"`zenml logout --local` failed: {(result.stderr or result.stdout)[-2000:]}", EXIT_ERROR)
        click.echo("dashboard stopped; runs go to the local store directly again")
        return
    running = _local_dashboard_url()
    if running:
        click.echo(f"the dashboard is already running: {running}\nstop it with: python run.py dashboard --stop")
        return
    if _port_in_use(port):
        fail(
            f"port {port} on 127.0.0.1 is already in use by another program; pick a free port with "
            f"`python run.py dashboard --port <N>` or stop whatever listens there",
            EXIT_INVALID_INPUT,
        )
    ensure_stack(state)  # the dashboard shows the project's stack from the first run on
    _skip_onboarding_survey()  # before login: the server's user endpoint drops email_opted_in updates
    from rich.console import Console

    with Console(stderr=True).status(f"starting the ZenML server on 127.0.0.1:{port} ..."):
        result = subprocess.run(
            [zenml_cli, "login", "--local", "--port", str(port), "--ip-address", "127.0.0.1"],
            capture_output=True,
            text=True,
        )
    if result.returncode != 0:
        fail(f"`zenml login --local` failed: {(result.stderr or result.stdout)[-3000:]}", EXIT_ERROR)
    url = _local_dashboard_url() or f"http://127.0.0.1:{port}"
    click.echo(
        f"ZenML dashboard: {url}\n"
        f"  runs started from now on (python run.py ...) appear there\n"
        f"  stop it with: python run.py dashboard --stop"
    )


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


@click.command(
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

    state = prepare_environment()
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
        fail(
            f"port {port} on 127.0.0.1 is already in use by another program; pick a free port with "
            f"`python run.py mlflow-ui --port <N>` or stop whatever listens there",
            EXIT_INVALID_INPUT,
        )
    from foundry.registry import sqlite_tracking_uri

    tracking_uri = sqlite_tracking_uri(state)
    log_path = state / "mlflow-ui.log"
    with open(log_path, "ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "server",
                "--backend-store-uri",
                tracking_uri,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    from rich.console import Console

    with Console(stderr=True).status(f"starting the MLflow UI on 127.0.0.1:{port} ..."):
        up = _wait_for_port(port, 90, alive=lambda: process.poll() is None)
    if not up:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        fail(
            f"the MLflow UI did not start; its log ({log_path}) ends with:\n{log_path.read_text()[-2000:]}", EXIT_ERROR
        )
    url = f"http://127.0.0.1:{port}"
    _mlflow_ui_pidfile(state).write_text(json.dumps({"pid": process.pid, "port": port, "url": url}))
    click.echo(f"MLflow UI: {url}  (tracking database {tracking_uri})\n  stop it with: python run.py mlflow-ui --stop")
