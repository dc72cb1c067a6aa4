"""Continuous (in-flight) batching for the reference engine: one scheduler thread owns the model.

Each iteration of the loop (as vLLM's and TensorRT-LLM's in-flight batchers do):
1. admit waiting requests into free KV slots (FIFO); a request with no free slot waits, and its
   `waiting_reason` says so;
2. prefill: prompt chunks of admitted requests, up to `prefill_chunk_tokens` tokens this
   iteration (a long prompt takes several iterations, so running requests keep decoding);
3. decode: one batched greedy step for every request past its prompt;
4. retire finished and cancelled requests, freeing their slots.
While the batch does not change (same rows, each wanting more by count), a decode step is launched
before the previous one's tokens are handed out (DecodeRunner.launch_next): on a GPU the host's
per-token work overlaps the next step. A request that stops at a stop token inside that window
gets one extra step computed, whose token is dropped.
Tokens reach each request's callback from this thread as they are produced. A request that cannot
ever fit (longer than the engine's max_seq_len) is refused at submit with the reason.

Written here rather than taken from vLLM / TensorRT-LLM: both schedulers are bound to their own
model executors and CUDA kernels (paged attention), which the reference runtime does not use.
"""

from __future__ import annotations

import collections
import heapq
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from foundry.errors import FoundryError
from foundry.runtime.decode_runner import DecodeRunner, DecodeStep
from foundry.runtime.prefill_graphs import PrefillGraphs, prefill_graph_stats


@dataclass(frozen=True)
class EngineOptions:
    """The reference engine's serving knobs (build.* in the config; engine.json records them)."""

    max_batch_size: int = 8  # KV slots = requests decoded together
    max_seq_len: int | None = None  # tokens per slot (prompt + output); None: min(2048, the checkpoint's)
    prefill_chunk_tokens: int = 512  # prompt tokens prefilled per iteration, across requests
    cuda_graphs: bool = True  # CUDA only: decode steps replayed from captured graphs
    graph_batch_sizes: tuple[int, ...] = ()  # decode batch buckets; () = powers of two and steps of 8..
    torch_compile: bool = False  # CUDA only: compile the decode step (inductor) before capturing it
    # With torch_compile, the batched prefill's layers too (dynamic shapes). Off: on an H200 it took
    # a 16 × 128-token bf16 prefill 61.1 → 53.7 ms for 106 s of compile, and FP8's compile had not
    # finished after 9 minutes (docs/gpu-results/run13_*, run14_*); gpu_bench --compiled-prefill.
    compile_prefill: bool = False
    # With cuda_graphs (and the prefill not compiled): a lone fresh prompt's prefill replayed from a
    # graph per length bucket (prefill_graphs.py: launched op by op it is bound by the host).
    graph_prefill: bool = True
    kv_cache_memory_fraction: float | None = None  # CUDA only: size the slots from free GPU memory
    batch_prefill: bool | None = None  # whole short prompts prefilled together; None = on CUDA only
    # CPU: intra-op threads of the scheduler thread; None = one fewer than the caller's (at least 1).
    # The caller's own OpenMP team keeps spinning between its ops: on 2 cores a 2-thread team in the
    # scheduler thread ran SmolLM2's decode step at 44 ms and a 96-token prefill at 220 ms; 1 thread
    # at 33 ms and 80 ms (benchmarks/cpu_scheduler_threads.py).
    cpu_threads: int | None = None

    @classmethod
    def from_engine_info(cls, info: dict) -> "EngineOptions":
        """From engine.json: its `engine` knobs (older engines: max_seq_len only)."""
        knobs = dict(info.get("engine") or {"max_seq_len": info.get("max_seq_len")})
        knobs["graph_batch_sizes"] = tuple(knobs.get("graph_batch_sizes") or ())
        return cls(**knobs)

    def resolved_max_seq_len(self, checkpoint_max_positions: int) -> int:
        return min(self.max_seq_len or 2048, checkpoint_max_positions)


@dataclass(eq=False)
class GenerationRequest:
    """One request in the engine, and the caller's handle on it."""

    prompt: list[int]
    max_new_tokens: int
    on_token: Callable[[int], None] | None = None
    stop_token_ids: frozenset = frozenset()
    on_done: Callable[[], None] | None = None
    request_id: int = 0
    tokens: list[int] = field(default_factory=list)
    slot: int | None = None
    prefilled: int = 0  # prompt tokens already in the cache
    error: BaseException | None = None
    waiting_reason: str | None = None
    submitted_s: float = field(default_factory=time.perf_counter)
    _cancelled: bool = False
    _done: threading.Event = field(default_factory=threading.Event)

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    @property
    def decoding(self) -> bool:
        return self.slot is not None and self.prefilled == len(self.prompt)

    @property
    def next_position(self) -> int:
        """Where the last produced token goes in the cache (it is fed back at the next step)."""
        return len(self.prompt) + len(self.tokens) - 1

    def cancel(self) -> None:
        """Stop generating; the slot is freed at the next iteration. No-op once finished."""
        self._cancelled = True

    def result(self, timeout_s: float | None = None) -> list[int]:
        if not self._done.wait(timeout_s):
            raise TimeoutError(f"request {self.request_id} not finished after {timeout_s} s")
        self.raise_error()
        return list(self.tokens)

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error

    def _wants_more(self, in_flight: int = 0) -> bool:
        """Another token after its own and `in_flight` launched but not yet handed out?"""
        if len(self.tokens) + in_flight >= self.max_new_tokens:
            return False
        return not (self.tokens and self.tokens[-1] in self.stop_token_ids)

    @property
    def _live(self) -> bool:
        return not self._cancelled and self.error is None


class BatchScheduler:
    def __init__(self, model, options: EngineOptions):
        self.model = model
        self.options = options
        self.slots = self._slot_count(model, options)
        self.pool = model.new_pool(self.slots)
        self.runner = DecodeRunner(model, self.pool, options)
        on_cuda = model.device.type == "cuda"
        self.cpu_threads = options.cpu_threads or max(1, torch.get_num_threads() - 1)
        self.batch_prefill = on_cuda if options.batch_prefill is None else options.batch_prefill
        self.prefill_compiled = self.runner.compiled and options.compile_prefill and self.batch_prefill
        if self.prefill_compiled:
            model.compile_prefill()
        self.prefill_graphs = (
            PrefillGraphs(model, self.pool, min(self.pool.shape.capacity - 1, options.prefill_chunk_tokens))
            if self.runner.use_graphs and options.graph_prefill and self.batch_prefill and not self.prefill_compiled
            else None
        )
        self.prefill_compile_s: float | None = None
        self._free_slots = list(range(self.slots))  # a heap: the lowest free slot is taken first
        self._waiting: collections.deque[GenerationRequest] = collections.deque()
        self._running: list[GenerationRequest] = []
        self._ids = itertools.count(1)
        self._wakeup = threading.Condition()
        self._closed = False
        self._in_flight: tuple[DecodeStep, dict[int, GenerationRequest]] | None = None  # launched, not handed out
        self.iterations = 0
        self._thread = threading.Thread(target=self._loop, name="foundry-scheduler", daemon=True)
        self._thread.start()

    @staticmethod
    def _slot_count(model, options: EngineOptions) -> int:
        if options.kv_cache_memory_fraction is None or model.device.type != "cuda":
            return options.max_batch_size
        free_bytes, _ = torch.cuda.mem_get_info(model.device)
        probe = model.new_pool(1)
        per_slot = probe.nbytes
        del probe
        slots = int(free_bytes * options.kv_cache_memory_fraction // per_slot)
        if slots < 1:
            raise FoundryError(
                f"build.kv_cache_memory_fraction {options.kv_cache_memory_fraction}: "
                f"{free_bytes / 2**30:.1f} GiB free holds no KV slot of {per_slot / 2**30:.2f} GiB; "
                "raise the fraction or lower build.max_seq_len"
            )
        return min(slots, options.max_batch_size)

    # --- caller side -------------------------------------------------------------------------------

    def submit(
        self,
        prompt: Sequence[int],
        max_new_tokens: int,
        on_token: Callable[[int], None] | None = None,
        stop_token_ids: Sequence[int] = (),
        on_done: Callable[[], None] | None = None,
    ) -> GenerationRequest:
        prompt = [int(token) for token in prompt]
        if not prompt:
            raise FoundryError("input_ids: the prompt is empty; greedy decoding needs at least one token")
        if max_new_tokens < 1:
            raise FoundryError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        max_seq_len = self.pool.shape.max_seq_len
        if len(prompt) + max_new_tokens > max_seq_len:
            raise FoundryError(
                f"request of {len(prompt)} prompt + {max_new_tokens} new tokens exceeds the engine's max_seq_len "
                f"{max_seq_len}; shorten it or build the engine with a larger build.max_seq_len"
            )
        request = GenerationRequest(
            prompt, max_new_tokens, on_token, frozenset(int(t) for t in stop_token_ids), on_done, next(self._ids)
        )
        with self._wakeup:
            if self._closed:
                raise FoundryError("the engine is closed")
            self._waiting.append(request)
            self._wakeup.notify()
        return request

    def warm_up(self, batch_sizes: list[int] | None = None) -> None:
        """Before traffic: compile the prefill (one prompt and two) or capture a lone prompt's
        prefill graphs (their KV goes to slots that requests overwrite), and capture the decode
        graphs of these batch sizes."""
        if self.prefill_compiled and self.prefill_compile_s is None:
            started = time.perf_counter()
            with torch.inference_mode():
                for count in range(1, min(2, self.slots) + 1):
                    self.model.prefill_batch(self.pool, list(range(count)), [[0] * 16] * count).tolist()
            self.prefill_compile_s = time.perf_counter() - started
        if self.prefill_graphs:
            with torch.inference_mode():
                self.prefill_graphs.warm_up()
        self.runner.warm_up(batch_sizes)

    def close(self) -> None:
        with self._wakeup:
            self._closed = True
            self._wakeup.notify()
        self._thread.join(timeout=60)

    def stats(self) -> dict:
        with self._wakeup:
            waiting = list(self._waiting)
        return {
            "slots": self.slots,
            "free_slots": len(self._free_slots),
            "running": len(self._running),
            "waiting": len(waiting),
            "waiting_reasons": sorted({r.waiting_reason for r in waiting if r.waiting_reason}),
            "iterations": self.iterations,
            "kv_pool_bytes": self.pool.nbytes,
            "prefill_compiled": self.prefill_compiled,
            "prefill_compile_s": None if self.prefill_compile_s is None else round(self.prefill_compile_s, 3),
            **prefill_graph_stats(self.prefill_graphs),
            **self.runner.stats(),
        }

    # --- the scheduler thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        if self.model.device.type == "cpu":
            torch.set_num_threads(self.cpu_threads)  # this thread's own OpenMP team
        with torch.inference_mode():
            while self._wait_for_work():
                try:
                    self._admit()
                    self._prefill()
                    self._decode()
                except Exception as error:  # the model failed: these requests end, the engine lives on
                    self._in_flight = None
                    for request in self._running:
                        request.error = request.error or FoundryError(f"engine step failed: {error}")
                self._retire()
                self.iterations += 1
        self._fail_all(FoundryError("the engine was closed before this request finished"))

    def _wait_for_work(self) -> bool:
        with self._wakeup:
            while not self._closed and not self._running and not self._waiting:
                self._wakeup.wait()
            return not self._closed

    def _admit(self) -> None:
        with self._wakeup:
            for request in [r for r in self._waiting if r._cancelled]:
                self._waiting.remove(request)
                self._finish(request)
            while self._waiting and self._free_slots:
                request = self._waiting.popleft()
                # lowest first: a decode step runs rows 0..highest busy slot, padded to a graph bucket, so
                # a lone request in slot 1 would pay for a batch of two (or of the next bucket)
                request.slot = heapq.heappop(self._free_slots)
                request.waiting_reason = None
                self._running.append(request)
            for request in self._waiting:
                request.waiting_reason = f"all {self.slots} KV slots are in use (build.max_batch_size)"

    @property
    def _min_batch_prefill(self) -> int:
        # a lone fresh prompt takes the whole-prompt path too where that path is compiled or graphed
        return 1 if self.prefill_compiled or self.prefill_graphs else 2

    def _prefill_whole(self, fresh: list[GenerationRequest]) -> torch.Tensor:
        """Fresh prompts prefilled whole: a lone one from its length bucket's graph where there are
        graphs, several in one batched forward."""
        if len(fresh) == 1 and self.prefill_graphs and self.prefill_graphs.serves(fresh[0].prompt):
            return self.prefill_graphs.run(fresh[0].slot, fresh[0].prompt)
        return self.model.prefill_batch(self.pool, [r.slot for r in fresh], [r.prompt for r in fresh])

    def _prefill(self) -> None:
        budget = self.options.prefill_chunk_tokens
        pending = [r for r in self._running if not r.decoding and not r._cancelled and not r.error]
        if self.batch_prefill:  # fresh prompts that fit this iteration's budget whole: one forward
            fresh = []
            for request in pending:
                if request.prefilled == 0 and len(request.prompt) <= budget:
                    fresh.append(request)
                    budget -= len(request.prompt)
            if len(fresh) >= self._min_batch_prefill:
                next_tokens = self._prefill_whole(fresh)
                for request, token in zip(fresh, next_tokens.tolist()):
                    request.prefilled = len(request.prompt)
                    self._emit(request, int(token))
                pending = [r for r in pending if r not in fresh]
            else:
                budget = self.options.prefill_chunk_tokens
        for request in pending:
            if budget <= 0:
                return
            start = request.prefilled
            chunk = request.prompt[start : start + budget]
            next_token = self.model.prefill(self.pool, request.slot, chunk, start)
            request.prefilled += len(chunk)
            budget -= len(chunk)
            if request.decoding:
                self._emit(request, int(next_token))

    def _decode(self) -> None:
        in_flight = self._in_flight
        if in_flight is not None:
            previous, launched = in_flight
            if self._decode_rows(launched) == launched:  # the batch goes on unchanged: overlap
                self._in_flight = (self.runner.launch_next(previous), launched)
                self._hand_out(previous, launched)
                return
            self._in_flight = None
            self._hand_out(previous, launched)
        by_slot = self._decode_rows()
        if not by_slot:
            return
        step_rows = [
            (r.tokens[-1], r.next_position) if (r := by_slot.get(slot)) else None for slot in range(max(by_slot) + 1)
        ]
        step = self.runner.launch(step_rows)
        if self.runner.overlap:
            self._in_flight = (step, by_slot)
        else:
            self._hand_out(step, by_slot)

    def _decode_rows(self, launched: dict[int, GenerationRequest] | None = None) -> dict[int, GenerationRequest]:
        """slot → request for every request past its prompt that wants another token, counting the
        token a launched step (`launched`) still owes it."""
        launched = launched or {}
        return {
            r.slot: r
            for r in self._running
            if r.decoding and r._live and r._wants_more(in_flight=1 if launched.get(r.slot) is r else 0)
        }

    def _hand_out(self, step: DecodeStep, launched: dict[int, GenerationRequest]) -> None:
        """A step's tokens to its requests; a request that stopped meanwhile (stop token, cancelled)
        gets nothing — and if none is left, the step's tokens are not even waited for (the step
        still ran, in launch order: its writes to a freed slot precede any newcomer's)."""
        receivers = {slot: r for slot, r in launched.items() if r._live and r._wants_more()}
        if not receivers:
            return
        for slot, token in enumerate(step.result()):
            if slot in receivers:
                self._emit(receivers[slot], token)

    def _emit(self, request: GenerationRequest, token: int) -> None:
        request.tokens.append(token)
        if request.on_token is not None:
            try:
                request.on_token(token)
            except Exception as error:  # a broken consumer ends its own request only
                request.error = error

    def _retire(self) -> None:
        for request in list(self._running):
            if request._cancelled or request.error or (request.decoding and not request._wants_more()):
                self._running.remove(request)
                with self._wakeup:
                    heapq.heappush(self._free_slots, request.slot)
                self._finish(request)

    def _finish(self, request: GenerationRequest) -> None:
        request._done.set()
        if request.on_done is not None:
            try:
                request.on_done()
            except Exception:  # the consumer is gone (e.g. its event loop closed): nobody to tell
                pass

    def _fail_all(self, error: FoundryError) -> None:
        with self._wakeup:
            pending = self._running + list(self._waiting)
            self._running, self._waiting = [], collections.deque()
        for request in pending:
            request.error = request.error or error
            self._finish(request)
