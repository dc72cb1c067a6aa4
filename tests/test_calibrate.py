"""calibrate_to_trtllm_checkpoint: real ModelOpt SmoothQuant + TensorRT-LLM checkpoint export."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from foundry.calibrate import calibrate_to_trtllm_checkpoint, smoothquant_config
from foundry.config import CalibrationConfig, parse_config
from foundry.data import builtin_documents, token_windows
from foundry.errors import FoundryError, NotSupportedError


def read_tensor(checkpoint_dir, name: str) -> torch.Tensor:
    with safe_open(str(checkpoint_dir / "rank0.safetensors"), "pt") as handle:
        return handle.get_tensor(name)


@pytest.fixture(scope="module")
def calibration_ids(smollm2_tokenizer) -> torch.Tensor:
    return token_windows(builtin_documents("calibration"), smollm2_tokenizer, 4, 64, "calibration").input_ids


@pytest.fixture(scope="module")
def smollm2_sq_export(smollm2_hf_dir, calibration_ids, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("smollm2_sq_fp16")
    summary = calibrate_to_trtllm_checkpoint(smollm2_hf_dir, CalibrationConfig(alpha=0.8), calibration_ids, output_dir)
    return output_dir, summary


def test_smoothquant_config_carries_alpha_without_touching_the_preset():
    import modelopt.torch.quantization as mtq

    config = smoothquant_config(0.8)
    assert config["algorithm"] == {"method": "smoothquant", "alpha": 0.8}
    assert mtq.INT8_SMOOTHQUANT_CFG["algorithm"] == "smoothquant"  # the preset stays intact


def test_unsupported_quantization_names_the_field():
    with pytest.raises(FoundryError, match="calibration.quantization.*'int3'"):
        parse_config({"calibration": {"quantization": "int3"}})


def test_float32_export_is_refused_instead_of_silently_written_as_float16():
    with pytest.raises(FoundryError, match="calibration.export_dtype.*float32"):
        parse_config({"calibration": {"quantization": "none", "export_dtype": "float32"}})


def test_alpha_changes_the_exported_smoothing(tiny_llama_hf_dir, calibration_ids, tmp_path):
    """The alpha must reach ModelOpt: different alphas give different smoothing factors."""
    smoothers = {}
    for alpha in (0.5, 1.0):
        output_dir = tmp_path / f"alpha_{alpha}"
        summary = calibrate_to_trtllm_checkpoint(
            tiny_llama_hf_dir, CalibrationConfig(alpha=alpha, export_dtype="bfloat16"), calibration_ids, output_dir
        )
        assert summary["alpha"] == alpha
        smoothers[alpha] = read_tensor(output_dir, "transformer.layers.0.attention.qkv.prequant_scaling_factor").float()
    relative_change = ((smoothers[0.5] - smoothers[1.0]).abs() / smoothers[1.0]).max().item()
    assert relative_change > 0.05, relative_change


def test_smoothquant_export_summary_and_tensors(smollm2_sq_export):
    output_dir, summary = smollm2_sq_export
    assert summary["quant_algo"] == "W8A8_SQ_PER_CHANNEL"
    assert summary["kv_cache_quant_algo"] is None
    assert (summary["num_samples"], summary["seq_len"], summary["alpha"]) == (4, 64, 0.8)
    assert summary["modelopt_version"].startswith("0.47")
    assert summary["calibration_seconds"] > 0 and summary["export_seconds"] > 0
    json.dumps(summary)  # JSON-able for step metadata
    qkv = read_tensor(output_dir, "transformer.layers.0.attention.qkv.weight")
    assert qkv.dtype == torch.int8 and tuple(qkv.shape) == ((9 + 2 * 3) * 64, 576)
    assert read_tensor(output_dir, "lm_head.weight").dtype == torch.float16  # lm_head stays unquantized


def test_exported_config_has_the_hf_rope_theta(smollm2_sq_export, smollm2_hf_dir):
    """ModelOpt 0.47 on transformers 5 omits rotary_base; TRT-LLM would then use 10000."""
    output_dir, summary = smollm2_sq_export
    hf_config = json.loads((smollm2_hf_dir / "config.json").read_text())
    rope_theta = (hf_config.get("rope_parameters") or {}).get("rope_theta", hf_config.get("rope_theta"))
    assert rope_theta == 100000.0
    exported = json.loads((output_dir / "config.json").read_text())
    assert exported["rotary_base"] == rope_theta
    assert exported.get("rotary_scaling") is None
    assert exported["max_position_embeddings"] == hf_config["max_position_embeddings"]
    assert any(fix.startswith("rotary_base") for fix in summary["config_fixes"])


# ---------------------------------------------------------------- variants and pre-calibration checks


def _calibration(**fields):
    from foundry.config import CalibrationConfig

    return CalibrationConfig(**fields)


def test_reference_backend_refuses_int4_awq_before_calibration(tiny_llama_hf_dir):
    from foundry.calibrate import check_supported

    with pytest.raises(
        NotSupportedError,
        match=r"not supported by the reference backend: int4_awq \(W4A16_AWQ\); use the trtllm builder",
    ):
        check_supported(_calibration(quantization="int4_awq"), "reference")
    for supported in (_calibration(quantization="fp8", kv_cache="fp8"), _calibration(kv_cache="int8", tp_size=2)):
        check_supported(supported, "reference", json.loads((tiny_llama_hf_dir / "config.json").read_text()))
    check_supported(_calibration(quantization="int4_awq"), "trtllm")


def test_tp_size_must_divide_the_heads_and_the_architecture_must_be_llama(tiny_llama_hf_dir):
    from foundry.calibrate import check_supported

    hf_config = json.loads((tiny_llama_hf_dir / "config.json").read_text())  # 4 heads, 2 KV heads
    with pytest.raises(
        FoundryError, match=r"calibration.tp_size: 4 does not divide the model's num_key_value_heads \(2\)"
    ):
        check_supported(_calibration(tp_size=4), "trtllm", hf_config)
    with pytest.raises(NotSupportedError, match="model_type 'gpt2' is not supported"):
        check_supported(_calibration(), "trtllm", {**hf_config, "model_type": "gpt2"})


def test_int4_awq_exports_for_trtllm_with_a_fitting_group_size(tiny_llama_hf_dir, calibration_ids, tmp_path):
    """hidden 64 is not a multiple of ModelOpt's default group 128: group 64 is chosen and written."""
    summary = calibrate_to_trtllm_checkpoint(
        tiny_llama_hf_dir, CalibrationConfig(quantization="int4_awq"), calibration_ids[:2, :32], tmp_path
    )
    quantization = json.loads((tmp_path / "config.json").read_text())["quantization"]
    assert (summary["quant_algo"], quantization["group_size"], quantization["has_zero_point"]) == (
        "W4A16_AWQ",
        64,
        False,
    )
    assert read_tensor(tmp_path, "transformer.layers.0.mlp.fc.weight").dtype == torch.int8  # packed int4 pairs


@pytest.mark.parametrize(("kv_cache", "kv_algo"), [("int8", "INT8"), ("fp8", "FP8")])
def test_kv_cache_quantization_is_exported(tiny_llama_hf_dir, calibration_ids, tmp_path, kv_cache, kv_algo):
    summary = calibrate_to_trtllm_checkpoint(
        tiny_llama_hf_dir, CalibrationConfig(kv_cache=kv_cache), calibration_ids[:2, :32], tmp_path
    )
    assert (summary["quant_algo"], summary["kv_cache_quant_algo"]) == ("W8A8_SQ_PER_CHANNEL", kv_algo)
    scale = read_tensor(tmp_path, "transformer.layers.1.attention.kv_cache_scaling_factor")
    assert scale.shape == (1,) and scale.item() > 0
