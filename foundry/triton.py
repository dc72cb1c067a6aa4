"""Triton model repository for a TensorRT-LLM engine (the inflight_batcher_llm layout).

The project writes every `config.pbtxt` itself from typed values (the engine's engine.json/config.json
and the `serving:` config): there is no template and no `${...}` to forget — `render_*` refuse to return
text that still holds one. Tensor tables, parameter keys and ensemble routing follow the TensorRT-LLM
1.2-era templates in NVIDIA/TensorRT-LLM `triton_backend/all_models/inflight_batcher_llm/` (at the repo
root since TRT-LLM 1.0; before that triton-inference-server/tensorrtllm_backend `all_models/...`):

    tensorrt_llm/config.pbtxt        @0c8de69a (version.py 1.2.0rc8); the C++ backend that reads it:
                                     triton_backend/inflight_batcher_llm/src/model_instance_state.cc @0c8de69a
    preprocessing/config.pbtxt       @08dc37e3; its 1/model.py @01259b15 (initialize() looks up tensors by name)
    postprocessing/config.pbtxt      @89fd9b74
    ensemble/config.pbtxt            @2a9abd95
    tensorrt_llm_bls/config.pbtxt    @0193dbd4; its 1/lib/triton_decoder.py @07f3e442

Every tensor those model.py files or the backend look up must be declared, or loading / every request
fails, so the tables below are upstream's lists (multimodal, LoRA and speculative-decoding tensors
included: they are optional and cost nothing when unused).

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
from foundry.trtllm_checkpoint import read_engine_config

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "generation_config.json",
    "chat_template.jinja",
)
PYTHON_BACKEND_MODELS = ("preprocessing", "postprocessing", "tensorrt_llm_bls")
UPSTREAM_MODELS_DIR = "triton_backend/all_models/inflight_batcher_llm"  # in NVIDIA/TensorRT-LLM

# TRT-LLM version → the latest Triton trtllm-python-py3 release that carries it, from Triton's "Release
# Compatibility Matrix" (triton-inference-server/server docs/introduction/compatibility.md @0f963c9a:
# 26.04–26.07 = 1.2.1, 26.03 = 1.2.0, 25.12–26.02 = 1.1.0, 25.09–25.10 = 1.0.0, 25.08 = 0.21.0,
# 25.06–25.07 = 0.20.0). The TensorRT and CUDA columns are those of that container.
TRITON_MATRIX_SOURCE = (
    "https://github.com/triton-inference-server/server/blob/0f963c9a8c6913aa4cd9b57ee04f9c2b76ee8d2a"
    "/docs/introduction/compatibility.md (trtllm-python-py3 table)"
)
_MATRIX = {  # TRT-LLM: (Triton release, TensorRT in that container, CUDA in that container)
    "1.2.1": ("26.07", "10.14.1.48", "13.1.0.036"),
    "1.2.0": ("26.03", "10.14.1.48", "13.1.0.036"),
    "1.1.0": ("26.02", "10.13.3.9", "13.0.2.006"),
    "1.0.0": ("25.10", "10.11.0.33", "12.9.1.010"),
    "0.21.0": ("25.08", "10.11.0.33", "12.9.0.043"),
    "0.20.0": ("25.07", "10.10.0.31", "12.9.0.036"),
}
TRITON_RELEASES: dict[str, dict[str, str]] = {
    trtllm: {
        "image": f"nvcr.io/nvidia/tritonserver:{release}-trtllm-python-py3",
        "triton_release": release,
        "tensorrt_version": tensorrt,
        "cuda_version": cuda,
        "source": TRITON_MATRIX_SOURCE,
    }
    for trtllm, (release, tensorrt, cuda) in _MATRIX.items()
}


def triton_release_for(trtllm_version: str, serving: ServingConfig) -> dict:
    if serving.triton_image:
        return {"image": serving.triton_image, "source": "serving.triton_image (set by the user)"}
    if trtllm_version in TRITON_RELEASES:
        return dict(TRITON_RELEASES[trtllm_version])
    newest = max(TRITON_RELEASES.items(), key=lambda item: item[1]["triton_release"])
    return {
        "image": None,
        "source": (
            f"unknown: {TRITON_MATRIX_SOURCE} (as of foundry's table, newest row {newest[1]['triton_release']} = "
            f"TRT-LLM {newest[0]}) lists no Triton release with TRT-LLM {trtllm_version}; pick the tritonserver "
            f"*-trtllm-python-py3 release that lists TensorRT-LLM {trtllm_version} and set serving.triton_image"
        ),
    }


def check_tensorrt_matches_container(engine_dir: Path, environment: dict, triton: dict) -> None:
    """A TensorRT plan deserializes only on the TensorRT version that built it: an engine whose
    recorded TensorRT differs from the one in the chosen Triton container would fail at model load."""
    built, shipped = environment.get("tensorrt_version"), triton.get("tensorrt_version")
    if built and shipped and built != shipped:
        raise FoundryError(
            f"{engine_dir}: engine built with TensorRT {built} (TRT-LLM {environment.get('trtllm_version')}), but "
            f"{triton['image']} ships TensorRT {shipped}; a TensorRT plan loads only on the version that built it: "
            f"rebuild in that container, or set serving.triton_image to a tritonserver image with TensorRT {built}"
        )


# ---- tensor tables ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tensor:
    name: str
    data_type: str
    dims: tuple[int, ...]
    optional: bool = False
    reshape_scalar: bool = False
    ragged: bool = False

    def render(self) -> str:
        lines = [
            f'    name: "{self.name}"',
            f"    data_type: {self.data_type}",
            f"    dims: [ {', '.join(str(d) for d in self.dims)} ]",
        ]
        if self.reshape_scalar:
            lines.append("    reshape: { shape: [ ] }")
        if self.optional:
            lines.append("    optional: true")
        if self.ragged:
            lines.append("    allow_ragged_batch: true")
        return "  {\n" + "\n".join(lines) + "\n  }"


_FLAGS = {"opt", "scalar", "ragged"}


def _t(name: str, dtype: str, dims: tuple[int, ...] = (1,), flags: str = "") -> Tensor:
    """One table row. `flags`: "opt" (optional: true), "scalar" (reshape: { shape: [ ] }), "ragged"
    (allow_ragged_batch: true)."""
    words = set(flags.split())
    if words - _FLAGS:
        raise ValueError(f"unknown tensor flags {sorted(words - _FLAGS)}")
    return Tensor(
        name,
        f"TYPE_{dtype}",
        tuple(dims),
        optional="opt" in words,
        reshape_scalar="scalar" in words,
        ragged="ragged" in words,
    )


def _each(names: str, dtype: str, dims: tuple[int, ...] = (1,), flags: str = "") -> list[Tensor]:
    return [_t(name, dtype, dims, flags) for name in names.split()]


# Data types upstream leaves to fill_template: every upstream example fills prompt_embedding_table_data_type
# and encoder_input_features_data_type with TYPE_FP16 (the ensemble/BLS hard-code FP16 for the prompt table);
# logits_datatype follows the engine (engine_logits_type).
PROMPT_TABLE_TYPE = "FP16"
ENCODER_FEATURES_TYPE = "FP16"
_LOGITS_TYPES = {"float32": "FP32", "float16": "FP16", "bfloat16": "BF16"}
_OPT_SCALAR = "opt scalar"


def engine_logits_type(engine_dir: Path) -> str:
    """The engine's logits dtype as a Triton type suffix. The backend takes its logits data type from the
    context_logits/generation_logits outputs (model_state.cc LoadParameters), so they must match the engine;
    a checkpoint without logits_dtype gets TRT-LLM's PretrainedConfig default, float32."""
    config = read_engine_config(engine_dir)
    name = config.get("pretrained_config", {}).get("logits_dtype") or "float32"
    if name not in _LOGITS_TYPES:
        raise FoundryError(
            f"{engine_dir}/config.json: logits_dtype {name!r} has no Triton type here "
            f"(known: {', '.join(_LOGITS_TYPES)})"
        )
    return _LOGITS_TYPES[name]


def tensorrt_llm_inputs(logits: str) -> list[Tensor]:
    """tensorrt_llm/config.pbtxt @0c8de69a inputs. The backend reads `seed` and `min_tokens` (not random_seed /
    min_length, which it would silently ignore)."""
    return [
        _t("input_ids", "INT32", (-1,), "opt ragged"),
        _t("encoder_input_features", ENCODER_FEATURES_TYPE, (-1, -1), "opt ragged"),
        _t("encoder_output_lengths", "INT32", flags=_OPT_SCALAR),
        *_each("input_lengths request_output_len", "INT32", flags="scalar"),
        _t("num_return_sequences", "INT32", flags=_OPT_SCALAR),
        *_each("draft_input_ids decoder_input_ids", "INT32", (-1,), "opt ragged"),
        _t("decoder_input_lengths", "INT32", flags=_OPT_SCALAR),
        _t("draft_logits", logits, (-1, -1), "opt ragged"),
        _t("draft_acceptance_threshold", "FP32", flags=_OPT_SCALAR),
        *_each("end_id pad_id", "INT32", flags=_OPT_SCALAR),
        *_each("stop_words_list bad_words_list", "INT32", (2, -1), "opt ragged"),
        _t("embedding_bias", "FP32", (-1,), "opt ragged"),
        *_each(
            "beam_width runtime_top_k runtime_top_p_reset_ids min_tokens prompt_vocab_size", "INT32", flags=_OPT_SCALAR
        ),
        *_each(
            "temperature runtime_top_p runtime_top_p_min runtime_top_p_decay len_penalty repetition_penalty "
            "beam_search_diversity_rate presence_penalty frequency_penalty",
            "FP32",
            flags=_OPT_SCALAR,
        ),
        *_each(
            "early_stopping return_log_probs return_context_logits return_generation_logits return_perf_metrics "
            "return_num_input_tokens return_num_output_tokens exclude_input_in_output stop streaming",
            "BOOL",
            flags=_OPT_SCALAR,
        ),
        *_each("seed lora_task_id", "UINT64", flags=_OPT_SCALAR),
        _t("prompt_embedding_table", PROMPT_TABLE_TYPE, (-1, -1), "opt ragged"),
        _t("prompt_table_extra_ids", "UINT64", (-1,), "opt ragged"),
        _t("cross_attention_mask", "BOOL", (-1, -1), "opt ragged"),
        _t("mrope_rotary_cos_sin", "FP32", (-1,), "opt"),
        _t("mrope_position_deltas", "INT64", (1,), "opt"),
        _t("lora_weights", "FP16", (-1, -1), "opt ragged"),
        _t("lora_config", "INT32", (-1, 3), "opt ragged"),
        _t("context_phase_params", "UINT8", (-1,), "opt ragged"),
        _t("skip_cross_attn_blocks", "BOOL", (1,), "opt ragged"),
        *_each(
            "retention_token_range_starts retention_token_range_ends retention_token_range_priorities "
            "retention_token_range_durations_ms",
            "INT32",
            (-1,),
            "opt ragged",
        ),
        *_each(
            "retention_decode_priority retention_decode_duration_ms lookahead_window_size lookahead_ngram_size "
            "lookahead_verification_set_size",
            "INT32",
            (1,),
            "opt ragged",
        ),
        *_each("guided_decoding_guide_type guided_decoding_guide", "STRING", (1,), "opt ragged"),
    ]


# Per-request results the ensemble and the BLS pass through from tensorrt_llm unchanged.
PASSTHROUGH_OUTPUTS = (
    "cum_log_probs output_log_probs context_logits generation_logits batch_index sequence_index "
    "kv_cache_alloc_new_blocks kv_cache_reused_blocks kv_cache_alloc_total_blocks arrival_time_ns "
    "first_scheduled_time_ns first_token_time_ns last_token_time_ns acceptance_rate "
    "total_accepted_draft_tokens total_draft_tokens num_input_tokens num_output_tokens"
).split()


def tensorrt_llm_outputs(logits: str) -> list[Tensor]:
    """tensorrt_llm/config.pbtxt @0c8de69a outputs (the BLS requests all but context_phase_params)."""
    return [
        _t("output_ids", "INT32", (-1, -1)),
        _t("sequence_length", "INT32", (-1,)),
        _t("cum_log_probs", "FP32", (-1,)),
        _t("output_log_probs", "FP32", (-1, -1)),
        _t("context_logits", logits, (-1, -1)),
        _t("generation_logits", logits, (-1, -1, -1)),
        *_each("batch_index sequence_index", "INT32"),
        _t("context_phase_params", "UINT8", (-1,)),
        *_each("kv_cache_alloc_new_blocks kv_cache_reused_blocks kv_cache_alloc_total_blocks", "INT32"),
        *_each("arrival_time_ns first_scheduled_time_ns first_token_time_ns last_token_time_ns", "INT64"),
        _t("acceptance_rate", "FP32"),
        *_each("total_accepted_draft_tokens total_draft_tokens num_input_tokens num_output_tokens", "INT32"),
    ]


def response_outputs(logits: str) -> list[Tensor]:
    """Outputs of the ensemble and of tensorrt_llm_bls: text_output plus tensorrt_llm's per-request results."""
    passthrough = {t.name: t for t in tensorrt_llm_outputs(logits)}
    return [_t("text_output", "STRING", (-1,))] + [passthrough[name] for name in PASSTHROUGH_OUTPUTS]


# preprocessing/config.pbtxt @08dc37e3. Its model.py (@01259b15) initialize() looks up the data_type of
# EMBEDDING_BIAS_WORDS/_WEIGHTS and of INPUT_ID ... IMAGE_SIZES by name (a missing one raises at load), and
# the BLS requests every output below.
PREPROCESSING_INPUTS = [
    _t("QUERY", "STRING"),
    _t("DECODER_QUERY", "STRING", flags="opt"),
    _t("IMAGE_BYTES", "UINT8", (-1, -1, -1, -1), "opt"),
    _t("IMAGE_URL", "STRING", flags="opt"),
    _t("IMAGES", "STRING", (-1,), "opt"),
    _t("VIDEO_BYTES", "UINT8", (-1, -1, -1, -1), "opt"),
    _t("REQUEST_OUTPUT_LEN", "INT32"),
    *_each("BAD_WORDS_DICT STOP_WORDS_DICT EMBEDDING_BIAS_WORDS", "STRING", (-1,), "opt"),
    _t("EMBEDDING_BIAS_WEIGHTS", "FP32", (-1,), "opt"),
    *_each("END_ID PAD_ID", "INT32", flags="opt"),
    _t("PROMPT_TABLE_EXTRA_ID", "UINT64", flags="opt"),
]
PREPROCESSING_OUTPUTS = [
    _t("INPUT_ID", "INT32", (-1,)),
    _t("REQUEST_INPUT_LEN", "INT32"),
    _t("DECODER_INPUT_ID", "INT32", (-1,)),
    _t("REQUEST_DECODER_INPUT_LEN", "INT32"),
    *_each("BAD_WORDS_IDS STOP_WORDS_IDS", "INT32", (2, -1)),
    _t("EMBEDDING_BIAS", "FP32", (-1,)),
    _t("REQUEST_OUTPUT_LEN", "INT32", (-1,)),
    *_each("OUT_END_ID OUT_PAD_ID", "INT32"),
    _t("OUT_PROMPT_TABLE_EXTRA_IDS", "UINT64", (-1,)),
    _t("PIXEL_VALUES", "FP16", (-1, -1, -1, -1)),
    _t("ASPECT_RATIO_IDS", "INT64", (-1,)),
    _t("ASPECT_RATIO_MASK", "INT64", (-1, -1)),
    _t("CROSS_ATTENTION_MASK", "INT64", (-1, -1, -1)),
    _t("IMAGE_SIZES", "INT64", (-1, 2)),
    _t("IS_VIDEO_INPUT", "BOOL"),
    _t("ATTENTION_MASK", "INT64", (-1,)),
    _t("IMAGE_GRID_THW", "INT64", (3,)),
    _t("VISION_INPUT_ID", "INT32", (-1,)),
]
POSTPROCESSING_INPUTS = [_t("TOKENS_BATCH", "INT32", (-1, -1)), _t("SEQUENCE_LENGTH", "INT32", (-1,))]
POSTPROCESSING_OUTPUTS = [_t("OUTPUT", "STRING", (-1,))]

# ensemble/config.pbtxt @2a9abd95 inputs (no reshape: the ensemble only routes them)
ENSEMBLE_INPUTS = [
    _t("text_input", "STRING"),
    _t("decoder_text_input", "STRING", flags="opt"),
    _t("max_tokens", "INT32"),
    *_each("bad_words stop_words embedding_bias_words", "STRING", (-1,), "opt"),
    _t("embedding_bias_weights", "FP32", (-1,), "opt"),
    *_each("num_return_sequences end_id pad_id top_k min_tokens beam_width prompt_vocab_size", "INT32", flags="opt"),
    *_each(
        "top_p temperature length_penalty repetition_penalty presence_penalty frequency_penalty", "FP32", flags="opt"
    ),
    *_each("seed prompt_table_extra_id lora_task_id", "UINT64", flags="opt"),
    *_each(
        "exclude_input_in_output return_log_probs return_context_logits return_generation_logits "
        "return_perf_metrics return_num_input_tokens return_num_output_tokens stream",
        "BOOL",
        flags="opt",
    ),
    _t("prompt_embedding_table", PROMPT_TABLE_TYPE, (-1, -1), "opt"),
    _t("lora_weights", "FP16", (-1, -1), "opt ragged"),
    _t("lora_config", "INT32", (-1, 3), "opt ragged"),
    *_each("guided_decoding_guide_type guided_decoding_guide", "STRING", (1,), "opt ragged"),
]

# tensorrt_llm_bls/config.pbtxt @0193dbd4 inputs: the ensemble's minus decoder-side routing, plus image
# inputs and draft-model knobs; scalar reshapes where its decoder (triton_decoder.py @07f3e442) undoes them.
BLS_INPUTS = [
    _t("text_input", "STRING"),
    _t("decoder_text_input", "STRING", flags="opt"),
    _t("image_input", "FP16", (-1, 3, -1, -1), "opt"),
    *_each("image_bytes_input video_bytes_input", "UINT8", (-1, -1, -1, -1), "opt"),
    _t("image_url_input", "STRING", flags="opt"),
    _t("max_tokens", "INT32"),
    *_each("bad_words stop_words embedding_bias_words", "STRING", (-1,), "opt"),
    _t("embedding_bias_weights", "FP32", (-1,), "opt"),
    *_each("end_id pad_id top_k min_tokens beam_width prompt_vocab_size num_draft_tokens", "INT32", flags="opt"),
    _t("num_return_sequences", "INT32", flags=_OPT_SCALAR),
    *_each(
        "top_p temperature length_penalty repetition_penalty presence_penalty frequency_penalty", "FP32", flags="opt"
    ),
    *_each("seed prompt_table_extra_id", "UINT64", flags="opt"),
    _t("lora_task_id", "UINT64", flags=_OPT_SCALAR),
    *_each("exclude_input_in_output stream", "BOOL", flags="opt"),
    *_each(
        "return_log_probs return_context_logits return_generation_logits use_draft_logits return_perf_metrics "
        "return_num_input_tokens return_num_output_tokens",
        "BOOL",
        flags=_OPT_SCALAR,
    ),
    _t("prompt_embedding_table", PROMPT_TABLE_TYPE, (-1, -1), "opt"),
    _t("lora_weights", "FP16", (-1, -1), "opt ragged"),
    _t("lora_config", "INT32", (-1, 3), "opt ragged"),
    *_each("guided_decoding_guide_type guided_decoding_guide", "STRING", (1,), "opt"),
]


def _same(names: str) -> dict[str, str]:
    return {name: name for name in names.split()}


# ensemble_scheduling of ensemble/config.pbtxt @2a9abd95: (model, input_map, output_map), model tensor → ensemble
# tensor. Preprocessing's REQUEST_OUTPUT_LEN output feeds tensorrt_llm's request_output_len.
ENSEMBLE_STEPS: list[tuple[str, dict[str, str], dict[str, str]]] = [
    (
        "preprocessing",
        {
            "QUERY": "text_input",
            "DECODER_QUERY": "decoder_text_input",
            "REQUEST_OUTPUT_LEN": "max_tokens",
            "BAD_WORDS_DICT": "bad_words",
            "STOP_WORDS_DICT": "stop_words",
            "EMBEDDING_BIAS_WORDS": "embedding_bias_words",
            "EMBEDDING_BIAS_WEIGHTS": "embedding_bias_weights",
            "END_ID": "end_id",
            "PAD_ID": "pad_id",
            "PROMPT_TABLE_EXTRA_ID": "prompt_table_extra_id",
        },
        {
            "REQUEST_INPUT_LEN": "_REQUEST_INPUT_LEN",
            "INPUT_ID": "_INPUT_ID",
            "REQUEST_DECODER_INPUT_LEN": "_REQUEST_DECODER_INPUT_LEN",
            "DECODER_INPUT_ID": "_DECODER_INPUT_ID",
            "REQUEST_OUTPUT_LEN": "_REQUEST_OUTPUT_LEN",
            "STOP_WORDS_IDS": "_STOP_WORDS_IDS",
            "BAD_WORDS_IDS": "_BAD_WORDS_IDS",
            "EMBEDDING_BIAS": "_EMBEDDING_BIAS",
            "OUT_END_ID": "_PREPROCESSOR_END_ID",
            "OUT_PAD_ID": "_PREPROCESSOR_PAD_ID",
            "OUT_PROMPT_TABLE_EXTRA_IDS": "_OUT_PROMPT_TABLE_EXTRA_IDS",
        },
    ),
    (
        "tensorrt_llm",
        {
            "input_ids": "_INPUT_ID",
            "decoder_input_ids": "_DECODER_INPUT_ID",
            "input_lengths": "_REQUEST_INPUT_LEN",
            "decoder_input_lengths": "_REQUEST_DECODER_INPUT_LEN",
            "request_output_len": "_REQUEST_OUTPUT_LEN",
            "end_id": "_PREPROCESSOR_END_ID",
            "pad_id": "_PREPROCESSOR_PAD_ID",
            "embedding_bias": "_EMBEDDING_BIAS",
            "stop_words_list": "_STOP_WORDS_IDS",
            "bad_words_list": "_BAD_WORDS_IDS",
            "prompt_table_extra_ids": "_OUT_PROMPT_TABLE_EXTRA_IDS",
            "runtime_top_k": "top_k",
            "runtime_top_p": "top_p",
            "len_penalty": "length_penalty",
            "streaming": "stream",
            **_same(
                "exclude_input_in_output temperature repetition_penalty min_tokens presence_penalty frequency_penalty "
                "seed return_log_probs return_context_logits return_generation_logits return_perf_metrics "
                "return_num_input_tokens return_num_output_tokens num_return_sequences beam_width "
                "prompt_embedding_table prompt_vocab_size lora_task_id lora_weights lora_config "
                "guided_decoding_guide_type guided_decoding_guide"
            ),
        },
        {"output_ids": "_TOKENS_BATCH", "sequence_length": "_SEQUENCE_LENGTH", **_same(" ".join(PASSTHROUGH_OUTPUTS))},
    ),
    (
        "postprocessing",
        {"TOKENS_BATCH": "_TOKENS_BATCH", "SEQUENCE_LENGTH": "_SEQUENCE_LENGTH"},
        {"OUTPUT": "text_output"},
    ),
]


# ---- pbtxt rendering ----------------------------------------------------------------------------------


def _tensors(kind: str, tensors: list[Tensor]) -> str:
    names = [t.name for t in tensors]
    if len(set(names)) != len(names):
        raise FoundryError(f"{kind}: duplicate tensor names {sorted({n for n in names if names.count(n) > 1})}")
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


def _dynamic_batching(max_batch_size: int | None = None, serving: ServingConfig | None = None) -> str:
    """The queue lives here: the backend reads dynamic_batching.default_queue_policy.max_queue_size
    (model_instance_state.cc @0c8de69a; 0 = unbounded); a `max_queue_size` parameter is ignored."""
    if serving is None:
        return "dynamic_batching {}\n"
    return (
        f"dynamic_batching {{\n  preferred_batch_size: [ {max_batch_size} ]\n"
        f"  max_queue_delay_microseconds: {serving.max_queue_delay_microseconds}\n"
        f"  default_queue_policy {{\n    max_queue_size: {serving.max_queue_size}\n  }}\n}}\n"
    )


def _checked(model: str, text: str) -> str:
    if "${" in text:
        raise FoundryError(f"{model}/config.pbtxt: an unfilled ${{...}} placeholder remains; this is a foundry bug")
    return text


def render_preprocessing(max_batch_size: int, tokenizer_dir: str, engine_dir: str, serving: ServingConfig) -> str:
    text = _header("preprocessing", "python", max_batch_size) + _dynamic_batching(max_batch_size, serving)
    text += _tensors("input", PREPROCESSING_INPUTS) + _tensors("output", PREPROCESSING_OUTPUTS)
    text += _parameters(
        {
            "tokenizer_dir": tokenizer_dir,
            # Upstream's default is true. Foundry benchmarks and evaluates text prompts tokenized with
            # add_special_tokens=False (foundry/bench/server.py, bench/workload.py), so the served engine sees the
            # token ids that were measured; a BOS the model needs belongs in the prompt / chat template.
            "add_special_tokens": False,
            "multimodal_model_path": "",  # model.py indexes it directly (KeyError if absent); "" = text-only
            "gpt_model_path": engine_dir,
            "max_num_images": "",  # "" → None in model.py (only multimodal models use it)
            "hf_model_path": tokenizer_dir,  # read only for multimodal processors
        }
    )
    return _checked("preprocessing", text + _instances(serving.preprocessing_instance_count))


def render_postprocessing(max_batch_size: int, tokenizer_dir: str, serving: ServingConfig) -> str:
    text = _header("postprocessing", "python", max_batch_size) + _dynamic_batching()
    text += _tensors("input", POSTPROCESSING_INPUTS) + _tensors("output", POSTPROCESSING_OUTPUTS)
    text += _parameters({"tokenizer_dir": tokenizer_dir, "skip_special_tokens": True})
    return _checked("postprocessing", text + _instances(serving.postprocessing_instance_count))


def render_tensorrt_llm(
    max_batch_size: int, engine_dir: str, max_beam_width: int, logits: str, serving: ServingConfig
) -> str:
    text = _header("tensorrt_llm", "tensorrtllm", max_batch_size, decoupled=serving.decoupled)
    text += _dynamic_batching(max_batch_size, serving)
    text += _tensors("input", tensorrt_llm_inputs(logits)) + _tensors("output", tensorrt_llm_outputs(logits))
    text += _instances(1)
    text += _parameters(
        {
            "max_beam_width": max_beam_width,
            "FORCE_CPU_ONLY_INPUT_TENSORS": "no",
            "gpt_model_type": serving.batching_strategy,  # read without a default: required
            "gpt_model_path": engine_dir,
            "batch_scheduler_policy": serving.batch_scheduler_policy,
            "kv_cache_free_gpu_mem_fraction": serving.kv_cache_free_gpu_mem_fraction,
            "enable_kv_cache_reuse": serving.enable_kv_cache_reuse,
            "enable_chunked_context": serving.enable_chunked_context,
            "multi_block_mode": serving.multi_block_mode,
            "exclude_input_in_output": serving.exclude_input_in_output,
            "executor_worker_path": "/opt/tritonserver/backends/tensorrtllm/trtllmExecutorWorker",
            # getGuidedDecodingConfigFromParams reads these three without a default (a missing key throws at
            # load); "" leaves guided decoding off.
            "tokenizer_dir": "",
            "xgrammar_tokenizer_info_path": "",
            "guided_decoding_backend": "",
        }
    )
    return _checked("tensorrt_llm", text)


def _map(kind: str, pairs: dict[str, str]) -> str:
    return "".join(
        f"      {kind} {{\n        key: {_quote(k)}\n        value: {_quote(v)}\n      }}\n" for k, v in pairs.items()
    )


def _step(model: str, inputs: dict[str, str], outputs: dict[str, str]) -> str:
    return (
        f"    {{\n      model_name: {_quote(model)}\n      model_version: -1\n"
        + _map("input_map", inputs)
        + _map("output_map", outputs)
        + "    }"
    )


def render_ensemble(max_batch_size: int, logits: str) -> str:
    text = f'name: "ensemble"\nplatform: "ensemble"\nmax_batch_size: {max_batch_size}\n'
    text += _tensors("input", ENSEMBLE_INPUTS) + _tensors("output", response_outputs(logits))
    steps = [_step(model, inputs, outputs) for model, inputs, outputs in ENSEMBLE_STEPS]
    text += "ensemble_scheduling {\n  step [\n" + ",\n".join(steps) + "\n  ]\n}\n"
    return _checked("ensemble", text)


def render_tensorrt_llm_bls(max_batch_size: int, logits: str, serving: ServingConfig) -> str:
    text = _header("tensorrt_llm_bls", "python", max_batch_size, decoupled=serving.decoupled)
    text += _tensors("input", BLS_INPUTS) + _tensors("output", response_outputs(logits))
    text += _parameters(
        {
            "accumulate_tokens": False,
            "tensorrt_llm_model_name": "tensorrt_llm",
            "tensorrt_llm_draft_model_name": "",
            "multimodal_encoders_name": "",
        }
    )  # "" = none
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
    triton = triton_release_for(info["environment"]["trtllm_version"], serving)
    check_tensorrt_matches_container(engine_dir, info["environment"], triton)
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

    logits = engine_logits_type(engine_dir)
    served_engine, served_tokenizer = f"{mount}/tensorrt_llm/1/engine", f"{mount}/tokenizer"
    configs = {
        "preprocessing": render_preprocessing(max_batch_size, served_tokenizer, served_engine, serving),
        "tensorrt_llm": render_tensorrt_llm(max_batch_size, served_engine, info["max_beam_width"], logits, serving),
        "postprocessing": render_postprocessing(max_batch_size, served_tokenizer, serving),
        "ensemble": render_ensemble(max_batch_size, logits),
    }
    if serving.tensorrt_llm_bls:
        configs["tensorrt_llm_bls"] = render_tensorrt_llm_bls(max_batch_size, logits, serving)
    for model, text in configs.items():
        (out_dir / model / "1").mkdir(parents=True, exist_ok=True)
        (out_dir / model / "config.pbtxt").write_text(text)

    environment = info["environment"]
    needs_model_py = [m for m in configs if m in PYTHON_BACKEND_MODELS]
    record = {
        "models": sorted(configs),
        "engine": {
            "content_hash": read_manifest(engine_dir)["content_hash"]
            if (engine_dir / MANIFEST_NAME).is_file()
            else None,
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
Mount this directory at `{record["mount"]}` in the Triton container (every path in the configs points there).

## The engine

| | |
|---|---|
| TRT-LLM | {env["trtllm_version"]} |
| TensorRT | {env["tensorrt_version"]} |
| GPU | {env["gpu_name"]} (compute {env["compute_capability"]}) |
| CUDA / driver | {env["cuda_version"]} / {env["driver_version"]} |
| engine content hash | {record["engine"]["content_hash"]} |

The engine runs only where TRT-LLM {env["trtllm_version"]} and a compute {env["compute_capability"]} GPU are present.

## Triton container

| TRT-LLM | Triton image | source |
|---|---|---|
| {env["trtllm_version"]} | {triton["image"] or "unknown"} | {triton["source"]} |

## Before serving

The Python-backend models ({model_py}) run the `1/` directory (`model.py`; for tensorrt_llm_bls also `lib/`)
of NVIDIA/TensorRT-LLM `{UPSTREAM_MODELS_DIR}/<model>/` at the tag of TRT-LLM {env["trtllm_version"]}
(before TRT-LLM 1.0: triton-inference-server/tensorrtllm_backend `all_models/inflight_batcher_llm/`); foundry
does not ship them. Copy each into `<model>/1/`, then

    tritonserver --model-repository={record["mount"]}
"""
