"""Runs one batched decode step, on a GPU replayed from CUDA graphs captured per shape bucket.

A decode step of a small batch is a few hundred small kernels; launched one by one from Python
they cost more than the weights take to read (HF eager reached 6 % of the H200's bandwidth). So
on CUDA the step is captured once per (batch bucket, KV-length bucket) and replayed: rows are
padded up to the next batch bucket with padding rows that write only the pool's scratch column,
and attention reads the cache up to the next multiple of `KV_BLOCK_CUDA` columns. With
`torch_compile` the step is first compiled by inductor (fusing the small ops), for one KV length
(the whole slot) so the compile is paid once per batch bucket; its time is in `stats()`.
On CPU the step runs eagerly with exactly the rows and columns it needs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch._dynamo

DEFAULT_GRAPH_BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
KV_BLOCK_CUDA = 256
KV_BLOCK_CPU = 16


@dataclass
class CapturedStep:
    graph: torch.cuda.CUDAGraph
    tokens: torch.Tensor
    positions: torch.Tensor
    next_tokens: torch.Tensor


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


class DecodeRunner:
    def __init__(self, model, pool, options):
        self.model = model
        self.pool = pool
        on_cuda = model.device.type == "cuda"
        self.use_graphs = on_cuda and options.cuda_graphs
        self.compiled = on_cuda and options.torch_compile
        sizes = sorted(
            {size for size in (options.graph_batch_sizes or DEFAULT_GRAPH_BATCH_SIZES) if size < pool.shape.slots}
        )
        self.batch_buckets = [*sizes, pool.shape.slots]
        self.kv_block = KV_BLOCK_CUDA if on_cuda else KV_BLOCK_CPU
        self.scratch_position = pool.scratch_position
        self._captured: dict[tuple[int, int], CapturedStep] = {}
        self._graph_memory = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self.capture_s = 0.0
        self.first_capture_s: float | None = None  # includes compilation (and Triton autotuning)
        self._step = model.decode
        if self.compiled:
            # one compiled graph per batch bucket; the default limit (8) would silently fall back to eager
            torch._dynamo.config.cache_size_limit = max(
                torch._dynamo.config.cache_size_limit, 4 * len(self.batch_buckets)
            )
            self._step = torch.compile(model.decode, dynamic=False)

    def stats(self) -> dict:
        return {
            "cuda_graphs": self.use_graphs,
            "torch_compile": self.compiled,
            "captured_graphs": len(self._captured),
            "graph_capture_s": round(self.capture_s, 3),
            "first_capture_s": None if self.first_capture_s is None else round(self.first_capture_s, 3),
        }

    def _kv_len(self, max_position: int) -> int:
        capacity = self.pool.shape.capacity
        if self.compiled:  # one shape per batch bucket: compile once
            return capacity
        return min(capacity, _round_up(max_position + 1, self.kv_block))

    def _batch_bucket(self, rows: int) -> int:
        return next(size for size in self.batch_buckets if size >= rows)

    def step(self, rows: list[tuple[int, int] | None]) -> list[int]:
        """rows[b] = (last token, its position) of the request in slot b, None for an idle slot.
        Returns the next greedy token per row (garbage for idle rows)."""
        count = len(rows)
        width = self._batch_bucket(count) if self.use_graphs else count
        tokens = [row[0] if row else 0 for row in rows] + [0] * (width - count)
        positions = [row[1] if row else self.scratch_position for row in rows]
        positions += [self.scratch_position] * (width - count)
        kv_len = self._kv_len(max(row[1] for row in rows if row))
        tokens_cpu = torch.tensor(tokens, dtype=torch.long)
        positions_cpu = torch.tensor(positions, dtype=torch.long)
        if not self.use_graphs:
            device = self.model.device
            next_tokens = self._step(self.pool, tokens_cpu.to(device), positions_cpu.to(device), kv_len)
            return next_tokens[:count].tolist()
        captured = self._captured.get((width, kv_len)) or self._capture(width, kv_len)
        captured.tokens.copy_(tokens_cpu)
        captured.positions.copy_(positions_cpu)
        captured.graph.replay()
        return captured.next_tokens[:count].tolist()

    def _capture(self, width: int, kv_len: int) -> CapturedStep:
        started = time.perf_counter()
        device = self.model.device
        tokens = torch.zeros(width, dtype=torch.long, device=device)
        # padding rows only: the warm-up and the capture write nothing but the scratch column
        positions = torch.full((width,), self.scratch_position, dtype=torch.long, device=device)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):  # warm-up: compilation, autotuning, cuBLAS handles
            for _ in range(2):
                self._step(self.pool, tokens, positions, kv_len)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self._graph_memory):
            next_tokens = self._step(self.pool, tokens, positions, kv_len)
        torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - started
        self.capture_s += elapsed
        if self.first_capture_s is None:
            self.first_capture_s = elapsed
        captured = CapturedStep(graph, tokens, positions, next_tokens)
        self._captured[(width, kv_len)] = captured
        return captured

    def warm_up(self, batch_sizes: list[int] | None = None) -> None:
        """Capture the graphs of these batch buckets for a short context before traffic arrives."""
        if not self.use_graphs:
            return
        for size in batch_sizes or self.batch_buckets:
            width = self._batch_bucket(size)
            kv_len = self._kv_len(0)
            if (width, kv_len) not in self._captured:
                self._capture(width, kv_len)
