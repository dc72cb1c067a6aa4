"""The reference engine's continuous batching, on CPU, for every quantization the runtime executes.

Checkpoints are real ModelOpt 0.47 exports of a tiny random Llama (tests/conftest.py). The claim
under test: batching changes nothing a request sees — batched greedy outputs equal one-at-a-time
outputs token for token, also for requests that join while others are decoding, with chunked or
batched prefill, with a full KV pool (requests wait) and with cancellation (slots come back).
"""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch

from foundry.calibrate import calibrate_to_trtllm_checkpoint
from foundry.config import BuildConfig, CalibrationConfig
from foundry.errors import FoundryError
from foundry.runtime.prefill_graphs import PrefillGraphs, length_buckets
from foundry.runtime.reference import ReferenceEngine
from foundry.runtime.scheduler import EngineOptions

NEW_TOKENS = 12
VARIANTS = {
    "none": dict(quantization="none"),
    "int8_sq per-tensor": dict(quantization="int8_sq", alpha=0.8),
    "int8_sq per-token": dict(quantization="int8_sq", alpha=0.8, activation_scaling="per_token"),
    "fp8": dict(quantization="fp8"),
    "int8_sq + int8 KV": dict(quantization="int8_sq", alpha=0.8, kv_cache="int8"),
    "fp8 + fp8 KV": dict(quantization="fp8", kv_cache="fp8"),
}


@pytest.fixture(scope="module")
def calibration_ids() -> torch.Tensor:
    return torch.randint(0, 49152, (4, 32), generator=torch.Generator().manual_seed(5))


@pytest.fixture(scope="module")
def checkpoints(tiny_fp16_exact_dir, calibration_ids, tmp_path_factory) -> dict:
    out = {}
    for name, recipe in VARIANTS.items():
        directory = tmp_path_factory.mktemp(name.replace(" ", "_").replace("+", "and"))
        calibrate_to_trtllm_checkpoint(tiny_fp16_exact_dir, CalibrationConfig(**recipe), calibration_ids, directory)
        out[name] = directory
    return out


@pytest.fixture(scope="module")
def prompts() -> list[list[int]]:
    generator = torch.Generator().manual_seed(11)
    return [torch.randint(1, 49152, (length,), generator=generator).tolist() for length in (5, 40, 17, 33, 9, 60)]


def engine_for(directory, **options) -> ReferenceEngine:
    defaults = dict(max_batch_size=4, max_seq_len=128, prefill_chunk_tokens=512)
    return ReferenceEngine.load(directory, options=EngineOptions(**{**defaults, **options}))


def one_at_a_time(directory, prompts) -> list[list[int]]:
    engine = engine_for(directory, max_batch_size=1)
    try:
        return [engine.generate(prompt, NEW_TOKENS) for prompt in prompts]
    finally:
        engine.close()


def all_at_once(engine: ReferenceEngine, prompts) -> list[list[int]]:
    handles = [engine.submit(prompt, NEW_TOKENS) for prompt in prompts]
    return [handle.result(timeout_s=120) for handle in handles]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_batched_greedy_equals_one_at_a_time(checkpoints, prompts, variant):
    expected = one_at_a_time(checkpoints[variant], prompts)
    engine = engine_for(checkpoints[variant])
    try:
        assert all_at_once(engine, prompts) == expected
        # requests joining mid-flight: two start, the rest arrive while those two are decoding
        first = [engine.submit(prompt, NEW_TOKENS + 20) for prompt in prompts[:2]]
        while len(first[0].tokens) < 4:
            time.sleep(0.001)
        late = [engine.submit(prompt, NEW_TOKENS) for prompt in prompts[2:]]
        assert [h.result(timeout_s=120) for h in late] == expected[2:]
        assert [h.result(timeout_s=120)[:NEW_TOKENS] for h in first] == expected[:2]
    finally:
        engine.close()


def test_handing_tokens_out_one_step_late_keeps_every_result_exact(checkpoints, prompts):
    """On a GPU a step's tokens are handed out after the next step is launched (the host's work
    overlaps the GPU's). Turned on here with the real model on CPU: the bookkeeping keeps results
    exact when freed slots are reused, when a stop token ends a request inside the window (the
    extra token is dropped), and when a cancelled request's slot goes to a newcomer."""
    expected = one_at_a_time(checkpoints["int8_sq + int8 KV"], prompts)
    engine = engine_for(checkpoints["int8_sq + int8 KV"], max_batch_size=2)
    engine.scheduler.runner.overlap = True
    try:
        assert all_at_once(engine, prompts) == expected  # 6 requests through 2 slots
        full = expected[0]
        stop = full[4]
        assert engine.generate(prompts[0], NEW_TOKENS, stop_token_ids=[stop]) == full[: full.index(stop) + 1]
        long_request = engine.submit(prompts[0], 100)
        waiting = [engine.submit(prompt, NEW_TOKENS) for prompt in prompts[1:4]]
        while len(long_request.tokens) < 3:
            time.sleep(0.001)
        long_request.cancel()
        assert [h.result(timeout_s=120) for h in waiting] == expected[1:4]
        assert engine.scheduler.stats()["free_slots"] == 2
    finally:
        engine.close()


def test_greedy_tokens_are_the_logits_argmax(checkpoints, prompts):
    """The cached, batched decode computes the full forward's next-token argmax."""
    engine = engine_for(checkpoints["int8_sq + int8 KV"])
    try:
        generated = all_at_once(engine, prompts[:3])
        for prompt, tokens in zip(prompts[:3], generated):
            ids = torch.tensor([prompt + tokens[:-1]])
            assert engine.logits(ids)[0, len(prompt) - 1 :].argmax(-1).tolist() == tokens
    finally:
        engine.close()


@pytest.mark.parametrize(
    "options", [dict(prefill_chunk_tokens=7), dict(batch_prefill=True)], ids=["chunked", "batched"]
)
def test_prefill_variants_give_the_same_tokens(checkpoints, prompts, options):
    """A prompt prefilled in 7-token chunks, or several whole prompts in one padded forward."""
    expected = one_at_a_time(checkpoints["int8_sq per-token"], prompts)
    engine = engine_for(checkpoints["int8_sq per-token"], **options)
    try:
        assert all_at_once(engine, prompts) == expected
    finally:
        engine.close()


def test_compiled_batched_prefill_gives_the_same_tokens(checkpoints, prompts):
    """On CUDA, build.torch_compile compiles the batched prefill too (dynamic shapes). Inductor's
    CPU backend runs the same graph here, int8 KV writes included: the tokens stay those of the
    eager one-at-a-time run (prompt batches of several sizes and lengths go through it)."""
    expected = one_at_a_time(checkpoints["int8_sq + int8 KV"], prompts)
    engine = engine_for(checkpoints["int8_sq + int8 KV"], batch_prefill=True)
    engine.compile_prefill()
    try:
        assert all_at_once(engine, prompts) == expected
    finally:
        engine.close()


@pytest.mark.parametrize("variant", ["none", "int8_sq + int8 KV"])
def test_a_lone_prompt_padded_to_its_length_bucket_gives_the_same_tokens(checkpoints, prompts, variant):
    """On CUDA a lone fresh prompt is prefilled from a graph captured per length bucket, right-padded
    to it (prefill_graphs.py). Here the same padded forward runs eagerly: buckets 16, 32, 48 pad
    5→16, 17→32, 33→48 and 40→48 tokens; the 60-token prompt has no bucket and goes unpadded. The
    padding's KV, written past each prompt, must never reach a token."""
    expected = one_at_a_time(checkpoints[variant], prompts)
    engine = engine_for(checkpoints[variant], batch_prefill=True)
    engine.scheduler.prefill_graphs = PrefillGraphs(engine, engine.scheduler.pool, 48)
    try:
        assert [engine.generate(prompt, NEW_TOKENS) for prompt in prompts] == expected
        assert engine.scheduler.stats()["prefills_from_buckets"] == 5  # all but the 60-token prompt
        assert all_at_once(engine, prompts) == expected  # the first four together, then lone ones
        assert engine.scheduler.stats()["prefill_graphs"] == 0  # nothing captured on CPU
    finally:
        engine.close()


def test_length_buckets_cover_every_prompt_up_to_the_limit():
    assert length_buckets(48) == [16, 32, 48]
    assert length_buckets(256) == [16, 32, 64, 128, 256]
    assert length_buckets(10) == [10]


def test_full_pool_queues_requests_with_a_reason(checkpoints, prompts):
    engine = engine_for(checkpoints["none"], max_batch_size=2)
    try:
        handles = [engine.submit(prompt, 40) for prompt in prompts]
        time.sleep(0.05)
        stats = engine.scheduler.stats()
        assert stats["running"] <= 2 and stats["waiting"] >= 1
        assert stats["waiting_reasons"] == ["all 2 KV slots are in use (build.max_batch_size)"]
        results = [handle.result(timeout_s=120) for handle in handles]
        assert [len(tokens) for tokens in results] == [40] * len(prompts)
        assert engine.scheduler.stats()["free_slots"] == 2
    finally:
        engine.close()


def test_requests_one_after_another_all_take_the_lowest_slot(checkpoints, prompts):
    """A decode step runs rows 0..highest busy slot: a lone request in slot 1 would run a batch of two
    (on a GPU, the next graph bucket's step). Freed slots go back so the lowest is taken again."""
    engine = engine_for(checkpoints["none"], max_batch_size=4)
    try:
        handles = []
        for prompt in prompts[:4]:
            handles.append(engine.submit(prompt, NEW_TOKENS))
            handles[-1].result(timeout_s=120)
        assert [handle.slot for handle in handles] == [0, 0, 0, 0]
        together = [engine.submit(prompt, 40) for prompt in prompts[:3]]
        [handle.result(timeout_s=120) for handle in together]
        assert sorted(handle.slot for handle in together) == [0, 1, 2]
    finally:
        engine.close()


def test_cancellation_frees_the_slot(checkpoints, prompts):
    engine = engine_for(checkpoints["none"], max_batch_size=1)
    try:
        long_request = engine.submit(prompts[0], 100)
        waiting = engine.submit(prompts[1], NEW_TOKENS)
        while len(long_request.tokens) < 3:
            time.sleep(0.001)
        long_request.cancel()
        assert len(waiting.result(timeout_s=120)) == NEW_TOKENS
        assert 3 <= len(long_request.result(timeout_s=10)) < 100
        assert engine.scheduler.stats()["free_slots"] == 1
    finally:
        engine.close()


def test_leaving_a_stream_early_cancels_the_request(checkpoints, prompts):
    engine = engine_for(checkpoints["none"], max_batch_size=1)

    async def first_three() -> list[int]:
        tokens = []
        async for token in engine.agenerate(prompts[0], 100):
            tokens.append(token)
            if len(tokens) == 3:
                break
        return tokens

    try:
        assert len(asyncio.run(first_three())) == 3
        # the slot came back: the next request runs (it would wait forever on a leaked slot)
        assert len(engine.generate(prompts[1], NEW_TOKENS)) == NEW_TOKENS
    finally:
        engine.close()


def test_stop_tokens_end_a_request_early(checkpoints, prompts):
    engine = engine_for(checkpoints["none"])
    try:
        full = engine.generate(prompts[0], NEW_TOKENS)
        stop = full[4]
        stopped = engine.generate(prompts[0], NEW_TOKENS, stop_token_ids=[stop])
        assert stopped == full[: full.index(stop) + 1]
    finally:
        engine.close()


def test_a_failing_callback_ends_only_its_own_request(checkpoints, prompts):
    engine = engine_for(checkpoints["none"])

    def broken(_token: int) -> None:
        raise RuntimeError("consumer went away")

    try:
        bad = engine.submit(prompts[0], NEW_TOKENS, on_token=broken)
        good = engine.submit(prompts[1], NEW_TOKENS)
        with pytest.raises(RuntimeError, match="consumer went away"):
            bad.result(timeout_s=60)
        assert len(good.result(timeout_s=60)) == NEW_TOKENS
    finally:
        engine.close()


def test_bad_requests_are_refused_with_the_fix(checkpoints, prompts):
    engine = engine_for(checkpoints["none"], max_seq_len=64)
    try:
        with pytest.raises(FoundryError, match="prompt is empty"):
            engine.submit([], 4)
        with pytest.raises(FoundryError, match=r"60 prompt \+ 10 new tokens exceeds the engine's max_seq_len 64"):
            engine.submit(prompts[5], 10)
        with pytest.raises(FoundryError, match="max_new_tokens must be >= 1"):
            engine.submit(prompts[0], 0)
        assert engine.generate(prompts[0], 0) == []
    finally:
        engine.close()


def test_many_threads_share_one_engine(checkpoints, prompts):
    """The old contract (generate from several threads at once) still holds, through the scheduler."""
    expected = one_at_a_time(checkpoints["fp8"], prompts)
    engine = engine_for(checkpoints["fp8"])
    results: list = [None] * len(prompts)
    threads = [
        threading.Thread(target=lambda i=i: results.__setitem__(i, engine.generate(prompts[i], NEW_TOKENS)))
        for i in range(len(prompts))
    ]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert results == expected
    finally:
        engine.close()


def test_closing_the_engine_fails_pending_requests(checkpoints, prompts):
    engine = engine_for(checkpoints["none"], max_batch_size=1)
    handles = [engine.submit(prompt, 60) for prompt in prompts[:3]]
    engine.close()
    for handle in handles:
        with pytest.raises(FoundryError, match="engine was closed"):
            handle.result(timeout_s=10)


def test_engine_json_carries_the_engine_knobs(checkpoints, tmp_path):
    from foundry.builders import get_builder, load_engine, read_engine_info

    build = BuildConfig(max_seq_len=96, max_batch_size=3, max_num_tokens=64, graph_batch_sizes=[1, 2])
    info = get_builder("reference").build(checkpoints["none"], tmp_path / "engine", build)
    assert read_engine_info(tmp_path / "engine")["engine"] == info["engine"]
    engine = load_engine(tmp_path / "engine")
    assert engine.device.type == "cpu"
    assert engine.options == EngineOptions(
        max_batch_size=3, max_seq_len=96, prefill_chunk_tokens=64, graph_batch_sizes=(1, 2)
    )
    assert engine.scheduler.slots == 3 and engine.scheduler.pool.shape.max_seq_len == 96


@pytest.mark.parametrize(
    "fields, message",
    [
        (dict(torch_compile=True), "torch_compile applies to device cuda only"),
        (dict(device="cuda", graph_batch_sizes=[1, 16], max_batch_size=8), r"graph_batch_sizes \[16\]"),
        (dict(device="cuda", backend="trtllm"), "device applies to the reference backend"),
        (dict(device="cuda", kv_cache_memory_fraction=1.5), "kv_cache_memory_fraction"),
    ],
)
def test_engine_knobs_are_validated(fields, message):
    with pytest.raises(ValueError, match=message):
        BuildConfig(**fields)


def test_cuda_without_a_gpu_is_refused_by_name(checkpoints):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(FoundryError, match="device 'cuda' requested but torch.cuda.is_available\\(\\) is False"):
        ReferenceEngine.load(checkpoints["none"], device="cuda")
