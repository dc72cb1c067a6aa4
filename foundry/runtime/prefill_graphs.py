"""A lone fresh prompt's prefill, replayed on CUDA from a graph captured per prompt-length bucket.

At concurrency 1 a request's time to first token is its prefill. Launched op by op from Python, a
128-token prefill of Llama-3.1-8B shapes is bound by the host, not the GPU: on an H200 its TTFT p50
moved between 15.6 and 28.0 ms from one run to the next with the same code (docs/gpu-results/run14_*),
against ~4 ms of weight reads, and quantized prefills launch more kernels each (Triton from Python).
So a lone prompt is right-padded to the next length bucket and its whole prefill — embedding,
layers, the last real position's lm_head, argmax — replayed from a graph captured for that length.
Padding columns land in the slot past the prompt, where decode overwrites them before it reads (as
in the batched prefill). Several fresh prompts together still run as one eager batched forward:
that one is bound by the GPU's work, not by launches.

On CPU nothing is captured: the same padded forward runs eagerly (tests check there that padding
to a bucket gives the tokens of the unpadded prefill).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch

from foundry.runtime.decode_runner import capture_cuda_graph

MIN_BUCKET_TOKENS = 16


def right_padded(prompts: Sequence[Sequence[int]], length: int) -> torch.Tensor:
    """Token ids [n, length] on the host: each prompt, then zeros (padding a prefill writes past the
    prompt, where decode overwrites it before reading)."""
    ids = torch.zeros((len(prompts), length), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, : len(prompt)] = torch.tensor(prompt)
    return ids


def length_buckets(max_tokens: int) -> list[int]:
    """Powers of two from MIN_BUCKET_TOKENS below max_tokens, then max_tokens itself: every prompt
    of up to max_tokens tokens has a bucket, padded by less than its own length (beyond 16)."""
    buckets = []
    size = MIN_BUCKET_TOKENS
    while size < max_tokens:
        buckets.append(size)
        size *= 2
    return [*buckets, max_tokens]


@dataclass
class CapturedPrefill:
    ids: torch.Tensor  # [1, bucket] static input
    slot: torch.Tensor  # [1]
    length: torch.Tensor  # [1]
    graph: torch.cuda.CUDAGraph | None = None  # once captured (never on CPU)
    next_token: torch.Tensor | None = None  # [1] the graph's static output


class PrefillGraphs:
    def __init__(self, model, pool, max_tokens: int, capture: bool | None = None):
        """Buckets up to max_tokens: at most the slot's length (padding must stay off the scratch
        column) and the scheduler's prefill budget (a longer prompt is chunked, not prefilled whole).
        capture: None = on CUDA; False runs the padded forward eagerly there too (to check graphs)."""
        self.model = model
        self.pool = pool
        self.capture = model.device.type == "cuda" if capture is None else capture
        self.buckets = length_buckets(max_tokens)
        self._prefills: dict[int, CapturedPrefill] = {}
        self._graph_memory = torch.cuda.graph_pool_handle() if self.capture else None
        self.capture_s = 0.0
        self.prefills_run = 0

    def serves(self, prompt: Sequence[int]) -> bool:
        return 0 < len(prompt) <= self.buckets[-1]

    def run(self, slot: int, prompt: Sequence[int]) -> torch.Tensor:
        """Prefill one whole prompt into the slot; its greedy next token [1] (a fresh device tensor)."""
        self.prefills_run += 1
        return self._prefill(slot, prompt)

    def _prefill(self, slot: int, prompt: Sequence[int]) -> torch.Tensor:
        bucket = next(size for size in self.buckets if size >= len(prompt))
        prefill = self._prefills.get(bucket) or self._new_prefill(bucket)
        prefill.ids.copy_(right_padded([prompt], bucket))
        prefill.slot.fill_(slot)
        prefill.length.fill_(len(prompt))
        if not self.capture:  # CPU: the same padded forward, eagerly
            return self._forward(prefill)
        if prefill.graph is None:
            self._capture(prefill)  # its warm-up runs write this very prompt into this slot
        prefill.graph.replay()
        return prefill.next_token.clone()  # the static output is overwritten by the next replay

    def warm_up(self) -> None:
        """Capture every bucket before traffic, through slot 0 (a request's prefill overwrites it)."""
        if not self.capture:
            return
        for bucket in self.buckets:
            if bucket not in self._prefills:
                self._prefill(0, [0] * bucket)  # not a request's: not counted

    def _forward(self, prefill: CapturedPrefill) -> torch.Tensor:
        return self.model.prefill_padded(self.pool, prefill.ids, prefill.slot, prefill.length)

    def _new_prefill(self, bucket: int) -> CapturedPrefill:
        device = self.model.device
        prefill = CapturedPrefill(
            torch.zeros((1, bucket), dtype=torch.long, device=device),
            torch.zeros(1, dtype=torch.long, device=device),
            torch.ones(1, dtype=torch.long, device=device),
        )
        self._prefills[bucket] = prefill
        return prefill

    def _capture(self, prefill: CapturedPrefill) -> None:
        started = time.perf_counter()
        # its own memory pool: the decode graphs' outputs are still read after a prefill replays
        prefill.graph, prefill.next_token = capture_cuda_graph(
            lambda: self._forward(prefill), self.model.device, self._graph_memory
        )
        self.capture_s += time.perf_counter() - started


def prefill_graph_stats(graphs: PrefillGraphs | None) -> dict:
    """The engine's prefill-graph figures; zeros where it has none (CPU, or graphs off)."""
    return {
        "prefill_graphs": sum(p.graph is not None for p in graphs._prefills.values()) if graphs else 0,
        "prefill_capture_s": round(graphs.capture_s, 3) if graphs else 0.0,
        "prefills_from_buckets": graphs.prefills_run if graphs else 0,
    }
