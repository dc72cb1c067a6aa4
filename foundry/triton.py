"""Triton model repository for a TensorRT-LLM engine (tensorrtllm_backend's inflight_batcher_llm layout).

The project writes every `config.pbtxt` itself from typed values (the engine's engine.json and the
`serving:` config): there is no template and no `${...}` to forget — `render_*` refuse to return
text that still holds one. The layout and parameter names follow
triton-inference-server/tensorrtllm_backend all_models/inflight_batcher_llm/{preprocessing,
tensorrt_llm,postprocessing,ensemble,tensorrt_llm_bls}/config.pbtxt and docs/model_config.md (since
TRT-LLM 1.0 the same tree lives in NVIDIA/TensorRT-LLM tensorrt_llm/triton_backend/).

Only TensorRT-LLM engines can be exported: Triton's tensorrtllm backend executes TensorRT plans, so
a `reference` (PyTorch) engine is refused. Before anything is written the engine is verified against
its manifest and checked against the node it will run on (foundry/compat.py).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from foundry.builders.base import guard_trtllm_engine, read_engine_info
from foundry.compat import NodeTarget
from foundry.config import ServingConfig
from foundry.errors import FoundryError, NotSupportedError
from foundry.hashing import MANIFEST_NAME, read_manifest, write_manifest

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "generation_config.json", "chat_template.jinja")
PYTHON_BACKEND_MODELS = ("preprocessing", "postprocessing", "tensorrt_llm_bls")

# TRT-LLM version → the (latest) Triton trtllm-python-py3 release that carries it, from Triton's
# "Release Compatibility Matrix" (TRITON_MATRIX_SOURCE, as stored when this table was written: its
# newest row is 25.12 = TRT-LLM 1.1.0). No 1.2.x row was published there then, so a 1.2.x engine is
# recorded as "unknown" until serving.triton_image names the image (or a sourced row is added here).
TRITON_MATRIX_SOURCE = "https://docs.nvidia.com/deeplearning/triton-inference-server/user-guide/docs/introduction/compatibility.html"
_MATRIX = {  # TRT-LLM: (Triton release, TensorRT in that container)
    "1.1.0": ("25.12", "10.13.3.9"),
    "1.0.0": ("25.10", "10.11.0.33"),
    "0.21.0": ("25.08", "10.11.0.33"),
    "0.20.0": ("25.07", "10.10.0.31"),
}
TRITON_RELEASES: dict[str, dict[str, str]] = {
    trtllm: {"image": f"nvcr.io/nvidia/tritonserver:{release}-trtllm-python-py3", "triton_release": release,
             "tensorrt_version": tensorrt, "source": TRITON_MATRIX_SOURCE}
    for trtllm, (release, tensorrt) in _MATRIX.items()
}


def triton_release_for(trtllm_version: str, serving: ServingConfig) -> dict:
    if serving.triton_image:
        return {"image": serving.triton_image, "source": "serving.triton_image (set by the user)"}
    if trtllm_version in TRITON_RELEASES:
        return dict(TRITON_RELEASES[trtllm_version])
    return {
        "image": None,
        "source": (
            f"unknown: {TRITON_MATRIX_SOURCE} (as of foundry's table, newest row 25.12 = TRT-LLM 1.1.0) lists "
            f"no Triton release with TRT-LLM {trtllm_version}; pick the tritonserver *-trtllm-python-py3 release "
            f"that lists TensorRT-LLM {trtllm_version} and set serving.triton_image"
        ),
    }


# ---- pbtxt rendering ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str
    dims: tuple[int, ...]
    optional: bool = False
    reshape_scalar: bool = False
    ragged: bool = False

    def render(self) -> str:
        lines = [f'    name: "{self.name}"', f"    data_type: {self.data_type}",
                 f"    dims: [ {', '.join(str(d) for d in self.dims)} ]"]
        if self.reshape_scalar:
            lines.append("    reshape: { shape: [ ] }")
        if self.optional:
            lines.append("    optional: true")
        if self.ragged:
            lines.append("    allow_ragged_batch: true")
        return "  {\n" + "\n".join(lines) + "\n  }"


def _tensors(kind: str, tensors: list[Tensor]) -> str:
    return f"{kind} [\n" + ",\n".join(t.render() for t in tensors) + "\n]\n"


def _quote(value: str) -> str:
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _parameters(parameters: dict[str, object]) -> str:
    out = []
    for key, value in parameters.items():
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        out.append(f"parameters: {{\n  key: {_quote(key)}\n  value: {{\n    string_value: {_quote(text)}\n  }}\n}}\n")
    return "".join(out)


def _instances(count: int, kind: str = "KIND_CPU") -> str:
    return f"instance_group [\n  {{\n    count: {count}\n    kind: {kind}\n  }}\n]\n"


def _header(name: str, backend: str, max_batch_size: int, decoupled: bool | None = None) -> str:
    text = f'name: "{name}"\nbackend: "{backend}"\nmax_batch_size: {max_batch_size}\n'
    if decoupled is not None:
        text += f"model_transaction_policy {{\n  decoupled: {'true' if decoupled else 'false'}\n}}\n"
    return text


def _checked(model: str, text: str) -> str:
    if "${" in text:
        raise FoundryError(f"{model}/config.pbtxt: an unfilled ${{...}} placeholder remains; this is a foundry bug")
    return text


def _i32(name, dims=(1,), **kw) -> Tensor:
    return Tensor(name, "TYPE_INT32", dims, **kw)


def _fp32(name, dims=(1,), **kw) -> Tensor:
    return Tensor(name, "TYPE_FP32", dims, **kw)


def render_preprocessing(max_batch_size: int, tokenizer_dir: str, serving: ServingConfig) -> str:
    text = _header("preprocessing", "python", max_batch_size)
    text += _tensors("input", [
        Tensor("QUERY", "TYPE_STRING", (1,)),
        _i32("REQUEST_OUTPUT_LEN"),
        Tensor("BAD_WORDS_DICT", "TYPE_STRING", (-1,), optional=True),
        Tensor("STOP_WORDS_DICT", "TYPE_STRING", (-1,), optional=True),
        _i32("END_ID", optional=True),
        _i32("PAD_ID", optional=True),
    ])
    text += _tensors("output", [
        _i32("INPUT_ID", (-1,)), _i32("REQUEST_INPUT_LEN"), _i32("BAD_WORDS_IDS", (2, -1)),
        _i32("STOP_WORDS_IDS", (2, -1)), _i32("OUT_END_ID"), _i32("OUT_PAD_ID"), _i32("OUT_REQUEST_OUTPUT_LEN"),
    ])
    text += _parameters({"tokenizer_dir": tokenizer_dir, "add_special_tokens": False,
                         "max_queue_delay_microseconds": serving.max_queue_delay_microseconds,
                         "max_queue_size": serving.max_queue_size})
    return _checked("preprocessing", text + _instances(serving.preprocessing_instance_count))


def render_postprocessing(max_batch_size: int, tokenizer_dir: str, serving: ServingConfig) -> str:
    text = _header("postprocessing", "python", max_batch_size)
    text += _tensors("input", [_i32("TOKENS_BATCH", (-1, -1)), _i32("SEQUENCE_LENGTH", (-1,))])
    text += _tensors("output", [Tensor("OUTPUT", "TYPE_STRING", (-1,))])
    text += _parameters({"tokenizer_dir": tokenizer_dir, "skip_special_tokens": True})
    return _checked("postprocessing", text + _instances(serving.postprocessing_instance_count))


def render_tensorrt_llm(max_batch_size: int, engine_dir: str, max_beam_width: int, serving: ServingConfig) -> str:
    text = _header("tensorrt_llm", "tensorrtllm", max_batch_size, decoupled=serving.decoupled)
    text += (f"dynamic_batching {{\n  preferred_batch_size: [ {max_batch_size} ]\n"
             f"  max_queue_delay_microseconds: {serving.max_queue_delay_microseconds}\n}}\n")
    scalar = {"reshape_scalar": True, "optional": True}
    text += _tensors("input", [
        _i32("input_ids", (-1,), ragged=True),
        _i32("input_lengths", reshape_scalar=True),
        _i32("request_output_len"),
        _i32("end_id", **scalar), _i32("pad_id", **scalar),
        _i32("stop_words_list", (2, -1), optional=True, ragged=True),
        _i32("bad_words_list", (2, -1), optional=True, ragged=True),
        _i32("beam_width", **scalar), _fp32("temperature", **scalar), _i32("runtime_top_k", **scalar),
        _fp32("runtime_top_p", **scalar), _fp32("len_penalty", **scalar), _fp32("repetition_penalty", **scalar),
        _i32("min_length", **scalar), _fp32("presence_penalty", **scalar), _fp32("frequency_penalty", **scalar),
        Tensor("random_seed", "TYPE_UINT64", (1,), **scalar),
        Tensor("return_log_probs", "TYPE_BOOL", (1,), **scalar),
        Tensor("stop", "TYPE_BOOL", (1,), optional=True),
        Tensor("streaming", "TYPE_BOOL", (1,), optional=True),
    ])
    text += _tensors("output", [
        _i32("output_ids", (-1, -1)), _i32("sequence_length", (-1,)),
        _fp32("cum_log_probs", (-1,)), _fp32("output_log_probs", (-1, -1)),
    ])
    text += _instances(1)
    text += _parameters({
        "max_beam_width": max_beam_width,
        "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
        "gpt_model_type": serving.batching_strategy,
        "gpt_model_path": engine_dir,
        "batch_scheduler_policy": serving.batch_scheduler_policy,
        "kv_cache_free_gpu_mem_fraction": serving.kv_cache_free_gpu_mem_fraction,
        "enable_kv_cache_reuse": serving.enable_kv_cache_reuse,
        "enable_chunked_context": serving.enable_chunked_context,
        "multi_block_mode": serving.multi_block_mode,
        "exclude_input_in_output": serving.exclude_input_in_output,
        "max_queue_size": serving.max_queue_size,
        "executor_worker_path": "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker",
    })
    return _checked("tensorrt_llm", text)


_ENSEMBLE_INPUTS = [
    Tensor("text_input", "TYPE_STRING", (1,)),
    _i32("max_tokens"),
    Tensor("bad_words", "TYPE_STRING", (-1,), optional=True),
    Tensor("stop_words", "TYPE_STRING", (-1,), optional=True),
    _i32("end_id", optional=True), _i32("pad_id", optional=True),
    _i32("top_k", optional=True), _fp32("top_p", optional=True), _fp32("temperature", optional=True),
    _fp32("repetition_penalty", optional=True), _i32("beam_width", optional=True),
    Tensor("random_seed", "TYPE_UINT64", (1,), optional=True),
    Tensor("stream", "TYPE_BOOL", (1,), optional=True),
]


def _map(kind: str, pairs: dict[str, str]) -> str:
    return "".join(f"      {kind} {{\n        key: {_quote(k)}\n        value: {_quote(v)}\n      }}\n" for k, v in pairs.items())


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    return (f"    {{\n      model_name: {_quote(model)}\n      model_version: -1\n"
            + _map("input_map", inputs) + _map("output_map", outputs) + "    }")


def render_ensemble(max_batch_size: int) -> str:
    text = f'name: "ensemble"\nplatform: "ensemble"\nmax_batch_size: {max_batch_size}\n'
    text += _tensors("input", _ENSEMBLE_INPUTS)
    text += _tensors("output", [Tensor("text_output", "TYPE_STRING", (-1,))])
    steps = [
        _step("preprocessing",
              {"QUERY": "text_input", "REQUEST_OUTPUT_LEN": "max_tokens", "BAD_WORDS_DICT": "bad_words",
               "STOP_WORDS_DICT": "stop_words", "END_ID": "end_id", "PAD_ID": "pad_id"},
              {"INPUT_ID": "_INPUT_ID", "REQUEST_INPUT_LEN": "_REQUEST_INPUT_LEN", "BAD_WORDS_IDS": "_BAD_WORDS_IDS",
               "STOP_WORDS_IDS": "_STOP_WORDS_IDS", "OUT_END_ID": "_PREPROCESSOR_END_ID",
               "OUT_PAD_ID": "_PREPROCESSOR_PAD_ID", "OUT_REQUEST_OUTPUT_LEN": "_REQUEST_OUTPUT_LEN"}),
        _step("tensorrt_llm",
              {"input_ids": "_INPUT_ID", "input_lengths": "_REQUEST_INPUT_LEN", "request_output_len": "_REQUEST_OUTPUT_LEN",
               "end_id": "_PREPROCESSOR_END_ID", "pad_id": "_PREPROCESSOR_PAD_ID", "bad_words_list": "_BAD_WORDS_IDS",
               "stop_words_list": "_STOP_WORDS_IDS", "runtime_top_k": "top_k", "runtime_top_p": "top_p",
               "temperature": "temperature", "repetition_penalty": "repetition_penalty", "beam_width": "beam_width",
               "random_seed": "random_seed", "streaming": "stream"},
              {"output_ids": "_TOKENS_BATCH", "sequence_length": "_SEQUENCE_LENGTH"}),
        _step("postprocessing", {"TOKENS_BATCH": "_TOKENS_BATCH", "SEQUENCE_LENGTH": "_SEQUENCE_LENGTH"},
              {"OUTPUT": "text_output"}),
    ]
    text += "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"
    return _checked("ensemble", text)


def render_tensorrt_llm_bls(max_batch_size: int, serving: ServingConfig) -> str:
    text = _header("tensorrt_llm_bls", "python", max_batch_size, decoupled=serving.decoupled)
    text += _tensors("input", _ENSEMBLE_INPUTS)
    text += _tensors("output", [Tensor("text_output", "TYPE_STRING", (-1,))])
    text += _parameters({"accumulate_tokens": False, "tensorrt_llm_model_name": "tensorrt_llm"})
    return _checked("tensorrt_llm_bls", text + _instances(serving.bls_instance_count))


# ---- export -------------------------------------------------------------------------------------------

def copy_tokenizer(source_dir: Path, target_dir: Path) -> list[str]:
    names = [name for name in TOKENIZER_FILES if (source_dir / name).is_file()]
    if "tokenizer.json" not in names and "tokenizer.model" not in names:
        raise FoundryError(
            f"{source_dir}: no tokenizer.json / tokenizer.model; the Triton pre/post-processing models need the "
            "model's tokenizer (the trtllm build step stores it in the engine's tokenizer/ folder)"
        )
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy2(source_dir / name, target_dir / name)
    return names


def export_triton_repository(
    engine_dir: Path,
    out_dir: Path,
    serving: ServingConfig,
    node: NodeTarget | None = None,
    tokenizer_dir: Path | None = None,
    mount: str = "/models",
    source: dict | None = None,
) -> dict:
    """Write the model repository into `out_dir` (must not exist); return what foundry-export.json records.

    `node` is the serving node (TRT-LLM version @ compute capability); default: this node, probed.
    `mount` is where `out_dir` will be mounted in the Triton container (engine_dir/tokenizer_dir point there).
    """
    engine_dir, out_dir = Path(engine_dir), Path(out_dir)
    info = read_engine_info(engine_dir)
    if info.get("backend") != "trtllm":
        raise NotSupportedError(
            f"{engine_dir}: a {info.get('backend')!r} engine cannot be served by Triton's tensorrtllm backend, which "
            "executes TensorRT-LLM engines only; build with build.backend: trtllm on a GPU node first"
        )
    guard_trtllm_engine(engine_dir, info, node)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FoundryError(f"{out_dir}: exists and is not empty; export into a new directory")
    tokenizer_source = Path(tokenizer_dir) if tokenizer_dir else engine_dir / "tokenizer"
    max_batch_size = serving.triton_max_batch_size or info["max_batch_size"]
    if max_batch_size > info["max_batch_size"]:
        raise FoundryError(
            f"serving.triton_max_batch_size = {max_batch_size} exceeds the engine's max_batch_size = "
            f"{info['max_batch_size']}; lower it or rebuild with a larger build.max_batch_size"
        )

    out_dir.mkdir(parents=True, exist_ok=True)
    mount = mount.rstrip("/")
    engine_target = out_dir / "tensorrt_llm" / "1" / "engine"
    engine_target.mkdir(parents=True)
    engine_files = ["config.json", "engine.json"] + sorted(p.name for p in engine_dir.glob("rank*.engine"))
    for name in engine_files:
        shutil.copy2(engine_dir / name, engine_target / name)
    tokenizer_files = copy_tokenizer(tokenizer_source, out_dir / "tokenizer")

    configs = {
        "preprocessing": render_preprocessing(max_batch_size, f"{mount}/tokenizer", serving),
        "tensorrt_llm": render_tensorrt_llm(max_batch_size, f"{mount}/tensorrt_llm/1/engine", info["max_beam_width"], serving),
        "postprocessing": render_postprocessing(max_batch_size, f"{mount}/tokenizer", serving),
        "ensemble": render_ensemble(max_batch_size),
    }
    if serving.tensorrt_llm_bls:
        configs["tensorrt_llm_bls"] = render_tensorrt_llm_bls(max_batch_size, serving)
    for model, text in configs.items():
        (out_dir / model / "1").mkdir(parents=True, exist_ok=True)
        (out_dir / model / "config.pbtxt").write_text(text)

    environment = info["environment"]
    triton = triton_release_for(environment["trtllm_version"], serving)
    needs_model_py = [m for m in configs if m in PYTHON_BACKEND_MODELS]
    record = {
        "models": sorted(configs),
        "engine": {
            "content_hash": read_manifest(engine_dir)["content_hash"] if (engine_dir / MANIFEST_NAME).is_file() else None,
            "environment": environment,
            "max_batch_size": info["max_batch_size"],
            "max_seq_len": info["max_seq_len"],
            "quant_algo": info.get("quant_algo"),
        },
        "source": source or {"engine_dir": str(engine_dir)},
        "serving": serving.model_dump(mode="json"),
        "triton_max_batch_size": max_batch_size,
        "mount": mount,
        "tokenizer_files": tokenizer_files,
        "triton_container": triton,
        "python_backend_models_need_model_py": needs_model_py,
    }
    (out_dir / "README.md").write_text(_export_readme(record))
    # foundry-manifest.json: per-file SHA-256 of the repository plus this record under "export".
    manifest = write_manifest(out_dir, {"kind": "triton_model_repository", "export": record})
    return {**record, "content_hash": manifest["content_hash"]}


def _export_readme(record: dict) -> str:
    env = record["engine"]["environment"]
    triton = record["triton_container"]
    models = ", ".join(f"`{m}/`" for m in record["models"])
    model_py = ", ".join(f"`{m}/1/model.py`" for m in record["python_backend_models_need_model_py"])
    return f"""# Triton model repository (written by LLM Engine Foundry)

Models: {models}; tokenizer in `tokenizer/`; engine in `tensorrt_llm/1/engine/`.
Mount this directory at `{record['mount']}` in the Triton container (every path in the configs points there).

## The engine

| | |
|---|---|
| TRT-LLM | {env['trtllm_version']} |
| TensorRT | {env['tensorrt_version']} |
| GPU | {env['gpu_name']} (compute {env['compute_capability']}) |
| CUDA / driver | {env['cuda_version']} / {env['driver_version']} |
| engine content hash | {record['engine']['content_hash']} |

The engine runs only where TRT-LLM {env['trtllm_version']} and a compute {env['compute_capability']} GPU are present.

## Triton container

| TRT-LLM | Triton image | source |
|---|---|---|
| {env['trtllm_version']} | {triton['image'] or 'unknown'} | {triton['source']} |

## Before serving

The Python-backend models ({model_py}) run the `model.py` of tensorrtllm_backend's
`all_models/inflight_batcher_llm/<model>/1/` (in TRT-LLM >= 1.0: `tensorrt_llm/triton_backend/all_models/...`)
at the tag of TRT-LLM {env['trtllm_version']}; foundry does not ship them. Copy them into `<model>/1/`, then

    tritonserver --model-repository={record['mount']}
"""

