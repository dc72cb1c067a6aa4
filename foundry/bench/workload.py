"""Request sources: what the load generator sends.

Today the only source is a seeded synthetic workload (random token ids, uniform lengths); a later
trtllm-bench dataset import only has to produce the same `Request` list and `WorkloadDescription`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from pydantic import BaseModel, ConfigDict

from foundry.errors import FoundryError
from foundry.hashing import sha256_json


@dataclass(frozen=True)
class Request:
    """One request: a prompt of token ids and the exact number of tokens to generate."""

    request_id: int
    input_ids: list[int]
    output_tokens: int


class WorkloadDescription(BaseModel):
    """What was sent, so two reports can be checked to have measured the same thing."""

    model_config = ConfigDict(extra="forbid")

    source: str  # "synthetic", later e.g. "trtllm-bench-dataset"
    seed: int | None
    num_requests: int  # timed requests (warmup excluded)
    warmup_requests: int
    input_len_min: int
    input_len_max: int
    output_len_min: int
    output_len_max: int
    vocab_size: int | None
    workload_hash: str  # over every request (ids, prompts, output lengths), warmup included


def _check_length_range(name: str, low: int, high: int) -> None:
    if low < 1:
        raise FoundryError(f"{name}_min must be >= 1, got {low}")
    if high < 1:
        raise FoundryError(f"{name}_max must be >= 1, got {high}")
    if low > high:
        raise FoundryError(f"{name}_min ({low}) must be <= {name}_max ({high})")


def _allowed_token_ids(vocab_size: int, special_ids: Iterable[int]) -> np.ndarray:
    if vocab_size < 1:
        raise FoundryError(f"vocab_size must be >= 1, got {vocab_size}")
    excluded = {int(i) for i in special_ids}
    allowed = np.array([i for i in range(vocab_size) if i not in excluded], dtype=np.int64)
    if allowed.size == 0:
        raise FoundryError(f"special_ids exclude the whole vocabulary (vocab_size={vocab_size})")
    return allowed


def synthetic_workload(
    seed: int,
    num_requests: int,
    input_len_min: int,
    input_len_max: int,
    output_len_min: int,
    output_len_max: int,
    vocab_size: int,
    special_ids: Sequence[int] = (),
) -> list[Request]:
    """Seeded requests: lengths uniform in [min, max] (inclusive), token ids uniform over the
    vocabulary minus `special_ids` (so no prompt contains BOS/EOS/PAD). Same arguments → same list."""
    if num_requests < 1:
        raise FoundryError(f"num_requests must be >= 1, got {num_requests}")
    _check_length_range("input_len", input_len_min, input_len_max)
    _check_length_range("output_len", output_len_min, output_len_max)
    allowed = _allowed_token_ids(vocab_size, special_ids)
    rng = np.random.default_rng(seed)
    input_lens = rng.integers(input_len_min, input_len_max, endpoint=True, size=num_requests)
    output_lens = rng.integers(output_len_min, output_len_max, endpoint=True, size=num_requests)
    return [
        Request(
            request_id=index,
            input_ids=rng.choice(allowed, size=int(input_len)).tolist(),
            output_tokens=int(output_len),
        )
        for index, (input_len, output_len) in enumerate(zip(input_lens, output_lens))
    ]


def workload_hash(requests: Sequence[Request]) -> str:
    return sha256_json([[r.request_id, r.input_ids, r.output_tokens] for r in requests])


def describe_requests(
    requests: Sequence[Request],
    warmup_requests: int,
    *,
    source: str = "custom",
    seed: int | None = None,
    vocab_size: int | None = None,
) -> WorkloadDescription:
    """Describe a request list from what it actually contains (observed length ranges)."""
    if not requests:
        raise FoundryError("the workload has no requests")
    input_lens = [len(r.input_ids) for r in requests]
    output_lens = [r.output_tokens for r in requests]
    return WorkloadDescription(
        source=source,
        seed=seed,
        num_requests=len(requests) - warmup_requests,
        warmup_requests=warmup_requests,
        input_len_min=min(input_lens),
        input_len_max=max(input_lens),
        output_len_min=min(output_lens),
        output_len_max=max(output_lens),
        vocab_size=vocab_size,
        workload_hash=workload_hash(requests),
    )


def synthetic_workload_with_description(
    seed: int,
    num_requests: int,
    warmup_requests: int,
    input_len_min: int,
    input_len_max: int,
    output_len_min: int,
    output_len_max: int,
    vocab_size: int,
    special_ids: Sequence[int] = (),
) -> tuple[list[Request], WorkloadDescription]:
    """`num_requests` timed requests preceded by `warmup_requests` warmup ones, plus the
    description carrying the configured (not observed) length ranges and the seed."""
    if warmup_requests < 0:
        raise FoundryError(f"warmup_requests must be >= 0, got {warmup_requests}")
    requests = synthetic_workload(
        seed, num_requests + warmup_requests, input_len_min, input_len_max,
        output_len_min, output_len_max, vocab_size, special_ids,
    )
    description = WorkloadDescription(
        source="synthetic",
        seed=seed,
        num_requests=num_requests,
        warmup_requests=warmup_requests,
        input_len_min=input_len_min,
        input_len_max=input_len_max,
        output_len_min=output_len_min,
        output_len_max=output_len_max,
        vocab_size=vocab_size,
        workload_hash=workload_hash(requests),
    )
    return requests, description


def workload_from_config(config, vocab_size: int, special_ids: Sequence[int] = ()):
    """Build the workload of a `foundry.config.BenchmarkConfig`; returns (requests, description)."""
    return synthetic_workload_with_description(
        seed=config.seed,
        num_requests=config.num_requests,
        warmup_requests=config.warmup_requests,
        input_len_min=config.input_len.min,
        input_len_max=config.input_len.max,
        output_len_min=config.output_len.min,
        output_len_max=config.output_len.max,
        vocab_size=vocab_size,
        special_ids=special_ids,
    )
