"""Calibration and evaluation text: documents → hashed, disjoint splits → token windows.

The built-in source is Python's own documentation topics (`pydoc_data.topics`, shipped with every
CPython), so the default path needs no download. Documents are assigned to calibration or
evaluation by a hash of their normalized text, so the two splits never share a document, and the
split is the same on every machine.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch

from foundry.errors import FoundryError
from foundry.hashing import sha256_json, sha256_text

Split = Literal["calibration", "evaluation"]
_EVAL_BUCKET = 0  # texts whose normalized hash falls in bucket 0 of 4 are held out for evaluation
_BUCKETS = 4


def normalize_text(text: str) -> str:
    """Lower-case, collapse whitespace: two texts that differ only in layout hash the same."""
    return re.sub(r"\s+", " ", text).strip().lower()


def normalized_hash(text: str) -> str:
    return sha256_text(normalize_text(text))


def builtin_documents(split: Split) -> list[str]:
    from pydoc_data.topics import topics

    # Several topic names share one text: bucket by the normalized text's hash, not the name, so
    # identical texts always land in the same split, and keep each text once.
    by_hash = {normalized_hash(text): text for _, text in sorted(topics.items()) if text.strip()}
    want_eval = split == "evaluation"
    return [
        text for digest, text in sorted(by_hash.items())
        if (int(digest, 16) % _BUCKETS == _EVAL_BUCKET) == want_eval
    ]


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
