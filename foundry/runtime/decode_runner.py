"""Runs one batched decode step, on a GPU replayed from CUDA graphs captured per shape bucket.

A decode step of a small batch is a few hundred small kernels; launched one by one from Python
they cost more than the weights take to read (HF eager reached 6 % of the H200's bandwidth). So
on CUDA the step is captured once per (batch bucket, KV-length bucket) and replayed: rows are
padded up to the next batch bucket with padding rows that write only the pool's scratch column,
and attention reads the cache up to the next multiple of `KV_BLOCK_CUDA` columns. With
`torch_compile` the step is first compiled by inductor (fusing the small ops), for one KV length
(the whole slot) so the compile is paid once per batch bucket; its time is in `stats()`.
On CPU the step runs eagerly with exactly the rows and columns it needs.

`launch` starts a step and returns at once on the graph path: its tokens come back to a pinned
host buffer behind a CUDA event. `launch_next` starts the following step for the same rows from
the previous step's tokens and positions on the device, without waiting for the host to see them —
so the scheduler hands out step N−1's tokens (callbacks, bookkeeping) while step N runs, instead of
leaving the GPU idle between steps. The graphs of one batch bucket share their input buffers, and
each graph ends by feeding its tokens back into them, one position further: `launch_next` is a
bare replay, with no kernels of its own between two steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
import torch._dynamo

from foundry.runtime import pdl

DEFAULT_GRAPH_BATCH_SIZES = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 192, 256)
KV_BLOCK_CUDA = 256
KV_BLOCK_CPU = 16


@dataclass
class CapturedStep:
    graph: torch.cuda.CUDAGraph
    tokens: torch.Tensor  # inputs, shared by the batch bucket's graphs; each replay advances them
    positions: torch.Tensor
    next_tokens: torch.Tensor


@dataclass
class DecodeStep:
    """One launched decode step: `result()` gives the next token per row (waits for it if needed)."""

    rows: list[tuple[int, int] | None]  # as passed to launch: (last token, its position) or None
    width: int
    kv_len: int
    captured: CapturedStep | None = None
    host_tokens: torch.Tensor | None = None  # pinned, filled by an async copy
    ready: torch.cuda.Event | None = None
    tokens: list[int] | None = None

    @property
    def max_position(self) -> int:
        return max(row[1] for row in self.rows if row)

    def result(self) -> list[int]:
        if self.tokens is None:
            self.ready.synchronize()
            self.tokens = self.host_tokens[: len(self.rows)].tolist()
        return self.tokens


def capture_cuda_graph(run: Callable[[], torch.Tensor], device: torch.device, memory_pool) -> tuple:
    """Run `run` twice on a side stream (compilation, Triton autotuning, cuBLAS handles), then
    capture it into a graph allocating from memory_pool; (the graph, its static output)."""
    side = torch.cuda.Stream(device)
    side.wait_stream(torch.cuda.current_stream(device))
    with torch.cuda.stream(side):
        for _ in range(2):
            run()
    torch.cuda.current_stream(device).wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=memory_pool):
        output = run()
    return graph, output


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
        self._inputs: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # batch bucket → (tokens, positions)
        self._graph_memory = torch.cuda.graph_pool_handle() if self.use_graphs else None
        self._host_tokens = (
            [torch.empty(self.batch_buckets[-1], dtype=torch.long).pin_memory() for _ in range(2)]
            if self.use_graphs
            else []
        )
        self._host_turn = 0
        # Hand a step's tokens out only after the next step is launched (graph path: the GPU runs
        # while the host works). Eager steps finish inside launch, so there is nothing to overlap;
        # tests turn it on there to check the scheduler's bookkeeping with the real model.
        self.overlap = self.use_graphs
        self.capture_s = 0.0
        self.first_capture_s: float | None = None  # includes compilation (and Triton autotuning)
        self._step = model.decode
        if self.compiled:
            # one compiled graph per batch bucket; the default limit (8) would silently fall back to eager
            torch._dynamo.config.cache_size_limit = max(
                torch._dynamo.config.cache_size_limit, 4 * len(self.batch_buckets)
            )
            self._step = torch.compile(model.decode, dynamic=False, options=pdl.inductor_options(model.device))

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

    def launch(self, rows: list[tuple[int, int] | None]) -> DecodeStep:
        """Start one step: rows[b] = (last token, its position) of the request in slot b, None for an
        idle slot. Its `result()` is the next greedy token per row (garbage for idle rows); on the
        graph path launch returns before the step ends."""
        count = len(rows)
        width = self._batch_bucket(count) if self.use_graphs else count
        tokens = [row[0] if row else 0 for row in rows] + [0] * (width - count)
        positions = [row[1] if row else self.scratch_position for row in rows]
        positions += [self.scratch_position] * (width - count)
        step = DecodeStep(rows, width, self._kv_len(max(row[1] for row in rows if row)))
        tokens_cpu = torch.tensor(tokens, dtype=torch.long)
        positions_cpu = torch.tensor(positions, dtype=torch.long)
        if not self.use_graphs:  # eager: the step runs here, in launch order
            device = self.model.device
            next_tokens = self._step(self.pool, tokens_cpu.to(device), positions_cpu.to(device), step.kv_len)
            step.tokens = next_tokens[:count].tolist()
            return step
        step.captured = self._graph(width, step.kv_len)
        step.captured.tokens.copy_(tokens_cpu)
        step.captured.positions.copy_(positions_cpu)
        return self._replay(step)

    def launch_next(self, previous: DecodeStep) -> DecodeStep:
        """Start the step after `previous` for the same rows: each fed the token `previous` produced,
        one position further. On the graph path nothing waits for `previous` to finish."""
        if not self.use_graphs:
            produced = previous.result()
            return self.launch([(produced[b], row[1] + 1) if row else None for b, row in enumerate(previous.rows)])
        rows = [(0, row[1] + 1) if row else None for row in previous.rows]  # host knows positions, not tokens
        step = DecodeStep(rows, previous.width, self._kv_len(previous.max_position + 1))
        step.captured = self._graph(step.width, step.kv_len)  # its inputs: what `previous` left in them
        return self._replay(step)

    def _graph(self, width: int, kv_len: int) -> CapturedStep:
        return self._captured.get((width, kv_len)) or self._capture(width, kv_len)

    def _replay(self, step: DecodeStep) -> DecodeStep:
        """Replay the step's graph; its tokens are copied to a pinned buffer behind an event. Two
        buffers alternate: at most two steps are alive (one being read, one running)."""
        step.captured.graph.replay()
        self._host_turn ^= 1
        step.host_tokens = self._host_tokens[self._host_turn]
        step.host_tokens[: step.width].copy_(step.captured.next_tokens, non_blocking=True)
        step.ready = torch.cuda.Event()
        step.ready.record()
        return step

    def _capture(self, width: int, kv_len: int) -> CapturedStep:
        started = time.perf_counter()
        device = self.model.device
        tokens, positions = self._bucket_inputs(width)
        # A capture may come between two steps of running rows (a new KV-length bucket): keep their
        # inputs, and capture on padding rows only, which write nothing but the scratch column.
        kept_tokens, kept_positions = tokens.clone(), positions.clone()
        positions.fill_(self.scratch_position)

        def step_and_feed_back() -> torch.Tensor:
            next_tokens = self._step(self.pool, tokens, positions, kv_len)
            tokens.copy_(next_tokens)
            positions.add_(positions != self.scratch_position)  # padding and idle rows stay on the scratch column
            return next_tokens

        graph, next_tokens = capture_cuda_graph(step_and_feed_back, device, self._graph_memory)
        tokens.copy_(kept_tokens)
        positions.copy_(kept_positions)
        torch.cuda.synchronize(device)
        elapsed = time.perf_counter() - started
        self.capture_s += elapsed
        if self.first_capture_s is None:
            self.first_capture_s = elapsed
        captured = CapturedStep(graph, tokens, positions, next_tokens)
        self._captured[(width, kv_len)] = captured
        return captured

    def _bucket_inputs(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        if width not in self._inputs:
            device = self.model.device
            self._inputs[width] = (
                torch.zeros(width, dtype=torch.long, device=device),
                torch.full((width,), self.scratch_position, dtype=torch.long, device=device),
            )
        return self._inputs[width]

    def warm_up(self, batch_sizes: list[int] | None = None) -> None:
        """Capture the graphs of these batch buckets for a short context before traffic arrives."""
        if not self.use_graphs:
            return
        for size in batch_sizes or self.batch_buckets:
            width = self._batch_bucket(size)
            kv_len = self._kv_len(0)
            if (width, kv_len) not in self._captured:
                self._capture(width, kv_len)
