"""Where the project keeps its local state: ZenML store, MLflow database, scratch space."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

STATE_DIR_ENV = "FOUNDRY_STATE_DIR"


def state_dir() -> Path:
    """`$FOUNDRY_STATE_DIR`, else `.foundry/` in the current directory (the project root)."""
    path = Path(os.environ.get(STATE_DIR_ENV) or Path.cwd() / ".foundry").resolve()
    path.mkdir(parents=True, exist_ok=True)
    return path


def scratch_dir(prefix: str) -> Path:
    """A fresh directory on the state volume, so the materializer can move files instead of copying."""
    root = state_dir() / "scratch"
    root.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"{prefix}-", dir=root))
