"""Where each step runs: the one mechanism `run.py run` and `run.py schedule` both use.

`step_placements(...)` gives `pipeline.with_options(steps=...)`: on a stack registered as
kubernetes-gpu, its GPU step configurations (calibrate on the CUDA image; build, benchmark and — for
a TensorRT-LLM engine, which is served — evaluate in the TensorRT-LLM 1.2.x release image on the
GPU step operator); on any other stack with build.backend trtllm, the TensorRT-LLM image, one GPU
per rank and the stack's step operator (if any) for the steps that build or serve the engine; else
nothing (steps run where the orchestrator runs them).
"""

from __future__ import annotations

from foundry.config import BuildConfig
from stacks.gpu_build_settings import build_step_options
from stacks.kubernetes_gpu import TRTLLM_SERVED_STEPS, definition_of_stack, gpu_step_configurations


def step_placements(build: BuildConfig, world_size: int, stack_model) -> dict[str, dict]:
    definition = definition_of_stack(stack_model)
    if definition is not None:
        return gpu_step_configurations(definition, build.backend, reference_on_cuda=build.device == "cuda")
    if build.backend != "trtllm":
        return {}
    from zenml.enums import StackComponentType

    operators = stack_model.components.get(StackComponentType.STEP_OPERATOR) or []
    options = build_step_options(build, world_size, operators[0].name if operators else None)
    return {step: options for step in TRTLLM_SERVED_STEPS}
