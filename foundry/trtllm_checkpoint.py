"""The TensorRT-LLM 1.2.x checkpoint and engine formats: the one owner of their names and their parsing.

A checkpoint (what ModelOpt 0.47's `export_tensorrt_llm_checkpoint` writes, what `trtllm-build`
reads) is `config.json` (`architecture`, `dtype`, sizes, `mapping {world_size, tp_size, pp_size}`,
`quantization {quant_algo, kv_cache_quant_algo}`) plus one `rank{r}.safetensors` per rank. An engine
directory is `config.json` (`version`, `pretrained_config`, `build_config`) plus `rank{r}.engine`.
The calibration, both builders, the reference runtime and the Triton export read them through here;
each builder declares which quant algos it accepts (`accepted_quant_algos`).
"""

from __future__ import annotations

import json
from pathlib import Path

from foundry.errors import FoundryError

CONFIG_NAME = "config.json"

# tensorrt_llm.quantization.QuantAlgo names (1.2.x) this project writes or builds.
W8A8_SQ_PER_CHANNEL = "W8A8_SQ_PER_CHANNEL"  # SmoothQuant, static per-tensor activation scale
W8A8_SQ_PER_TENSOR_PLUGIN = "W8A8_SQ_PER_TENSOR_PLUGIN"
W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN = "W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN"  # per-token activation scales
W8A8_SQ_PER_CHANNEL_PER_TENSOR_PLUGIN = "W8A8_SQ_PER_CHANNEL_PER_TENSOR_PLUGIN"
W8A8_SQ_PER_TENSOR_PER_TOKEN_PLUGIN = "W8A8_SQ_PER_TENSOR_PER_TOKEN_PLUGIN"
FP8 = "FP8"
W4A16_AWQ = "W4A16_AWQ"
SMOOTHQUANT_ALGOS = (
    W8A8_SQ_PER_CHANNEL,
    W8A8_SQ_PER_TENSOR_PLUGIN,
    W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN,
    W8A8_SQ_PER_CHANNEL_PER_TENSOR_PLUGIN,
    W8A8_SQ_PER_TENSOR_PER_TOKEN_PLUGIN,
)
# KV-cache algos (INT8 exists only as a KV-cache format).
KV_INT8, KV_FP8 = "INT8", "FP8"
KV_CACHE_QUANT_ALGOS = (None, KV_INT8, KV_FP8)

# foundry's calibration.quantization / kv_cache → what ModelOpt 0.47's export writes.
EXPORTED_QUANT_ALGO = {"int8_sq": W8A8_SQ_PER_CHANNEL, "fp8": FP8, "int4_awq": W4A16_AWQ, "none": None}
EXPORTED_KV_CACHE_QUANT_ALGO = {"int8": KV_INT8, "fp8": KV_FP8, "none": None}


def exported_quant_algo(quantization: str, activation_scaling: str = "per_tensor") -> str | None:
    """The quant_algo a calibration request ends up with (per-token SmoothQuant is rewritten after export)."""
    if quantization == "int8_sq" and activation_scaling == "per_token":
        return W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN
    return EXPORTED_QUANT_ALGO[quantization]


def rank_weights_name(rank: int) -> str:
    return f"rank{rank}.safetensors"


def read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise FoundryError(f"{path}: missing; {path.parent} is not a {what}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FoundryError(f"{path}: not valid JSON ({error}); re-export the {what}") from None
    if not isinstance(config, dict):
        raise FoundryError(f"{path}: must be a JSON object, got {type(config).__name__}")
    return config


def read_checkpoint_config(checkpoint_dir: Path) -> dict:
    """config.json of a TensorRT-LLM checkpoint, with the fields every reader needs checked."""
    path = Path(checkpoint_dir) / CONFIG_NAME
    config = read_json(path, "TensorRT-LLM checkpoint (calibrate writes one)")
    for key in ("architecture", "dtype", "mapping"):
        if key not in config:
            raise FoundryError(
                f"{path}: no '{key}' field; not a TensorRT-LLM checkpoint config — re-export the checkpoint"
            )
    return config


def quantization_of(config: dict) -> tuple[str | None, str | None]:
    """(quant_algo, kv_cache_quant_algo) of a checkpoint config (or an engine's pretrained_config)."""
    quantization = config.get("quantization") or {}
    return quantization.get("quant_algo"), quantization.get("kv_cache_quant_algo")


def mapping_of(config: dict) -> tuple[int, int, int]:
    """(world_size, tp_size, pp_size) of a checkpoint config."""
    mapping = config.get("mapping") or {}
    tp, pp = int(mapping.get("tp_size", 1)), int(mapping.get("pp_size", 1))
    return int(mapping.get("world_size", tp * pp)), tp, pp


def read_engine_config(engine_dir: Path) -> dict:
    """config.json of a built TensorRT-LLM engine (version, pretrained_config, build_config)."""
    path = Path(engine_dir) / CONFIG_NAME
    config = read_json(path, "TensorRT-LLM engine directory")
    for key in ("pretrained_config", "build_config"):
        if key not in config:
            raise FoundryError(f"{path}: no '{key}'; not a TensorRT-LLM engine config (trtllm-build writes one)")
    return config
