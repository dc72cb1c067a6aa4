"""Model families beyond Llama 1/2: tiny random models built with transformers' own config classes,
exported through ModelOpt 0.47 and executed by the reference runtime against HF."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from foundry.calibrate import calibrate_to_trtllm_checkpoint, load_hf_model_fp32
from foundry.errors import NotSupportedError
from foundry.runtime.reference import ReferenceEngine
from tests.conftest import save_fp16_exact_copy

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
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smollm2_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=256,
        rope_parameters=LLAMA3_ROPE,
        tie_word_embeddings=False,
    )
    out = tmp_path_factory.mktemp("llama3")
    LlamaForCausalLM(config).eval().save_pretrained(out)
    exact = save_fp16_exact_copy(out, tmp_path_factory.mktemp("llama3_fp16_exact"))
    smollm2_tokenizer.save_pretrained(exact)
    return exact


def test_llama3_rope_scaling_is_exported_and_executed_like_hf(llama3_dir, tmp_path):
    out = tmp_path / "ckpt"
    calibrate_to_trtllm_checkpoint(llama3_dir, torch.zeros(0, 0, dtype=torch.int64), out, "none", 0.8, "float16")
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
    calibrate_to_trtllm_checkpoint(llama3_dir, torch.zeros(0, 0, dtype=torch.int64), out, "none", 0.8, "float16")
    config = json.loads((out / "config.json").read_text())
    config["rotary_scaling"] = {"type": "yarn", "factor": 4.0}
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(NotSupportedError, match="rotary_scaling type 'yarn' not supported by the reference backend"):
        ReferenceEngine.load(out)
