"""The reference builder: the TensorRT-LLM checkpoint, proven loadable and numerically sound,
packaged as an engine the PyTorch reference runtime executes (CPU CI, GPUs without TRT-LLM)."""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import torch

import foundry
from foundry.builders.base import ENGINE_INFO, load_engine
from foundry.checkpoint import require_context_fits
from foundry.config import BuildConfig
from foundry.errors import FoundryError, NotSupportedError
from foundry.runtime._trtllm_checkpoint import SUPPORTED_KV_CACHE_QUANT_ALGOS, SUPPORTED_QUANT_ALGOS
from foundry.trtllm_checkpoint import read_checkpoint_config

_SMOKE_PROMPT_IDS = [1, 2, 3, 4, 5, 6, 7, 8]


def require_cuda_device() -> None:
    """build.device cuda where the engine will run: refused before any work when there is no GPU."""
    if not torch.cuda.is_available():
        raise NotSupportedError(
            "build.device cuda: this node has no CUDA GPU (torch.cuda.is_available() is False); run on a GPU "
            "node, on a stack whose step operator has GPUs (stacks/README.md), or set build.device: cpu"
        )


class ReferenceBuilder:
    backend = "reference"
    accepted_quant_algos = frozenset(SUPPORTED_QUANT_ALGOS)
    accepted_kv_cache_quant_algos = frozenset(SUPPORTED_KV_CACHE_QUANT_ALGOS)

    def check_environment(self) -> None:
        """Plain PyTorch: runs wherever foundry is installed."""

    def build(self, checkpoint_dir: Path, output_dir: Path, build: BuildConfig) -> dict:
        started = time.perf_counter()
        checkpoint_config = read_checkpoint_config(checkpoint_dir)
        require_context_fits(
            checkpoint_config.get("max_position_embeddings"), build.max_seq_len, checkpoint_dir / "config.json"
        )
        output_dir.mkdir(parents=True, exist_ok=True)
        for source in sorted(checkpoint_dir.iterdir()):
            if source.name == "config.json" or source.suffix == ".safetensors":
                shutil.copy2(source, output_dir / source.name)
        info = {
            "backend": self.backend,
            "compute_dtype": build.compute_dtype,
            "max_seq_len": build.max_seq_len,
            "device": build.device,
            "engine": build.reference_engine_options(),
            "quant_algo": (checkpoint_config.get("quantization") or {}).get("quant_algo"),
            "kv_cache_quant_algo": (checkpoint_config.get("quantization") or {}).get("kv_cache_quant_algo"),
            "architecture": checkpoint_config.get("architecture"),
            "foundry_version": foundry.__version__,
            "torch_version": torch.__version__,
            "python_version": platform.python_version(),
            "machine": platform.machine(),
        }
        (output_dir / ENGINE_INFO).write_text(json.dumps(info, indent=2))
        self._smoke_test(output_dir)
        info["build_seconds"] = round(time.perf_counter() - started, 3)
        (output_dir / ENGINE_INFO).write_text(json.dumps(info, indent=2))
        return info

    @staticmethod
    def _smoke_test(engine_dir: Path) -> None:
        """Load the engine and run one forward: a broken checkpoint fails here, not in the benchmark."""
        engine = load_engine(engine_dir, device="cpu")  # the build node may have no GPU; this is a load check
        logits = engine.logits(torch.tensor([_SMOKE_PROMPT_IDS]))
        if not torch.isfinite(logits).all():
            raise FoundryError(f"{engine_dir}: the built engine produces NaN/Inf logits; the checkpoint is broken")
