"""Move the production pointer in two registries together, or not at all — even across a crash.

Before the first move, the intent is journaled on the MLflow registered model (tag
`foundry.pending_production_move`: version, previous version, run, time). Then MLflow's alias moves,
then the second registry (ZenML's model stage); then the version is tagged `gate=passed` and the
journal entry removed. If the second move raises, the alias is put back and the entry removed. If the
process dies in between, the entry survives: the next promotion, or `run.py status --repair`,
finishes the move (the gates had passed), so the two registries never stay disagreeing.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from pydantic import BaseModel, ConfigDict

from foundry.errors import FoundryError
from foundry.gates import GateDecision
from foundry.registry import Registry

JOURNAL_TAG = "foundry.pending_production_move"
# Tests only: seconds to wait between the MLflow and the ZenML move, so a kill can land there.
PAUSE_ENV = "FOUNDRY_PAUSE_BETWEEN_MOVES_S"


class PromotionResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_name: str
    version: str
    promoted: bool
    previous_production: str | None
    production_after: str | None
    reasons: list[str]
    repaired: str | None = None  # an interrupted earlier move this promotion finished first


def _journal(registry: Registry, model_name: str, version: str, previous: str | None, run: str) -> None:
    entry = {
        "version": version,
        "previous": previous,
        "run": run,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    registry.set_model_tag(model_name, JOURNAL_TAG, json.dumps(entry))


def pending_move(registry: Registry, model_name: str) -> dict | None:
    raw = registry.model_tag(model_name, JOURNAL_TAG)
    return json.loads(raw) if raw else None


def finish_pending_move(
    registry: Registry, model_name: str, move_second_registry: Callable[[str], None]
) -> dict | None:
    """Finish an interrupted production move (both registries to the journaled version); returns the
    journal entry it finished (with `message`), or None when nothing was pending."""
    entry = pending_move(registry, model_name)
    if entry is None:
        return None
    registry.set_production(model_name, entry["version"])
    move_second_registry(entry["version"])
    registry.tag_version(
        model_name, entry["version"], {"gate": "passed", "production_move": "finished after an interruption"}
    )
    registry.delete_model_tag(model_name, JOURNAL_TAG)
    registry.record_production_change(
        model_name,
        {
            "action": "finish interrupted move",
            "from_version": entry["previous"] or "none",
            "to_version": entry["version"],
            "reason": f"run {entry['run']} stopped between the MLflow and the ZenML move",
            "who": who(),
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "gate": "passed",
            "run": entry["run"],
        },
    )
    message = (
        f"finished the interrupted move of {model_name} to version {entry['version']} (started "
        f"{entry['started_at']} by run {entry['run']}; previous production {entry['previous'] or 'none'})"
    )
    return entry | {"message": message}


def who() -> str:
    return f"{getpass.getuser()}@{socket.gethostname()}"


@contextlib.contextmanager
def production_lock(registry: Registry, model_name: str) -> Iterator[None]:
    """Serializes production moves of one model on a local (SQLite) registry, so a compare-and-set
    is atomic there; a remote tracking server has no lock to take (the journal still covers crashes)."""
    uri = registry.tracking_uri
    if not uri.startswith("sqlite:///"):
        yield
        return
    path = Path(uri.removeprefix("sqlite:///")).parent / f".production-{model_name}.lock"
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


_ANY = object()


def move_production(
    registry: Registry,
    model_name: str,
    version: str,
    move_second_registry: Callable[[], None],
    *,
    action: str,
    reason: str,
    run: str = "",
    gate: str | None = None,
    expected_current=_ANY,
) -> str | None:
    """Move both registries' production pointer to `version`, journaled, and record the change (who,
    when, why, from → to, gate decision) as an MLflow run. With `expected_current`, a compare-and-set:
    refused if production is no longer what the caller measured. Returns the previous version."""
    with production_lock(registry, model_name):
        previous = registry.production_version(model_name)
        if expected_current is not _ANY and previous != expected_current:
            raise FoundryError(
                f"production moved during this run (now {'v' + previous if previous else 'none'}, this run compared "
                f"against {'v' + expected_current if expected_current else 'none'}); re-run to compare against it"
            )
        _journal(registry, model_name, version, previous, run)
        registry.set_production(model_name, version)
        if os.environ.get(PAUSE_ENV):
            print(f"pausing {os.environ[PAUSE_ENV]} s between the MLflow and the ZenML move ({PAUSE_ENV})", flush=True)
            time.sleep(float(os.environ[PAUSE_ENV]))
        try:
            move_second_registry()
        except Exception:
            registry.restore_production(model_name, previous)
            registry.delete_model_tag(model_name, JOURNAL_TAG)
            raise
        if gate is not None:
            registry.tag_version(model_name, version, {"gate": gate})
        registry.delete_model_tag(model_name, JOURNAL_TAG)
    registry.record_production_change(
        model_name,
        {
            "action": action,
            "from_version": previous or "none",
            "to_version": version,
            "reason": reason,
            "who": who(),
            "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "gate": gate,
            "run": run,
        },
    )
    return previous


def promote_if_passed(
    registry: Registry,
    model_name: str,
    version: str,
    decision: GateDecision,
    promote_second_registry: Callable[[], None],
    run: str = "",
    expected_current=_ANY,
) -> PromotionResult:
    previous = registry.production_version(model_name)
    if not decision.passed:
        registry.tag_version(
            model_name, version, {"gate": "failed", "gate_reasons": "; ".join(decision.failure_reasons)}
        )
        return PromotionResult(
            model_name=model_name,
            version=version,
            promoted=False,
            previous_production=previous,
            production_after=previous,
            reasons=decision.failure_reasons,
        )
    previous = move_production(
        registry,
        model_name,
        version,
        promote_second_registry,
        action="promote (gates passed)",
        reason="; ".join(r.reason for r in decision.results),
        run=run,
        gate="passed",
        expected_current=expected_current,
    )
    return PromotionResult(
        model_name=model_name,
        version=version,
        promoted=True,
        previous_production=previous,
        production_after=version,
        reasons=[r.reason for r in decision.results],
    )


def rollback_target(registry: Registry, model_name: str) -> str:
    """The production version before the current one, from the recorded history."""
    current = registry.production_version(model_name)
    if current is None:
        raise FoundryError(f"model {model_name!r} has no production version to roll back from")
    for change in reversed(registry.production_history(model_name)):
        if change.get("to_version") == current and change.get("from_version") not in (None, "none"):
            return change["from_version"]
    raise FoundryError(
        f"model {model_name!r}: no earlier production version is recorded before v{current}; "
        "name one with --to-version N"
    )
