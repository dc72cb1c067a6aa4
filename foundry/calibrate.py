"""Calibrate (SmoothQuant via NVIDIA ModelOpt 0.47) and export a TensorRT-LLM checkpoint.

The output directory holds exactly what `trtllm-build` consumes: `config.json` + `rank0.safetensors`,
written by ModelOpt's `export_tensorrt_llm_checkpoint`, plus the fixes to config.json that ModelOpt
0.47 needs on transformers 5.x (see `fix_exported_config`).
"""

from __future__ import annotations

import contextlib
import copy
import json
import time
import warnings
from pathlib import Path

import torch

from foundry import alpha_search
from foundry.builders import BUILDERS
from foundry.config import CalibrationConfig
from foundry.errors import FoundryError, NotSupportedError
from foundry.modelopt_recipes import kv_cache_quant_cfg, make_forward_loop
from foundry.runtime._trtllm_checkpoint import MAX_TP_SIZE
from foundry.smoothquant_per_token import PerTokenActivations, convert_checkpoint_to_per_token, resmooth_gate_and_up
from foundry.trtllm_checkpoint import (
    EXPORTED_KV_CACHE_QUANT_ALGO,
    EXPORTED_QUANT_ALGO,
    exported_quant_algo,
    read_checkpoint_config,
)

# The calibration request itself (quantization, KV cache, activation scaling, alpha, export dtype) is
# validated once, by CalibrationConfig; this module checks it only against a backend and a model.
# ModelOpt 0.47 `export_tensorrt_llm_checkpoint` converts any dtype other than float16/bfloat16 to
# float16 with only a warning; refusing float32 is more honest than writing a float16 checkpoint
# under a float32 name.
EXPORT_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}


def smoothquant_config(alpha: float) -> dict:
    """A deep copy of ModelOpt's INT8_SMOOTHQUANT_CFG whose algorithm carries `alpha`.

    ModelOpt 0.47 takes the algorithm as a dict validated by SmoothQuantCalibConfig
    (`{"method": "smoothquant", "alpha": ...}`); the preset's bare "smoothquant" means alpha 1.0.
    `alpha` comes from a validated CalibrationConfig (in [0, 1]).
    """
    import modelopt.torch.quantization as mtq

    config = copy.deepcopy(mtq.INT8_SMOOTHQUANT_CFG)
    config["algorithm"] = {"method": "smoothquant", "alpha": float(alpha)}
    return config


AWQ_GROUP_SIZES = (128, 64)  # TensorRT-LLM W4A16_AWQ group sizes; ModelOpt's preset uses 128


def awq_group_size(hf_config, tp_size: int = 1) -> int:
    """The largest TensorRT-LLM AWQ group size dividing every linear's per-rank in_features
    (SmolLM2's hidden size 576 is not a multiple of ModelOpt's default 128)."""
    get = hf_config.get if isinstance(hf_config, dict) else (lambda key, default=None: getattr(hf_config, key, default))
    hidden, heads = int(get("hidden_size")), int(get("num_attention_heads"))
    head_dim = int(get("head_dim") or hidden // heads)
    in_features = {hidden, heads * head_dim // tp_size, int(get("intermediate_size")) // tp_size}
    for group_size in AWQ_GROUP_SIZES:
        if all(width % group_size == 0 for width in in_features):
            return group_size
    raise NotSupportedError(
        f"calibration.quantization: int4_awq needs every linear's in_features per rank {sorted(in_features)} to be a "
        f"multiple of a TensorRT-LLM AWQ group size {AWQ_GROUP_SIZES}; not supported for this model and tp_size"
    )


def quantization_config(quantization: str, alpha: float, kv_cache: str = "none", awq_group: int = 128) -> dict:
    """The ModelOpt config of a variant (a CalibrationConfig.quantization): preset (deep copy) + KV-cache entries."""
    import modelopt.torch.quantization as mtq

    if quantization == "int8_sq":
        config = smoothquant_config(alpha)
    elif quantization == "fp8":
        config = copy.deepcopy(mtq.FP8_DEFAULT_CFG)
    elif quantization == "int4_awq":
        config = copy.deepcopy(mtq.INT4_AWQ_CFG)
        for entry in config["quant_cfg"]:
            if entry.get("quantizer_name") == "*weight_quantizer":
                entry["cfg"] = {**entry["cfg"], "block_sizes": {**entry["cfg"]["block_sizes"], -1: awq_group}}
    else:  # "none"
        config = {"quant_cfg": [{"quantizer_name": "*", "enable": False}], "algorithm": "max"}
    config["quant_cfg"] = list(config["quant_cfg"]) + kv_cache_quant_cfg(kv_cache)
    return config


# HF model_type → ModelOpt 0.47's decoder_type (model_utils.MODEL_NAME_TO_TYPE: Mistral is "llama").
MODEL_TYPE_DECODERS = {"llama": "llama", "mistral": "llama", "qwen2": "qwen"}


def check_supported(
    calibration: CalibrationConfig, build_backend: str, hf_config=None, max_seq_len: int | None = None
) -> None:
    """The (already validated) calibration request against what the rest of the run can do: the
    variant on the chosen build backend and, given `hf_config` (a transformers config or a
    config.json dict), the architecture, the sliding window and a tensor-parallel size that must
    divide the heads. Called on checkpoint metadata (foundry.preflight.check_checkpoint), before
    any weights are read."""
    check_backend_supports(calibration, build_backend)
    if hf_config is not None:
        _check_model_supports(calibration, hf_config, max_seq_len)


def check_backend_supports(calibration: CalibrationConfig, build_backend: str) -> None:
    quantization, kv_cache = calibration.quantization, calibration.kv_cache
    builder = BUILDERS[build_backend]
    other = "use the trtllm builder" if build_backend == "reference" else "use another quantization"
    quant_algo = exported_quant_algo(quantization, calibration.activation_scaling)
    if quant_algo not in builder.accepted_quant_algos:
        raise NotSupportedError(
            f"calibration.quantization: not supported by the {build_backend} backend: {quantization} ({quant_algo}); {other}"
        )
    if EXPORTED_KV_CACHE_QUANT_ALGO[kv_cache] not in builder.accepted_kv_cache_quant_algos:
        raise NotSupportedError(
            f"calibration.kv_cache: not supported by the {build_backend} backend: {kv_cache} KV cache; {other}"
        )
    if build_backend == "reference" and calibration.tp_size > MAX_TP_SIZE:
        raise NotSupportedError(
            f"calibration.tp_size: not supported by the reference backend: tp_size {calibration.tp_size}; "
            "use the trtllm builder"
        )


def _check_model_supports(calibration: CalibrationConfig, hf_config, max_seq_len: int | None) -> None:
    quantization, tp_size = calibration.quantization, calibration.tp_size
    get = hf_config.get if isinstance(hf_config, dict) else (lambda key, default=None: getattr(hf_config, key, default))
    model_type = get("model_type")
    if model_type not in MODEL_TYPE_DECODERS:
        raise NotSupportedError(
            f"model: model_type {model_type!r} is not supported by calibrate for {quantization} "
            f"(supported: {', '.join(MODEL_TYPE_DECODERS)})"
        )
    window = get("sliding_window")
    if (
        window is not None
        and get("use_sliding_window", True) is not False
        and max_seq_len
        and int(window) < max_seq_len
    ):
        raise NotSupportedError(
            f"model: sliding_window {window} < build.max_seq_len {max_seq_len} is not supported: the reference runtime and "
            "a trtllm-build engine served without max_attention_window attend to the whole context, so answers past "
            f"{window} tokens would differ from the model's; set build.max_seq_len <= {window}"
        )
    num_heads = int(get("num_attention_heads"))
    num_kv_heads = int(get("num_key_value_heads") or num_heads)
    for name, value in (
        ("num_attention_heads", num_heads),
        ("num_key_value_heads", num_kv_heads),
        ("intermediate_size", int(get("intermediate_size"))),
    ):
        if value % tp_size:
            raise FoundryError(
                f"calibration.tp_size: {tp_size} does not divide the model's {name} ({value}); "
                "pick a tp_size that divides the attention and KV heads"
            )
    if quantization == "int4_awq":
        awq_group_size(hf_config, tp_size)


def known_caveats(calibration, hf_config: dict) -> list[str]:
    """Combinations that run but that upstream does not vouch for: said before any work, then left
    to the quality gates, which measure exactly this engine against its unquantized model."""
    scaling = (
        (hf_config.get("rope_parameters") or hf_config.get("rope_scaling") or {}) if isinstance(hf_config, dict) else {}
    )
    llama3 = hf_config.get("model_type") == "llama" and (scaling.get("rope_type") or scaling.get("type")) == "llama3"
    if llama3 and calibration.quantization == "int8_sq":
        return [
            "ModelOpt's support matrix (examples/llm_ptq/README.md) marks int8 SmoothQuant unsupported for "
            "Llama 3.x; it runs here and the quality gates decide — fp8 is ModelOpt's recommended path on Hopper"
        ]
    return []


def load_hf_model_fp32(hf_checkpoint_dir: Path):
    from transformers import AutoModelForCausalLM

    if not (hf_checkpoint_dir / "config.json").is_file():
        raise FoundryError(f"{hf_checkpoint_dir / 'config.json'}: missing; pass an HF checkpoint directory")
    return AutoModelForCausalLM.from_pretrained(str(hf_checkpoint_dir), dtype=torch.float32).eval()


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
        fixes.append(f"max_position_embeddings: {config.get('max_position_embeddings')!r} -> {hf_max_positions}")
        config["max_position_embeddings"] = hf_max_positions
    hf_eps = getattr(hf_config, "rms_norm_eps", None)
    if hf_eps is not None and config.get("norm_epsilon") != hf_eps:
        fixes.append(f"norm_epsilon: {config.get('norm_epsilon')!r} -> {hf_eps}")
        config["norm_epsilon"] = hf_eps
    if getattr(hf_config, "model_type", None) == "qwen2":
        # TensorRT-LLM's QWen model reads qwen_type (and attn_bias for the q/k/v bias); ModelOpt's own
        # config (written when tensorrt_llm is not importable, as here) omits both
        for field, value in (("qwen_type", "qwen2"), ("attn_bias", True)):
            if config.get(field) != value:
                fixes.append(f"{field}: {config.get(field)!r} -> {value!r}")
                config[field] = value
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


def export_trtllm_checkpoint(model, output_dir: Path, export_dtype: str, tp_size: int = 1) -> list[str]:
    """ModelOpt's export, then the config.json fixes; returns the fixes applied."""
    from modelopt.torch.export import export_tensorrt_llm_checkpoint

    output_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_tensorrt_llm_checkpoint(
            model,
            decoder_type=MODEL_TYPE_DECODERS[model.config.model_type],
            dtype=EXPORT_DTYPES[export_dtype],
            export_dir=output_dir,
            inference_tensor_parallel=tp_size,
        )
    config_path = output_dir / "config.json"
    config = json.loads(config_path.read_text())
    fixes = fix_exported_config(config, model.config)
    config_path.write_text(json.dumps(config, indent=4))
    check_exported_tensors(output_dir, config["num_hidden_layers"])
    return fixes


def _require_calibration_ids(calibration: CalibrationConfig, calibration_ids: torch.Tensor, held_out_ids) -> None:
    """The token windows match the request: statistics windows when anything is calibrated, held-out
    windows when the alpha is searched (the request itself was validated by CalibrationConfig)."""
    if calibration.needs_calibration_data and (
        calibration_ids.ndim != 2 or calibration_ids.dtype != torch.int64 or calibration_ids.shape[0] < 1
    ):
        raise FoundryError(
            f"calibration_ids: need a [num_samples >= 1, seq_len] int64 tensor, got {tuple(calibration_ids.shape)} "
            f"{calibration_ids.dtype}"
        )
    if calibration.is_alpha_search and (held_out_ids is None or len(held_out_ids) == 0):
        raise FoundryError(
            "calibration.alpha: a search needs held-out calibration windows (held_out_ids); "
            "cut calibration.calibration_windows_needed windows and split them"
        )


def calibrate_to_trtllm_checkpoint(
    hf_checkpoint_dir: Path,
    calibration: CalibrationConfig,
    calibration_ids: torch.Tensor,
    output_dir: Path,
    *,
    held_out_ids: torch.Tensor | None = None,
    diagnostics: bool = False,
) -> dict:
    """Quantize (or not) the HF checkpoint as `calibration` asks and write a TensorRT-LLM checkpoint;
    returns a summary.

    `calibration` is validated by its own model and checked against the model by check_supported
    before the run reaches here. An alpha search (int8_sq, several candidates) scores
    `held_out_ids` (held-out calibration windows, never evaluation data) with statistics collected
    once, and the best alpha's model is exported. `diagnostics=True` adds per-linear smoothing /
    weight / quantization-error rows (int8_sq) under summary["diagnostics"]. Per-token activation
    scaling (int8_sq): alphas are scored with per-token activation scales and the checkpoint is
    rewritten into TensorRT-LLM's per-token layout (smoothquant_per_token).
    """
    import modelopt
    import modelopt.torch.quantization as mtq

    from foundry.diagnostics import linear_diagnostics

    hf_checkpoint_dir, output_dir = Path(hf_checkpoint_dir), Path(output_dir)
    _require_calibration_ids(calibration, calibration_ids, held_out_ids)
    quantization, kv_cache, tp_size = calibration.quantization, calibration.kv_cache, calibration.tp_size
    per_token = calibration.activation_scaling == "per_token"
    alphas = calibration.alpha_candidates()
    model = load_hf_model_fp32(hf_checkpoint_dir)

    started = time.perf_counter()
    sweep = None
    chosen_alpha = alphas[0] if quantization == "int8_sq" else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if calibration.is_alpha_search:
            sweep, model = alpha_search.score_alphas(
                model, calibration_ids, held_out_ids, alphas, kv_cache=kv_cache, per_token=per_token
            )
            chosen_alpha = sweep.best_alpha
        elif calibration.needs_calibration_data:
            awq_group = awq_group_size(model.config, tp_size) if quantization == "int4_awq" else 128
            mtq.quantize(
                model,
                quantization_config(quantization, alphas[0], kv_cache, awq_group),
                make_forward_loop(calibration_ids),
            )
            if per_token:
                resmooth_gate_and_up(model)
    calibration_seconds = time.perf_counter() - started
    if sweep is not None:
        sweep.sweep_seconds = round(calibration_seconds, 3)

    diagnostic_rows = None
    if diagnostics and quantization == "int8_sq":
        sample = held_out_ids[:1] if held_out_ids is not None and len(held_out_ids) else calibration_ids[:1]
        with PerTokenActivations(model) if per_token else contextlib.nullcontext():
            diagnostic_rows = linear_diagnostics(model, sample)

    started = time.perf_counter()
    config_fixes = export_trtllm_checkpoint(model, output_dir, calibration.export_dtype, tp_size)
    export_seconds = time.perf_counter() - started

    exported_quantization = read_checkpoint_config(output_dir).get("quantization") or {}
    check_exported_quantization(output_dir, exported_quantization, quantization, kv_cache)
    if per_token:
        convert_checkpoint_to_per_token(output_dir)
        exported_quantization = read_checkpoint_config(output_dir)["quantization"]
    calibrated = calibration.needs_calibration_data
    summary = {
        "quantization": quantization,
        "kv_cache": kv_cache,
        "tp_size": tp_size,
        "quant_algo": exported_quantization.get("quant_algo"),
        "kv_cache_quant_algo": exported_quantization.get("kv_cache_quant_algo"),
        "activation_scaling": calibration.activation_scaling if quantization == "int8_sq" else None,
        "alpha": chosen_alpha,
        "alpha_candidates": alphas if quantization == "int8_sq" else None,
        "num_samples": int(calibration_ids.shape[0]) if calibrated else 0,
        "seq_len": int(calibration_ids.shape[1]) if calibrated else 0,
        "export_dtype": calibration.export_dtype,
        "calibration_seconds": round(calibration_seconds, 3),
        "export_seconds": round(export_seconds, 3),
        "modelopt_version": modelopt.__version__,
        "config_fixes": config_fixes,
    }
    if sweep is not None:
        summary["alpha_sweep"] = sweep.to_dict()
    if diagnostic_rows is not None:
        summary["diagnostics"] = diagnostic_rows
    return summary


def check_exported_quantization(output_dir: Path, exported: dict, quantization: str, kv_cache: str) -> None:
    """ModelOpt must have written the quant_algo TensorRT-LLM 1.2.x expects for the variant."""
    want = (EXPORTED_QUANT_ALGO[quantization], EXPORTED_KV_CACHE_QUANT_ALGO[kv_cache])
    got = (exported.get("quant_algo"), exported.get("kv_cache_quant_algo"))
    if got != want:
        raise FoundryError(
            f"{output_dir / 'config.json'}: quantization {{quant_algo, kv_cache_quant_algo}} = {got}, expected {want} "
            f"for {quantization} with {kv_cache} KV cache; ModelOpt did not quantize as asked"
        )
