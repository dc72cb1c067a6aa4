"""Request sources: what the load generator sends.

Two sources produce the same `Request` list and `WorkloadDescription`:
* a seeded synthetic workload (random token ids; lengths fixed, uniform, or normal within bounds);
* a dataset file in trtllm-bench's JSONL format (`task_id`, `input_ids` or `prompt`, `output_tokens`).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
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
    input_len_distribution: str = "uniform"  # fixed | uniform | normal | dataset
    output_len_distribution: str = "uniform"


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


LENGTH_DISTRIBUTIONS = ("fixed", "uniform", "normal")


def sample_lengths(
    rng: np.random.Generator,
    size: int,
    low: int,
    high: int,
    distribution: str = "uniform",
    mean: float | None = None,
    std: float | None = None,
    name: str = "length",
) -> np.ndarray:
    """`size` integer lengths in [low, high]: fixed (low == high), uniform (inclusive), or normal(mean,
    std) truncated to the bounds by redrawing samples that fall outside (never clipped onto them)."""
    _check_length_range(name, low, high)
    if distribution == "fixed":
        if low != high:
            raise FoundryError(f"{name}: distribution 'fixed' needs min == max, got {low}, {high}")
        return np.full(size, low, dtype=np.int64)
    if distribution == "uniform":
        return rng.integers(low, high, endpoint=True, size=size)
    if distribution == "normal":
        if mean is None or std is None or not std > 0:
            raise FoundryError(f"{name}: distribution 'normal' needs mean and std > 0, got mean={mean}, std={std}")
        if not low <= mean <= high:
            raise FoundryError(f"{name}: mean {mean} lies outside [{low}, {high}]")
        out = np.empty(0, dtype=np.int64)
        for _ in range(1000):
            draw = np.rint(rng.normal(mean, std, size=max(size, 16) * 2)).astype(np.int64)
            out = np.concatenate([out, draw[(draw >= low) & (draw <= high)]])
            if out.size >= size:
                return out[:size]
        raise FoundryError(f"{name}: normal({mean}, {std}) almost never falls within [{low}, {high}]")
    raise FoundryError(f"{name}: unknown distribution {distribution!r}; use one of {LENGTH_DISTRIBUTIONS}")


def synthetic_workload(
    seed: int,
    num_requests: int,
    input_len_min: int,
    input_len_max: int,
    output_len_min: int,
    output_len_max: int,
    vocab_size: int,
    special_ids: Sequence[int] = (),
    input_dist: dict | None = None,
    output_dist: dict | None = None,
) -> list[Request]:
    """Seeded requests: lengths uniform in [min, max] (inclusive) unless `input_dist`/`output_dist`
    (`{"distribution": "fixed"|"uniform"|"normal", "mean": .., "std": ..}`) say otherwise; token ids
    uniform over the vocabulary minus `special_ids` (so no prompt contains BOS/EOS/PAD).
    Same arguments → same list."""
    if num_requests < 1:
        raise FoundryError(f"num_requests must be >= 1, got {num_requests}")
    _check_length_range("input_len", input_len_min, input_len_max)
    _check_length_range("output_len", output_len_min, output_len_max)
    allowed = _allowed_token_ids(vocab_size, special_ids)
    rng = np.random.default_rng(seed)
    if input_dist is None and output_dist is None:  # the original draw order: same seed, same workload
        input_lens = rng.integers(input_len_min, input_len_max, endpoint=True, size=num_requests)
        output_lens = rng.integers(output_len_min, output_len_max, endpoint=True, size=num_requests)
    else:
        input_lens = sample_lengths(
            rng, num_requests, input_len_min, input_len_max, name="input_len", **(input_dist or {})
        )
        output_lens = sample_lengths(
            rng, num_requests, output_len_min, output_len_max, name="output_len", **(output_dist or {})
        )
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
        seed,
        num_requests + warmup_requests,
        input_len_min,
        input_len_max,
        output_len_min,
        output_len_max,
        vocab_size,
        special_ids,
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


def load_trtllm_dataset(path: Path | str, tokenizer=None) -> list[Request]:
    """Read a trtllm-bench JSONL dataset: one JSON object a line with `task_id`, `output_tokens` and
    either `input_ids` (token ids) or `prompt` (text, tokenized with `tokenizer`, no special tokens).
    Every bad line is named (file:line, field)."""
    path = Path(path)
    if not path.is_file():
        raise FoundryError(f"{path}: dataset file not found")
    requests: list[Request] = []
    seen_ids: set = set()
    from foundry.data import read_utf8

    with io.StringIO(read_utf8(path, "benchmark dataset")) as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{line_no}"
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as error:
                raise FoundryError(f"{where}: not valid JSON ({error})") from None
            if not isinstance(entry, dict):
                raise FoundryError(f"{where}: each line must be a JSON object")
            if "task_id" not in entry:
                raise FoundryError(f"{where}: missing task_id")
            if entry["task_id"] in seen_ids:
                raise FoundryError(f"{where}: duplicate task_id {entry['task_id']!r}")
            seen_ids.add(entry["task_id"])
            output_tokens = entry.get("output_tokens")
            if not isinstance(output_tokens, int) or isinstance(output_tokens, bool) or output_tokens < 1:
                raise FoundryError(f"{where}: output_tokens must be an integer >= 1, got {output_tokens!r}")
            if "input_ids" in entry:
                ids = entry["input_ids"]
                if not isinstance(ids, list) or not ids or not all(isinstance(i, int) and i >= 0 for i in ids):
                    raise FoundryError(f"{where}: input_ids must be a non-empty list of token ids >= 0")
            elif "prompt" in entry:
                if not isinstance(entry["prompt"], str) or not entry["prompt"]:
                    raise FoundryError(f"{where}: prompt must be a non-empty string")
                if tokenizer is None:
                    raise FoundryError(f"{where}: a text prompt needs a tokenizer (give input_ids, or a tokenizer)")
                ids = list(tokenizer.encode(entry["prompt"], add_special_tokens=False))
                if not ids:
                    raise FoundryError(f"{where}: prompt tokenizes to no tokens")
            else:
                raise FoundryError(f"{where}: needs input_ids or prompt")
            requests.append(
                Request(request_id=len(requests), input_ids=[int(i) for i in ids], output_tokens=output_tokens)
            )
    if not requests:
        raise FoundryError(f"{path}: the dataset has no requests")
    return requests


def write_trtllm_dataset(requests: Sequence[Request], path: Path | str) -> None:
    """Write requests as trtllm-bench JSONL (so the same workload can be replayed with trtllm-bench)."""
    with Path(path).open("w") as handle:
        for r in requests:
            handle.write(
                json.dumps({"task_id": r.request_id, "input_ids": r.input_ids, "output_tokens": r.output_tokens}) + "\n"
            )


def require_requests_fit(requests: Sequence[Request], max_seq_len: int, path: Path | str) -> None:
    """Every request's prompt plus its output must fit the engine's max_seq_len: a longer one would be
    truncated or refused by a real server, so its numbers would measure something else."""
    too_long = [r for r in requests if len(r.input_ids) + r.output_tokens > max_seq_len]
    if too_long:
        first = too_long[0]
        raise FoundryError(
            f"{path}: request {first.request_id} (line {first.request_id + 1}) needs {len(first.input_ids)} prompt + "
            f"{first.output_tokens} output = {len(first.input_ids) + first.output_tokens} tokens, over the engine's "
            f"build.max_seq_len {max_seq_len} ({len(too_long)} request(s) too long); shorten them or raise build.max_seq_len"
        )


def dataset_workload(
    path: Path | str,
    warmup_requests: int,
    num_requests: int | None = None,
    tokenizer=None,
    vocab_size: int | None = None,
    max_seq_len: int | None = None,
) -> tuple[list[Request], WorkloadDescription]:
    """The first `warmup_requests` lines warm up, the next `num_requests` (default: all) are timed."""
    requests = load_trtllm_dataset(path, tokenizer)
    if max_seq_len is not None:
        require_requests_fit(requests, max_seq_len, path)
    wanted = warmup_requests + (num_requests if num_requests is not None else len(requests) - warmup_requests)
    if len(requests) < wanted or wanted <= warmup_requests:
        raise FoundryError(
            f"{path}: has {len(requests)} requests, need {warmup_requests} warmup + at least 1 timed"
            + (f" ({num_requests} asked)" if num_requests is not None else "")
        )
    requests = requests[:wanted]
    if vocab_size is not None:
        too_big = [r.request_id for r in requests if max(r.input_ids) >= vocab_size]
        if too_big:
            raise FoundryError(f"{path}: requests {too_big[:5]} hold token ids >= the model's vocab_size {vocab_size}")
    description = describe_requests(
        requests, warmup_requests, source=f"trtllm-bench-dataset:{Path(path).name}", vocab_size=vocab_size
    )
    description.input_len_distribution = description.output_len_distribution = "dataset"
    return requests, description


def _distribution(length_range) -> dict | None:
    if getattr(length_range, "distribution", "uniform") == "uniform":
        return None
    spec = {"distribution": length_range.distribution}
    if length_range.distribution == "normal":
        spec |= {"mean": length_range.mean, "std": length_range.std}
    return spec


def workload_from_config(
    config, vocab_size: int, special_ids: Sequence[int] = (), tokenizer=None, max_seq_len: int | None = None
):
    """Build the workload of a `foundry.config.BenchmarkConfig`; returns (requests, description)."""
    if getattr(config, "dataset", None):
        return dataset_workload(
            config.dataset,
            config.warmup_requests,
            config.num_requests,
            tokenizer=tokenizer,
            vocab_size=vocab_size,
            max_seq_len=max_seq_len,
        )
    input_dist, output_dist = _distribution(config.input_len), _distribution(config.output_len)
    if input_dist is None and output_dist is None:
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
    requests = synthetic_workload(
        config.seed,
        config.num_requests + config.warmup_requests,
        config.input_len.min,
        config.input_len.max,
        config.output_len.min,
        config.output_len.max,
        vocab_size,
        special_ids,
        input_dist,
        output_dist,
    )
    description = WorkloadDescription(
        source="synthetic",
        seed=config.seed,
        num_requests=config.num_requests,
        warmup_requests=config.warmup_requests,
        input_len_min=config.input_len.min,
        input_len_max=config.input_len.max,
        output_len_min=config.output_len.min,
        output_len_max=config.output_len.max,
        vocab_size=vocab_size,
        workload_hash=workload_hash(requests),
        input_len_distribution=config.input_len.distribution,
        output_len_distribution=config.output_len.distribution,
    )
    return requests, description
