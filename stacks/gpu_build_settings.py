"""Step settings that send the `trtllm` build step to a GPU node inside the TensorRT-LLM 1.2.x container.

`build_step_options(build, world_size)` is what stacks/placement.py applies to the steps that build or
serve the engine when build.backend is `trtllm`:

* `ResourceSettings(gpu_count=world_size)`: one GPU per rank of the checkpoint (tp × pp), because the
  builder refuses fewer visible GPUs than ranks (and than build.workers);
* `DockerSettings(parent_image=TRTLLM_RELEASE_IMAGE)`: the step's image is built on NVIDIA's TensorRT-LLM
  release container (TensorRT-LLM + TensorRT + CUDA + trtllm-build on PATH), and the project is installed on top;
* the active stack's step operator, when it has one (a Kubernetes / cloud GPU step operator; see
  stacks/README.md). Without one the step runs where the orchestrator runs it — which is right when
  the whole pipeline already runs inside the TensorRT-LLM container on a GPU node.

The reference backend gets no options: it runs anywhere.
"""

from __future__ import annotations

import os

from foundry.config import BuildConfig

# NGC's TensorRT-LLM release container; the tag is the TensorRT-LLM version. 1.2.x is the last line
# with the TensorRT engine backend (docs/tensorrt-llm-facts.md). Override with FOUNDRY_TRTLLM_IMAGE.
TRTLLM_RELEASE_IMAGE = "nvcr.io/nvidia/tensorrt-llm/release:1.2.1"
IMAGE_ENV = "FOUNDRY_TRTLLM_IMAGE"


def trtllm_parent_image() -> str:
    image = os.environ.get(IMAGE_ENV, TRTLLM_RELEASE_IMAGE)
    tag = image.rpartition(":")[2]
    if not tag.startswith("1.2."):
        from foundry.errors import FoundryError

        raise FoundryError(
            f"${IMAGE_ENV} = {image}: engines are built with TensorRT-LLM 1.2.x; use a 1.2.x release image"
        )
    return image


def build_step_options(build: BuildConfig, world_size: int, step_operator: str | None = None) -> dict:
    """Keyword arguments for `build_engine.with_options(...)`; empty for the reference backend."""
    if build.backend != "trtllm":
        return {}
    from zenml.config import DockerSettings, ResourceSettings

    options = {
        "settings": {
            "resources": ResourceSettings(gpu_count=max(world_size, build.workers)),
            "docker": DockerSettings(
                parent_image=trtllm_parent_image(),
                environment={"FOUNDRY_BUILD_NODE": "trtllm-1.2"},
            ),
        }
    }
    if step_operator:
        options["step_operator"] = step_operator
    return options
