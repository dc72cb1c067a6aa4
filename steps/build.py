import shutil
from typing import Annotated

from zenml import log_metadata, step

from foundry.artifacts import EngineArtifact, HFCheckpoint, TrtllmCheckpoint
from foundry.builders import get_builder
from foundry.config import BuildConfig
from foundry.state import scratch_dir
from materializers import ModelDirectoryMaterializer


@step(output_materializers=ModelDirectoryMaterializer)
def build_engine(
    trtllm_checkpoint: TrtllmCheckpoint, build: BuildConfig, checkpoint: HFCheckpoint | None = None
) -> Annotated[EngineArtifact, "engine"]:
    """Build the engine with the configured backend; the manifest records what built it.

    On a GPU stack the trtllm build runs with stacks/gpu_build_settings.py's options (GPU count =
    world size, TensorRT-LLM 1.2.x release image). A trtllm engine keeps the model's tokenizer in
    tokenizer/ so the Triton export (`run.py export-triton`) is self-contained."""
    builder = get_builder(build.backend)
    builder.check_environment()
    out = scratch_dir("engine")
    info = builder.build(trtllm_checkpoint.path, out, build)
    if build.backend == "trtllm" and checkpoint is not None:
        from foundry.triton import copy_tokenizer

        copy_tokenizer(checkpoint.path, out / "tokenizer")
        # trtllm-serve 1.2.x reads the model type from its --tokenizer directory's config.json
        shutil.copy2(checkpoint.path / "config.json", out / "tokenizer" / "config.json")
    engine = EngineArtifact(path=out, scratch=True)
    engine.seal({"engine": info, "checkpoint_content_hash": trtllm_checkpoint.content_hash})
    log_metadata(metadata={"engine": {**info, "content_hash": engine.content_hash}})
    return engine
