"""The TensorRT-LLM builder: `trtllm-build` 1.2.x on a GPU node inside the TensorRT-LLM release container.

Everything that can be checked without a GPU is checked before `trtllm-build` starts: the node
(TRT-LLM 1.2.x, GPUs), the checkpoint (config.json, mapping, one rank file per rank), the lengths
against the model, the plugin dtypes against the checkpoint's dtype and quantization. Then the
command line is derived from the typed build config (never `--paged_kv_cache` nor
`--multi_block_mode`), run with its log captured, peak GPU memory sampled through NVML and peak host
RSS taken from the child's rusage. Failures become errors naming the knob to turn. The output
(config.json + rank{r}.engine) is checked and described in engine.json, which records the node
that built it, so the compatibility guard (foundry/compat.py) can refuse a mismatched node later.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import foundry
from foundry import trtllm_checkpoint as fmt
from foundry.builders.base import ENGINE_INFO
from foundry.checkpoint import require_context_fits
from foundry.compat import TrtllmEnvironment
from foundry.config import BuildConfig
from foundry.errors import FoundryError, NotSupportedError
from foundry.hashing import content_hash, file_hashes, sha256_text
from foundry.trtllm_checkpoint import read_checkpoint_config

BUILD_LOG = "build.log"
TIMING_CACHE = "timing.cache"
ENGINE_CONFIG = "config.json"
CHECKPOINT_DTYPES = ("float16", "bfloat16", "float32")
# Quantizations this builder passes to trtllm-build 1.2.x (what foundry's calibration can produce, plus
# the ModelOpt formats the 1.2.x TensorRT backend builds). INT8 exists only as a KV-cache format.
SUPPORTED_QUANT_ALGOS = {None, *fmt.SMOOTHQUANT_ALGOS, fmt.FP8, fmt.W4A16_AWQ}
SUPPORTED_KV_CACHE_QUANT_ALGOS = set(fmt.KV_CACHE_QUANT_ALGOS)
FP8_MIN_COMPUTE_CAPABILITY = (8, 9)  # Ada / Hopper and newer
SMOOTHQUANT_PLUGIN_MAX_COMPUTE_CAPABILITY = (10, 0)  # the SmoothQuant plugins stop before Blackwell
_GPU_OOM = re.compile(
    r"out of memory|CUDA_ERROR_OUT_OF_MEMORY|cudaErrorMemoryAllocation|OutOfMemoryError|"
    r"Requested amount of GPU memory .* could not be allocated",
    re.IGNORECASE,
)
_HOST_OOM = re.compile(r"std::bad_alloc|MemoryError|Cannot allocate memory", re.IGNORECASE)
_MEMORY_SAMPLE_SECONDS = 0.5


def _capability_tuple(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor or 0)


def checkpoint_world_size(checkpoint_dir: Path, config: dict) -> int:
    """tp_size × pp_size from the mapping, checked against world_size and the rank files present."""
    mapping = config["mapping"]
    path = checkpoint_dir / "config.json"
    tp, pp = int(mapping.get("tp_size", 1)), int(mapping.get("pp_size", 1))
    world = int(mapping.get("world_size", tp * pp))
    if tp < 1 or pp < 1 or world != tp * pp:
        raise FoundryError(
            f"{path}: mapping.world_size = {world} but tp_size × pp_size = {tp} × {pp} = {tp * pp}; "
            "re-export the checkpoint with a consistent mapping"
        )
    rank_files = sorted(p.name for p in checkpoint_dir.glob("rank*.safetensors"))
    expected = [f"rank{r}.safetensors" for r in range(world)]
    missing = [name for name in expected if not (checkpoint_dir / name).is_file()]
    if missing:
        raise FoundryError(
            f"{checkpoint_dir}: rank files missing for tp_size {tp} × pp_size {pp}: {missing} "
            f"(found {rank_files}); the checkpoint export was incomplete — re-run calibration"
        )
    extra = sorted(set(rank_files) - set(expected))
    if extra:
        raise FoundryError(
            f"{checkpoint_dir}: {len(rank_files)} rank files {rank_files} but mapping says tp_size × pp_size = "
            f"{world}; extra {extra} — the checkpoint mixes two exports, re-run calibration"
        )
    return world


def validate_build_request(
    checkpoint_dir: Path, config: dict, build: BuildConfig, environment: TrtllmEnvironment
) -> int:
    """Everything checkable before trtllm-build starts; returns the world size (number of engines)."""
    path = checkpoint_dir / "config.json"
    world = checkpoint_world_size(checkpoint_dir, config)
    require_context_fits(config.get("max_position_embeddings"), build.max_seq_len, path)
    max_input = build.resolved_max_input_len
    if max_input > build.max_seq_len:
        raise FoundryError(f"build.max_input_len = {max_input} exceeds build.max_seq_len = {build.max_seq_len}")
    if not build.use_paged_context_fmha and build.max_num_tokens < max_input:
        raise FoundryError(
            f"build.max_num_tokens = {build.max_num_tokens} < build.max_input_len = {max_input}: without paged "
            "context FMHA (chunked context) a prompt must fit in one batch; raise max_num_tokens or enable "
            "build.use_paged_context_fmha"
        )
    dtype = config["dtype"]
    if dtype not in CHECKPOINT_DTYPES:
        raise FoundryError(f"{path}: dtype {dtype!r} is not one of {CHECKPOINT_DTYPES}")
    quant_algo, kv_algo = fmt.quantization_of(config)
    if quant_algo not in SUPPORTED_QUANT_ALGOS:
        raise NotSupportedError(
            f"{path}: quantization.quant_algo {quant_algo!r} is not supported by the trtllm builder "
            f"(supported: {sorted(a for a in SUPPORTED_QUANT_ALGOS if a)} or none)"
        )
    if kv_algo not in SUPPORTED_KV_CACHE_QUANT_ALGOS:
        raise NotSupportedError(
            f"{path}: quantization.kv_cache_quant_algo {kv_algo!r} is not supported (supported: INT8, FP8 or none)"
        )
    for knob in ("gemm_plugin", "gpt_attention_plugin"):
        value = getattr(build, knob)
        if value in ("float16", "bfloat16", "float32") and value != dtype:
            raise FoundryError(
                f"build.{knob} = {value} but the checkpoint's dtype is {dtype} ({path}); plugins compute in the "
                f"model's dtype: set build.{knob}: auto (or {dtype})"
            )
    if build.gemm_plugin == "fp8" and quant_algo != "FP8":
        raise FoundryError(
            f"build.gemm_plugin = fp8 needs an FP8 checkpoint; {path} has quant_algo {quant_algo!r}: "
            "set build.gemm_plugin: auto"
        )
    capability = environment.compute_capability
    uses_fp8 = quant_algo == "FP8" or kv_algo == "FP8"
    if uses_fp8 and capability and _capability_tuple(capability) < FP8_MIN_COMPUTE_CAPABILITY:
        raise NotSupportedError(
            f"{path}: FP8 quantization needs compute capability >= 8.9; this node's GPU "
            f"({environment.gpus[0].name}) is compute {capability}: build on Ada/Hopper or re-calibrate with int8_sq"
        )
    if (
        "_SQ_" in (quant_algo or "")
        and quant_algo.endswith("_PLUGIN")
        and capability
        and _capability_tuple(capability) >= SMOOTHQUANT_PLUGIN_MAX_COMPUTE_CAPABILITY
    ):
        # tensorrt_llm/builder.py: set_smooth_quant_plugins raises "SmoothQuant is not supported on SM>=100"
        raise NotSupportedError(
            f"{path}: quant_algo {quant_algo} runs on TensorRT-LLM's SmoothQuant plugins, which do not support "
            f"compute capability >= 10.0; this node's GPU ({environment.gpus[0].name}) is compute {capability}: "
            "build on Ampere/Ada/Hopper or re-calibrate with calibration.activation_scaling: per_tensor or fp8"
        )
    needed = max(world, build.workers)
    if len(environment.gpus) < needed:
        raise FoundryError(
            f"{len(environment.gpus)} GPU(s) visible but the build needs {needed}: the checkpoint has "
            f"{world} rank(s) (tp × pp) and build.workers = {build.workers}; run the step with gpu_count = "
            f"{world} (stacks/gpu_build_settings.py) or lower build.workers"
        )
    return world


def trtllm_build_argv(
    checkpoint_dir: Path,
    output_dir: Path,
    build: BuildConfig,
    input_timing_cache: Path | None,
    output_timing_cache: Path,
) -> list[str]:
    """The trtllm-build 1.2.x command line for this build config (flags: tests/fixtures/trtllm_build_1_2_flags.json)."""

    def switch(value: bool) -> str:
        return "enable" if value else "disable"

    argv = [
        "trtllm-build",
        "--checkpoint_dir",
        str(checkpoint_dir),
        "--output_dir",
        str(output_dir),
        "--max_batch_size",
        str(build.max_batch_size),
        "--max_input_len",
        str(build.resolved_max_input_len),
        "--max_seq_len",
        str(build.max_seq_len),
        "--max_num_tokens",
        str(build.max_num_tokens),
        "--max_beam_width",
        str(build.max_beam_width),
        "--kv_cache_type",
        "paged",
        "--gemm_plugin",
        build.gemm_plugin,
        "--gpt_attention_plugin",
        build.gpt_attention_plugin,
        "--context_fmha",
        switch(build.context_fmha),
        "--use_paged_context_fmha",
        switch(build.use_paged_context_fmha),
        "--remove_input_padding",
        switch(build.remove_input_padding),
        "--workers",
        str(build.workers),
        "--output_timing_cache",
        str(output_timing_cache),
        "--log_level",
        "info",
    ]
    if input_timing_cache is not None:
        argv += ["--input_timing_cache", str(input_timing_cache)]
    if build.strip_plan:
        argv.append("--strip_plan")
    if build.monitor_memory:
        argv.append("--monitor_memory")
    return argv


def timing_cache_path(build: BuildConfig, checkpoint_config: dict, environment: TrtllmEnvironment) -> Path:
    """One timing cache per (model, GPU, TRT-LLM version): reused by later builds of the same model and GPU."""
    from foundry.state import state_dir

    root = Path(build.timing_cache_dir) if build.timing_cache_dir else state_dir() / "timing-cache"
    model_key = sha256_text(json.dumps(checkpoint_config, sort_keys=True))[:16]
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", environment.gpus[0].name).strip("-") if environment.gpus else "nogpu"
    return root / f"{model_key}__{gpu}_sm{environment.compute_capability}__trtllm{environment.trtllm_version}.cache"


class _PeakGpuMemory:
    """Samples used GPU memory (NVML) in a thread while trtllm-build runs; keeps the peak of the sum."""

    def __init__(self, probe) -> None:
        self._probe = probe
        self.peak_bytes: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        try:
            used = sum(self._probe())
        except Exception:  # a probe hiccup must not kill the build; the peak stays what it was
            return
        self.peak_bytes = used if self.peak_bytes is None else max(self.peak_bytes, used)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(_MEMORY_SAMPLE_SECONDS)

    def __enter__(self) -> "_PeakGpuMemory":
        if self._probe is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._probe is not None:
            self._stop.set()
            self._thread.join()
            self._sample()


def _run_logged(argv: list[str], log_path: Path, executable: str) -> tuple[int, int]:
    """Run with stdout+stderr into the log; return (exit code, peak RSS of the process tree in bytes)."""
    with open(log_path, "wb") as log:
        process = subprocess.Popen([executable, *argv[1:]], stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
    return process.returncode, int(usage.ru_maxrss) * 1024  # Linux reports KiB


def _log_tail(log_path: Path, lines: int = 25) -> str:
    text = log_path.read_text(errors="replace").splitlines() if log_path.is_file() else []
    return "\n".join(text[-lines:])


def explain_failure(returncode: int, log_path: Path, build: BuildConfig, world: int) -> FoundryError:
    log = log_path.read_text(errors="replace") if log_path.is_file() else ""
    tail = _log_tail(log_path)
    if _GPU_OOM.search(log):
        return FoundryError(
            f"trtllm-build ran out of GPU memory (exit {returncode}; log {log_path}). Lower build.max_num_tokens "
            f"(now {build.max_num_tokens}) or build.max_batch_size (now {build.max_batch_size}); with several "
            f"ranks on one GPU set build.workers (now {build.workers}) to 1.\n{tail}"
        )
    if returncode == -signal.SIGKILL or _HOST_OOM.search(log):
        return FoundryError(
            f"trtllm-build ran out of host memory or was killed (exit {returncode}; log {log_path}). Lower "
            f"build.workers (now {build.workers}: each worker holds a rank's weights), or give the step more "
            f"memory (stacks/gpu_build_settings.py).\n{tail}"
        )
    return FoundryError(f"trtllm-build failed with exit code {returncode} (log {log_path}):\n{tail}")


def check_engine_output(output_dir: Path, world: int, environment: TrtllmEnvironment) -> dict:
    config_path = output_dir / ENGINE_CONFIG
    if not config_path.is_file():
        raise FoundryError(
            f"{config_path}: trtllm-build exited 0 but wrote no engine config; see {output_dir / BUILD_LOG}"
        )
    engine_config = json.loads(config_path.read_text())
    for key in ("version", "pretrained_config", "build_config"):
        if key not in engine_config:
            raise FoundryError(f"{config_path}: no '{key}' field; not a TensorRT-LLM 1.2.x engine config")
    if engine_config["version"] != environment.trtllm_version:
        raise FoundryError(
            f"{config_path}: engine version {engine_config['version']} but tensorrt_llm {environment.trtllm_version} "
            "is installed: trtllm-build on PATH belongs to another installation"
        )
    missing = [
        f"rank{r}.engine"
        for r in range(world)
        if not (output_dir / f"rank{r}.engine").is_file() or (output_dir / f"rank{r}.engine").stat().st_size == 0
    ]
    if missing:
        raise FoundryError(
            f"{output_dir}: engine files missing or empty: {missing} of {world} rank(s); a rank's build died "
            f"(see {output_dir / BUILD_LOG}). Lower build.workers or build.max_num_tokens and rebuild."
        )
    return engine_config


class TrtllmBuilder:
    backend = "trtllm"
    accepted_quant_algos = frozenset(SUPPORTED_QUANT_ALGOS)
    accepted_kv_cache_quant_algos = frozenset(SUPPORTED_KV_CACHE_QUANT_ALGOS)

    def __init__(self, environment: TrtllmEnvironment | None = None) -> None:
        self._environment = environment

    @property
    def environment(self) -> TrtllmEnvironment:
        if self._environment is None:
            self._environment = TrtllmEnvironment.probe()
        return self._environment

    def check_environment(self) -> None:
        self.environment.require_trtllm()

    def build(self, checkpoint_dir: Path, output_dir: Path, build: BuildConfig) -> dict:
        environment = self.environment
        environment.require_trtllm()
        checkpoint_dir, output_dir = Path(checkpoint_dir).resolve(), Path(output_dir).resolve()
        checkpoint_config = read_checkpoint_config(checkpoint_dir)
        world = validate_build_request(checkpoint_dir, checkpoint_config, build, environment)
        executable = shutil.which("trtllm-build")
        output_dir.mkdir(parents=True, exist_ok=True)

        cache_store = timing_cache_path(build, checkpoint_config, environment)
        reused_cache = build.reuse_timing_cache and cache_store.is_file()
        argv = trtllm_build_argv(
            checkpoint_dir,
            output_dir,
            build,
            input_timing_cache=cache_store if reused_cache else None,
            output_timing_cache=output_dir / TIMING_CACHE,
        )
        log_path = output_dir / BUILD_LOG
        started = time.perf_counter()
        with _PeakGpuMemory(environment.memory_used_bytes) as gpu_memory:
            returncode, peak_rss_bytes = _run_logged(argv, log_path, executable)
        build_seconds = time.perf_counter() - started
        if returncode != 0:
            raise explain_failure(returncode, log_path, build, world)
        engine_config = check_engine_output(output_dir, world, environment)
        if (output_dir / TIMING_CACHE).is_file():
            cache_store.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(output_dir / TIMING_CACHE, cache_store)

        quantization = checkpoint_config.get("quantization") or {}
        info = {
            "backend": self.backend,
            "architecture": checkpoint_config.get("architecture"),
            "dtype": checkpoint_config["dtype"],
            "quant_algo": quantization.get("quant_algo"),
            "kv_cache_quant_algo": quantization.get("kv_cache_quant_algo"),
            "max_seq_len": build.max_seq_len,
            "max_batch_size": build.max_batch_size,
            "max_beam_width": build.max_beam_width,
            "world_size": world,
            "tp_size": int(checkpoint_config["mapping"].get("tp_size", 1)),
            "pp_size": int(checkpoint_config["mapping"].get("pp_size", 1)),
            "environment": environment.identity(),
            "build_config": build.model_dump(mode="json"),
            "engine_build_config": engine_config["build_config"],
            "trtllm_build_argv": argv[1:],
            "checkpoint_content_hash": content_hash(file_hashes(checkpoint_dir)),
            "timing_cache": {"path": str(cache_store), "reused": reused_cache},
            "build_seconds": round(build_seconds, 3),
            "peak_gpu_memory_bytes": gpu_memory.peak_bytes,
            "peak_host_rss_bytes": peak_rss_bytes,
            "foundry_version": foundry.__version__,
        }
        (output_dir / ENGINE_INFO).write_text(json.dumps(info, indent=2))
        return info
