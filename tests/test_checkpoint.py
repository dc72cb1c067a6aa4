"""Ingest: GGUF → normalized HF dir with identical logits, hf_dir validation, manifests, fingerprints.

Real files only: the embedded SmolLM2 GGUF for the fidelity tests, copies of the tiny random Llama
(damaged on purpose) for every bad-input case.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from foundry.checkpoint import (
    CheckpointManifest,
    embedded_gguf_path,
    ingest_checkpoint,
    read_checkpoint_manifest,
    source_fingerprint,
)
from foundry.config import CheckpointSource
from foundry.errors import FoundryError, NotSupportedError
from foundry.hashing import MANIFEST_NAME, verify_manifest

PROMPT = "The capital of France is"


def _logits(model_dir_or_model, input_ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = model_dir_or_model
    if isinstance(model, Path):
        model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
    with torch.no_grad():
        return model.eval()(input_ids).logits


def _hf_dir(path: Path) -> CheckpointSource:
    return CheckpointSource(kind="hf_dir", path=str(path))


def _ingest(source: CheckpointSource, out: Path) -> CheckpointManifest:
    """As the pipeline does it: resolve_source hashes the source once, ingest records that hash."""
    return ingest_checkpoint(source, out, source_fingerprint(source))


@pytest.fixture(scope="module")
def tiny_ingested(tiny_llama_hf_dir, tmp_path_factory) -> tuple[Path, CheckpointManifest]:
    out = tmp_path_factory.mktemp("tiny_ingested") / "checkpoint"
    return out, _ingest(_hf_dir(tiny_llama_hf_dir), out)


@pytest.fixture()
def tiny_copy(tiny_llama_hf_dir, tmp_path) -> Path:
    """A private copy of the tiny Llama directory that a test may damage."""
    return Path(shutil.copytree(tiny_llama_hf_dir, tmp_path / "source"))


def _fails(source: CheckpointSource, out: Path, *fragments: str, error=FoundryError) -> str:
    with pytest.raises(error) as caught:
        _ingest(source, out)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"
    assert not out.exists(), "a failed ingest must leave no output directory behind"
    return message


# --- GGUF --------------------------------------------------------------------------------------


def test_gguf_ingest_loads_offline_with_identical_logits(smollm2_hf_dir, smollm2_gguf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2_hf_dir)
    input_ids = tokenizer(PROMPT, return_tensors="pt").input_ids
    transformers_model = AutoModelForCausalLM.from_pretrained(
        str(smollm2_gguf.parent), gguf_file=smollm2_gguf.name, dtype=torch.float32
    )
    assert torch.equal(_logits(smollm2_hf_dir, input_ids), _logits(transformers_model, input_ids))
    assert tokenizer.chat_template, "the GGUF's chat template must survive ingest"


def test_gguf_ingest_layout_and_manifest(smollm2_hf_dir, smollm2_gguf):
    manifest = read_checkpoint_manifest(smollm2_hf_dir)
    assert {"config.json", "model.safetensors", "generation_config.json", "tokenizer.json"} <= set(manifest.files)
    assert manifest.architecture == "LlamaForCausalLM" and manifest.model_type == "llama"
    assert (manifest.num_layers, manifest.hidden_size, manifest.vocab_size) == (30, 576, 49152)
    assert manifest.max_position_embeddings == 8192
    assert manifest.dtype == "float32" and "Q4_1" in manifest.source_dtype
    assert manifest.source_fingerprint == source_fingerprint(CheckpointSource(kind="gguf", path=str(smollm2_gguf)))
    assert 130e6 < manifest.parameter_count < 140e6  # 135M, tied embedding counted once

    config = json.loads((smollm2_hf_dir / "config.json").read_text())
    assert "quantization_config" not in config, "weights are plain fp32; the GGUF quantizer flag must go"
    assert config["rope_parameters"]["rope_theta"] == 100000.0
    with safe_open(str(smollm2_hf_dir / "model.safetensors"), "pt") as weights:
        names = set(weights.keys())
        assert {weights.get_slice(n).get_dtype() for n in names} == {"F32"}
    assert "lm_head.weight" not in names and "model.embed_tokens.weight" in names  # tied: stored once


@pytest.mark.slow  # a second full GGUF dequantization (~40 s on 2 cores); hf_dir determinism is always run
def test_same_gguf_gives_same_content_hash(smollm2_hf_dir, tmp_path):
    # The fixture ingested kind 'gguf'; 'embedded' is the same bytes, so the same content.
    second = _ingest(CheckpointSource(kind="embedded"), tmp_path / "again")
    assert second.content_hash == read_checkpoint_manifest(smollm2_hf_dir).content_hash
    assert second.source_kind == "embedded"


def test_gguf_bad_paths(tmp_path):
    missing = tmp_path / "nope.gguf"
    _fails(CheckpointSource(kind="gguf", path=str(missing)), tmp_path / "out", str(missing), "does not exist")
    not_gguf = tmp_path / "model.gguf"
    not_gguf.write_text("definitely not a gguf file")
    _fails(CheckpointSource(kind="gguf", path=str(not_gguf)), tmp_path / "out", str(not_gguf), "not a GGUF")
    _fails(CheckpointSource(kind="gguf", path=str(tmp_path)), tmp_path / "out", str(tmp_path), "directory")


def test_truncated_gguf_is_refused(tmp_path):
    truncated = tmp_path / "cut.gguf"
    with open(embedded_gguf_path(), "rb") as whole:
        truncated.write_bytes(whole.read(4096))
    _fails(CheckpointSource(kind="gguf", path=str(truncated)), tmp_path / "out", str(truncated))


def test_embedded_gguf_path_points_at_a_gguf():
    path = embedded_gguf_path()
    assert path.is_file() and path.read_bytes()[:4] == b"GGUF"


# --- manifest & fingerprint ----------------------------------------------------------------------


def test_manifest_verifies_and_tampering_is_refused(tiny_ingested, tmp_path):
    out, manifest = tiny_ingested
    assert verify_manifest(out)["content_hash"] == manifest.content_hash
    tampered = Path(shutil.copytree(out, tmp_path / "tampered"))
    with open(tampered / "config.json", "a") as handle:
        handle.write(" ")
    with pytest.raises(FoundryError, match="config.json"):
        verify_manifest(tampered)
    with pytest.raises(FoundryError, match="config.json"):
        read_checkpoint_manifest(tampered)


def test_hf_dir_ingest_is_deterministic(tiny_llama_hf_dir, tiny_ingested, tmp_path):
    _, first = tiny_ingested
    second = _ingest(_hf_dir(tiny_llama_hf_dir), tmp_path / "again")
    assert second.content_hash == first.content_hash
    assert second.files == first.files


def test_source_fingerprint_follows_the_bytes(tiny_copy, tmp_path):
    source = _hf_dir(tiny_copy)
    before = source_fingerprint(source)
    assert source_fingerprint(source) == before
    with open(tiny_copy / "config.json", "a") as handle:
        handle.write("\n")
    assert source_fingerprint(source) != before

    gguf_file = tmp_path / "x.gguf"
    gguf_file.write_bytes(b"GGUF" + b"\0" * 64)
    gguf_source = CheckpointSource(kind="gguf", path=str(gguf_file))
    first = source_fingerprint(gguf_source)
    gguf_file.write_bytes(b"GGUF" + b"\1" * 64)  # same path, new bytes → new key
    assert source_fingerprint(gguf_source) != first


# --- hf_dir round trips ----------------------------------------------------------------------


def test_hf_dir_round_trip(tiny_llama_hf_dir, tiny_ingested):
    from transformers import AutoTokenizer

    out, manifest = tiny_ingested
    assert manifest.source_kind == "hf_dir" and manifest.architecture == "LlamaForCausalLM"
    assert (manifest.num_layers, manifest.hidden_size, manifest.max_position_embeddings) == (2, 64, 512)
    assert manifest.dtype == "float32" and not manifest.requires_remote_code
    assert manifest.parameter_count == sum(t.numel() for t in load_file(str(out / "model.safetensors")).values())
    assert (out / "model.safetensors").read_bytes() == (tiny_llama_hf_dir / "model.safetensors").read_bytes()
    input_ids = AutoTokenizer.from_pretrained(out)(PROMPT, return_tensors="pt").input_ids
    assert torch.equal(_logits(out, input_ids), _logits(tiny_llama_hf_dir, input_ids))


def test_sharded_hf_dir_round_trip(tiny_llama_hf_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(tiny_llama_hf_dir).save_pretrained(sharded, max_shard_size="8MB")
    AutoTokenizer.from_pretrained(tiny_llama_hf_dir).save_pretrained(sharded)
    assert len(list(sharded.glob("*.safetensors"))) > 1
    out = tmp_path / "out"
    manifest = _ingest(_hf_dir(sharded), out)
    assert "model.safetensors.index.json" in manifest.files
    input_ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.equal(_logits(out, input_ids), _logits(tiny_llama_hf_dir, input_ids))


def test_sharded_hf_dir_with_missing_shard(tiny_llama_hf_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    sharded = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(tiny_llama_hf_dir).save_pretrained(sharded, max_shard_size="8MB")
    AutoTokenizer.from_pretrained(tiny_llama_hf_dir).save_pretrained(sharded)
    lost = sorted(sharded.glob("*.safetensors"))[-1]
    lost.unlink()
    _fails(_hf_dir(sharded), tmp_path / "out", lost.name, "missing")


# --- hf_dir validation -----------------------------------------------------------------------


def test_hf_dir_bad_paths(tiny_copy, tmp_path):
    missing = tmp_path / "nowhere"
    _fails(_hf_dir(missing), tmp_path / "out", str(missing), "does not exist")
    a_file = tiny_copy / "config.json"
    _fails(_hf_dir(a_file), tmp_path / "out", str(a_file), "is a file")
    _fails(_hf_dir(embedded_gguf_path()), tmp_path / "out", "kind 'gguf'")


def test_missing_config(tiny_copy, tmp_path):
    (tiny_copy / "config.json").unlink()
    _fails(_hf_dir(tiny_copy), tmp_path / "out", str(tiny_copy / "config.json"), "missing")


def test_config_not_json(tiny_copy, tmp_path):
    (tiny_copy / "config.json").write_text("{not json")
    _fails(_hf_dir(tiny_copy), tmp_path / "out", str(tiny_copy / "config.json"), "not valid JSON")


def _edit_config(directory: Path, **changes) -> None:
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_unsupported_architecture(tiny_copy, tmp_path):
    _edit_config(tiny_copy, architectures=["GPT2LMHeadModel"], model_type="gpt2")
    _fails(
        _hf_dir(tiny_copy),
        tmp_path / "out",
        "config.json",
        "GPT2LMHeadModel",
        "LlamaForCausalLM",
        error=NotSupportedError,
    )


def test_prequantized_checkpoint_is_not_supported(tiny_copy, tmp_path):
    _edit_config(tiny_copy, quantization_config={"quant_method": "awq"})
    _fails(_hf_dir(tiny_copy), tmp_path / "out", "config.json", "awq", error=NotSupportedError)


def test_custom_code_is_refused_with_the_reason(tiny_copy, tmp_path):
    _edit_config(tiny_copy, auto_map={"AutoModelForCausalLM": "modeling_custom.CustomForCausalLM"})
    (tiny_copy / "modeling_custom.py").write_text("# custom code\n")
    _fails(
        _hf_dir(tiny_copy),
        tmp_path / "out",
        "config.json",
        "auto_map",
        "modeling_custom.CustomForCausalLM",
        "would be ignored",
        error=NotSupportedError,
    )


def _pickle_only(directory: Path) -> Path:
    """Replace the safetensors weights with a pickle pytorch_model.bin."""
    weights = load_file(str(directory / "model.safetensors"))
    (directory / "model.safetensors").unlink()
    torch.save(weights, directory / "pytorch_model.bin")
    return directory / "pytorch_model.bin"


def test_pickle_weights_refused_by_default(tiny_copy, tmp_path):
    _pickle_only(tiny_copy)
    _fails(_hf_dir(tiny_copy), tmp_path / "out", "pytorch_model.bin", "allow_pickle")


def test_pickle_weights_converted_when_allowed(tiny_copy, tiny_llama_hf_dir, tmp_path):
    _pickle_only(tiny_copy)
    source = CheckpointSource(kind="hf_dir", path=str(tiny_copy), allow_pickle=True)
    manifest = _ingest(source, tmp_path / "out")
    assert "model.safetensors" in manifest.files and "pytorch_model.bin" not in manifest.files
    assert "pickle" in manifest.source_dtype
    input_ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(_logits(tmp_path / "out", input_ids), _logits(tiny_llama_hf_dir, input_ids))


def test_nan_in_pickle_weights_is_named(tiny_copy, tmp_path):
    pickle_path = _pickle_only(tiny_copy)
    weights = torch.load(pickle_path, weights_only=True)
    weights["model.embed_tokens.weight"][0, 0] = float("nan")
    torch.save(weights, pickle_path)
    source = CheckpointSource(kind="hf_dir", path=str(tiny_copy), allow_pickle=True)
    _fails(source, tmp_path / "out", str(pickle_path), "model.embed_tokens.weight", "NaN")


def test_config_without_model_type(tiny_copy, tmp_path):
    path = tiny_copy / "config.json"
    config = json.loads(path.read_text())
    del config["model_type"]
    path.write_text(json.dumps(config))
    _fails(_hf_dir(tiny_copy), tmp_path / "out", str(path), "model_type")


def test_truncated_safetensors(tiny_copy, tmp_path):
    weights = tiny_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    _fails(_hf_dir(tiny_copy), tmp_path / "out", str(weights), "truncated")


def test_corrupt_safetensors_header(tiny_copy, tmp_path):
    weights = tiny_copy / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[8:16] = b"\xff" * 8  # header JSON garbled
    weights.write_bytes(bytes(data))
    _fails(_hf_dir(tiny_copy), tmp_path / "out", str(weights), "header")


def test_nan_weight_is_named(tiny_copy, tmp_path):
    weights_path = tiny_copy / "model.safetensors"
    weights = load_file(str(weights_path))
    weights["model.layers.1.mlp.down_proj.weight"][3, 7] = float("nan")
    save_file(weights, str(weights_path), metadata={"format": "pt"})
    _fails(_hf_dir(tiny_copy), tmp_path / "out", "model.layers.1.mlp.down_proj.weight", str(weights_path), "NaN")


def test_inf_weight_is_named(tiny_copy, tmp_path):
    weights_path = tiny_copy / "model.safetensors"
    weights = load_file(str(weights_path))
    weights["model.norm.weight"][0] = float("inf")
    save_file(weights, str(weights_path), metadata={"format": "pt"})
    _fails(_hf_dir(tiny_copy), tmp_path / "out", "model.norm.weight", str(weights_path))


def test_missing_tokenizer(tiny_copy, tmp_path):
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        (tiny_copy / name).unlink(missing_ok=True)
    _fails(_hf_dir(tiny_copy), tmp_path / "out", str(tiny_copy), "tokenizer.json")


def test_no_weights_at_all(tiny_copy, tmp_path):
    (tiny_copy / "model.safetensors").unlink()
    _fails(_hf_dir(tiny_copy), tmp_path / "out", str(tiny_copy), "safetensors")


def test_non_empty_output_dir_is_refused(tiny_llama_hf_dir, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    with pytest.raises(FoundryError, match="stale|new or empty"):
        _ingest(_hf_dir(tiny_llama_hf_dir), out)
    assert (out / "stale.txt").read_text() == "old"
    assert MANIFEST_NAME not in {p.name for p in out.iterdir()}


# --- tensor set against the architecture -------------------------------------------------------


def _rewrite_weights(directory: Path, edit) -> None:
    weights = directory / "model.safetensors"
    tensors = load_file(weights)
    edit(tensors)
    save_file(tensors, weights, metadata={"format": "pt"})


def test_real_smollm2_missing_one_tensor_is_refused_by_name(smollm2_hf_dir, tmp_path):
    """The defect that reached production: transformers re-initialised the tensor at random."""
    damaged = Path(shutil.copytree(smollm2_hf_dir, tmp_path / "smollm2-missing-k"))
    _rewrite_weights(damaged, lambda t: t.pop("model.layers.10.self_attn.k_proj.weight"))
    _fails(
        _hf_dir(damaged),
        tmp_path / "out",
        "tensor 'model.layers.10.self_attn.k_proj.weight' is missing",
        "initialise it at random",
        "30 layers",
    )


def test_unexpected_tensor_is_refused_by_name(tiny_copy, tmp_path):
    _rewrite_weights(tiny_copy, lambda t: t.update({"model.layers.7.mlp.up_proj.weight": torch.zeros(2, 2)}))
    _fails(_hf_dir(tiny_copy), tmp_path / "out", "tensor 'model.layers.7.mlp.up_proj.weight' is not part of llama")


def test_wrong_shape_is_refused_by_name(tiny_copy, tmp_path):
    _rewrite_weights(tiny_copy, lambda t: t.update({"model.norm.weight": torch.ones(32)}))
    _fails(_hf_dir(tiny_copy), tmp_path / "out", "tensor 'model.norm.weight' has shape [32]", "implies [64]")


def test_tokenizer_larger_than_the_embedding_is_refused(tiny_copy, tmp_path):
    config = json.loads((tiny_copy / "config.json").read_text())
    rows = config["vocab_size"] - 100
    config["vocab_size"] = rows
    (tiny_copy / "config.json").write_text(json.dumps(config))
    _rewrite_weights(
        tiny_copy,
        lambda t: t.update({name: t[name][:rows].clone() for name in ("model.embed_tokens.weight", "lm_head.weight")}),
    )
    _fails(
        _hf_dir(tiny_copy), tmp_path / "out", f"vocab_size {rows} rows", "pair the checkpoint with its own tokenizer"
    )


def test_context_longer_than_the_model_is_refused():
    from foundry.checkpoint import require_context_fits

    require_context_fits(2048, 2048, "config.json")
    with pytest.raises(FoundryError, match="build.max_seq_len: 4096 exceeds max_position_embeddings 2048"):
        require_context_fits(2048, 4096, "config.json")
