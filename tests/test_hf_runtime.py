"""The HF transformers baseline engine: exact token counts, streaming order, true greedy output,
thread safety, and the CLI end to end on a tiny random Llama."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from foundry.bench.__main__ import main as bench_main
from foundry.errors import FoundryError
from foundry.runtime.base import Engine
from foundry.runtime.hf import HFEngine

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
    assert "speedup_output_tok_s" in capsys.readouterr().out


def test_cli_engine_dir_reports_missing_pieces_clearly(tmp_path, capsys):
    code = bench_main(["--engine-dir", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "error:" in capsys.readouterr().err
