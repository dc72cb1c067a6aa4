"""Model families beyond Llama 1/2: tiny random models built with transformers' own config classes,
exported through ModelOpt 0.47 and executed by the reference runtime against HF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from foundry.calibrate import calibrate_to_trtllm_checkpoint, load_hf_model_fp32
from foundry.config import CalibrationConfig
from foundry.errors import NotSupportedError
from foundry.runtime.reference import ReferenceEngine
from tests.conftest import save_fp16_exact_copy

NO_QUANTIZATION = CalibrationConfig(quantization="none")

LLAMA3_ROPE = {
    "rope_type": "llama3",
    "rope_theta": 500000.0,
    "factor": 8.0,
    "low_freq_factor": 1.0,
    "high_freq_factor": 4.0,
    "original_max_position_embeddings": 32,
}


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """Llama-3.1-style: GQA, llama3 RoPE scaling (original context 32 so positions past it are scaled)."""
    return _tiny(
        tmp_path_factory,
        smollm2_tokenizer,
        "llama3",
        "LlamaConfig",
        seed=0,
        num_attention_heads=8,
        rope_parameters=LLAMA3_ROPE,
        tie_word_embeddings=False,
    )


def test_llama3_rope_scaling_is_exported_and_executed_like_hf(llama3_dir, tmp_path):
    out = tmp_path / "ckpt"
    calibrate_to_trtllm_checkpoint(llama3_dir, NO_QUANTIZATION, torch.zeros(0, 0, dtype=torch.int64), out)
    exported = json.loads((out / "config.json").read_text())
    scaling = exported["rotary_scaling"]
    assert (
        scaling["type"] == "llama3" and scaling["factor"] == 8.0 and scaling["original_max_position_embeddings"] == 32
    )
    assert exported["rotary_base"] == 500000.0
    engine = ReferenceEngine.load(out)
    hf = load_hf_model_fp32(llama3_dir)
    ids = torch.randint(5, 1000, (1, 120), generator=torch.Generator().manual_seed(0))  # well past 32 positions
    with torch.no_grad():
        expected = hf(ids).logits
    got = engine.logits(ids)
    assert torch.allclose(got, expected, atol=2e-3, rtol=1e-3), (got - expected).abs().max()
    assert (
        engine.generate(ids[0, :40].tolist(), 8)
        == hf.generate(ids[:, :40], max_new_tokens=8, do_sample=False, min_new_tokens=8)[0, 40:].tolist()
    )


def test_an_unsupported_rope_scaling_is_refused_not_ignored(llama3_dir, tmp_path):
    out = tmp_path / "ckpt"
    calibrate_to_trtllm_checkpoint(llama3_dir, NO_QUANTIZATION, torch.zeros(0, 0, dtype=torch.int64), out)
    config = json.loads((out / "config.json").read_text())
    config["rotary_scaling"] = {"type": "yarn", "factor": 4.0}
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotSupportedError, match="rotary_scaling type 'yarn' not supported by the reference backend"):
        ReferenceEngine.load(out)


def _tiny(tmp_path_factory, tokenizer, name: str, config_class: str, seed: int = 1, **fields) -> Path:
    """A 2-layer random model of `config_class` with float16-exact weights and SmolLM2's tokenizer."""
    import transformers

    torch.manual_seed(seed)
    shape = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 256,
    }
    config = getattr(transformers, config_class)(**(shape | fields))
    model = transformers.AutoModelForCausalLM.from_config(config).eval()
    out = tmp_path_factory.mktemp(name)
    model.save_pretrained(out)
    exact = save_fp16_exact_copy(out, tmp_path_factory.mktemp(f"{name}_fp16_exact"))
    tokenizer.save_pretrained(exact)
    return exact


@pytest.fixture(scope="module")
def qwen2_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """Qwen2/2.5-style: q/k/v bias (random, so it matters), tied embeddings, no sliding window in use."""
    directory = _tiny(
        tmp_path_factory,
        smollm2_tokenizer,
        "qwen2",
        "Qwen2Config",
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        use_sliding_window=False,
    )
    from safetensors.torch import load_file, save_file

    tensors = load_file(directory / "model.safetensors")
    for name in [n for n in tensors if n.endswith(("q_proj.bias", "k_proj.bias", "v_proj.bias"))]:
        tensors[name] = torch.randn_like(tensors[name]).half().float()  # HF initialises biases to zero
    save_file(tensors, directory / "model.safetensors", metadata={"format": "pt"})
    return directory


@pytest.fixture(scope="module")
def mistral_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    return _tiny(
        tmp_path_factory, smollm2_tokenizer, "mistral", "MistralConfig", sliding_window=None, tie_word_embeddings=False
    )


@pytest.mark.parametrize("family", ["qwen2", "mistral"])
def test_family_runs_like_hf_unquantized_and_with_smoothquant(
    family, qwen2_dir, mistral_dir, smollm2_tokenizer, tmp_path
):
    from foundry import data

    directory = {"qwen2": qwen2_dir, "mistral": mistral_dir}[family]
    out = tmp_path / "ckpt"
    calibrate_to_trtllm_checkpoint(directory, NO_QUANTIZATION, torch.zeros(0, 0, dtype=torch.int64), out)
    exported = json.loads((out / "config.json").read_text())
    assert exported["architecture"] == {"qwen2": "Qwen2ForCausalLM", "mistral": "MistralForCausalLM"}[family]
    if family == "qwen2":
        assert exported["qwen_type"] == "qwen2" and exported["rotary_base"] == 1000000.0
    hf = load_hf_model_fp32(directory)
    ids = torch.randint(5, 1000, (1, 48), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = hf(ids).logits
    engine = ReferenceEngine.load(out)
    assert torch.allclose(engine.logits(ids), expected, atol=2e-3, rtol=1e-3)
    assert (
        engine.generate(ids[0, :16].tolist(), 6)
        == hf.generate(ids[:, :16], max_new_tokens=6, min_new_tokens=6, do_sample=False)[0, 16:].tolist()
    )
    # SmoothQuant: calibrated by ModelOpt, executed with int8 semantics; close to the float model
    windows = data.token_windows(data.builtin_documents("calibration"), smollm2_tokenizer, 4, 32, "calibration")
    calibrate_to_trtllm_checkpoint(directory, CalibrationConfig(), windows.input_ids, tmp_path / "sq")
    quantized = ReferenceEngine.load(tmp_path / "sq").logits(ids)
    agreement = (quantized.argmax(-1) == expected.argmax(-1)).float().mean().item()
    assert agreement > 0.8, agreement


def test_a_sliding_window_shorter_than_the_context_is_refused_up_front():
    from foundry.calibrate import check_supported

    mistral_v01 = {
        "model_type": "mistral",
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "sliding_window": 4096,
    }
    with pytest.raises(NotSupportedError, match="sliding_window 4096 < build.max_seq_len 8192"):
        check_supported(CalibrationConfig(), "reference", mistral_v01, max_seq_len=8192)
    check_supported(CalibrationConfig(), "reference", mistral_v01, max_seq_len=4096)
    qwen = {
        "model_type": "qwen2",
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "intermediate_size": 4864,
        "sliding_window": 32768,
        "use_sliding_window": False,
    }
    check_supported(CalibrationConfig(), "reference", qwen, max_seq_len=65536)
    with pytest.raises(NotSupportedError, match="model_type 'gpt_neox' is not supported"):
        check_supported(CalibrationConfig(), "reference", {"model_type": "gpt_neox"})


@pytest.mark.slow
def test_a_qwen2_checkpoint_runs_the_pipeline_to_a_registered_version(qwen2_dir, tmp_path):
    """One family through `python run.py` from an hf_dir source (Llama 3 and Mistral share its path
    and are covered above at the runtime level, to keep the suite short)."""
    import yaml

    from foundry.registry import Registry, sqlite_tracking_uri
    from tests.test_rebuild_cache import run_cli, tiny_config

    config = tiny_config({"kind": "hf_dir", "path": str(qwen2_dir)})
    config["model"]["name"] = "tiny-qwen2"
    path = tmp_path / "qwen2.yaml"
    path.write_text(yaml.safe_dump(config))
    result = run_cli(tmp_path / "state", "--config", str(path))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    registry = Registry(sqlite_tracking_uri(tmp_path / "state"))
    assert registry.production_version("tiny-qwen2") == "1"
    tags = registry.version_tags("tiny-qwen2", "1")
    assert tags["backend"] == "reference" and tags["quant_algo"] == "W8A8_SQ_PER_CHANNEL"


FAMILY_FIXTURE = Path(__file__).parent / "fixtures" / "trtllm_1_2_checkpoint_families.json"


@pytest.mark.parametrize("family", ["llama3", "qwen2", "mistral"])
def test_exported_checkpoint_has_what_trtllm_1_2_reads(family, llama3_dir, qwen2_dir, mistral_dir, tmp_path):
    from safetensors import safe_open

    spec = json.loads(FAMILY_FIXTURE.read_text())
    directory = {"llama3": llama3_dir, "qwen2": qwen2_dir, "mistral": mistral_dir}[family]
    key = "llama" if family == "llama3" else family
    out = tmp_path / "ckpt"
    calibrate_to_trtllm_checkpoint(directory, NO_QUANTIZATION, torch.zeros(0, 0, dtype=torch.int64), out)
    config = json.loads((out / "config.json").read_text())
    assert config["architecture"] == spec["architectures"][key]
    for field in spec["required_fields"]["all"] + spec["required_fields"].get(key, []):
        assert field in config, field
    for field, value in spec["field_values"].get(key, {}).items():
        assert config[field] == value, field
    if family == "llama3":
        assert set(spec["rotary_scaling_llama3"]) <= set(config["rotary_scaling"])
        assert (config["rotary_scaling"].get("type") or config["rotary_scaling"].get("rope_type")) == "llama3"
    with safe_open(str(out / "rank0.safetensors"), "pt") as handle:
        names = set(handle.keys())
    assert set(spec["model_tensors"]) <= names
    for layer in range(config["num_hidden_layers"]):
        for suffix in spec["layer_tensors"]["all"] + spec["layer_tensors"].get(key, []):
            assert f"transformer.layers.{layer}.{suffix}" in names, suffix
