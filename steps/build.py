from typing import Annotated

from zenml import log_metadata, step

from foundry.artifacts import EngineArtifact, TrtllmCheckpoint
from foundry.builders import get_builder
from foundry.config import BuildConfig
from foundry.state import scratch_dir
from materializers import ModelDirectoryMaterializer


@step(output_materializers=ModelDirectoryMaterializer)
def build_engine(trtllm_checkpoint: TrtllmCheckpoint, build: BuildConfig) -> Annotated[EngineArtifact, "engine"]:
    """Build the engine with the configured backend; the manifest records what built it."""
    builder = get_builder(build.backend)
    builder.check_environment()
    out = scratch_dir("engine")
    info = builder.build(trtllm_checkpoint.path, out, build)
    engine = EngineArtifact(path=out, scratch=True)
    engine.seal({"engine": info, "checkpoint_content_hash": trtllm_checkpoint.content_hash})
    log_metadata(metadata={"engine": {**info, "content_hash": engine.content_hash}})
    return engine
