"""What a TensorRT-LLM node is, and whether an engine built elsewhere can run on it.

A serialized TensorRT plan runs only on the TensorRT version and GPU architecture (SM) that built
it; TensorRT reports a mismatch late ("Serialization assertion ... failed", "expecting compute 8.0
got compute 8.9"). The builder records the node in engine.json; `check_engine_compatible` compares
that record with the node that is about to load, benchmark or export the engine and refuses with
the precise difference before anything touches the plan.

`TrtllmEnvironment` is the probe of a node. Its default (`TrtllmEnvironment.probe()`) asks the real
system (importlib.metadata, nvidia-smi-equivalent NVML queries); tests describe a node explicitly.
"""

from __future__ import annotations

import importlib.metadata
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from foundry.errors import FoundryError, NotSupportedError

REQUIRED_TRTLLM_SERIES = "1.2."


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str  # "9.0"
    memory_total_bytes: int = 0


def _package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _nvml_gpus() -> tuple[tuple[GpuInfo, ...], str | None, str | None]:
    """(gpus, driver version, CUDA driver API version) from NVML; empty when there is no driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # no driver / no NVML: no usable GPU
        return (), None, None
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        cuda = pynvml.nvmlSystemGetCudaDriverVersion_v2()
        gpus = []
        for index in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(index)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
            gpus.append(
                GpuInfo(
                    name=str(pynvml.nvmlDeviceGetName(handle)),
                    compute_capability=f"{major}.{minor}",
                    memory_total_bytes=int(pynvml.nvmlDeviceGetMemoryInfo(handle).total),
                )
            )
        return tuple(gpus), str(driver), f"{cuda // 1000}.{(cuda % 1000) // 10}"
    finally:
        pynvml.nvmlShutdown()


def nvml_memory_used_bytes() -> list[int]:
    """Used memory per visible GPU right now (sampled during builds for the peak)."""
    import pynvml

    pynvml.nvmlInit()
    try:
        return [
            int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used)
            for i in range(pynvml.nvmlDeviceGetCount())
        ]
    finally:
        pynvml.nvmlShutdown()


@dataclass(frozen=True)
class TrtllmEnvironment:
    """The facts about a node the trtllm builder, the guard and the export depend on."""

    trtllm_version: str | None
    tensorrt_version: str | None
    cuda_version: str | None
    driver_version: str | None
    gpus: tuple[GpuInfo, ...] = ()
    # Sampled during a build for the peak GPU memory; None where no GPU can be asked.
    memory_used_bytes: Callable[[], list[int]] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def probe(cls) -> "TrtllmEnvironment":
        gpus, driver, cuda = _nvml_gpus()
        return cls(
            trtllm_version=_package_version("tensorrt_llm") or _package_version("tensorrt-llm"),
            tensorrt_version=_package_version("tensorrt")
            or _package_version("tensorrt_cu13")
            or _package_version("tensorrt_cu12"),
            cuda_version=cuda,
            driver_version=driver,
            gpus=gpus,
            memory_used_bytes=nvml_memory_used_bytes if gpus else None,
        )

    @property
    def compute_capability(self) -> str | None:
        """The build GPU's SM (GPU 0; ranks are built on GPU rank % workers, all of one kind here)."""
        return self.gpus[0].compute_capability if self.gpus else None

    def problems(self) -> list[str]:
        """What stops trtllm-build 1.2.x on this node (empty: it can build)."""
        found = []
        if self.trtllm_version is None:
            found.append("tensorrt_llm is not installed")
        elif not self.trtllm_version.startswith(REQUIRED_TRTLLM_SERIES):
            found.append(f"tensorrt_llm {self.trtllm_version} is installed but engines need the 1.2.x line")
        if shutil.which("trtllm-build") is None:
            found.append("trtllm-build is not on PATH")
        if not self.gpus:
            found.append("no NVIDIA GPU is visible (NVML found none)")
        elif len({gpu.compute_capability for gpu in self.gpus}) > 1:
            kinds = sorted({f"{gpu.name} (compute {gpu.compute_capability})" for gpu in self.gpus})
            found.append(f"GPUs of different architectures are visible ({', '.join(kinds)}); an engine targets one")
        return found

    def require_trtllm(self) -> None:
        problems = self.problems()
        if problems:
            raise NotSupportedError(
                "build.backend 'trtllm' cannot run on this node: "
                + "; ".join(problems)
                + ". Run the build on a GPU node inside the TensorRT-LLM 1.2.x release container "
                "(see stacks/README.md), or set build.backend: reference."
            )

    def identity(self) -> dict:
        """What engine.json records about the node that built the engine."""
        return {
            "trtllm_version": self.trtllm_version,
            "tensorrt_version": self.tensorrt_version,
            "cuda_version": self.cuda_version,
            "driver_version": self.driver_version,
            "gpu_name": self.gpus[0].name if self.gpus else None,
            "compute_capability": self.compute_capability,
            "gpu_count": len(self.gpus),
        }


@dataclass(frozen=True)
class NodeTarget:
    """The node an engine is about to run on: TRT-LLM version and GPU compute capability."""

    trtllm_version: str | None
    compute_capability: str | None

    @classmethod
    def of(cls, environment: TrtllmEnvironment) -> "NodeTarget":
        return cls(environment.trtllm_version, environment.compute_capability)

    @classmethod
    def parse(cls, text: str) -> "NodeTarget":
        """'1.2.1@9.0' (TRT-LLM version @ compute capability), for exporting to another node."""
        version, sep, capability = text.partition("@")
        if not sep or not version or not capability or capability.count(".") != 1:
            raise FoundryError(f"target node {text!r}: expected TRTLLM_VERSION@COMPUTE_CAPABILITY, e.g. 1.2.1@9.0")
        return cls(version.strip(), capability.strip())

    def describe(self) -> str:
        return f"{self.trtllm_version or 'no TRT-LLM'} on compute {self.compute_capability or 'none (no GPU)'}"


def check_engine_compatible(engine_info: dict, node: NodeTarget, engine_dir: Path | str) -> None:
    """Refuse, naming both sides, unless TRT-LLM version and compute capability match exactly."""
    built = engine_info.get("environment") or {}
    built_version, built_capability = built.get("trtllm_version"), built.get("compute_capability")
    if not built_version or not built_capability:
        raise FoundryError(
            f"{Path(engine_dir) / 'engine.json'}: no TRT-LLM version / compute capability recorded; "
            "this engine was not built by foundry's trtllm builder — rebuild it"
        )
    if built_version != node.trtllm_version or built_capability != node.compute_capability:
        raise FoundryError(
            f"{engine_dir}: engine built with TRT-LLM {built_version} on compute {built_capability}; "
            f"this node has {node.describe()}. TensorRT engines run only on the TRT-LLM/TensorRT version and "
            "GPU architecture that built them: rebuild the engine on this node, or run it on a matching node "
            "(e.g. the Triton container that carries the same TRT-LLM version)."
        )
