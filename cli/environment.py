"""What every command shares: the project-local state environment, the stack, failing with an exit code.

`prepare_environment()` must run before zenml is imported (ZenML reads ZENML_CONFIG_PATH at import),
so run.py calls it first and the command modules import zenml at their top.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click

from foundry.errors import FoundryError, exit_code_of

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CALLER_CWD = Path.cwd()  # relative paths on the command line and in configs mean the caller's directory

EXIT_PROMOTED, EXIT_ERROR, EXIT_INVALID_INPUT, EXIT_GATE_FAILED, EXIT_INFRASTRUCTURE = 0, 1, 2, 3, 4


def prepare_environment() -> Path:
    """Project-local state: ZenML's store and MLflow's database live under .foundry/ (or
    $FOUNDRY_STATE_DIR), so runs never touch a user's global ZenML config."""
    os.chdir(PROJECT_ROOT)
    if str(PROJECT_ROOT) not in sys.path:
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


def fail(message: str, code: int) -> NoReturn:
    click.secho(f"error: {message}", fg="red", err=True)
    sys.exit(code)


def fail_with(error: FoundryError) -> NoReturn:
    """Exit with the code of the error's type (foundry/errors.py)."""
    fail(str(error), exit_code_of(type(error)))


def ensure_stack(state: Path) -> str:
    """The stack the user activated (`run.py stack register <name> --set`) if any, else the local
    stack, registered idempotently. No `zenml init`: a .zen/ in the checkout would pin an active
    stack id that belongs to one state directory; the source root is the project root either way."""
    from zenml.client import Client

    from stacks.local import STACK_NAME, ensure_local_stack

    active = Client().active_stack_model.name
    if active not in ("default", STACK_NAME):
        return active
    return ensure_local_stack(state)


CONFIG_OPTION = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    default="configs/default.yaml",
    show_default=True,
    help="run config YAML (validated before any work)",
)
