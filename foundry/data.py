"""Calibration and evaluation text: documents → hashed, disjoint splits → token windows.

The built-in source is Python's own documentation topics (`pydoc_data.topics`, shipped with every
CPython), so the default path needs no download. Documents are assigned to calibration or
evaluation by a hash of their topic name, so the two splits never share a document, and the
split is the same on every machine.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Literal

import torch

from foundry.errors import FoundryError
from foundry.hashing import sha256_json, sha256_text

Split = Literal["calibration", "evaluation"]
_EVAL_BUCKET = 0  # topics whose name hashes to bucket 0 of 4 are held out for evaluation
_BUCKETS = 4


def normalize_text(text: str) -> str:
    """Lower-case, collapse whitespace: two texts that differ only in layout hash the same."""
    return re.sub(r"\s+", " ", text).strip().lower()


def normalized_hash(text: str) -> str:
    return sha256_text(normalize_text(text))


def builtin_documents(split: Split) -> list[str]:
    from pydoc_data.topics import topics

    def bucket(name: str) -> int:
        return int(hashlib.sha256(name.encode()).hexdigest(), 16) % _BUCKETS

    want_eval = split == "evaluation"
    names = sorted(name for name in topics if (bucket(name) == _EVAL_BUCKET) == want_eval)
    return [topics[name] for name in names if topics[name].strip()]


@dataclass(frozen=True)
class TokenWindows:
    """`num_samples` windows of exactly `seq_len` tokens, plus the hashes that identify them."""

    input_ids: torch.Tensor  # [num_samples, seq_len] int64
    documents_hash: str  # hash over normalized document hashes: the data's identity
    document_hashes: frozenset[str]
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
        document_hashes=frozenset(hashes),
        tokens_available=len(stream),
    )


def assert_disjoint(calibration: TokenWindows, evaluation: TokenWindows) -> None:
    shared = calibration.document_hashes & evaluation.document_hashes
    if shared:
        raise FoundryError(
            f"{len(shared)} document(s) appear in both the calibration and the evaluation data; "
            "evaluation must be held out — remove the overlap"
        )
