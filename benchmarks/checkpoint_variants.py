"""TensorRT-LLM checkpoints of every quantization the reference runtime executes, made from an HF
Llama model WITHOUT ModelOpt (the GPU machine has none), in the tensor layout ModelOpt 0.47 exports
(foundry/runtime/_trtllm_checkpoint.py expected_tensors checks it at load).

Scales come from a plain max calibration over the given token ids, and SmoothQuant's smoothing
factors are 1 (no migration): these checkpoints are for speed (the kernels and bytes are those of a
real export) and for CPU-vs-CUDA parity of the runtime (both devices execute the same checkpoint).
Quality numbers of quantization come from the pipeline's ModelOpt checkpoints, never from here.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch

from foundry.runtime._trtllm_checkpoint import LlamaCheckpointConfig, parse_config

INT8_MAX, FP8_MAX = 127.0, 448.0
# variant -> (quant_algo, kv_cache_quant_algo)
VARIANTS = {
    "bf16": (None, None),
    "fp8": ("FP8", None),
    "int8_sq": ("W8A8_SQ_PER_CHANNEL", None),
    "int8_sq_per_token": ("W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN", None),
    "int8_sq_kv_int8": ("W8A8_SQ_PER_CHANNEL", "INT8"),
    "fp8_kv_fp8": ("FP8", "FP8"),
}
# TensorRT-LLM linear -> the HF module whose input feeds it
LINEAR_INPUTS = {
    "attention.qkv": "self_attn.q_proj",
    "attention.dense": "self_attn.o_proj",
    "mlp.fc": "mlp.gate_proj",
    "mlp.gate": "mlp.gate_proj",
    "mlp.proj": "mlp.down_proj",
}


def float_checkpoint(model, dtype_name: str) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config.json, tensors) of an unquantized TensorRT-LLM Llama checkpoint of the HF model."""
    c = model.config
    head = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    rope_theta = getattr(c, "rope_theta", None) or (getattr(c, "rope_parameters", None) or {}).get("rope_theta")
    config = {
        "architecture": "LlamaForCausalLM",
        "dtype": dtype_name,
        "num_hidden_layers": c.num_hidden_layers,
        "num_attention_heads": c.num_attention_heads,
        "num_key_value_heads": c.num_key_value_heads,
        "hidden_size": c.hidden_size,
        "head_size": head,
        "intermediate_size": c.intermediate_size,
        "vocab_size": c.vocab_size,
        "norm_epsilon": c.rms_norm_eps,
        "rotary_base": rope_theta or 10000.0,
        "max_position_embeddings": c.max_position_embeddings,
        "position_embedding_type": "rope_gpt_neox",
        "hidden_act": "silu",
        "share_embedding_table": bool(c.tie_word_embeddings),
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None},
        "mapping": {"tp_size": 1, "pp_size": 1},
    }
    m = model.model
    tensors = {
        "transformer.vocab_embedding.weight": m.embed_tokens.weight.data,
        "transformer.ln_f.weight": m.norm.weight.data,
    }
    if not c.tie_word_embeddings:
        tensors["lm_head.weight"] = model.lm_head.weight.data
    for i, layer in enumerate(m.layers):
        p = f"transformer.layers.{i}"
        a, mlp = layer.self_attn, layer.mlp
        tensors[f"{p}.input_layernorm.weight"] = layer.input_layernorm.weight.data
        tensors[f"{p}.post_layernorm.weight"] = layer.post_attention_layernorm.weight.data
        tensors[f"{p}.attention.qkv.weight"] = torch.cat(
            [a.q_proj.weight.data, a.k_proj.weight.data, a.v_proj.weight.data]
        )
        tensors[f"{p}.attention.dense.weight"] = a.o_proj.weight.data
        tensors[f"{p}.mlp.fc.weight"] = mlp.gate_proj.weight.data
        tensors[f"{p}.mlp.gate.weight"] = mlp.up_proj.weight.data
        tensors[f"{p}.mlp.proj.weight"] = mlp.down_proj.weight.data
    return config, tensors


def calibrate_amax(model, calibration_ids: torch.Tensor) -> dict[str, float]:
    """abs-max of each linear's input and of K/V (per layer), over one forward of the ids."""
    amax: dict[str, float] = {}
    hooks = []

    def record(name: str, use_output: bool):
        def hook(_module, inputs, output):
            value = (output if use_output else inputs[0]).detach().abs().max().float().item()
            amax[name] = max(amax.get(name, 0.0), value)

        return hook

    for i, layer in enumerate(model.model.layers):
        for module_name in set(LINEAR_INPUTS.values()):
            module = layer.get_submodule(module_name)
            hooks.append(module.register_forward_hook(record(f"{i}.{module_name}", False)))
        for kv in ("k_proj", "v_proj"):
            hooks.append(layer.self_attn.get_submodule(kv).register_forward_hook(record(f"{i}.kv", True)))
    with torch.no_grad():
        model(calibration_ids.to(model.device))
    for hook in hooks:
        hook.remove()
    return amax


def _int8_rows(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    scale = (weight.float().abs().amax(dim=1) / INT8_MAX).clamp_(min=1e-8)
    return (weight.float() / scale[:, None]).round_().clamp_(-INT8_MAX, INT8_MAX).to(torch.int8), scale


def _scalar(value: float, device) -> torch.Tensor:
    return torch.tensor([value], dtype=torch.float32, device=device)


def quantize_checkpoint(
    config: dict, tensors: dict[str, torch.Tensor], amax: dict[str, float], variant: str
) -> tuple[dict, dict[str, torch.Tensor]]:
    quant_algo, kv_algo = VARIANTS[variant]
    config = {**config, "quantization": {"quant_algo": quant_algo, "kv_cache_quant_algo": kv_algo}}
    out = dict(tensors)
    for i in range(config["num_hidden_layers"]):
        p = f"transformer.layers.{i}"
        for linear, source in LINEAR_INPUTS.items():
            name = f"{p}.{linear}"
            weight = out.pop(f"{name}.weight")
            device = weight.device
            activation_amax = max(amax[f"{i}.{source}"], 1e-6)
            if quant_algo == "FP8":
                weight_scale = weight.float().abs().max() / FP8_MAX
                out[f"{name}.weight"] = (
                    (weight.float() / weight_scale).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
                )
                out[f"{name}.weights_scaling_factor"] = weight_scale.reshape(1).float()
                out[f"{name}.activation_scaling_factor"] = _scalar(activation_amax / FP8_MAX, device)
            elif quant_algo == "W8A8_SQ_PER_CHANNEL":
                out[f"{name}.weight"], scale = _int8_rows(weight)
                out[f"{name}.weights_scaling_factor"] = scale
                out[f"{name}.activation_scaling_factor"] = _scalar(activation_amax / INT8_MAX, device)
                out[f"{name}.prequant_scaling_factor"] = torch.ones(weight.shape[1], device=device)
            elif quant_algo == "W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN":
                out[f"{name}.weight"], scale = _int8_rows(weight)
                out[f"{name}.per_channel_scale"] = scale.reshape(1, -1).contiguous()
                if linear in ("attention.dense", "mlp.proj"):
                    out[f"{name}.smoother"] = torch.ones(1, weight.shape[1], device=device)
            else:
                out[f"{name}.weight"] = weight
        if quant_algo == "W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN":
            for norm in ("input_layernorm", "post_layernorm"):
                out[f"{p}.{norm}.scale_to_int"] = torch.ones(1, device=device)
        if kv_algo is not None:
            kv_scale = _scalar(max(amax[f"{i}.kv"], 1e-6) / (INT8_MAX if kv_algo == "INT8" else FP8_MAX), device)
            for scale in ("kv_cache_scaling_factor", "k_cache_scaling_factor", "v_cache_scaling_factor"):
                out[f"{p}.attention.{scale}"] = kv_scale
    return config, out


def parsed_config(config: dict) -> LlamaCheckpointConfig:
    """The runtime's view of a config.json (through the same parser an engine directory gets)."""
    with tempfile.TemporaryDirectory() as directory:
        (Path(directory) / "config.json").write_text(json.dumps(config))
        return parse_config(Path(directory))
