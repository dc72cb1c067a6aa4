"""Triton model repository export: every config.pbtxt parses against Triton's ModelConfig protobuf."""

from __future__ import annotations

import functools
import importlib.util
import json
import shutil
from pathlib import Path

import pytest
from google.protobuf import text_format

from foundry.builders.trtllm import TrtllmBuilder
from foundry.compat import NodeTarget
from foundry.config import BuildConfig, ServingConfig
from foundry.errors import FoundryError, NotSupportedError
from foundry.hashing import MANIFEST_NAME, verify_manifest, write_manifest
from foundry.triton import (
    engine_logits_type,
    export_triton_repository,
    render_ensemble,
    render_postprocessing,
    render_preprocessing,
    render_tensorrt_llm,
    render_tensorrt_llm_bls,
)
from tests.trtllm_fakes import h100_node, install_fake_trtllm_build, write_trtllm_checkpoint

H100_1_2_1 = NodeTarget("1.2.1", "9.0")


@functools.lru_cache(maxsize=1)
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
            checkpoint,
            engine,
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


def pb2_type(name: str) -> int:
    return model_config_pb2().DataType.Value(name)


def declared(config, kind: str) -> dict:
    return {t.name: t for t in getattr(config, kind)}


# What the upstream code reads by name (NVIDIA/TensorRT-LLM triton_backend/all_models/inflight_batcher_llm/ and
# triton_backend/inflight_batcher_llm/src/): a key or tensor missing from a config fails at load or per request.
REQUIRED_PARAMETERS = {
    # model_instance_state.cc @0c8de69a: GetParameter without a default (getBatchingTypeFromParams,
    # getGuidedDecodingConfigFromParams)
    "tensorrt_llm": {"gpt_model_type", "tokenizer_dir", "xgrammar_tokenizer_info_path", "guided_decoding_backend"},
    # preprocessing/1/model.py @01259b15 initialize(): model_config['parameters'][key] indexed directly
    "preprocessing": {"tokenizer_dir", "multimodal_model_path"},
    "postprocessing": {"tokenizer_dir"},
}
# preprocessing/1/model.py @01259b15 initialize(): get_input/output_config_by_name(...)['data_type']
PREPROCESSING_LOOKUPS = {
    "input": {"EMBEDDING_BIAS_WORDS", "EMBEDDING_BIAS_WEIGHTS"},
    "output": {
        "INPUT_ID",
        "DECODER_INPUT_ID",
        "REQUEST_INPUT_LEN",
        "REQUEST_DECODER_INPUT_LEN",
        "BAD_WORDS_IDS",
        "STOP_WORDS_IDS",
        "OUT_END_ID",
        "OUT_PAD_ID",
        "OUT_PROMPT_TABLE_EXTRA_IDS",
        "PIXEL_VALUES",
        "IMAGE_SIZES",
    },
}
# tensorrt_llm_bls/1/lib/triton_decoder.py @07f3e442: requested_output_names and the tensors it sends
BLS_DECODER = {
    ("preprocessing", "output"): {
        "INPUT_ID",
        "DECODER_INPUT_ID",
        "REQUEST_INPUT_LEN",
        "REQUEST_DECODER_INPUT_LEN",
        "BAD_WORDS_IDS",
        "STOP_WORDS_IDS",
        "EMBEDDING_BIAS",
        "OUT_PAD_ID",
        "OUT_END_ID",
        "OUT_PROMPT_TABLE_EXTRA_IDS",
        "PIXEL_VALUES",
        "IMAGE_SIZES",
        "IS_VIDEO_INPUT",
        "VISION_INPUT_ID",
        "ATTENTION_MASK",
        "IMAGE_GRID_THW",
    },
    ("preprocessing", "input"): {
        "QUERY",
        "IMAGE_BYTES",
        "IMAGE_URL",
        "VIDEO_BYTES",
        "DECODER_QUERY",
        "REQUEST_OUTPUT_LEN",
        "BAD_WORDS_DICT",
        "STOP_WORDS_DICT",
        "EMBEDDING_BIAS_WORDS",
        "EMBEDDING_BIAS_WEIGHTS",
        "PAD_ID",
        "END_ID",
        "PROMPT_TABLE_EXTRA_ID",
    },
    ("tensorrt_llm", "output"): {
        "output_ids",
        "sequence_length",
        "cum_log_probs",
        "output_log_probs",
        "context_logits",
        "generation_logits",
        "batch_index",
        "sequence_index",
        "kv_cache_alloc_new_blocks",
        "kv_cache_reused_blocks",
        "kv_cache_alloc_total_blocks",
        "arrival_time_ns",
        "first_scheduled_time_ns",
        "first_token_time_ns",
        "last_token_time_ns",
        "acceptance_rate",
        "total_accepted_draft_tokens",
        "total_draft_tokens",
        "num_input_tokens",
        "num_output_tokens",
    },
    ("tensorrt_llm", "input"): {
        "input_ids",
        "decoder_input_ids",
        "input_lengths",
        "bad_words_list",
        "stop_words_list",
        "embedding_bias",
        "pad_id",
        "end_id",
        "prompt_table_extra_ids",
        "prompt_embedding_table",
        "prompt_vocab_size",
        "mrope_rotary_cos_sin",
        "mrope_position_deltas",
        "beam_width",
        "runtime_top_k",
        "runtime_top_p",
        "temperature",
        "len_penalty",
        "repetition_penalty",
        "min_tokens",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "return_log_probs",
        "streaming",
        "lora_task_id",
        "lora_weights",
        "lora_config",
        "exclude_input_in_output",
        "return_perf_metrics",
        "guided_decoding_guide_type",
        "guided_decoding_guide",
        "return_num_input_tokens",
        "return_num_output_tokens",
        "request_output_len",
        "draft_input_ids",
        "draft_logits",
        "return_context_logits",
        "return_generation_logits",
        "stop",
    },
    ("postprocessing", "input"): {"TOKENS_BATCH", "SEQUENCE_LENGTH"},
    ("postprocessing", "output"): {"OUTPUT"},
    ("tensorrt_llm_bls", "input"): {
        "text_input",
        "decoder_text_input",
        "image_input",
        "image_bytes_input",
        "image_url_input",
        "video_bytes_input",
        "max_tokens",
        "bad_words",
        "stop_words",
        "end_id",
        "pad_id",
        "top_k",
        "top_p",
        "temperature",
        "length_penalty",
        "repetition_penalty",
        "min_tokens",
        "presence_penalty",
        "frequency_penalty",
        "seed",
        "return_log_probs",
        "return_context_logits",
        "return_generation_logits",
        "beam_width",
        "stream",
        "prompt_embedding_table",
        "prompt_vocab_size",
        "prompt_table_extra_id",
        "embedding_bias_words",
        "embedding_bias_weights",
        "num_draft_tokens",
        "use_draft_logits",
        "lora_task_id",
        "lora_weights",
        "lora_config",
        "exclude_input_in_output",
        "return_perf_metrics",
        "guided_decoding_guide_type",
        "guided_decoding_guide",
        "return_num_input_tokens",
        "return_num_output_tokens",
    },
    ("tensorrt_llm_bls", "output"): {
        "text_output",
        "cum_log_probs",
        "output_log_probs",
        "context_logits",
        "generation_logits",
        "batch_index",
        "sequence_index",
        "kv_cache_alloc_new_blocks",
        "kv_cache_reused_blocks",
        "kv_cache_alloc_total_blocks",
        "arrival_time_ns",
        "first_scheduled_time_ns",
        "first_token_time_ns",
        "last_token_time_ns",
        "acceptance_rate",
        "total_accepted_draft_tokens",
        "total_draft_tokens",
        "num_input_tokens",
        "num_output_tokens",
    },
}


def dims_compatible(a, b) -> bool:
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b))


def ensemble_routing_problems(configs: dict) -> list[str]:
    """What Triton's ensemble validation (and the first request) would trip over: a step mapping a tensor its
    model does not declare, a required model input left unmapped, an ensemble tensor consumed before any step
    (or the ensemble's inputs) produces it, an ensemble output nobody produces, or a producer and a consumer
    that disagree on data type or rank."""
    ensemble = configs["ensemble"]
    produced = {t.name: (t.data_type, list(t.dims), "ensemble input") for t in ensemble.input}
    problems = []
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        inputs, outputs = declared(model, "input"), declared(model, "output")
        for model_tensor, tensor in step.input_map.items():
            if model_tensor not in inputs:
                problems.append(f"{step.model_name}: input_map key {model_tensor} is not a declared input")
            elif tensor not in produced:
                problems.append(f"{step.model_name}.{model_tensor} <- {tensor}: nothing produces {tensor} before")
            else:
                dtype, dims, source = produced[tensor]
                wanted = inputs[model_tensor]
                if dtype != wanted.data_type or not dims_compatible(dims, list(wanted.dims)):
                    problems.append(
                        f"{step.model_name}.{model_tensor} <- {tensor} ({source}): "
                        f"{dtype}{dims} vs {wanted.data_type}{list(wanted.dims)}"
                    )
        required = {name for name, t in inputs.items() if not t.optional}
        problems += [f"{step.model_name}: required input {name} unmapped" for name in required - set(step.input_map)]
        for model_tensor, tensor in step.output_map.items():
            if model_tensor not in outputs:
                problems.append(f"{step.model_name}: output_map key {model_tensor} is not a declared output")
                continue
            if tensor in produced:
                problems.append(f"{step.model_name}: {tensor} is produced twice")
            produced[tensor] = (outputs[model_tensor].data_type, list(outputs[model_tensor].dims), step.model_name)
    for output in ensemble.output:
        if output.name not in produced:
            problems.append(f"ensemble output {output.name} is produced by no step")
        elif produced[output.name][0] != output.data_type:
            problems.append(f"ensemble output {output.name}: {produced[output.name][0]} vs {output.data_type}")
    return problems


def assert_upstream_contracts(configs: dict) -> None:
    for model, keys in REQUIRED_PARAMETERS.items():
        assert keys <= set(configs[model].parameters), (model, keys - set(configs[model].parameters))
    for kind, names in PREPROCESSING_LOOKUPS.items():
        assert names <= set(declared(configs["preprocessing"], kind)), (kind, names)
    for config in configs.values():
        for kind in ("input", "output"):
            names = [t.name for t in getattr(config, kind)]
            assert len(names) == len(set(names)), (config.name, kind)
    assert ensemble_routing_problems(configs) == []
    if "tensorrt_llm_bls" in configs:
        for (model, kind), names in BLS_DECODER.items():
            missing = names - set(declared(configs[model], kind))
            assert not missing, (model, kind, missing)


def test_export_writes_a_parseable_repository_filled_from_engine_and_config(sealed_engine, tmp_path):
    serving = ServingConfig(
        decoupled=True,
        kv_cache_free_gpu_mem_fraction=0.85,
        enable_kv_cache_reuse=True,
        enable_chunked_context=True,
        batch_scheduler_policy="max_utilization",
        multi_block_mode=False,
        max_queue_delay_microseconds=250,
        preprocessing_instance_count=3,
        postprocessing_instance_count=2,
        tensorrt_llm_bls=True,
        bls_instance_count=4,
        triton_max_batch_size=8,
        max_queue_size=64,
    )
    record = export_triton_repository(sealed_engine, tmp_path / "repo", serving, node=H100_1_2_1, mount="/models")
    configs = parse_all(tmp_path / "repo")
    assert sorted(configs) == ["ensemble", "postprocessing", "preprocessing", "tensorrt_llm", "tensorrt_llm_bls"]
    assert_upstream_contracts(configs)

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
    # the backend reads the queue bound from dynamic_batching, not from a parameter
    assert trt.dynamic_batching.default_queue_policy.max_queue_size == 64 and "max_queue_size" not in trt.parameters
    assert configs["preprocessing"].dynamic_batching.default_queue_policy.max_queue_size == 64
    assert "max_queue_size" not in configs["preprocessing"].parameters
    assert configs["postprocessing"].HasField("dynamic_batching")
    assert parameter(trt, "guided_decoding_backend") == "" and parameter(trt, "xgrammar_tokenizer_info_path") == ""
    trt_inputs = declared(trt, "input")
    assert trt_inputs["seed"].data_type == pb2_type("TYPE_UINT64") and trt_inputs["min_tokens"].optional
    assert not {"random_seed", "min_length"} & set(trt_inputs)
    assert all(
        trt_inputs[name].HasField("reshape") and not trt_inputs[name].reshape.shape
        for name in ("stop", "streaming", "seed", "min_tokens", "input_lengths", "request_output_len")
    )
    assert declared(trt, "output")["context_logits"].data_type == pb2_type("TYPE_FP32")  # no logits_dtype: float32
    for model in ("ensemble", "tensorrt_llm_bls"):
        assert {"seed", "min_tokens"} <= set(declared(configs[model], "input")), model
        assert not {"random_seed", "min_length"} & set(declared(configs[model], "input")), model
    pre = configs["preprocessing"]
    assert parameter(pre, "multimodal_model_path") == ""
    assert parameter(pre, "gpt_model_path") == "/models/tensorrt_llm/1/engine"
    assert parameter(pre, "add_special_tokens") == "false"
    assert configs["preprocessing"].instance_group[0].count == 3
    assert configs["postprocessing"].instance_group[0].count == 2
    assert configs["tensorrt_llm_bls"].instance_group[0].count == 4
    assert parameter(configs["preprocessing"], "tokenizer_dir") == "/models/tokenizer"

    ensemble = configs["ensemble"]
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == [
        "preprocessing",
        "tensorrt_llm",
        "postprocessing",
    ]
    pre_step, trt_step, _ = ensemble.ensemble_scheduling.step
    assert (
        pre_step.output_map["REQUEST_OUTPUT_LEN"] == trt_step.input_map["request_output_len"] == "_REQUEST_OUTPUT_LEN"
    )
    assert trt_step.input_map["seed"] == "seed" and trt_step.input_map["min_tokens"] == "min_tokens"
    # every tensor the ensemble routes exists on the model it routes to
    for step in ensemble.ensemble_scheduling.step:
        model = configs[step.model_name]
        assert set(step.input_map) <= {t.name for t in model.input}, step.model_name
        assert set(step.output_map) <= {t.name for t in model.output}, step.model_name

    repo = tmp_path / "repo"
    assert (repo / "tensorrt_llm/1/engine/rank0.engine").is_file()
    assert (repo / "tokenizer/tokenizer.json").is_file()
    assert record["engine"]["environment"]["trtllm_version"] == "1.2.1"
    assert record["triton_container"]["image"] == "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"
    manifest = json.loads((repo / MANIFEST_NAME).read_text())
    assert manifest["content_hash"] == record["content_hash"] and manifest["export"]["models"] == record["models"]
    readme = (repo / "README.md").read_text()
    assert "TRT-LLM | 1.2.1" in readme and "triton_backend/all_models/inflight_batcher_llm" in readme
    verify_manifest(repo)


def test_streaming_off_and_defaults(sealed_engine, tmp_path):
    export_triton_repository(
        sealed_engine, tmp_path / "repo", ServingConfig(decoupled=False, triton_image="img:tag"), node=H100_1_2_1
    )
    configs = parse_all(tmp_path / "repo")
    assert sorted(configs) == ["ensemble", "postprocessing", "preprocessing", "tensorrt_llm"]
    assert_upstream_contracts(configs)
    assert configs["tensorrt_llm"].model_transaction_policy.decoupled is False
    assert configs["tensorrt_llm"].dynamic_batching.default_queue_policy.max_queue_size == 0  # 0 = unbounded
    assert configs["tensorrt_llm"].max_batch_size == 16  # the engine's build.max_batch_size
    assert (
        json.loads((tmp_path / "repo" / MANIFEST_NAME).read_text())["export"]["triton_container"]["image"] == "img:tag"
    )


def test_export_refuses_another_node(sealed_engine, tmp_path):
    with pytest.raises(
        FoundryError, match="engine built with TRT-LLM 1.2.1 on compute 9.0; this node has 1.1.0 on compute 8.9"
    ):
        export_triton_repository(sealed_engine, tmp_path / "repo", ServingConfig(), node=NodeTarget("1.1.0", "8.9"))
    assert not (tmp_path / "repo").exists()


def test_export_refuses_an_engine_whose_tensorrt_differs_from_the_container(sealed_engine, tmp_path):
    """A plan built with TensorRT 10.13 would not deserialize in 26.07's TensorRT 10.14; a user-chosen
    image (serving.triton_image) is the user's call and is not second-guessed."""
    engine = tmp_path / "engine"
    shutil.copytree(sealed_engine, engine)
    (engine / "foundry-manifest.json").unlink()
    info = json.loads((engine / "engine.json").read_text())
    info["environment"]["tensorrt_version"] = "10.13.3.9"
    (engine / "engine.json").write_text(json.dumps(info))
    write_manifest(engine, {"kind": "engine"})  # as if built in a TensorRT 10.13 container
    with pytest.raises(FoundryError, match=r"engine built with TensorRT 10.13.3.9 .* ships TensorRT 10.14.1.48"):
        export_triton_repository(engine, tmp_path / "repo", ServingConfig(), node=H100_1_2_1)
    assert not (tmp_path / "repo").exists()
    image = "registry.example/tritonserver:custom-trt-10.13"
    record = export_triton_repository(engine, tmp_path / "repo2", ServingConfig(triton_image=image), node=H100_1_2_1)
    assert record["triton_container"]["image"] == image


def test_export_refuses_a_reference_engine(tmp_path):
    (tmp_path / "engine").mkdir()
    (tmp_path / "engine" / "engine.json").write_text(json.dumps({"backend": "reference"}))
    with pytest.raises(NotSupportedError, match="executes TensorRT-LLM engines only"):
        export_triton_repository(tmp_path / "engine", tmp_path / "repo", ServingConfig(), node=H100_1_2_1)


def test_export_refuses_too_large_triton_batch(sealed_engine, tmp_path):
    with pytest.raises(
        FoundryError, match="serving.triton_max_batch_size = 32 exceeds the engine's max_batch_size = 16"
    ):
        export_triton_repository(
            sealed_engine, tmp_path / "repo", ServingConfig(triton_max_batch_size=32), node=H100_1_2_1
        )


def test_triton_release_table():
    from foundry.triton import triton_release_for

    def image(trtllm: str) -> str | None:
        return triton_release_for(trtllm, ServingConfig())["image"]

    # the latest trtllm-python-py3 release per TRT-LLM version (compatibility.md @0f963c9a)
    assert image("1.2.1") == "nvcr.io/nvidia/tritonserver:26.07-trtllm-python-py3"
    assert image("1.2.0") == "nvcr.io/nvidia/tritonserver:26.03-trtllm-python-py3"
    assert image("1.1.0") == "nvcr.io/nvidia/tritonserver:26.02-trtllm-python-py3"
    release = triton_release_for("1.2.1", ServingConfig())
    assert (release["tensorrt_version"], release["cuda_version"]) == ("10.14.1.48", "13.1.0.036")
    assert triton_release_for("1.1.0", ServingConfig())["tensorrt_version"] == "10.13.3.9"
    unknown = triton_release_for("1.3.0", ServingConfig())
    assert unknown["image"] is None and "no Triton release with TRT-LLM 1.3.0" in unknown["source"]
    assert "newest row 26.07 = TRT-LLM 1.2.1" in unknown["source"]
    assert triton_release_for("1.2.1", ServingConfig(triton_image="x:1"))["image"] == "x:1"


def test_logits_dtype_follows_the_engine_and_stays_consistent(tmp_path):
    """The backend takes the logits type from its context/generation_logits outputs; an fp16-logits engine gets
    TYPE_FP16 there and in the ensemble/BLS outputs that pass them through."""
    (tmp_path / "config.json").write_text(
        json.dumps({"pretrained_config": {"logits_dtype": "float16"}, "build_config": {}})
    )
    logits = engine_logits_type(tmp_path)
    assert logits == "FP16"
    serving = ServingConfig()
    pb2 = model_config_pb2()
    texts = {
        "preprocessing": render_preprocessing(4, "/m/tokenizer", "/m/engine", serving),
        "tensorrt_llm": render_tensorrt_llm(4, "/m/engine", 1, logits, serving),
        "postprocessing": render_postprocessing(4, "/m/tokenizer", serving),
        "ensemble": render_ensemble(4, logits),
        "tensorrt_llm_bls": render_tensorrt_llm_bls(4, logits, serving),
    }
    configs = {name: text_format.Parse(text, pb2.ModelConfig()) for name, text in texts.items()}
    assert_upstream_contracts(configs)
    for model in ("tensorrt_llm", "ensemble", "tensorrt_llm_bls"):
        assert declared(configs[model], "output")["generation_logits"].data_type == pb2.TYPE_FP16, model
    (tmp_path / "config.json").write_text(
        json.dumps({"pretrained_config": {"logits_dtype": "int8"}, "build_config": {}})
    )
    with pytest.raises(FoundryError, match="logits_dtype 'int8' has no Triton type"):
        engine_logits_type(tmp_path)


def test_the_routing_check_catches_a_misnamed_tensor():
    """The cross-model check can fail: the pre-fix output name OUT_REQUEST_OUTPUT_LEN (so _REQUEST_OUTPUT_LEN was
    never produced) and an undeclared random_seed are both reported."""
    pb2 = model_config_pb2()
    serving = ServingConfig()
    output_len = '"REQUEST_OUTPUT_LEN"\n    data_type: TYPE_INT32\n    dims: [ -1 ]'  # the output, not the input
    texts = {
        "preprocessing": render_preprocessing(4, "/t", "/e", serving).replace(output_len, '"OUT_' + output_len[1:]),
        "tensorrt_llm": render_tensorrt_llm(4, "/e", 1, "FP32", serving),
        "postprocessing": render_postprocessing(4, "/t", serving),
        "ensemble": render_ensemble(4, "FP32").replace('key: "seed"', 'key: "random_seed"'),
    }
    configs = {name: text_format.Parse(text, pb2.ModelConfig()) for name, text in texts.items()}
    problems = "\n".join(ensemble_routing_problems(configs))
    assert "preprocessing: output_map key REQUEST_OUTPUT_LEN is not a declared output" in problems
    assert "nothing produces _REQUEST_OUTPUT_LEN" in problems
    assert "tensorrt_llm: input_map key random_seed is not a declared input" in problems


def test_a_leftover_placeholder_would_fail_the_parse():
    """The check the tests rely on can fail: Triton's parser rejects a ${...} in a numeric field."""
    pb2 = model_config_pb2()
    with pytest.raises(text_format.ParseError):
        text_format.Parse('name: "x"\nmax_batch_size: ${triton_max_batch_size}\n', pb2.ModelConfig())
