"""int8_sq with per-token activation scales (TensorRT-LLM W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN):
the checkpoint rewrite, its execution by the reference runtime pinned against ModelOpt's fake-quant
model with per-token dynamic input quantizers, tensor parallelism, alpha search and bad input."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file, save_file

from foundry.calibrate import (
    calibrate_to_trtllm_checkpoint,
    export_trtllm_checkpoint,
    load_hf_model_fp32,
    make_forward_loop,
    quantization_config,
)
from foundry.config import CalibrationConfig, parse_config
from foundry.errors import FoundryError, NotSupportedError
from foundry.runtime.reference import ReferenceEngine
from foundry.smoothquant_per_token import (
    PER_TOKEN_QUANT_ALGO,
    PerTokenActivations,
    convert_checkpoint_to_per_token,
    resmooth_gate_and_up,
)
from tests.test_reference_runtime import top1_agreement


@pytest.fixture(scope="module")
def windows() -> torch.Tensor:
    return torch.randint(0, 49152, (6, 32), generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module")
def calibrated(tiny_fp16_exact_dir, windows, tmp_path_factory):
    """(ModelOpt fake-quant model, static export dir, per-token export dir) for alpha 0.8."""
    model = load_hf_model_fp32(tiny_fp16_exact_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import modelopt.torch.quantization as mtq

        mtq.quantize(model, quantization_config("int8_sq", 0.8), make_forward_loop(windows[:4]))
        resmooth_gate_and_up(model)
    static_dir = tmp_path_factory.mktemp("static")
    export_trtllm_checkpoint(model, static_dir, "float16")
    per_token_dir = tmp_path_factory.mktemp("per_token")
    shutil.copytree(static_dir, per_token_dir, dirs_exist_ok=True)
    convert_checkpoint_to_per_token(per_token_dir)
    # the runtime folds the smoothing into float16 norm weights: give ModelOpt the same rounding
    from modelopt.torch.quantization.nn import TensorQuantizer

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, TensorQuantizer) and module.pre_quant_scale is not None:
                module.pre_quant_scale = module.pre_quant_scale.half().float()
    return model, static_dir, per_token_dir


def test_rewrite_produces_tensorrt_llm_per_token_layout(calibrated):
    """Names, shapes and dtypes TensorRT-LLM's SmoothQuantLinear/RowLinear/RmsNorm read
    (tensorrt_llm/quantization/layers.py), and nothing of the static layout left over."""
    _, static_dir, per_token_dir = calibrated
    config = json.loads((per_token_dir / "config.json").read_text())
    assert config["quantization"]["quant_algo"] == PER_TOKEN_QUANT_ALGO
    static, converted = load_file(static_dir / "rank0.safetensors"), load_file(per_token_dir / "rank0.safetensors")
    prefix = "transformer.layers.0"
    assert not [
        name
        for name in converted
        if name.endswith(("activation_scaling_factor", "weights_scaling_factor", "prequant_scaling_factor"))
    ]
    assert converted[f"{prefix}.attention.qkv.weight"].dtype == torch.int8
    assert torch.equal(converted[f"{prefix}.attention.qkv.weight"], static[f"{prefix}.attention.qkv.weight"])
    assert converted[f"{prefix}.mlp.proj.per_channel_scale"].shape == (1, 64)
    assert converted[f"{prefix}.mlp.proj.per_channel_scale"].dtype == torch.float32
    assert converted[f"{prefix}.mlp.proj.smoother"].shape == (1, 128)
    assert f"{prefix}.attention.qkv.smoother" not in converted and f"{prefix}.mlp.fc.smoother" not in converted
    assert converted[f"{prefix}.post_layernorm.scale_to_int"].tolist() == [1.0]
    # the norm absorbs the smoothing ModelOpt applied to the linears it feeds
    folded = (
        static[f"{prefix}.input_layernorm.weight"].float()
        * static[f"{prefix}.attention.qkv.prequant_scaling_factor"].float()
    )
    assert torch.equal(converted[f"{prefix}.input_layernorm.weight"], folded.half())
    assert torch.allclose(
        converted[f"{prefix}.attention.dense.smoother"].flatten(),
        1 / static[f"{prefix}.attention.dense.prequant_scaling_factor"].float(),
    )


def test_per_token_runtime_matches_modelopt_per_token_fake_quant(calibrated, windows):
    """The reference runtime on the rewritten checkpoint against ModelOpt's own model with each input
    quantizer computing its amax per token: the same smoothing, weights and rounding, so the logits
    agree to float rounding (observed max abs difference ~3e-7 on logits of magnitude ~1)."""
    model, _, per_token_dir = calibrated
    engine = ReferenceEngine.load(per_token_dir)
    assert engine.quant_algo == PER_TOKEN_QUANT_ALGO
    eval_ids = windows[4:]
    with torch.no_grad(), PerTokenActivations(model):
        expected = model(eval_ids).logits
    got = engine.logits(eval_ids)
    assert top1_agreement(got, expected) == 1.0
    assert (got - expected).abs().max().item() <= 1e-4 * expected.abs().max().item()
    # greedy decoding with the KV cache reads back what full recompute computes
    prompt = eval_ids[0, :8].tolist()
    generated, ids = engine.generate(prompt, 4), torch.tensor([prompt])
    for token in generated:
        assert int(engine.logits(ids)[0, -1].argmax()) == token
        ids = torch.cat([ids, torch.tensor([[token]])], dim=1)


def test_per_token_context_restores_the_static_model(calibrated, windows):
    model, _, _ = calibrated
    with torch.no_grad():
        before = model(windows[4:]).logits
        with PerTokenActivations(model):
            per_token = model(windows[4:]).logits
        after = model(windows[4:]).logits
    assert torch.equal(before, after) and not torch.equal(before, per_token)


def test_tensor_parallel_per_token_checkpoint_gives_the_tp1_logits(tiny_fp16_exact_dir, windows, tmp_path):
    engines = {}
    for tp_size in (1, 2):
        out = tmp_path / f"tp{tp_size}"
        summary = calibrate_to_trtllm_checkpoint(
            tiny_fp16_exact_dir, CalibrationConfig(tp_size=tp_size, activation_scaling="per_token"), windows[:4], out
        )
        assert (summary["quant_algo"], summary["activation_scaling"]) == (PER_TOKEN_QUANT_ALGO, "per_token")
        engines[tp_size] = ReferenceEngine.load(out)
    assert torch.equal(engines[1].logits(windows[4:]), engines[2].logits(windows[4:]))


def test_alpha_search_scores_with_per_token_scales(tiny_fp16_exact_dir, windows, tmp_path):
    summary = calibrate_to_trtllm_checkpoint(
        tiny_fp16_exact_dir,
        CalibrationConfig(alpha=[0.5, 0.9], activation_scaling="per_token"),
        windows[:3],
        tmp_path / "out",
        held_out_ids=windows[3:5],
        diagnostics=True,
    )
    assert summary["quant_algo"] == PER_TOKEN_QUANT_ALGO and summary["alpha"] in (0.5, 0.9)
    assert [row["alpha"] for row in summary["alpha_sweep"]["rows"]] == [0.5, 0.9]
    assert summary["diagnostics"] and all(row["output_relative_mse"] >= 0 for row in summary["diagnostics"])
    ReferenceEngine.load(tmp_path / "out").logits(windows[5:])


def test_gate_and_up_with_different_smoothing_are_refused(calibrated, tmp_path):
    _, static_dir, _ = calibrated
    shutil.copytree(static_dir, tmp_path / "ckpt")
    tensors = load_file(tmp_path / "ckpt" / "rank0.safetensors")
    tensors["transformer.layers.1.mlp.gate.prequant_scaling_factor"] *= 2
    save_file(tensors, tmp_path / "ckpt" / "rank0.safetensors")
    with pytest.raises(FoundryError, match=r"layers\.1.*mlp\.fc and mlp\.gate have different prequant_scaling_factor"):
        convert_checkpoint_to_per_token(tmp_path / "ckpt")


def test_only_a_static_smoothquant_export_is_rewritten(calibrated, tmp_path):
    _, _, per_token_dir = calibrated
    shutil.copytree(per_token_dir, tmp_path / "ckpt")
    with pytest.raises(FoundryError, match="only a W8A8_SQ_PER_CHANNEL export"):
        convert_checkpoint_to_per_token(tmp_path / "ckpt")


def test_scale_to_int_other_than_one_is_refused(calibrated, tmp_path):
    _, _, per_token_dir = calibrated
    shutil.copytree(per_token_dir, tmp_path / "ckpt")
    tensors = load_file(tmp_path / "ckpt" / "rank0.safetensors")
    tensors["transformer.layers.0.input_layernorm.scale_to_int"] = torch.tensor([0.5], dtype=torch.float16)
    save_file(tensors, tmp_path / "ckpt" / "rank0.safetensors")
    with pytest.raises(NotSupportedError, match="input_layernorm.scale_to_int"):
        ReferenceEngine.load(tmp_path / "ckpt")


def test_per_token_needs_int8_sq():
    with pytest.raises(ValueError, match="activation_scaling per_token applies to quantization int8_sq"):
        CalibrationConfig(quantization="fp8", activation_scaling="per_token")
    with pytest.raises(ValueError, match="activation_scaling"):
        CalibrationConfig(activation_scaling="per_row")
    with pytest.raises(
        FoundryError, match="calibration: .*activation_scaling per_token applies to quantization int8_sq"
    ):
        parse_config({"calibration": {"quantization": "fp8", "activation_scaling": "per_token"}})
