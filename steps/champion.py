from typing import Annotated

from zenml import log_metadata, step

from foundry.artifacts import EngineArtifact
from foundry.champion import ProductionEngine
from foundry.errors import FoundryError
from steps.tracking import stack_registry


@step(enable_cache=False)  # production moves between runs: look now
def find_champion(model_name: str) -> Annotated[ProductionEngine, "production_engine"]:
    """What MLflow says about the production version (the champion): its engine directory, engine
    hash and recorded metrics. Whether it can run is decided where the engines run."""
    registry = stack_registry()
    version = registry.production_version(model_name)
    if version is None:
        production = ProductionEngine(model_name=model_name, version=None)
    else:
        engine_dir, locate_error = None, None
        try:
            _, engine_dir, _ = registry.engine_dir(model_name, version)
        except FoundryError as error:
            locate_error = str(error)
        production = ProductionEngine(
            model_name=model_name,
            version=version,
            engine_dir=str(engine_dir) if engine_dir else None,
            engine_content_hash=registry.version_tags(model_name, version).get("engine_content_hash"),
            locate_error=locate_error,
            recorded_metrics=registry.version_run_metrics(model_name, version),
        )
    log_metadata(metadata={"champion": {"version": version or "none", "engine_dir": production.engine_dir or ""}})
    return production


@step(enable_cache=False)
def champion_for_evaluation(
    engine: EngineArtifact, production_engine: ProductionEngine
) -> Annotated[ProductionEngine, "evaluation_champion"]:
    """What the quality evaluation needs of the champion, and nothing that changes without
    changing it: no champion when production holds this very engine (an unchanged re-run) or
    nothing, else its engine without the recorded metrics. The artifact's content is the
    evaluation's cache key, so an unchanged re-run reuses the cached evaluation (the production
    version number moves on every promotion and would otherwise miss the cache every time)."""
    if production_engine.version is None or production_engine.engine_content_hash == engine.content_hash:
        return ProductionEngine(model_name=production_engine.model_name, version=None)
    return production_engine.model_copy(update={"recorded_metrics": {}})
