"""Every check that needs only metadata, before ZenML starts: a bad input is refused in seconds
(exit 2) instead of inside the pipeline after ingest and calibration.

What is checked here: the config (strict, foundry/config.py); the variant on the chosen backend;
the checkpoint's config.json, safetensors headers and tokenizer, or GGUF header (architecture,
custom code, tensors and shapes, tp_size against the heads, build.max_seq_len against
max_position_embeddings); the calibration data (exists, UTF-8, parses) and the benchmark dataset
(parses, every request fits build.max_seq_len). The checkpoint is located, never hashed or
downloaded here: the pipeline's resolve_source step resolves it once per run (a schedule's runs see
new checkpoints), runs `check_checkpoint` on what it resolved and hashes its bytes once. Weights,
tokens and Great Expectations stay in the pipeline, where they are checked on the bytes used.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from foundry.calibrate import check_supported, known_caveats
from foundry.checkpoint import locate_checkpoint_source, read_source_config, require_context_fits
from foundry.config import BuildConfig, CalibrationConfig, CheckpointSource, FoundryConfig, load_config
from foundry.data import load_documents, require_no_evaluation_paragraphs
from foundry.task_accuracy import load_tasks


@dataclass(frozen=True)
class Preflight:
    config: FoundryConfig
    # where the checkpoint was located: its path, "embedded", or "" when only the pipeline can fetch it
    submitted_source_path: str
    caveats: tuple[str, ...] = ()


@dataclass(frozen=True)
class CheckpointCheck:
    config_file: Path  # config.json or the GGUF file: where the model's facts came from
    caveats: tuple[str, ...]


def check_checkpoint(source: CheckpointSource, calibration: CalibrationConfig, build: BuildConfig) -> CheckpointCheck:
    """A resolved checkpoint's metadata against the (already validated) calibration request and the
    build: the one owner of these checks, run by preflight on what it located and by the pipeline's
    resolve_source step on what it resolved. Reads metadata only (cached per process)."""
    model_config, config_file = read_source_config(source)
    check_supported(calibration, build.backend, model_config, build.max_seq_len)
    require_context_fits(model_config.get("max_position_embeddings"), build.max_seq_len, config_file)
    return CheckpointCheck(config_file=config_file, caveats=tuple(known_caveats(calibration, model_config)))


def _tokenizer_for(config: FoundryConfig, config_file: Path):
    """The checkpoint's tokenizer, for text prompts in a benchmark dataset (loaded only when needed)."""
    from transformers import AutoTokenizer

    if config_file.name == "config.json":
        return AutoTokenizer.from_pretrained(str(config_file.parent))
    return AutoTokenizer.from_pretrained(str(config_file.parent), gguf_file=config_file.name)


def check_benchmark_dataset(config: FoundryConfig, config_file: Path | None) -> None:
    """`config_file` None: the checkpoint is not here yet (remote registry artifacts), so text
    prompts cannot be tokenized; the benchmark step checks them."""
    from foundry.bench.workload import load_trtllm_dataset, require_requests_fit

    path = Path(config.benchmark.dataset)
    has_prompts = b'"prompt"' in path.read_bytes() if path.is_file() else False
    if has_prompts and config_file is None:
        return
    tokenizer = _tokenizer_for(config, config_file) if has_prompts else None
    requests = load_trtllm_dataset(path, tokenizer)
    require_requests_fit(requests, config.build.max_seq_len, path)


def check_calibration_data(config: FoundryConfig) -> None:
    calibration = config.calibration
    if calibration.source == "hf_dataset" and not Path(str(calibration.path)).exists():
        return  # a hub name: loaded (or refused offline) by the pipeline's validation step
    documents = load_documents(calibration.source, calibration.path, calibration.field, calibration.hf_split)
    require_no_evaluation_paragraphs(documents, f"calibration data {calibration.path or calibration.source}")


def require_writable_state() -> None:
    """The state directory (ZenML store, MLflow DB, artifacts) must be writable, or every step fails late."""
    import os

    from foundry.errors import InfrastructureError
    from foundry.state import STATE_DIR_ENV, state_dir

    try:
        state = state_dir()
    except OSError as error:
        raise InfrastructureError(
            f"the state directory cannot be created ({error}); set ${STATE_DIR_ENV} to a writable path"
        ) from None
    if not os.access(state, os.W_OK | os.X_OK):
        raise InfrastructureError(
            f"{state}: the state directory is not writable; fix its permissions or set "
            f"${STATE_DIR_ENV} to a writable path"
        )


def run_preflight(
    config_path: str | Path, base_dir: Path | None = None, stack_tracking_uri: Callable[[], str] | None = None
) -> Preflight:
    """Load and check everything cheap. Relative paths (the config file's own and those inside it)
    resolve against `base_dir`, the caller's working directory. `stack_tracking_uri` gives the
    active stack's MLflow, asked only for an mlflow_model source without its own tracking_uri: the
    same registry the pipeline's resolve_source step asks."""
    base_dir = base_dir or Path.cwd()
    require_writable_state()
    config_path = Path(config_path).expanduser()
    config = load_config(config_path if config_path.is_absolute() else base_dir / config_path)
    config = config.with_paths_resolved(base_dir)
    source = config.model.source
    asks_stack = source.kind == "mlflow_model" and source.tracking_uri is None and stack_tracking_uri is not None
    located = locate_checkpoint_source(source, tracking_uri=stack_tracking_uri() if asks_stack else None)
    checked = check_checkpoint(located, config.calibration, config.build) if located is not None else None
    check_calibration_data(config)
    load_tasks(config.evaluation.tasks)  # lm-eval installed, task files local and well-formed
    if config.benchmark.dataset:
        check_benchmark_dataset(config, checked.config_file if checked else None)
    return Preflight(
        config=config,
        submitted_source_path=(located.path or located.kind) if located is not None else "",
        caveats=checked.caveats if checked else (),
    )
