"""The TensorRT-LLM builder (trtllm-build 1.2.x). Runs on a GPU node inside the TensorRT-LLM
release container; elsewhere it refuses before any work, saying what it found and what it needs."""

from __future__ import annotations

import importlib.metadata
import shutil
from pathlib import Path

from foundry.config import BuildConfig
from foundry.errors import NotSupportedError

REQUIRED_SERIES = "1.2."


def _installed_trtllm_version() -> str | None:
    try:
        return importlib.metadata.version("tensorrt_llm")
    except importlib.metadata.PackageNotFoundError:
        return None


def _gpu_count() -> int:
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            return pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # no driver / no NVML: no usable GPU
        return 0


class TrtllmBuilder:
    backend = "trtllm"

    def check_environment(self) -> None:
        version = _installed_trtllm_version()
        problems = []
        if version is None:
            problems.append("tensorrt_llm is not installed")
        elif not version.startswith(REQUIRED_SERIES):
            problems.append(f"tensorrt_llm {version} is installed but engines need the 1.2.x line")
        if shutil.which("trtllm-build") is None:
            problems.append("trtllm-build is not on PATH")
        if _gpu_count() == 0:
            problems.append("no NVIDIA GPU is visible (NVML found none)")
        if problems:
            raise NotSupportedError(
                "build.backend 'trtllm' cannot run on this node: " + "; ".join(problems)
                + ". Run the build on a GPU node inside the TensorRT-LLM 1.2.x release container "
                "(see stacks/README.md), or set build.backend: reference."
            )

    def build(self, checkpoint_dir: Path, output_dir: Path, build: BuildConfig) -> dict:
        self.check_environment()
        raise NotSupportedError(
            "not supported yet: invoking trtllm-build from the pipeline is tracked in the TensorRT-LLM "
            "builder issue; build.backend: reference is the supported builder today"
        )
