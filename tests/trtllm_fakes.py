"""Test doubles at TensorRT-LLM's process boundary: a fake `trtllm-build`, a fake `trtllm-serve`
(tests/fake_trtllm_serve.py) and a described TRT-LLM node.

The fake is a Python script written into a temp dir that a fixture puts first on PATH. It parses its
argv with argparse built from tests/fixtures/trtllm_build_1_2_flags.json (the 1.2.x flags and their
choices, taken from TensorRT-LLM's tensorrt_llm/commands/build.py and plugin/plugin.py), refuses
deprecated and removed flags, checks the checkpoint directory like trtllm-build does (config.json,
one rank{r}.safetensors per rank of the mapping), and writes config.json (version, pretrained_config,
build_config) plus rank{r}.engine. FAKE_TRTLLM_MODE selects a failure: oom, missing_rank, crash.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

from foundry.compat import GpuInfo, TrtllmEnvironment

FLAGS_FIXTURE = Path(__file__).parent / "fixtures" / "trtllm_build_1_2_flags.json"

FAKE_TRTLLM_BUILD = r"""#!{python}
import argparse, json, os, sys
from pathlib import Path

spec = json.loads(Path({fixture!r}).read_text())
argv = sys.argv[1:]
Path(os.environ["FAKE_TRTLLM_ARGV_LOG"]).write_text(json.dumps(argv))
for flag, why in {{**spec["deprecated"], **spec["removed"]}}.items():
    if flag in argv:
        print(f"fake trtllm-build: {{flag}} must not be emitted for 1.2.x: {{why}}", file=sys.stderr)
        sys.exit(64)
parser = argparse.ArgumentParser(prog="trtllm-build")
for flag, meta in spec["flags"].items():
    if meta["type"] == "store_true":
        parser.add_argument(flag, action="store_true")
    else:
        parser.add_argument(flag, type=int if meta["type"] == "int" else str, choices=meta.get("choices"))
args = parser.parse_args(argv)  # argparse exits 2 on an unknown flag or a bad choice, like trtllm-build

ckpt = Path(args.checkpoint_dir)
config = json.loads((ckpt / "config.json").read_text())
world = config["mapping"]["world_size"]
for rank in range(world):
    assert (ckpt / f"rank{{rank}}.safetensors").is_file(), f"rank{{rank}}.safetensors missing"
mode = os.environ.get("FAKE_TRTLLM_MODE", "ok")
print("[TensorRT-LLM] TensorRT LLM version: " + os.environ.get("FAKE_TRTLLM_VERSION", "1.2.1"))
if mode == "oom":
    print("[TensorRT-LLM][ERROR] [TRT] IBuilder::buildSerializedNetwork: Error Code 2: OutOfMemory "
          "(Requested size was 34359738368 bytes.) CUDA runtime error in cudaMalloc: out of memory")
    sys.exit(1)
if mode == "crash":
    print("Traceback (most recent call last):\nAssertionError: Engine building failed, please check error log.")
    sys.exit(1)
out = Path(args.output_dir)
out.mkdir(parents=True, exist_ok=True)
build_config = {{
    "max_input_len": args.max_input_len, "max_seq_len": args.max_seq_len, "max_batch_size": args.max_batch_size,
    "max_beam_width": args.max_beam_width, "max_num_tokens": args.max_num_tokens, "kv_cache_type": args.kv_cache_type.upper(),
    "use_strip_plan": args.strip_plan, "monitor_memory": args.monitor_memory,
    "plugin_config": {{"dtype": config["dtype"], "gemm_plugin": args.gemm_plugin, "gpt_attention_plugin": args.gpt_attention_plugin,
                      "use_paged_context_fmha": args.use_paged_context_fmha == "enable",
                      "remove_input_padding": args.remove_input_padding == "enable",
                      "context_fmha": args.context_fmha == "enable"}},
}}
(out / "config.json").write_text(json.dumps({{"version": os.environ.get("FAKE_TRTLLM_VERSION", "1.2.1"),
                                              "pretrained_config": config, "build_config": build_config}}))
for rank in range(world):
    if mode == "missing_rank" and rank == world - 1:
        continue
    # The "plan" is the rank's checkpoint bytes, so the fake trtllm-serve can execute it for real.
    (out / f"rank{{rank}}.engine").write_bytes((ckpt / f"rank{{rank}}.safetensors").read_bytes())
if args.output_timing_cache:
    reused = bool(args.input_timing_cache) and Path(args.input_timing_cache).is_file()
    Path(args.output_timing_cache).write_bytes(b"timing cache" + (b" (reused)" if reused else b""))
print("Total time of building all engines: 00:00:01")
"""


def install_fake_trtllm_build(bin_dir: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "trtllm-build"
    script.write_text(FAKE_TRTLLM_BUILD.format(python=sys.executable, fixture=str(FLAGS_FIXTURE)))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


FAKE_TRTLLM_SERVE = """#!{python}
import sys
sys.path.insert(0, {root!r})
from tests.fake_trtllm_serve import main
main(sys.argv[1:])
"""

# A described H100 node in the TensorRT-LLM 1.2.1 release image, for a pipeline run in a subprocess:
# NVML answers for one H100 and the tensorrt_llm / tensorrt distributions report their versions.
# Put its folder first on PYTHONPATH (it shadows nvidia-ml-py's pynvml).
FAKE_NVML = """\"\"\"A described NVIDIA H100 (tests only): stands in for NVML on a machine without a GPU.\"\"\"


class NVMLError(Exception):
    pass


class _Memory:
    total, used, free = 80 * 1024**3, 1024**3, 79 * 1024**3


def nvmlInit():
    pass


def nvmlShutdown():
    pass


def nvmlSystemGetDriverVersion():
    return "580.95.05"


def nvmlSystemGetCudaDriverVersion_v2():
    return 13000


def nvmlDeviceGetCount():
    return 1


def nvmlDeviceGetHandleByIndex(index):
    return index


def nvmlDeviceGetCudaComputeCapability(handle):
    return 9, 0


def nvmlDeviceGetName(handle):
    return "NVIDIA H100 80GB HBM3"


def nvmlDeviceGetMemoryInfo(handle):
    return _Memory()


def __getattr__(name):  # telemetry queries this node cannot answer
    raise NVMLError(f"{name} is not described by the fake node")
"""


def install_fake_trtllm_serve(bin_dir: Path) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    script = bin_dir / "trtllm-serve"
    script.write_text(FAKE_TRTLLM_SERVE.format(python=sys.executable, root=str(Path(__file__).resolve().parents[1])))
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script


def install_fake_node(directory: Path, trtllm_version: str = "1.2.1", tensorrt_version: str = "10.14.1.48") -> Path:
    """A folder for PYTHONPATH that makes this machine probe as an H100 TensorRT-LLM node."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "pynvml.py").write_text(FAKE_NVML)
    for name, version in (("tensorrt_llm", trtllm_version), ("tensorrt", tensorrt_version)):
        dist = directory / f"{name}-{version}.dist-info"
        dist.mkdir(exist_ok=True)
        (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    return directory


def h100_node(
    gpu_count: int = 1, trtllm_version: str = "1.2.1", capability: str = "9.0", memory_used=None
) -> TrtllmEnvironment:
    """A TensorRT-LLM 1.2.x release-container node with H100s, described instead of probed."""
    return TrtllmEnvironment(
        trtllm_version=trtllm_version,
        tensorrt_version="10.14.1.48",  # what TRT-LLM 1.2.1 ships with (Triton 26.07 row)
        cuda_version="13.0",
        driver_version="580.95.05",
        gpus=tuple(GpuInfo("NVIDIA H100 80GB HBM3", capability, 80 * 1024**3) for _ in range(gpu_count)),
        memory_used_bytes=memory_used,
    )


def write_trtllm_checkpoint(
    directory: Path,
    tp_size: int = 1,
    pp_size: int = 1,
    dtype: str = "float16",
    quant_algo: str | None = "W8A8_SQ_PER_CHANNEL",
    kv_cache_quant_algo: str | None = None,
    max_position_embeddings: int = 2048,
    rank_files: int | None = None,
) -> Path:
    """A TensorRT-LLM checkpoint as ModelOpt 0.47 exports it (config fields; rank files as placeholders)."""
    directory.mkdir(parents=True, exist_ok=True)
    world = tp_size * pp_size
    config = {
        "architecture": "LlamaForCausalLM",
        "dtype": dtype,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "vocab_size": 49152,
        "max_position_embeddings": max_position_embeddings,
        "hidden_act": "silu",
        "rotary_base": 100000.0,
        "mapping": {"world_size": world, "tp_size": tp_size, "pp_size": pp_size},
        "quantization": {"quant_algo": quant_algo, "kv_cache_quant_algo": kv_cache_quant_algo},
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    for rank in range(world if rank_files is None else rank_files):
        (directory / f"rank{rank}.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    return directory


def env_with_path(bin_dir: Path) -> str:
    return f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"
