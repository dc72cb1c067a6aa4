"""Calibrate (SmoothQuant via NVIDIA ModelOpt 0.47) and export a TensorRT-LLM checkpoint.

The output directory holds exactly what `trtllm-build` consumes: `config.json` + `rank0.safetensors`,
written by ModelOpt's `export_tensorrt_llm_checkpoint`, plus the fixes to config.json that ModelOpt
0.47 needs on transformers 5.x (see `fix_exported_config`).
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from pathlib import Path

import torch

from foundry.errors import FoundryError, NotSupportedError

SUPPORTED_QUANTIZATIONS = ("int8_sq", "none")
# ModelOpt 0.47 `export_tensorrt_llm_checkpoint` converts any dtype other than float16/bfloat16 to
# float16 with only a warning; refusing float32 is more honest than writing a float16 checkpoint
# under a float32 name.
EXPORT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
CALIBRATION_BATCH_SIZE = 4  # windows per forward: bounded memory, few Python round trips


def smoothquant_config(alpha: float) -> dict:
    """A deep copy of ModelOpt's INT8_SMOOTHQUANT_CFG whose algorithm carries `alpha`.

    ModelOpt 0.47 takes the algorithm as a dict validated by SmoothQuantCalibConfig
    (`{"method": "smoothquant", "alpha": ...}`); the preset's bare "smoothquant" means alpha 1.0.
    """
    import modelopt.torch.quantization as mtq

    if not 0.0 <= alpha <= 1.0:
        raise FoundryError(f"calibration.alpha: {alpha} is outside [0, 1]; SmoothQuant alpha is a fraction")
    config = copy.deepcopy(mtq.INT8_SMOOTHQUANT_CFG)
    config["algorithm"] = {"method": "smoothquant", "alpha": float(alpha)}
    return config


def load_hf_model_fp32(hf_checkpoint_dir: Path):
    from transformers import AutoModelForCausalLM

    if not (hf_checkpoint_dir / "config.json").is_file():
        raise FoundryError(f"{hf_checkpoint_dir / 'config.json'}: missing; pass an HF checkpoint directory")
    model = AutoModelForCausalLM.from_pretrained(str(hf_checkpoint_dir), dtype=torch.float32)
    if model.config.model_type != "llama":
        raise NotSupportedError(
            f"{hf_checkpoint_dir / 'config.json'}: model_type {model.config.model_type!r} is not supported "
            "by calibrate (Llama family only for now)"
        )
    return model.eval()


def make_forward_loop(calibration_ids: torch.Tensor, batch_size: int = CALIBRATION_BATCH_SIZE):
    """The callable ModelOpt calls with the model to collect activation statistics."""

    def forward_loop(model) -> None:
        with torch.no_grad():
            for start in range(0, calibration_ids.shape[0], batch_size):
                model(input_ids=calibration_ids[start : start + batch_size], use_cache=False)

    return forward_loop


def quantize_smoothquant(model, calibration_ids: torch.Tensor, alpha: float):
    """Runs ModelOpt SmoothQuant in place (fake-quant modules + smoothed weights); returns the model."""
    import modelopt.torch.quantization as mtq

    return mtq.quantize(model, smoothquant_config(alpha), make_forward_loop(calibration_ids))


def rope_settings_from_hf(hf_config) -> tuple[float, dict | None]:
    """(rope theta, TRT-LLM rotary_scaling or None) from an HF config of transformers 4.x or 5.x.

    transformers 5 moved `rope_theta` / `rope_scaling` into `config.rope_parameters`.
    """
    rope_parameters = getattr(hf_config, "rope_parameters", None) or {}
    theta = rope_parameters.get("rope_theta", getattr(hf_config, "rope_theta", None))
    if theta is None:
        raise FoundryError("HF config has neither rope_parameters.rope_theta nor rope_theta; cannot export RoPE")
    scaling = dict(rope_parameters) if rope_parameters else dict(getattr(hf_config, "rope_scaling", None) or {})
    scaling.pop("rope_theta", None)
    rope_type = scaling.pop("rope_type", scaling.pop("type", "default"))
    if rope_type == "default":
        return float(theta), None
    return float(theta), {"type": rope_type, **scaling}


def fix_exported_config(config: dict, hf_config) -> list[str]:
    """Fill the fields ModelOpt 0.47 fails to write on transformers 5.x; returns what was changed.

    ModelOpt reads `model.rotary_base`-style attributes that transformers 5 no longer has, so
    without this TensorRT-LLM would silently use rotary_base 10000 (SmolLM2 needs 100000).
    """
    fixes: list[str] = []
    theta, scaling = rope_settings_from_hf(hf_config)
    if config.get("rotary_base") != theta:
        fixes.append(f"rotary_base: {config.get('rotary_base')!r} -> {theta} (from HF rope theta)")
        config["rotary_base"] = theta
    if scaling is not None and config.get("rotary_scaling") != scaling:
        fixes.append(f"rotary_scaling: {config.get('rotary_scaling')!r} -> {scaling}")
        config["rotary_scaling"] = scaling
    hf_max_positions = getattr(hf_config, "max_position_embeddings", None)
    if hf_max_positions and config.get("max_position_embeddings") != hf_max_positions:
        fixes.append(
            f"max_position_embeddings: {config.get('max_position_embeddings')!r} -> {hf_max_positions}"
        )
        config["max_position_embeddings"] = hf_max_positions
    hf_eps = getattr(hf_config, "rms_norm_eps", None)
    if hf_eps is not None and config.get("norm_epsilon") != hf_eps:
        fixes.append(f"norm_epsilon: {config.get('norm_epsilon')!r} -> {hf_eps}")
        config["norm_epsilon"] = hf_eps
    return fixes


def check_exported_tensors(output_dir: Path, num_layers: int) -> None:
    """The checkpoint must carry its own lm_head: ModelOpt writes tied embeddings twice with
    share_embedding_table false, which TensorRT-LLM accepts; a missing one would be a silent bug."""
    from safetensors import safe_open

    with safe_open(str(output_dir / "rank0.safetensors"), "pt") as handle:
        names = set(handle.keys())
    required = {"transformer.vocab_embedding.weight", "transformer.ln_f.weight", "lm_head.weight"}
    required |= {f"transformer.layers.{num_layers - 1}.attention.qkv.weight"}
    missing = sorted(required - names)
    if missing:
        raise FoundryError(f"{output_dir / 'rank0.safetensors'}: ModelOpt export lacks tensors {missing}")


def export_trtllm_checkpoint(model, output_dir: Path, export_dtype: str) -> list[str]:
    """ModelOpt's export, then the config.json fixes; returns the fixes applied."""
    from modelopt.torch.export import export_tensorrt_llm_checkpoint

    output_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_tensorrt_llm_checkpoint(
            model,
            decoder_type="llama",
            dtype=EXPORT_DTYPES[export_dtype],
            export_dir=output_dir,
            inference_tensor_parallel=1,
        )
    config_path = output_dir / "config.json"
    config = json.loads(config_path.read_text())
    fixes = fix_exported_config(config, model.config)
    config_path.write_text(json.dumps(config, indent=4))
    check_exported_tensors(output_dir, config["num_hidden_layers"])
    return fixes


def validate_request(calibration_ids: torch.Tensor, quantization: str, export_dtype: str) -> None:
    if quantization not in SUPPORTED_QUANTIZATIONS:
        raise NotSupportedError(
            f"calibration.quantization: {quantization!r} is not supported; use one of {SUPPORTED_QUANTIZATIONS}"
        )
    if export_dtype not in EXPORT_DTYPES:
        raise NotSupportedError(
            f"calibration.export_dtype: {export_dtype!r} is not supported; ModelOpt 0.47 exports TensorRT-LLM "
            f"checkpoints only as {sorted(EXPORT_DTYPES)} (it silently turns float32 into float16)"
        )
    if quantization != "none" and (calibration_ids.ndim != 2 or calibration_ids.dtype != torch.int64):
        raise FoundryError(
            f"calibration_ids: need a [num_samples, seq_len] int64 tensor, got {tuple(calibration_ids.shape)} "
            f"{calibration_ids.dtype}"
        )


def calibrate_to_trtllm_checkpoint(
    hf_checkpoint_dir: Path,
    calibration_ids: torch.Tensor,
    output_dir: Path,
    quantization: str,
    alpha: float,
    export_dtype: str,
) -> dict:
    """Quantize (or not) the HF checkpoint and write a TensorRT-LLM checkpoint; returns a summary."""
    import modelopt

    hf_checkpoint_dir, output_dir = Path(hf_checkpoint_dir), Path(output_dir)
    validate_request(calibration_ids, quantization, export_dtype)
    model = load_hf_model_fp32(hf_checkpoint_dir)

    started = time.perf_counter()
    if quantization == "int8_sq":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_smoothquant(model, calibration_ids, alpha)
    calibration_seconds = time.perf_counter() - started

    started = time.perf_counter()
    config_fixes = export_trtllm_checkpoint(model, output_dir, export_dtype)
    export_seconds = time.perf_counter() - started

    exported_quantization = json.loads((output_dir / "config.json").read_text()).get("quantization") or {}
    return {
        "quantization": quantization,
        "quant_algo": exported_quantization.get("quant_algo"),
        "kv_cache_quant_algo": exported_quantization.get("kv_cache_quant_algo"),
        "alpha": alpha if quantization == "int8_sq" else None,
        "num_samples": int(calibration_ids.shape[0]) if quantization == "int8_sq" else 0,
        "seq_len": int(calibration_ids.shape[1]) if quantization == "int8_sq" else 0,
        "export_dtype": export_dtype,
        "calibration_seconds": round(calibration_seconds, 3),
        "export_seconds": round(export_seconds, 3),
        "modelopt_version": modelopt.__version__,
        "config_fixes": config_fixes,
    }
