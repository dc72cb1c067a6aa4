"""Triton model repository export: every config.pbtxt parses against Triton's ModelConfig protobuf."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from google.protobuf import text_format

from foundry.builders.trtllm import TrtllmBuilder
from foundry.compat import NodeTarget
from foundry.config import BuildConfig, ServingConfig
from foundry.errors import FoundryError, NotSupportedError
from foundry.hashing import verify_manifest, write_manifest
from foundry.hashing import MANIFEST_NAME
from foundry.triton import export_triton_repository
from tests.trtllm_fakes import h100_node, install_fake_trtllm_build, write_trtllm_checkpoint

H100_1_2_1 = NodeTarget("1.2.1", "9.0")


def model_config_pb2():
    """tritonclient ships tritonclient/grpc/model_config_pb2.py; load it without the grpc extras."""
    import tritonclient

    path = Path(tritonclient.__file__).parent / "grpc" / "model_config_pb2.py"
    spec = importlib.util.spec_from_file_location("triton_model_config_pb2", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def sealed_engine(tmp_path_factory, smollm2_tokenizer) -> Path:
    """A trtllm engine built by the fake trtllm-build, with the tokenizer the build step stores, sealed."""
    root = tmp_path_factory.mktemp("triton")
    install_fake_trtllm_build(root / "bin")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PATH", f"{root / 'bin'}:{__import__('os').environ['PATH']}")
        patch.setenv("FAKE_TRTLLM_ARGV_LOG", str(root / "argv.json"))
        checkpoint = write_trtllm_checkpoint(root / "ckpt")
        engine = root / "engine"
        TrtllmBuilder(h100_node()).build(
            checkpoint, engine,
            BuildConfig(backend="trtllm", max_seq_len=1024, max_batch_size=16, timing_cache_dir=str(root / "tc")),
        )
    smollm2_tokenizer.save_pretrained(engine / "tokenizer")
    write_manifest(engine, {"kind": "engine"})
    return engine


def parse_all(repository: Path) -> dict:
    pb2 = model_config_pb2()
    parsed = {}
    for path in sorted(repository.glob("*/config.pbtxt")):
        text = path.read_text()
        assert "${" not in text, path
        parsed[path.parent.name] = text_format.Parse(text, pb2.ModelConfig())
    return parsed


def parameter(config, key: str) -> str:
    return config.parameters[key].string_value


def test_export_writes_a_parseable_repository_filled_from_engine_and_config(sealed_engine, tmp_path):
    serving = ServingConfig(decoupled=True, kv_cache_free_gpu_mem_fraction=0.85, enable_kv_cache_reuse=True,
                            enable_chunked_context=True, batch_scheduler_policy="max_utilization",
                            multi_block_mode=False, max_queue_delay_microseconds=250,
                            preprocessing_instance_count=3, postprocessing_instance_count=2,
                            tensorrt_llm_bls=True, bls_instance_count=4, triton_max_batch_size=8)
    record = export_triton_repository(sealed_engine, tmp_path / "repo", serving, node=H100_1_2_1, mount="/models")
    configs = parse_all(tmp_path / "repo")
    assert sorted(configs) == ["ensemble", "postprocessing", "preprocessing", "tensorrt_llm", "tensorrt_llm_bls"]

    trt = configs["tensorrt_llm"]
    assert trt.backend == "tensorrtllm" and trt.max_batch_size == 8
    assert trt.model_transaction_policy.decoupled is True
    assert parameter(trt, "gpt_model_path") == "/models/tensorrt_llm/1/engine"
    assert parameter(trt, "gpt_model_type") == "inflight_fused_batching"
    assert parameter(trt, "kv_cache_free_gpu_mem_fraction") == "0.85"
    assert parameter(trt, "enable_kv_cache_reuse") == "true" and parameter(trt, "enable_chunked_context") == "true"
    assert parameter(trt, "batch_scheduler_policy") == "max_utilization"
    assert parameter(trt, "multi_block_mode") == "false"
    assert trt.dynamic_batching.max_queue_delay_microseconds == 250
    assert configs["preprocessing"].instance_group[0].count == 3
    assert configs["postprocessing"].instance_group[0].count == 2
    assert configs["tensorrt_llm_bls"].instance_group[0].count == 4
    assert parameter(configs["preprocessing"], "tokenizer_dir") == "/models/tokenizer"

    ensemble = configs["ensemble"]
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["preprocessing", "tensorrt_llm", "postprocessing"]
    # every tensor the ensemble routes exists on the model it routes to
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        assert set(step.input_map) <= {t.name for t in model.input}, step.model_name
        assert set(step.output_map) <= {t.name for t in model.output}, step.model_name

    repo = tmp_path / "repo"
    assert (repo / "tensorrt_llm/1/engine/rank0.engine").is_file()
    assert (repo / "tokenizer/tokenizer.json").is_file()
    assert record["engine"]["environment"]["trtllm_version"] == "1.2.1"
    assert record["triton_container"]["image"] is None and "serving.triton_image" in record["triton_container"]["source"]
    manifest = json.loads((repo / MANIFEST_NAME).read_text())
    assert manifest["content_hash"] == record["content_hash"] and manifest["export"]["models"] == record["models"]
    assert "TRT-LLM | 1.2.1" in (repo / "README.md").read_text()
    verify_manifest(repo)


def test_streaming_off_and_defaults(sealed_engine, tmp_path):
    export_triton_repository(sealed_engine, tmp_path / "repo", ServingConfig(decoupled=False, triton_image="img:tag"),
                             node=H100_1_2_1)
    configs = parse_all(tmp_path / "repo")
    assert sorted(configs) == ["ensemble", "postprocessing", "preprocessing", "tensorrt_llm"]
    assert configs["tensorrt_llm"].model_transaction_policy.decoupled is False
    assert configs["tensorrt_llm"].max_batch_size == 16  # the engine's build.max_batch_size
    assert json.loads((tmp_path / "repo" / MANIFEST_NAME).read_text())["export"]["triton_container"]["image"] == "img:tag"


def test_export_refuses_another_node(sealed_engine, tmp_path):
    with pytest.raises(FoundryError, match="engine built with TRT-LLM 1.2.1 on compute 9.0; this node has 1.1.0 on compute 8.9"):
        export_triton_repository(sealed_engine, tmp_path / "repo", ServingConfig(), node=NodeTarget("1.1.0", "8.9"))
    assert not (tmp_path / "repo").exists()


def test_export_refuses_a_reference_engine(tmp_path):
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "engine.json").write_text(json.dumps({"backend": "reference"}))
    with pytest.raises(NotSupportedError, match="executes TensorRT-LLM engines only"):
        export_triton_repository(tmp_path / "engine", tmp_path / "repo", ServingConfig(), node=H100_1_2_1)


def test_export_refuses_too_large_triton_batch(sealed_engine, tmp_path):
    with pytest.raises(FoundryError, match="serving.triton_max_batch_size = 32 exceeds the engine's max_batch_size = 16"):
        export_triton_repository(sealed_engine, tmp_path / "repo", ServingConfig(triton_max_batch_size=32), node=H100_1_2_1)


def test_triton_release_table():
    from foundry.triton import triton_release_for

    assert triton_release_for("1.1.0", ServingConfig())["image"] == "nvcr.io/nvidia/tritonserver:25.12-trtllm-python-py3"
    unknown = triton_release_for("1.2.1", ServingConfig())
    assert unknown["image"] is None and "no Triton release with TRT-LLM 1.2.1" in unknown["source"]
    assert triton_release_for("1.2.1", ServingConfig(triton_image="x:1"))["image"] == "x:1"


def test_a_leftover_placeholder_would_fail_the_parse():
    """The check the tests rely on can fail: Triton's parser rejects a ${...} in a numeric field."""
    pb2 = model_config_pb2()
    with pytest.raises(text_format.ParseError):
        text_format.Parse('name: "x"\nmax_batch_size: ${triton_max_batch_size}\n', pb2.ModelConfig())
