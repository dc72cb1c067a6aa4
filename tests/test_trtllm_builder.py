"""The trtllm builder at its process boundary: a fake trtllm-build (1.2.x flags) on PATH, a described node."""

from __future__ import annotations

import json

import pytest

from foundry.builders.base import ENGINE_INFO, guard_trtllm_engine, load_engine
from foundry.builders.trtllm import TrtllmBuilder, trtllm_build_argv
from foundry.compat import NodeTarget, TrtllmEnvironment, check_engine_compatible
from foundry.config import BuildConfig, parse_config
from foundry.errors import FoundryError, NotSupportedError
from foundry.hashing import MANIFEST_NAME, write_manifest
from tests.trtllm_fakes import FLAGS_FIXTURE, h100_node, install_fake_trtllm_build, write_trtllm_checkpoint


@pytest.fixture()
def fake_trtllm(tmp_path, monkeypatch):
    """`trtllm-build` first on PATH; returns the file where the fake records its argv."""
    bin_dir = tmp_path / "bin"
    install_fake_trtllm_build(bin_dir)
    monkeypatch.setenv("PATH", f"{bin_dir}:{__import__('os').environ['PATH']}")
    argv_log = tmp_path / "argv.json"
    monkeypatch.setenv("FAKE_TRTLLM_ARGV_LOG", str(argv_log))
    monkeypatch.setenv("FAKE_TRTLLM_MODE", "ok")
    monkeypatch.setenv("FAKE_TRTLLM_VERSION", "1.2.1")
    return argv_log


def trtllm_build(tmp_path, **fields) -> BuildConfig:
    defaults = {
        "max_seq_len": 1024,
        "max_input_len": 512,
        "max_batch_size": 4,
        "max_num_tokens": 2048,
        "timing_cache_dir": str(tmp_path / "timing-cache"),
    }
    return BuildConfig(backend="trtllm", **{**defaults, **fields})


def test_builds_engine_and_records_node(tmp_path, fake_trtllm):
    samples = iter([10, 30, 20])
    node = h100_node(memory_used=lambda: [next(samples, 20) * 1024**2])
    checkpoint = write_trtllm_checkpoint(tmp_path / "ckpt")
    info = TrtllmBuilder(node).build(checkpoint, tmp_path / "engine", trtllm_build(tmp_path, strip_plan=True))

    argv = json.loads(fake_trtllm.read_text())
    assert argv[argv.index("--kv_cache_type") + 1] == "paged"
    assert argv[argv.index("--max_input_len") + 1] == "512"
    assert argv[argv.index("--gemm_plugin") + 1] == "auto"
    assert "--strip_plan" in argv and "--monitor_memory" in argv
    assert "--paged_kv_cache" not in argv and "--multi_block_mode" not in argv
    assert "--input_timing_cache" not in argv  # first build of this model on this GPU

    engine = tmp_path / "engine"
    assert (engine / "rank0.engine").is_file() and (engine / "timing.cache").is_file()
    recorded = json.loads((engine / ENGINE_INFO).read_text())
    assert recorded == info
    assert info["environment"]["trtllm_version"] == "1.2.1" and info["environment"]["compute_capability"] == "9.0"
    assert info["environment"]["gpu_name"] == "NVIDIA H100 80GB HBM3"
    assert info["peak_gpu_memory_bytes"] == 30 * 1024**2
    assert info["peak_host_rss_bytes"] > 0
    assert info["build_config"]["max_num_tokens"] == 2048 and info["engine_build_config"]["kv_cache_type"] == "PAGED"
    assert info["timing_cache"]["reused"] is False and len(info["checkpoint_content_hash"]) == 64


def test_timing_cache_is_reused_by_the_next_build_of_the_same_model_and_gpu(tmp_path, fake_trtllm):
    checkpoint = write_trtllm_checkpoint(tmp_path / "ckpt")
    build = trtllm_build(tmp_path)
    TrtllmBuilder(h100_node()).build(checkpoint, tmp_path / "e1", build)
    info = TrtllmBuilder(h100_node()).build(checkpoint, tmp_path / "e2", build)
    argv = json.loads(fake_trtllm.read_text())
    assert argv[argv.index("--input_timing_cache") + 1] == info["timing_cache"]["path"]
    assert info["timing_cache"]["reused"] is True
    assert (tmp_path / "e2" / "timing.cache").read_bytes().endswith(b"(reused)")
    # another GPU architecture gets its own cache
    other = TrtllmBuilder(h100_node(capability="8.9")).build(checkpoint, tmp_path / "e3", build)
    assert other["timing_cache"]["reused"] is False


def test_tensor_parallel_checkpoint_builds_one_engine_per_rank(tmp_path, fake_trtllm):
    checkpoint = write_trtllm_checkpoint(tmp_path / "ckpt", tp_size=2)
    info = TrtllmBuilder(h100_node(gpu_count=2)).build(
        checkpoint, tmp_path / "engine", trtllm_build(tmp_path, workers=2)
    )
    assert info["world_size"] == 2 and info["tp_size"] == 2
    assert sorted(p.name for p in (tmp_path / "engine").glob("rank*.engine")) == ["rank0.engine", "rank1.engine"]


def test_every_emitted_flag_is_in_the_1_2_fixture():
    spec = json.loads(FLAGS_FIXTURE.read_text())
    for fields in (
        {},
        {
            "strip_plan": True,
            "use_paged_context_fmha": False,
            "remove_input_padding": False,
            "gemm_plugin": "disable",
            "max_num_tokens": 4096,
        },
    ):
        build = BuildConfig(backend="trtllm", **fields)
        argv = trtllm_build_argv(
            __import__("pathlib").Path("/c"),
            __import__("pathlib").Path("/o"),
            build,
            None,
            __import__("pathlib").Path("/o/t"),
        )
        flags = [a for a in argv[1:] if a.startswith("--")]
        assert set(flags) <= set(spec["flags"]), set(flags) - set(spec["flags"])
        for flag in flags:
            choices = spec["flags"][flag].get("choices")
            if choices:
                assert argv[argv.index(flag) + 1] in choices, flag


def test_build_oom_names_the_knobs(tmp_path, fake_trtllm, monkeypatch):
    monkeypatch.setenv("FAKE_TRTLLM_MODE", "oom")
    checkpoint = write_trtllm_checkpoint(tmp_path / "ckpt")
    with pytest.raises(FoundryError, match="out of GPU memory") as error:
        TrtllmBuilder(h100_node()).build(checkpoint, tmp_path / "engine", trtllm_build(tmp_path))
    assert "build.max_num_tokens (now 2048)" in str(error.value) and "build.max_batch_size" in str(error.value)
    assert "build.workers" in str(error.value)


def test_build_crash_shows_the_log_tail(tmp_path, fake_trtllm, monkeypatch):
    monkeypatch.setenv("FAKE_TRTLLM_MODE", "crash")
    checkpoint = write_trtllm_checkpoint(tmp_path / "ckpt")
    with pytest.raises(FoundryError, match="exit code 1") as error:
        TrtllmBuilder(h100_node()).build(checkpoint, tmp_path / "engine", trtllm_build(tmp_path))
    assert "Engine building failed" in str(error.value)


def test_missing_rank_engine_is_an_error(tmp_path, fake_trtllm, monkeypatch):
    monkeypatch.setenv("FAKE_TRTLLM_MODE", "missing_rank")
    checkpoint = write_trtllm_checkpoint(tmp_path / "ckpt", tp_size=2)
    with pytest.raises(FoundryError, match=r"engine files missing or empty: \['rank1.engine'\]"):
        TrtllmBuilder(h100_node(gpu_count=2)).build(checkpoint, tmp_path / "engine", trtllm_build(tmp_path))


def test_trtllm_build_of_another_installation_is_refused(tmp_path, fake_trtllm, monkeypatch):
    monkeypatch.setenv("FAKE_TRTLLM_VERSION", "1.1.0")
    checkpoint = write_trtllm_checkpoint(tmp_path / "ckpt")
    with pytest.raises(FoundryError, match="engine version 1.1.0 but tensorrt_llm 1.2.1"):
        TrtllmBuilder(h100_node()).build(checkpoint, tmp_path / "engine", trtllm_build(tmp_path))


@pytest.mark.parametrize(
    ("checkpoint_fields", "build_fields", "node_fields", "message"),
    [
        ({"max_position_embeddings": 512}, {}, {}, "build.max_seq_len: 1024 exceeds max_position_embeddings 512"),
        ({"rank_files": 1, "tp_size": 2}, {}, {"gpu_count": 2}, r"rank files missing .*\['rank1.safetensors'\]"),
        ({"rank_files": 3, "tp_size": 2}, {}, {"gpu_count": 2}, r"extra \['rank2.safetensors'\]"),
        ({"tp_size": 2}, {}, {}, "1 GPU\\(s\\) visible but the build needs 2"),
        ({"quant_algo": "W4A8_AWQ"}, {}, {}, "quant_algo 'W4A8_AWQ' is not supported"),
        ({"quant_algo": "INT8"}, {}, {}, "quant_algo 'INT8' is not supported"),
        ({"kv_cache_quant_algo": "NVFP4"}, {}, {}, "kv_cache_quant_algo 'NVFP4' is not supported"),
        (
            {"dtype": "bfloat16"},
            {"gemm_plugin": "float16"},
            {},
            "build.gemm_plugin = float16 but the checkpoint's dtype is bfloat16",
        ),
        (
            {},
            {"gpt_attention_plugin": "bfloat16"},
            {},
            "build.gpt_attention_plugin = bfloat16 but the checkpoint's dtype is float16",
        ),
        ({}, {"gemm_plugin": "fp8"}, {}, "build.gemm_plugin = fp8 needs an FP8 checkpoint"),
        ({"quant_algo": "FP8"}, {}, {"capability": "8.0"}, "FP8 quantization needs compute capability >= 8.9"),
        (
            {"quant_algo": "W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN"},
            {},
            {"capability": "10.0"},
            "SmoothQuant plugins, which do not support compute capability >= 10.0",
        ),
        (
            {},
            {"use_paged_context_fmha": False, "max_num_tokens": 256},
            {},
            "build.max_num_tokens = 256 < build.max_input_len = 512",
        ),
    ],
)
def test_bad_input_is_refused_before_trtllm_build_runs(
    tmp_path, fake_trtllm, checkpoint_fields, build_fields, node_fields, message
):
    checkpoint = write_trtllm_checkpoint(tmp_path / "ckpt", **checkpoint_fields)
    build = trtllm_build(tmp_path, **build_fields)
    with pytest.raises(FoundryError, match=message):
        TrtllmBuilder(h100_node(**node_fields)).build(checkpoint, tmp_path / "engine", build)
    assert not fake_trtllm.exists()  # trtllm-build never started


def test_tp_pp_mismatch_in_mapping(tmp_path, fake_trtllm):
    checkpoint = write_trtllm_checkpoint(tmp_path / "ckpt", tp_size=2)
    config = json.loads((checkpoint / "config.json").read_text())
    config["mapping"]["world_size"] = 4
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(FoundryError, match=r"world_size = 4 but tp_size × pp_size = 2 × 1 = 2"):
        TrtllmBuilder(h100_node(gpu_count=4)).build(checkpoint, tmp_path / "engine", trtllm_build(tmp_path))


@pytest.mark.parametrize(
    ("node", "found"),
    [
        (TrtllmEnvironment(None, None, None, None), "tensorrt_llm is not installed"),
        (h100_node(trtllm_version="1.1.0"), "tensorrt_llm 1.1.0 is installed but engines need the 1.2.x line"),
        (h100_node(gpu_count=0), "no NVIDIA GPU is visible"),
    ],
)
def test_environment_check_says_what_was_found_and_what_is_needed(tmp_path, fake_trtllm, node, found):
    with pytest.raises(NotSupportedError, match=found) as error:
        TrtllmBuilder(node).build(
            write_trtllm_checkpoint(tmp_path / "ckpt"), tmp_path / "engine", trtllm_build(tmp_path)
        )
    assert "TensorRT-LLM 1.2.x release container" in str(error.value)
    assert not fake_trtllm.exists()


def test_environment_check_without_trtllm_build_on_path(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(NotSupportedError, match="trtllm-build is not on PATH"):
        TrtllmBuilder(h100_node()).check_environment()


def test_this_machine_refuses_the_trtllm_backend():
    """No TensorRT-LLM here (CPU CI): the real probe must say so, before any work."""
    with pytest.raises(NotSupportedError, match="tensorrt_llm is not installed"):
        TrtllmBuilder().check_environment()


def test_config_validates_trtllm_and_serving_fields():
    with pytest.raises(
        FoundryError, match="build: Value error, max_input_len \\(600\\) must be <= max_seq_len \\(512\\)"
    ):
        parse_config({"build": {"max_seq_len": 512, "max_input_len": 600}})
    with pytest.raises(FoundryError, match="build.gpt_attention_plugin"):
        parse_config({"build": {"gpt_attention_plugin": "disable"}})
    with pytest.raises(FoundryError, match="build.multi_block_mode: unknown key"):
        parse_config({"build": {"multi_block_mode": True}})
    with pytest.raises(
        FoundryError, match="serving.triton_max_batch_size \\(16\\) exceeds build.max_batch_size \\(8\\)"
    ):
        parse_config({"serving": {"triton_max_batch_size": 16}})
    with pytest.raises(FoundryError, match="serving.enable_kv_cache_reuse needs build.use_paged_context_fmha"):
        parse_config({"build": {"use_paged_context_fmha": False}, "serving": {"enable_kv_cache_reuse": True}})


# ---- compatibility guard --------------------------------------------------------------------------------


@pytest.fixture()
def built_engine(tmp_path, fake_trtllm):
    checkpoint = write_trtllm_checkpoint(tmp_path / "ckpt")
    engine = tmp_path / "engine"
    TrtllmBuilder(h100_node()).build(checkpoint, engine, trtllm_build(tmp_path))
    write_manifest(engine, {"kind": "engine"})
    return engine


def test_guard_refuses_another_trtllm_version_or_gpu_with_the_precise_mismatch(built_engine):
    info = json.loads((built_engine / ENGINE_INFO).read_text())
    check_engine_compatible(info, NodeTarget("1.2.1", "9.0"), built_engine)  # the building node itself
    with pytest.raises(
        FoundryError, match="engine built with TRT-LLM 1.2.1 on compute 9.0; this node has 1.1.0 on compute 8.9"
    ):
        guard_trtllm_engine(built_engine, info, NodeTarget("1.1.0", "8.9"))
    with pytest.raises(FoundryError, match="this node has 1.2.1 on compute 8.0"):
        guard_trtllm_engine(built_engine, info, NodeTarget("1.2.1", "8.0"))


def test_load_engine_on_this_node_refuses_before_tensorrt_sees_the_plan(built_engine):
    with pytest.raises(FoundryError, match="this node has no TRT-LLM on compute none \\(no GPU\\)"):
        load_engine(built_engine)


def test_guard_refuses_a_tampered_engine(built_engine):
    (built_engine / "rank0.engine").write_bytes(b"patched plan")
    info = json.loads((built_engine / ENGINE_INFO).read_text())
    with pytest.raises(FoundryError, match="rank0.engine: SHA-256 .* does not match the manifest"):
        guard_trtllm_engine(built_engine, info, NodeTarget("1.2.1", "9.0"))
    assert (built_engine / MANIFEST_NAME).is_file()


def test_node_target_parse():
    assert NodeTarget.parse("1.2.1@9.0") == NodeTarget("1.2.1", "9.0")
    with pytest.raises(FoundryError, match="expected TRTLLM_VERSION@COMPUTE_CAPABILITY"):
        NodeTarget.parse("1.2.1")


def test_gpu_step_options_for_the_trtllm_build(monkeypatch):
    from stacks.gpu_build_settings import IMAGE_ENV, build_step_options

    options = build_step_options(BuildConfig(backend="trtllm", workers=1), world_size=2, step_operator="k8s-gpu")
    assert options["settings"]["resources"].gpu_count == 2
    assert options["settings"]["docker"].parent_image.startswith("nvcr.io/nvidia/tensorrt-llm/release:1.2.")
    assert options["step_operator"] == "k8s-gpu"
    assert build_step_options(BuildConfig(backend="reference"), world_size=2) == {}
    monkeypatch.setenv(IMAGE_ENV, "nvcr.io/nvidia/tensorrt-llm/release:1.1.0")
    with pytest.raises(FoundryError, match="use a 1.2.x release image"):
        build_step_options(BuildConfig(backend="trtllm"), world_size=1)


def test_run_and_schedule_place_the_served_steps_the_same_way():
    """stacks/placement.py is the one mechanism: a TensorRT-LLM engine is built, benchmarked and
    evaluated (both serve it) in the TensorRT-LLM image on the step operator; the reference backend
    on a plain stack gets no placement."""
    from types import SimpleNamespace

    from zenml.enums import StackComponentType

    from stacks.placement import step_placements

    operator = SimpleNamespace(name="gpu-operator")
    stack = SimpleNamespace(labels={}, components={StackComponentType.STEP_OPERATOR: [operator]})
    placements = step_placements(BuildConfig(backend="trtllm"), 2, stack)
    assert set(placements) == {"build_engine", "benchmark_engine", "evaluate_engine_quality"}
    for options in placements.values():
        assert options["step_operator"] == "gpu-operator" and options["settings"]["resources"].gpu_count == 2
        assert options["settings"]["docker"].parent_image.startswith("nvcr.io/nvidia/tensorrt-llm/release:1.2.")
    assert step_placements(BuildConfig(backend="reference"), 1, SimpleNamespace(labels={}, components={})) == {}
