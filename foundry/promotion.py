"""Move the production pointer in two registries together, or not at all.

MLflow's alias moves first; if the second registry (ZenML's model stage) fails, the alias is put
back where it was, so a failed run never leaves the two disagreeing or half-promoted.
"""

from __future__ import annotations

from typing import Callable

from pydantic import BaseModel, ConfigDict

from foundry.gates import GateDecision
from foundry.registry import Registry


class PromotionResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    model_name: str
    version: str
    promoted: bool
    previous_production: str | None
    production_after: str | None
    reasons: list[str]


def promote_if_passed(
    registry: Registry,
    model_name: str,
    version: str,
    decision: GateDecision,
    promote_second_registry: Callable[[], None],
) -> PromotionResult:
    previous = registry.production_version(model_name)
    if not decision.passed:
        registry.tag_version(model_name, version, {"gate": "failed", "gate_reasons": "; ".join(decision.failure_reasons)})
        return PromotionResult(
            model_name=model_name, version=version, promoted=False, previous_production=previous,
            production_after=previous, reasons=decision.failure_reasons,
        )
    registry.set_production(model_name, version)
    try:
        promote_second_registry()
    except Exception:
        registry.restore_production(model_name, previous)
        raise
    registry.tag_version(model_name, version, {"gate": "passed"})
    return PromotionResult(
        model_name=model_name, version=version, promoted=True, previous_production=previous,
        production_after=version, reasons=[r.reason for r in decision.results],
    )
