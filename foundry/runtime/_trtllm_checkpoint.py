"""Read and validate a TensorRT-LLM checkpoint (config.json + rank0.safetensors) for the reference runtime.

Everything the runtime would otherwise get silently wrong (a missing tensor, a wrong shape, a
quantization mode it does not implement, tensor parallelism) is refused here with a message that
names the file, field or tensor.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from foundry.errors import FoundryError, NotSupportedError
from foundry.trtllm_checkpoint import (
    CONFIG_NAME,
    FP8,  # per-tensor E4M3 weights and activations (emulated on CPU)
    KV_CACHE_QUANT_ALGOS,
    rank_weights_name,
    read_checkpoint_config,
)
from foundry.trtllm_checkpoint import (
    W8A8_SQ_PER_CHANNEL as SMOOTHQUANT_PER_CHANNEL,
)
from foundry.trtllm_checkpoint import (
    W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN as SMOOTHQUANT_PER_TOKEN,  # foundry/smoothquant_per_token.py's layout
)

WEIGHTS_NAME = rank_weights_name(0)
# ModelOpt 0.47 writes the HF class name as `architecture`. Qwen2 adds a q/k/v bias
# (attention.qkv.bias, q;k;v concatenated); Mistral is Llama without biases (a sliding window is
# refused at ingest where it would matter: the engines here attend to the full context).
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
QKV_BIAS_ARCHITECTURES = ("Qwen2ForCausalLM",)
SUPPORTED_QUANT_ALGOS = (None, SMOOTHQUANT_PER_CHANNEL, SMOOTHQUANT_PER_TOKEN, FP8)
SUPPORTED_KV_CACHE_QUANT_ALGOS = KV_CACHE_QUANT_ALGOS
MAX_TP_SIZE = 64  # tensor-parallel ranks are merged back into one model at load time
COLUMN_PARALLEL = ("attention.qkv", "mlp.fc", "mlp.gate")  # split along out_features
ROW_PARALLEL = ("attention.dense", "mlp.proj")  # split along in_features
DEFAULT_ROTARY_BASE = 10000.0  # TensorRT-LLM's default when config.json has no rotary_base
LINEAR_NAMES = ("attention.qkv", "attention.dense", "mlp.fc", "mlp.gate", "mlp.proj")
UNSUPPORTED_HINT = "use the trtllm builder"
# rotary_scaling types the runtime executes, with the fields each needs (TensorRT-LLM / HF names).
SUPPORTED_ROTARY_SCALING = {
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
    "linear": ("factor",),
}


@dataclass(frozen=True)
class LlamaCheckpointConfig:
    num_layers: int
    hidden_size: int
    num_heads: int
    num_kv_heads: int
    head_size: int
    intermediate_size: int
    vocab_size: int
    norm_epsilon: float
    rotary_base: float
    max_positions: int
    quant_algo: str | None
    share_embedding_table: bool
    kv_cache_quant_algo: str | None = None
    tp_size: int = 1
    rotary_scaling: dict | None = None  # {"type": "llama3" | "linear", ...}
    qkv_bias: bool = False  # Qwen2

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """[out_features, in_features] of each linear, in TensorRT-LLM's names."""
        qkv_out = (self.num_heads + 2 * self.num_kv_heads) * self.head_size
        attention_width = self.num_heads * self.head_size
        return {
            "attention.qkv": (qkv_out, self.hidden_size),
            "attention.dense": (self.hidden_size, attention_width),
            "mlp.fc": (self.intermediate_size, self.hidden_size),
            "mlp.gate": (self.intermediate_size, self.hidden_size),
            "mlp.proj": (self.hidden_size, self.intermediate_size),
        }


def _required(config: dict, field: str, path: Path):
    if config.get(field) is None:
        raise FoundryError(f"{path}: field {field!r} is missing; re-export the checkpoint")
    return config[field]


def refuse_unsupported_features(config: dict, path: Path) -> None:
    """Every feature the reference backend does not execute is refused, never ignored."""
    architecture = config.get("architecture")
    if architecture not in SUPPORTED_ARCHITECTURES:
        raise NotSupportedError(
            f"{path}: architecture {architecture!r} not supported by the reference backend "
            f"(supports {SUPPORTED_ARCHITECTURES}); {UNSUPPORTED_HINT}"
        )
    quantization = config.get("quantization") or {}
    quant_algo = quantization.get("quant_algo")
    if quant_algo not in SUPPORTED_QUANT_ALGOS:
        raise NotSupportedError(
            f"{path}: quantization.quant_algo not supported by the reference backend: {quant_algo}; {UNSUPPORTED_HINT}"
        )
    kv_algo = quantization.get("kv_cache_quant_algo")
    if kv_algo not in SUPPORTED_KV_CACHE_QUANT_ALGOS:
        raise NotSupportedError(
            f"{path}: quantization.kv_cache_quant_algo not supported by the reference backend: {kv_algo}; {UNSUPPORTED_HINT}"
        )
    mapping = config.get("mapping") or {}
    tp_size, pp_size = int(mapping.get("tp_size", 1)), int(mapping.get("pp_size", 1))
    if pp_size != 1 or not 1 <= tp_size <= MAX_TP_SIZE or int(mapping.get("world_size", tp_size)) != tp_size:
        raise NotSupportedError(
            f"{path}: mapping tp_size={tp_size} pp_size={pp_size} world_size={mapping.get('world_size')} not supported by "
            f"the reference backend (tensor parallelism only, pp_size 1); {UNSUPPORTED_HINT}"
        )
    checks = {
        "position_embedding_type": (config.get("position_embedding_type", "rope_gpt_neox"), "rope_gpt_neox"),
        "hidden_act": (config.get("hidden_act"), "silu"),
        "bias": (bool(config.get("bias", False)), False),
        "rotary_pct": (float(config.get("rotary_pct", 1.0)), 1.0),
        "residual_mlp": (bool(config.get("residual_mlp", False)), False),
    }
    scaling = config.get("rotary_scaling")
    if scaling is not None:
        kind = scaling.get("type") or scaling.get("rope_type")
        needed = SUPPORTED_ROTARY_SCALING.get(kind)
        if needed is None:
            raise NotSupportedError(
                f"{path}: rotary_scaling type {kind!r} not supported by the reference backend (supports "
                f"{', '.join(SUPPORTED_ROTARY_SCALING)} or none); {UNSUPPORTED_HINT}"
            )
        missing = [key for key in needed if key not in scaling]
        if missing:
            raise FoundryError(f"{path}: rotary_scaling type {kind!r} lacks {missing}; re-export the checkpoint")
    for field, (value, supported) in checks.items():
        if value != supported:
            raise NotSupportedError(
                f"{path}: {field}={value!r} not supported by the reference backend (needs {supported!r}); {UNSUPPORTED_HINT}"
            )


def parse_config(checkpoint_dir: Path) -> LlamaCheckpointConfig:
    config = read_checkpoint_config(checkpoint_dir)
    path = checkpoint_dir / CONFIG_NAME
    refuse_unsupported_features(config, path)
    num_heads = int(_required(config, "num_attention_heads", path))
    hidden_size = int(_required(config, "hidden_size", path))
    return LlamaCheckpointConfig(
        num_layers=int(_required(config, "num_hidden_layers", path)),
        hidden_size=hidden_size,
        num_heads=num_heads,
        num_kv_heads=int(config.get("num_key_value_heads") or num_heads),
        head_size=int(config.get("head_size") or hidden_size // num_heads),
        intermediate_size=int(_required(config, "intermediate_size", path)),
        vocab_size=int(_required(config, "vocab_size", path)),
        norm_epsilon=float(config.get("norm_epsilon", 1e-5)),
        rotary_base=float(config.get("rotary_base") or DEFAULT_ROTARY_BASE),
        max_positions=int(config.get("max_position_embeddings") or 2048),
        quant_algo=(config.get("quantization") or {}).get("quant_algo"),
        share_embedding_table=bool(config.get("share_embedding_table", False)),
        kv_cache_quant_algo=(config.get("quantization") or {}).get("kv_cache_quant_algo"),
        tp_size=int((config.get("mapping") or {}).get("tp_size", 1)),
        rotary_scaling=_rotary_scaling(config.get("rotary_scaling")),
        qkv_bias=config.get("architecture") in QKV_BIAS_ARCHITECTURES,
    )


def _rotary_scaling(scaling: dict | None) -> dict | None:
    if not scaling:
        return None
    return {**scaling, "type": scaling.get("type") or scaling.get("rope_type")}


def expected_tensors(config: LlamaCheckpointConfig) -> dict[str, tuple[tuple[int, ...], torch.dtype | None]]:
    """name -> (shape, dtype or None for 'any floating dtype')."""
    expected: dict[str, tuple[tuple[int, ...], torch.dtype | None]] = {
        "transformer.vocab_embedding.weight": ((config.vocab_size, config.hidden_size), None),
        "transformer.ln_f.weight": ((config.hidden_size,), None),
    }
    if not config.share_embedding_table:
        expected["lm_head.weight"] = ((config.vocab_size, config.hidden_size), None)
    quantized = config.quant_algo == SMOOTHQUANT_PER_CHANNEL
    for layer in range(config.num_layers):
        prefix = f"transformer.layers.{layer}"
        expected[f"{prefix}.input_layernorm.weight"] = ((config.hidden_size,), None)
        expected[f"{prefix}.post_layernorm.weight"] = ((config.hidden_size,), None)
        if config.quant_algo == SMOOTHQUANT_PER_TOKEN:
            expected[f"{prefix}.input_layernorm.scale_to_int"] = ((1,), None)
            expected[f"{prefix}.post_layernorm.scale_to_int"] = ((1,), None)
        if config.kv_cache_quant_algo is not None:
            # TensorRT-LLM reads kv_cache_scaling_factor; ModelOpt also writes the K and V ones.
            for scale in ("kv_cache_scaling_factor", "k_cache_scaling_factor", "v_cache_scaling_factor"):
                expected[f"{prefix}.attention.{scale}"] = ((1,), None)
        if config.qkv_bias:
            expected[f"{prefix}.attention.qkv.bias"] = ((config.linear_shapes()["attention.qkv"][0],), None)
        for linear, (out_features, in_features) in config.linear_shapes().items():
            name = f"{prefix}.{linear}"
            if config.quant_algo == FP8:
                expected[f"{name}.weight"] = ((out_features, in_features), torch.float8_e4m3fn)
                expected[f"{name}.weights_scaling_factor"] = ((1,), None)
                expected[f"{name}.activation_scaling_factor"] = ((1,), None)
            elif config.quant_algo == SMOOTHQUANT_PER_TOKEN:
                expected[f"{name}.weight"] = ((out_features, in_features), torch.int8)
                expected[f"{name}.per_channel_scale"] = ((1, out_features), torch.float32)
                if linear in ROW_PARALLEL:  # qkv/fc/gate have their smoothing folded into the norm
                    expected[f"{name}.smoother"] = ((1, in_features), torch.float32)
            elif quantized:
                expected[f"{name}.weight"] = ((out_features, in_features), torch.int8)
                expected[f"{name}.weights_scaling_factor"] = ((out_features,), None)
                expected[f"{name}.activation_scaling_factor"] = ((1,), None)
                expected[f"{name}.prequant_scaling_factor"] = ((in_features,), None)
            else:
                expected[f"{name}.weight"] = ((out_features, in_features), None)
    return expected


def _merge_tensor(
    name: str, parts: list[torch.Tensor], full_shape: tuple[int, ...], config: LlamaCheckpointConfig, path: Path
):
    """One tensor of a tp>1 checkpoint rebuilt from its per-rank parts (the tp=1 layout)."""
    if name.endswith((".per_channel_scale", ".smoother")) and len(full_shape) == 2:
        # (1, N) rows of the per-token layout: merged as the vectors they are
        vectors = [p.reshape(-1) for p in parts]
        return _merge_tensor(name, vectors, (full_shape[1],), config, path).reshape(full_shape)
    if tuple(parts[0].shape) == full_shape and all(tuple(p.shape) == full_shape for p in parts):
        if not all(torch.equal(parts[0], p) for p in parts[1:]):
            raise FoundryError(f"{path}: replicated tensor {name} differs between ranks; re-export the checkpoint")
        return parts[0]
    linear = next((kind for kind in COLUMN_PARALLEL + ROW_PARALLEL if f".{kind}." in name), None)
    if name.endswith(
        (".attention.qkv.weight", ".attention.qkv.weights_scaling_factor", ".attention.qkv.per_channel_scale")
    ):
        # each rank holds [q_r; k_r; v_r] for its share of the heads
        q_rows = config.num_heads * config.head_size // config.tp_size
        kv_rows = config.num_kv_heads * config.head_size // config.tp_size
        pieces = [p.split((q_rows, kv_rows, kv_rows), dim=0) for p in parts]
        return torch.cat([torch.cat([piece[i] for piece in pieces], dim=0) for i in range(3)], dim=0)
    dim = 1 if linear in ROW_PARALLEL and name.endswith(".weight") else 0
    merged = torch.cat(parts, dim=dim)
    if tuple(merged.shape) != full_shape:
        raise FoundryError(
            f"{path}: tensor {name} split over {config.tp_size} ranks as {tuple(parts[0].shape)} does not rebuild "
            f"{full_shape}; re-export the checkpoint"
        )
    return merged


def load_tensors(checkpoint_dir: Path, config: LlamaCheckpointConfig) -> dict[str, torch.Tensor]:
    """Every expected tensor, checked for presence, shape and dtype; nothing unexpected allowed.
    A tensor-parallel checkpoint's rank files are merged back into the tp=1 layout."""
    if config.tp_size > 1:
        expected = expected_tensors(config)
        ranks = [_read_rank(checkpoint_dir, config, rank, expected) for rank in range(config.tp_size)]
        path = checkpoint_dir / "rank*.safetensors"
        tensors = {
            name: _merge_tensor(name, [r[name] for r in ranks], shape, config, path)
            for name, (shape, _) in expected.items()
        }
        for name, (shape, dtype) in expected.items():
            _check_tensor(path, name, tensors[name], shape, dtype)
        return tensors
    return _read_rank(checkpoint_dir, config, 0, expected_tensors(config), check_shapes=True)


def _read_rank(
    checkpoint_dir: Path, config: LlamaCheckpointConfig, rank: int, expected: dict, check_shapes: bool = False
):
    from safetensors import safe_open

    path = checkpoint_dir / f"rank{rank}.safetensors"
    if not path.is_file():
        raise FoundryError(f"{path}: missing; a TensorRT-LLM checkpoint needs {CONFIG_NAME} + {WEIGHTS_NAME}")
    expected = expected_tensors(config)
    try:
        with safe_open(str(path), "pt") as handle:
            present = set(handle.keys())
            missing = sorted(set(expected) - present)
            if missing:
                raise FoundryError(
                    f"{path}: missing tensor(s) {missing[:5]}{' …' if len(missing) > 5 else ''} "
                    f"({len(missing)} in all) for quant_algo {config.quant_algo}; re-export the checkpoint"
                )
            unexpected = sorted(present - set(expected))
            if unexpected:
                raise NotSupportedError(
                    f"{path}: tensor(s) {unexpected[:5]} are not used by the reference backend, which would "
                    f"silently ignore them; {UNSUPPORTED_HINT}"
                )
            tensors = {name: handle.get_tensor(name) for name in expected}
    except FoundryError:
        raise
    except Exception as error:  # safetensors raises its own error types for truncated/corrupt files
        raise FoundryError(
            f"{path}: cannot be read as safetensors ({error}); the file is truncated or corrupt — re-export it"
        ) from error
    if check_shapes:
        for name, (shape, dtype) in expected.items():
            _check_tensor(path, name, tensors[name], shape, dtype)
    return tensors


def _check_tensor(
    path: Path, name: str, tensor: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype | None
) -> None:
    if tuple(tensor.shape) != shape:
        raise FoundryError(f"{path}: tensor {name} has shape {tuple(tensor.shape)}, config.json implies {shape}")
    if dtype is not None and tensor.dtype != dtype:
        raise FoundryError(f"{path}: tensor {name} has dtype {tensor.dtype}, expected {dtype}")
    if dtype is None and not tensor.is_floating_point():
        raise FoundryError(f"{path}: tensor {name} has dtype {tensor.dtype}, expected a floating dtype")
