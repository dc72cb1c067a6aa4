"""The builder interface and the engine loader.

A builder turns a TensorRT-LLM checkpoint directory into an engine directory. `check_environment`
runs before the pipeline does any expensive work, so a node that cannot build fails in seconds.
Every engine directory carries `engine.json` saying which backend made it; `load_engine` reads it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from foundry.config import BuildConfig
from foundry.errors import FoundryError
from foundry.runtime.base import Engine

ENGINE_INFO = "engine.json"


class EngineBuilder(Protocol):
    backend: str
    # TensorRT-LLM quant_algo / kv_cache_quant_algo values (foundry/trtllm_checkpoint.py) it builds.
    accepted_quant_algos: frozenset
    accepted_kv_cache_quant_algos: frozenset

    def check_environment(self) -> None:
        """Raise NotSupportedError naming what is missing on this node, before any work."""
        ...

    def build(self, checkpoint_dir: Path, output_dir: Path, build: BuildConfig) -> dict:
        """Write the engine into `output_dir` (incl. engine.json); return engine.json's content."""
        ...


def read_engine_info(engine_dir: Path) -> dict:
    path = engine_dir / ENGINE_INFO
    if not path.is_file():
        raise FoundryError(f"{path}: missing; {engine_dir} is not an engine directory built by foundry")
    return json.loads(path.read_text())


def load_engine(engine_dir: Path, device: str | None = None, compute_dtype=None) -> Engine:
    """The engine in `engine_dir`, on `device` (None: the device its engine.json names), computing in
    `compute_dtype` (a torch dtype; None: the one its engine.json names)."""
    info = read_engine_info(engine_dir)
    if info["backend"] == "reference":
        import torch

        from foundry.runtime.reference import ReferenceEngine
        from foundry.runtime.scheduler import EngineOptions

        options = EngineOptions.from_engine_info(info)
        device = device or info.get("device", "cpu")
        return ReferenceEngine.load(
            engine_dir,
            compute_dtype=compute_dtype or getattr(torch, info["compute_dtype"]),
            device=device,
            options=options,
        )
    if info["backend"] == "trtllm":
        guard_trtllm_engine(engine_dir, info)
    raise FoundryError(
        f"{engine_dir}: engines of backend {info['backend']!r} run in their own runtime "
        "(trtllm-serve / Triton); benchmark them through their OpenAI-compatible endpoint"
    )


def guard_trtllm_engine(engine_dir: Path, info: dict, node=None) -> None:
    """Before a TensorRT-LLM engine is loaded, benchmarked or exported: its files must match the sealed
    manifest (when it has one) and this node (or `node`) must have the TRT-LLM version and GPU compute
    capability that built it (foundry/compat.py)."""
    from foundry.compat import NodeTarget, TrtllmEnvironment, check_engine_compatible
    from foundry.hashing import MANIFEST_NAME, verify_manifest

    if (engine_dir / MANIFEST_NAME).is_file():
        verify_manifest(engine_dir)
    check_engine_compatible(info, node or NodeTarget.of(TrtllmEnvironment.probe()), engine_dir)
