"""SmoothQuant with per-token activation scales: TensorRT-LLM's W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN.

ModelOpt 0.47 exports int8 SmoothQuant only as W8A8_SQ_PER_CHANNEL (static per-tensor activation
scale; modelopt/torch/export/quant_utils.py maps int8_sq to nothing else). TensorRT-LLM's per-token
mode runs different layers (tensorrt_llm/quantization/layers.py: SmoothQuantLinear /
SmoothQuantRowLinear / SmoothQuantRmsNorm) that read different tensors, matched by name with no
renaming on load (models/modeling_utils.py; a missing one fails the build). This module rewrites the
static export into that layout, as TensorRT-LLM's own `convert_checkpoint.py --smoothquant --per_token
--per_channel` lays it out (models/llama/convert.py):

* qkv, fc and gate read the RMSNorm-quantization plugin's output, which has no smoother: their
  smoothing (ModelOpt's `prequant_scaling_factor`, x · p) is folded into the norm weight. fc and
  gate share post_layernorm, so they must share one smoothing: `resmooth_gate_and_up` (before export)
  gives them ModelOpt's averaged one, as ModelOpt itself does for q/k/v.
* dense and proj divide their input by `smoother` = 1 / p before quantizing it.
* `weights_scaling_factor` (out,) becomes `per_channel_scale` (1, out), fp32.
* `activation_scaling_factor` is dropped: the scale is computed per token at run time
  (amax of the row / 127, round to nearest even, saturate to ±127).
* each norm gets `scale_to_int` = [1.0] (what convert_checkpoint writes for per-token).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from foundry.errors import FoundryError
from foundry.modelopt_recipes import quantized_linears
from foundry.runtime._trtllm_checkpoint import LINEAR_NAMES, ROW_PARALLEL
from foundry.trtllm_checkpoint import W8A8_SQ_PER_CHANNEL as STATIC_QUANT_ALGO
from foundry.trtllm_checkpoint import W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN as PER_TOKEN_QUANT_ALGO

NORM_FED_LINEARS = {"input_layernorm": ("attention.qkv",), "post_layernorm": ("mlp.fc", "mlp.gate")}
SMOOTHER_FED_LINEARS = ROW_PARALLEL  # dense and proj: no norm before them to fold a smoothing into


def _pop(tensors: dict[str, torch.Tensor], name: str, path: Path) -> torch.Tensor:
    if name not in tensors:
        raise FoundryError(
            f"{path}: tensor {name} missing; a {STATIC_QUANT_ALGO} export carries it, re-export the checkpoint"
        )
    return tensors.pop(name)


def _fold_smoothing_into_norm(tensors: dict, prefix: str, norm: str, linears: tuple[str, ...], path: Path) -> None:
    smoothings = [_pop(tensors, f"{prefix}.{linear}.prequant_scaling_factor", path) for linear in linears]
    if any(not torch.equal(smoothings[0], other) for other in smoothings[1:]):
        raise FoundryError(
            f"{path}: {prefix}: {' and '.join(linears)} have different prequant_scaling_factor, but per-token "
            f"SmoothQuant folds one smoothing into {norm}; calibrate with activation_scaling per_token (it resmooths them)"
        )
    weight = tensors[f"{prefix}.{norm}.weight"]
    tensors[f"{prefix}.{norm}.weight"] = (weight.float() * smoothings[0].float()).to(weight.dtype)
    tensors[f"{prefix}.{norm}.scale_to_int"] = torch.ones(1, dtype=weight.dtype)


def per_token_tensors(tensors: dict[str, torch.Tensor], num_layers: int, path: Path) -> dict[str, torch.Tensor]:
    """One rank's tensors of a static SmoothQuant export, rewritten into the per-token layout
    (rank-local: column-parallel smoothings are replicated, row-parallel ones are the rank's slice)."""
    out = dict(tensors)
    for layer in range(num_layers):
        prefix = f"transformer.layers.{layer}"
        for norm, linears in NORM_FED_LINEARS.items():
            _fold_smoothing_into_norm(out, prefix, norm, linears, path)
        for linear in SMOOTHER_FED_LINEARS:
            smoothing = _pop(out, f"{prefix}.{linear}.prequant_scaling_factor", path)
            out[f"{prefix}.{linear}.smoother"] = (1.0 / smoothing.float()).reshape(1, -1).contiguous()
        for linear in LINEAR_NAMES:
            weight_scale = _pop(out, f"{prefix}.{linear}.weights_scaling_factor", path)
            out[f"{prefix}.{linear}.per_channel_scale"] = weight_scale.float().reshape(1, -1).contiguous()
            _pop(out, f"{prefix}.{linear}.activation_scaling_factor", path)
    return out


def convert_checkpoint_to_per_token(checkpoint_dir: Path) -> None:
    """Rewrite a W8A8_SQ_PER_CHANNEL TensorRT-LLM checkpoint in place (every rank file, then config.json)."""
    from safetensors.torch import load_file, save_file

    checkpoint_dir = Path(checkpoint_dir)
    config_path = checkpoint_dir / "config.json"
    config = json.loads(config_path.read_text())
    quantization = config.get("quantization") or {}
    if quantization.get("quant_algo") != STATIC_QUANT_ALGO:
        raise FoundryError(
            f"{config_path}: quantization.quant_algo is {quantization.get('quant_algo')!r}; only a {STATIC_QUANT_ALGO} "
            "export can be turned into per-token SmoothQuant"
        )
    world_size = int((config.get("mapping") or {}).get("world_size", 1))
    for rank in range(world_size):
        path = checkpoint_dir / f"rank{rank}.safetensors"
        converted = per_token_tensors(load_file(path), int(config["num_hidden_layers"]), path)
        save_file(converted, path, metadata={"format": "pt"})
    config["quantization"] = {**quantization, "quant_algo": PER_TOKEN_QUANT_ALGO}
    config_path.write_text(json.dumps(config, indent=4))


# ---- on the ModelOpt fake-quant model (before export) -------------------------------------------


def resmooth_gate_and_up(model) -> None:
    """Give each Llama MLP's gate_proj and up_proj (TensorRT-LLM fc and gate) one shared smoothing,
    the mean of theirs, with the weights rescaled and their per-channel amax recollected: ModelOpt's
    own `preprocess_linear_fusion`, which its export applies to q/k/v but not to these two."""
    from modelopt.torch.export.quant_utils import preprocess_linear_fusion

    for layer in model.model.layers:
        preprocess_linear_fusion([layer.mlp.gate_proj, layer.mlp.up_proj], resmooth_only=True)


class PerTokenActivations:
    """Within the block, every calibrated input quantizer of the fake-quant model computes its
    scale per token (amax over the hidden dimension) instead of using its static amax: the
    numerics of the per-token checkpoint, for scoring alphas and for parity tests."""

    def __init__(self, model):
        self.quantizers = [module.input_quantizer for _, module in quantized_linears(model)]
        self.saved: list[tuple[torch.Tensor, object]] = []

    def __enter__(self):
        for quantizer in self.quantizers:
            self.saved.append((quantizer._amax, quantizer.axis))
            del quantizer._amax  # no buffer: ModelOpt reduces amax from the input on every call
            quantizer.axis = (-3, -2)  # keep batch and sequence: one amax per token
        return self

    def __exit__(self, *exc_info):
        for quantizer, (amax, axis) in zip(self.quantizers, self.saved):
            quantizer.axis = axis
            quantizer.register_buffer("_amax", amax)
        self.saved.clear()
        return False
