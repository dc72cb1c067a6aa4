"""The interface every runtime offers to the benchmark and the quality evaluation."""

from __future__ import annotations

from typing import Callable, Protocol, Sequence, runtime_checkable

import torch

TokenCallback = Callable[[int], None]


@runtime_checkable
class Engine(Protocol):
    """A loaded model that can stream greedy tokens and score sequences.

    `backend` names what produced a number in every report ("reference", "hf-transformers",
    "trtllm", "http"); reports always carry it.
    """

    backend: str

    def generate(
        self, input_ids: Sequence[int], max_new_tokens: int, on_token: TokenCallback | None = None
    ) -> list[int]:
        """Greedy-decode exactly `max_new_tokens` tokens (EOS does not stop it: benchmarks need
        the requested length). `on_token(token_id)` is called as each token is produced, so a
        caller can timestamp arrivals. Returns the generated ids. Must be safe to call from
        several threads at once (one request per thread)."""
        ...

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Full-sequence forward: [batch, seq] int64 → [batch, seq, vocab] float32 logits."""
        ...
