"""Calibration and evaluation text: documents → hashed, disjoint splits → token windows.

The built-in source is Python's own documentation topics (`pydoc_data.topics`, shipped with every
CPython), so the default path needs no download. Documents are assigned to calibration or
evaluation by a hash of their normalized text, so the two splits never share a document, and the
split is the same on every machine.
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from foundry.errors import FoundryError, NotSupportedError
from foundry.hashing import content_hash, file_hashes, sha256_file, sha256_json, sha256_text

Split = Literal["calibration", "evaluation"]
_EVAL_BUCKET = 0  # texts whose normalized hash falls in bucket 0 of 4 are held out for evaluation
_BUCKETS = 4
# Overlap between calibration and evaluation is checked per paragraph (the unit the text source
# splits documents into): a paragraph this long or longer, normalized, shared by both is contamination.
# Shorter ones ("Example:", "See also:") recur in unrelated texts and say nothing.
MIN_OVERLAP_CHARS = 40


def normalize_text(text: str) -> str:
    """Lower-case, collapse whitespace: two texts that differ only in layout hash the same."""
    return re.sub(r"\s+", " ", text).strip().lower()


def normalized_hash(text: str) -> str:
    return sha256_text(normalize_text(text))


def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks, as the `text` source splits a file into documents."""
    return re.split(r"\n\s*\n", text)


def paragraph_hashes(text: str) -> set[str]:
    """Normalized hashes of the paragraphs of `text` long enough to count as overlap."""
    normalized = (normalize_text(paragraph) for paragraph in paragraphs(text))
    return {sha256_text(n) for n in normalized if len(n) >= MIN_OVERLAP_CHARS}


def evaluation_paragraph_hashes(evaluation_documents: list[str]) -> frozenset[str]:
    return frozenset().union(*(paragraph_hashes(text) for text in evaluation_documents))


def require_no_evaluation_paragraphs(documents: list, what: str) -> None:
    """Refuse calibration documents that hold paragraphs of the evaluation text (hashing only, no
    tokenizer: cheap enough to run before any work; the GX suite records the same check in the run)."""
    held_out = builtin_evaluation_paragraph_hashes()
    shared = [i for i, d in enumerate(documents) if isinstance(d, str) and paragraph_hashes(d) & held_out]
    if shared:
        raise FoundryError(
            f"{what}: {len(shared)} document(s) (first: #{shared[0] + 1}) contain paragraphs of the evaluation text; "
            "evaluation must be held out — remove them (no calibration was run)"
        )


def builtin_documents(split: Split) -> list[str]:
    """The pydoc topics of one split (computed once per process; a fresh list for each caller)."""
    return list(_builtin_split(split))


@functools.cache
def builtin_evaluation_paragraph_hashes() -> frozenset[str]:
    """Normalized paragraph hashes of the built-in evaluation split, once per process: the
    contamination check of preflight, the data validation and the calibration split all use them."""
    return evaluation_paragraph_hashes(list(_builtin_split("evaluation")))


@functools.cache
def _builtin_split(split: Split) -> tuple[str, ...]:
    """Topics share paragraphs (`def` and `function` repeat whole sections), so a calibration topic
    keeps only the paragraphs no evaluation topic holds."""
    from pydoc_data.topics import topics

    # Several topic names share one text: bucket by the normalized text's hash, not the name, so
    # identical texts always land in the same split, and keep each text once.
    by_hash = {normalized_hash(text): text for _, text in sorted(topics.items()) if text.strip()}
    if split == "evaluation":
        return tuple(text for digest, text in sorted(by_hash.items()) if int(digest, 16) % _BUCKETS == _EVAL_BUCKET)
    held_out = builtin_evaluation_paragraph_hashes()
    calibration = []
    for digest, text in sorted(by_hash.items()):
        if int(digest, 16) % _BUCKETS == _EVAL_BUCKET:
            continue
        kept = "\n\n".join(p for p in paragraphs(text) if not paragraph_hashes(p) & held_out)
        if kept.strip():
            calibration.append(kept)
    return tuple(calibration)


def read_utf8(path: Path, what: str) -> str:
    """A file's text; a byte that is not UTF-8 is named by its offset, with the fix."""
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise FoundryError(
            f"{path}: {what} is not UTF-8: byte 0x{error.object[error.start]:02x} at offset {error.start} "
            f"({error.reason}); re-encode the file as UTF-8 (e.g. iconv -t UTF-8)"
        ) from None


def _text_file_documents(path: Path) -> list[str]:
    """A UTF-8 text file: documents are separated by one or more blank lines."""
    return paragraphs(read_utf8(path, "calibration data"))


def _jsonl_documents(path: Path, field: str) -> list[str | None]:
    documents: list[str | None] = []
    for number, line in enumerate(read_utf8(path, "calibration data").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise FoundryError(f"{path}:{number}: not valid JSON ({error}); one JSON object per line") from None
        if not isinstance(row, dict) or field not in row:
            raise FoundryError(
                f"{path}:{number}: no field {field!r} (calibration.field); keys: {sorted(row) if isinstance(row, dict) else type(row).__name__}"
            )
        documents.append(row[field])
    return documents


def _parquet_documents(path: Path, field: str) -> list[str | None]:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as error:  # pyarrow raises its own types for a non-parquet file
        raise FoundryError(f"{path}: cannot be read as Parquet ({error})") from None
    if field not in frame.columns:
        raise FoundryError(f"{path}: no column {field!r} (calibration.field); columns: {list(frame.columns)}")
    return [None if value is None or (isinstance(value, float) and value != value) else value for value in frame[field]]


def _hf_dataset_documents(name: str, field: str, split: str) -> list[str | None]:
    """Rows of `field` from a Hugging Face dataset: a folder written by `Dataset.save_to_disk`, a
    local folder of data files (the hub's repository layout), or a name on a reachable hub."""
    import datasets

    local = Path(name)
    try:
        if any((local / marker).is_file() for marker in ("dataset_dict.json", "dataset_info.json", "state.json")):
            dataset = datasets.load_from_disk(str(local))
            if isinstance(dataset, datasets.DatasetDict):
                dataset = dataset[split]
        else:
            dataset = datasets.load_dataset(name, split=split)
    except KeyError:
        raise FoundryError(f"calibration.hf_split: {name!r} has no split {split!r}") from None
    except Exception as error:  # an unreachable hub, a missing dataset, a bad split
        where = "local folder" if local.exists() else "Hugging Face dataset (needs a reachable hub; no download here)"
        raise FoundryError(
            f"calibration.path: cannot load {where} {name!r} split {split!r}: {type(error).__name__}: {error}"
        ) from None
    if field not in dataset.column_names:
        raise FoundryError(f"{name}: no column {field!r} (calibration.field); columns: {dataset.column_names}")
    return list(dataset[field])


def load_documents(source: str, path: str | None = None, field: str = "text", split: str = "train") -> list:
    """Raw documents of a calibration source, in file order, unvalidated (None / empty kept so the
    data validation can report them). `builtin` gives the calibration split of the pydoc topics."""
    if source == "builtin":
        return builtin_documents("calibration")
    if source == "hf_dataset":
        return _hf_dataset_documents(str(path), field, split)
    file_path = Path(str(path))
    if not file_path.is_file():
        raise FoundryError(f"{file_path}: calibration.path not found (source {source!r})")
    if source == "text":
        return _text_file_documents(file_path)
    if source == "jsonl":
        return _jsonl_documents(file_path, field)
    if source == "parquet":
        return _parquet_documents(file_path, field)
    raise NotSupportedError(f"calibration.source: {source!r} is not a known source")


def data_fingerprint(source: str, path: str | None) -> str:
    """SHA-256 identity of a data source's bytes, taken before the run so that it enters the cache
    key of every step that reads the data: a rewritten file recalibrates, an unchanged one hits the
    cache. `builtin` is Python's pydoc topics, which change with the Python patch release."""
    import platform

    if source == "builtin":
        return sha256_text(f"builtin:pydoc_data:{platform.python_version()}")
    local = Path(str(path)).expanduser()
    if local.is_file():
        return sha256_file(local)
    if local.is_dir():
        return content_hash(file_hashes(local))
    if source == "hf_dataset":  # a hub name: its bytes are not here to hash (and offline it fails to load)
        return sha256_text(f"hf_dataset:{path}")
    raise FoundryError(f"{local}: data file not found (source {source!r}); check the path")


def clean_documents(documents: list) -> list[str]:
    """The usable documents: non-empty strings, each normalized text once (first occurrence kept)."""
    seen: set[str] = set()
    cleaned: list[str] = []
    for document in documents:
        if not isinstance(document, str) or not document.strip():
            continue
        digest = normalized_hash(document)
        if digest not in seen:
            seen.add(digest)
            cleaned.append(document)
    return cleaned


@dataclass(frozen=True)
class TokenWindows:
    """`num_samples` windows of exactly `seq_len` tokens, plus the hashes that identify them."""

    input_ids: torch.Tensor  # [num_samples, seq_len] int64
    documents_hash: str  # hash over normalized document hashes: the data's identity
    paragraph_hashes: frozenset[str]  # what the overlap check compares
    tokens_available: int

    @property
    def windows_hash(self) -> str:
        return sha256_json(self.input_ids.tolist())


def token_windows(documents: list[str], tokenizer, num_samples: int, seq_len: int, what: str) -> TokenWindows:
    """Tokenize the documents as one stream and cut consecutive windows of `seq_len` tokens."""
    if not documents:
        raise FoundryError(f"{what}: no documents to tokenize")
    stream: list[int] = []
    for document in documents:
        stream.extend(tokenizer(document, add_special_tokens=False)["input_ids"])
        stream.append(tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0)
    needed = num_samples * seq_len
    if len(stream) < needed:
        raise FoundryError(
            f"{what}: {num_samples} samples × {seq_len} tokens need {needed} tokens but the data has "
            f"{len(stream)}; lower {what}.num_samples or {what}.seq_len, or add text"
        )
    ids = torch.tensor(stream[:needed], dtype=torch.int64).view(num_samples, seq_len)
    hashes = sorted(normalized_hash(d) for d in documents)
    return TokenWindows(
        input_ids=ids,
        documents_hash=sha256_json(hashes),
        paragraph_hashes=evaluation_paragraph_hashes(documents),
        tokens_available=len(stream),
    )


def assert_disjoint(calibration: TokenWindows, evaluation: TokenWindows) -> None:
    shared = calibration.paragraph_hashes & evaluation.paragraph_hashes
    if shared:
        raise FoundryError(
            f"{len(shared)} paragraph(s) appear in both the calibration and the evaluation data; "
            "evaluation must be held out — remove the overlap"
        )
