"""The HF transformers baseline engine: exact token counts, streaming order, true greedy output,
thread safety, and the CLI end to end on a tiny random Llama."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from foundry.bench.__main__ import main as bench_main
from foundry.errors import FoundryError
from foundry.runtime.base import Engine
from foundry.runtime.hf import BatchRequest, HFEngine, StaticBatcher, left_padded_batch

PROMPTS = [[17, 400, 23, 9001], [5, 6, 7], [1200, 31, 77, 78, 79, 80], [42]]


@pytest.fixture(scope="module")
def hf_engine(tiny_llama_hf_dir) -> HFEngine:
    return HFEngine.load(tiny_llama_hf_dir)


def manual_greedy(engine: HFEngine, prompt: list[int], num_tokens: int) -> list[int]:
    ids = torch.tensor([prompt])
    for _ in range(num_tokens):
        next_id = engine.logits(ids)[0, -1].argmax()
        ids = torch.cat([ids, next_id.view(1, 1)], dim=1)
    return ids[0, len(prompt) :].tolist()


def test_generate_streams_exactly_n_greedy_tokens_without_warnings(hf_engine, capfd):
    assert isinstance(hf_engine, Engine) and hf_engine.backend == "hf-transformers"
    streamed: list[int] = []
    tokens = hf_engine.generate(PROMPTS[0], 12, streamed.append)
    assert len(tokens) == 12 and streamed == tokens  # on_token once per token, in order
    assert tokens == manual_greedy(hf_engine, PROMPTS[0], 12)
    captured = capfd.readouterr()
    assert "warn" not in (captured.err + captured.out).lower(), captured.err


def test_generate_does_not_stop_at_eos(hf_engine):
    eos = hf_engine.model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    # a prompt ending in EOS and a long request: the length must still be exact
    assert len(hf_engine.generate([5, 6, eos], 40)) == 40
    assert hf_engine.special_token_ids and eos in hf_engine.special_token_ids


def test_logits_shape_and_dtype(hf_engine):
    logits = hf_engine.logits(torch.tensor([[1, 2, 3], [4, 5, 6]]))
    assert logits.shape == (2, 3, hf_engine.vocab_size) and logits.dtype == torch.float32


def test_concurrent_generate_matches_serial(hf_engine):
    serial = [hf_engine.generate(prompt, 8) for prompt in PROMPTS]
    results: dict[int, list[int]] = {}
    streams: dict[int, list[int]] = {i: [] for i in range(len(PROMPTS))}

    def client(index: int) -> None:
        results[index] = hf_engine.generate(PROMPTS[index], 8, streams[index].append)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(PROMPTS))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(PROMPTS))] == serial
    assert [streams[i] for i in range(len(PROMPTS))] == serial


def test_load_rejects_a_directory_without_config(tmp_path):
    with pytest.raises(FoundryError, match="config.json"):
        HFEngine.load(tmp_path)


def test_cli_runs_engine_and_baseline_and_writes_reports(tiny_llama_hf_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    code = bench_main(
        [
            "--hf-dir",
            str(tiny_llama_hf_dir),
            "--baseline-hf-dir",
            str(tiny_llama_hf_dir),
            "--concurrency",
            "1",
            "2",
            "--num-requests",
            "3",
            "--warmup-requests",
            "1",
            "--input-len",
            "4",
            "8",
            "--output-len",
            "2",
            "4",
            "--seed",
            "5",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    for name in ("report.json", "requests.csv", "report.html", "baseline_report.json", "comparison.json"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    assert report["backend"] == "hf-transformers" and report["workload"]["seed"] == 5
    assert [lv["concurrency"] for lv in report["levels"]] == [1, 2]
    assert all(lv["completed"] == 3 and lv["failed"] == 0 for lv in report["levels"])
    assert len((out / "requests.csv").read_text().strip().splitlines()) == 1 + 2 * 3
    stdout = capsys.readouterr().out
    assert "speedup_output_tok_s" in stdout
    # the default mode: static batches, said in every report and on the console
    assert report["batching"] == "static_batch"
    assert json.loads((out / "baseline_report.json").read_text())["batching"] == "static_batch"
    assert {row["baseline_batching"] for row in json.loads((out / "comparison.json").read_text())} == {"static_batch"}
    assert "hf-transformers batching: static_batch" in stdout and "baseline hf-transformers static_batch" in stdout
    assert "batching <code>static_batch</code>" in (out / "report.html").read_text()


def test_cli_baseline_batching_per_request(tiny_llama_hf_dir, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["--hf-dir", str(tiny_llama_hf_dir), "--concurrency", "2", "--num-requests", "2", "--warmup-requests", "0"]
    args += ["--input-len", "4", "6", "--output-len", "2", "3", "--baseline-batching", "per_request", "--out", str(out)]
    assert bench_main(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["batching"] == "per_request" and report["levels"][0]["completed"] == 2
    assert "hf-transformers batching: per_request" in capsys.readouterr().out


def test_cli_engine_dir_reports_missing_pieces_clearly(tmp_path, capsys):
    code = bench_main(["--engine-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "error:" in capsys.readouterr().err


# ---- static_batch mode ------------------------------------------------------------------------


def run_concurrently(engine: HFEngine, prompts, lengths) -> tuple[list, list]:
    """Every prompt from its own thread at once: (returned tokens, streamed tokens) per prompt."""
    results: dict[int, list[int]] = {}
    streams: dict[int, list[int]] = {i: [] for i in range(len(prompts))}

    def client(index: int) -> None:
        results[index] = engine.generate(prompts[index], lengths[index], streams[index].append)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return [results[i] for i in range(len(prompts))], [streams[i] for i in range(len(prompts))]


def test_static_batch_equals_one_at_a_time_on_smollm2(smollm2_hf_dir, smollm2_tokenizer):
    """Real weights, prompts of 4 to 19 tokens and different output lengths in ONE generate: left
    padding with an attention mask (padding out of attention and position ids) gives the same
    greedy tokens as batch-1 generates, token for token (fp32 on CPU; checked exactly here)."""
    texts = [
        "The capital of France is",
        "Once upon a time, in a small village by the sea, there lived an old fisherman who",
        "def fibonacci(n):",
        "Water boils at a temperature of",
        "List three colors:",
        "In 1492, Columbus",
    ]
    prompts = [smollm2_tokenizer(text)["input_ids"] for text in texts]
    lengths = [24, 16, 20, 24, 8, 12]
    per_request = HFEngine.load(smollm2_hf_dir)
    batched = HFEngine(per_request.model, per_request.device, batching="static_batch", max_batch_size=len(prompts))
    serial = [per_request.generate(prompt, n) for prompt, n in zip(prompts, lengths)]
    results, streams = run_concurrently(batched, prompts, lengths)
    assert batched.batcher.batch_sizes == [len(prompts)]  # one model.generate for all six
    assert results == serial and streams == serial  # truncated to each request's own length


def test_static_batch_on_tiny_llama_matches_serial_and_streams(hf_engine):
    batched = HFEngine(hf_engine.model, hf_engine.device, batching="static_batch", max_batch_size=len(PROMPTS))
    lengths = [8, 3, 12, 5]
    serial = [hf_engine.generate(prompt, n) for prompt, n in zip(PROMPTS, lengths)]
    results, streams = run_concurrently(batched, PROMPTS, lengths)
    assert results == serial and streams == serial
    assert batched.batcher.batch_sizes == [len(PROMPTS)]
    assert batched.batching == "static_batch" and hf_engine.batching == "per_request"


def test_static_batch_serves_sequential_calls_and_exact_lengths(hf_engine):
    batched = HFEngine(hf_engine.model, hf_engine.device, batching="static_batch", batch_window_ms=0)
    eos = hf_engine.model.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    assert batched.generate(PROMPTS[0], 6) == hf_engine.generate(PROMPTS[0], 6)
    assert len(batched.generate([5, 6, eos], 30)) == 30  # EOS never stops a request
    assert batched.batcher.batch_sizes == [1, 1]
    with pytest.raises(FoundryError, match="max_new_tokens"):
        batched.generate(PROMPTS[0], 0)
    with pytest.raises(FoundryError, match="empty"):
        batched.generate([], 3)


def test_static_batch_callback_error_fails_only_its_request(hf_engine):
    batched = HFEngine(hf_engine.model, hf_engine.device, batching="static_batch", max_batch_size=2)
    outcome: dict[str, object] = {}

    def failing_callback(token_id: int) -> None:
        raise ValueError("client went away")

    def failing_client() -> None:
        try:
            batched.generate(PROMPTS[0], 6, failing_callback)
        except ValueError as error:
            outcome["error"] = error

    def good_client() -> None:
        outcome["tokens"] = batched.generate(PROMPTS[1], 6)

    threads = [threading.Thread(target=failing_client), threading.Thread(target=good_client)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert "client went away" in str(outcome["error"])
    assert outcome["tokens"] == hf_engine.generate(PROMPTS[1], 6)
    assert batched.batcher.batch_sizes == [2]


def test_unknown_batching_mode_is_refused(hf_engine):
    with pytest.raises(FoundryError, match="per_request"):
        HFEngine(hf_engine.model, hf_engine.device, batching="dynamic")
    with pytest.raises(FoundryError, match="max_batch_size"):
        HFEngine(hf_engine.model, hf_engine.device, batching="static_batch", max_batch_size=0)


def test_left_padded_batch_right_aligns_prompts():
    input_ids, attention_mask = left_padded_batch([[7, 8, 9], [5]], pad_token_id=0)
    assert input_ids.tolist() == [[7, 8, 9], [0, 0, 5]]
    assert attention_mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def fake_batch(requests: list[BatchRequest]) -> None:
    """A stand-in for model.generate: request i's tokens are its first prompt id, repeated."""
    time.sleep(0.01)
    for _ in range(max(request.max_new_tokens for request in requests)):
        for request in requests:
            request.deliver(request.input_ids[0])


def test_batcher_closed_loop_batches_every_client_and_worker_exits_when_idle():
    """Three clients, each with one request in flight (the benchmark's concurrency mode): every batch
    waits for the three (the in-flight count of the previous batch), never for the 5 s window."""
    batcher = StaticBatcher(fake_batch, max_batch_size=3, batch_window_ms=5000, idle_exit_s=0.05)
    returned: dict[int, list[list[int]]] = {client: [] for client in range(3)}

    def client(index: int) -> None:
        for _ in range(3):
            request = BatchRequest([index], 2)
            batcher.run(request)
            returned[index].append(request.tokens)

    started_s = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert time.perf_counter() - started_s < 4.0
    assert batcher.batch_sizes == [3, 3, 3]
    assert returned == {i: [[i, i]] * 3 for i in range(3)}
    time.sleep(0.3)
    assert batcher._worker is None  # no thread (and no model reference) left behind


def test_batcher_window_launches_a_partial_batch():
    batcher = StaticBatcher(fake_batch, max_batch_size=8, batch_window_ms=30, idle_exit_s=0.05)
    request = BatchRequest([4], 3)
    batcher.run(request)  # alone: the first batch waits the 30 ms window for more, then runs
    assert request.tokens == [4, 4, 4] and batcher.batch_sizes == [1]
