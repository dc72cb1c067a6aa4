"""Move the production pointer in two registries together, or not at all — even across a crash.

Before the first move, the intent is journaled on the MLflow registered model (tag
`foundry.pending_production_move`: version, previous version, run, time). Then MLflow's alias moves,
then the second registry (ZenML's model stage); then the version is tagged `gate=passed` and the
journal entry removed. If the second move raises, the alias is put back and the entry removed. If the
process dies in between, the entry survives: the next promotion, or `run.py status --repair`,
finishes the move (the gates had passed), so the two registries never stay disagreeing.
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from typing import Callable

from pydantic import BaseModel, ConfigDict

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
    entry = {"version": version, "previous": previous, "run": run,
             "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    registry.set_model_tag(model_name, JOURNAL_TAG, json.dumps(entry))


def pending_move(registry: Registry, model_name: str) -> dict | None:
    raw = registry.model_tag(model_name, JOURNAL_TAG)
    return json.loads(raw) if raw else None


def finish_pending_move(registry: Registry, model_name: str, move_second_registry: Callable[[str], None]) -> str | None:
    """Finish an interrupted production move (both registries to the journaled version); returns what
    it did, or None when nothing was pending."""
    entry = pending_move(registry, model_name)
    if entry is None:
        return None
    registry.set_production(model_name, entry["version"])
    move_second_registry(entry["version"])
    registry.tag_version(model_name, entry["version"], {"gate": "passed", "production_move": "finished after an interruption"})
    registry.delete_model_tag(model_name, JOURNAL_TAG)
    return (f"finished the interrupted move of {model_name} to version {entry['version']} (started "
            f"{entry['started_at']} by run {entry['run']}; previous production {entry['previous'] or 'none'})")


def promote_if_passed(
    registry: Registry,
    model_name: str,
    version: str,
    decision: GateDecision,
    promote_second_registry: Callable[[], None],
    run: str = "",
) -> PromotionResult:
    previous = registry.production_version(model_name)
    if not decision.passed:
        registry.tag_version(model_name, version, {"gate": "failed", "gate_reasons": "; ".join(decision.failure_reasons)})
        return PromotionResult(
            model_name=model_name, version=version, promoted=False, previous_production=previous,
            production_after=previous, reasons=decision.failure_reasons,
        )
    _journal(registry, model_name, version, previous, run)
    registry.set_production(model_name, version)
    if os.environ.get(PAUSE_ENV):
        print(f"pausing {os.environ[PAUSE_ENV]} s between the MLflow and the ZenML move ({PAUSE_ENV})", flush=True)
        time.sleep(float(os.environ[PAUSE_ENV]))
    try:
        promote_second_registry()
    except Exception:
        registry.restore_production(model_name, previous)
        registry.delete_model_tag(model_name, JOURNAL_TAG)
        raise
    registry.tag_version(model_name, version, {"gate": "passed"})
    registry.delete_model_tag(model_name, JOURNAL_TAG)
    return PromotionResult(
        model_name=model_name, version=version, promoted=True, previous_production=previous,
        production_after=version, reasons=[r.reason for r in decision.results],
    )
