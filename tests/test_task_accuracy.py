"""Task accuracy through lm-evaluation-harness (foundry/task_accuracy.py): local task files only,
in process (logits / generate) and served (lm-eval's completions model), paired with the
unquantized model item by item, and the task gates."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from foundry import task_accuracy
from foundry.config import BuildConfig, CalibrationConfig, EvaluationConfig, GateConfig, RuntimeConfig, TaskConfig
from foundry.errors import FoundryError
from foundry.gates import evaluate_gates, task_gate_results
from foundry.runtime.hf import HFEngine
from foundry.task_accuracy import (
    LoadedTask,
    TaskAccuracyReport,
    engine_lm,
    evaluate_tasks,
    evaluate_tasks_on,
    load_tasks,
    pair_items,
    run_task,
)

# 20 questions SmolLM2-135M-Instruct knows; the answer index is 0-based.
MULTIPLE_CHOICE = [
    ("The capital of France is", ["Paris", "London", "Berlin", "Madrid"], 0),
    ("The capital of Japan is", ["Seoul", "Tokyo", "Beijing", "Bangkok"], 1),
    ("The capital of Italy is", ["Vienna", "Athens", "Rome", "Lisbon"], 2),
    ("The color of the clear sky on a sunny day is", ["green", "red", "yellow", "blue"], 3),
    ("Water freezes at a temperature of zero degrees", ["Celsius", "Kelvin", "volts", "meters"], 0),
    ("A week has seven", ["hours", "days", "years", "minutes"], 1),
    ("The largest planet in our solar system is", ["Mars", "Venus", "Jupiter", "Mercury"], 2),
    ("To see in the dark at night you can turn on a", ["spoon", "sock", "carpet", "lamp"], 3),
    ("One plus one equals", ["two", "five", "nine", "seven"], 0),
    ("The opposite of hot is", ["warm", "cold", "loud", "tall"], 1),
    ("Bees make", ["steel", "paper", "honey", "glass"], 2),
    ("The sun rises in the", ["north", "south", "west", "east"], 3),
    ("A baby cat is called a", ["kitten", "puppy", "calf", "foal"], 0),
    ("People breathe in", ["sand", "oxygen", "oil", "salt"], 1),
    ("The Earth orbits the", ["Moon", "Mars", "Sun", "comet"], 2),
    ("A triangle has three", ["wheels", "colors", "doors", "sides"], 3),
    ("Ice is frozen", ["water", "bread", "wood", "stone"], 0),
    ("The first month of the year is", ["March", "January", "June", "October"], 1),
    ("Fish live in", ["trees", "deserts", "water", "clouds"], 2),
    ("To write on paper you can use a", ["spoon", "shoe", "plate", "pencil"], 3),
]
GENERATION = [
    ("The capital of France is", "Paris"),
    ("The capital of Japan is", "Tokyo"),
    ("The capital of Italy is", "Rome"),
    ("The capital of Germany is", "Berlin"),
]


def write_multiple_choice(path: Path, items=MULTIPLE_CHOICE) -> Path:
    path.write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n" for q, c, a in items))
    return path


def write_generation(path: Path) -> Path:
    path.write_text("".join(json.dumps({"prompt": p, "answer": a}) + "\n" for p, a in GENERATION))
    return path


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tasks")
    write_multiple_choice(root / "facts.jsonl")
    write_generation(root / "capitals.jsonl")
    return root


@pytest.fixture(autouse=True)
def one_thread():
    """2 shared CPU cores: one torch thread keeps the run time predictable."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def tiny_engine_dir(tiny_fp16_exact_dir, smollm2_tokenizer, tmp_path_factory) -> Path:
    """The tiny Llama, SmoothQuant-calibrated and built by the reference builder."""
    from foundry import data
    from foundry.builders.reference import ReferenceBuilder
    from foundry.calibrate import calibrate_to_trtllm_checkpoint

    root = tmp_path_factory.mktemp("task-engine")
    windows = data.token_windows(data.builtin_documents("calibration"), smollm2_tokenizer, 4, 32, "calibration")
    calibrate_to_trtllm_checkpoint(tiny_fp16_exact_dir, CalibrationConfig(alpha=0.8), windows.input_ids, root / "ckpt")
    ReferenceBuilder().build(root / "ckpt", root / "engine", BuildConfig(max_seq_len=128))
    return root / "engine"


def hand_scored_choice(engine, tokenizer, question: str, choices: list[str]) -> int:
    """lm-eval's multiple-choice rule computed directly: the choice whose tokens (after the question,
    " " + choice, split where the question's own tokens end) have the highest summed logprob."""
    scores = []
    context = tokenizer.encode(question, add_special_tokens=False)
    for choice in choices:
        whole = tokenizer.encode(question + " " + choice, add_special_tokens=False)
        logp = F.log_softmax(engine.logits(torch.tensor([whole[:-1]])).double()[0], dim=-1)
        continuation = whole[len(context) :]
        positions = logp[len(context) - 1 :]
        scores.append(float(positions.gather(-1, torch.tensor(continuation)[:, None]).sum()))
    return max(range(len(choices)), key=scores.__getitem__)


# --- config and local data --------------------------------------------------------------------------


def test_task_config_is_typed_and_paths_resolve(tmp_path):
    evaluation = EvaluationConfig(tasks=[{"name": "facts", "path": "tasks/facts.jsonl"}])
    resolved = evaluation.with_task_paths_resolved(tmp_path).tasks[0]
    assert resolved.path == str(tmp_path / "tasks/facts.jsonl") and resolved.format == "multiple_choice"
    with pytest.raises(ValueError, match="facts given more than once"):
        EvaluationConfig(tasks=[{"name": "facts", "path": "a.jsonl"}, {"name": "facts", "path": "b.jsonl"}])
    with pytest.raises(ValueError, match="extra"):
        EvaluationConfig(tasks=[{"name": "facts", "path": "a.jsonl", "dataset": "mmlu"}])
    assert EvaluationConfig().tasks == [] and load_tasks([]) == []


def test_missing_lm_eval_fails_before_any_work_with_the_install_command(monkeypatch, task_dir):
    def absent(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(task_accuracy.importlib.metadata, "version", absent)
    with pytest.raises(FoundryError, match=r'pip install -c constraints.txt -e "\.\[tasks\]"'):
        load_tasks([TaskConfig(name="facts", path=str(task_dir / "facts.jsonl"))])
    monkeypatch.setattr(task_accuracy.importlib.metadata, "version", lambda name: "0.4.11")
    with pytest.raises(FoundryError, match="needs lm-eval==0.4.13"):
        load_tasks([TaskConfig(name="facts", path=str(task_dir / "facts.jsonl"))])


def test_bad_task_files_are_refused_naming_the_field_and_line(tmp_path):
    with pytest.raises(FoundryError, match=r"evaluation.tasks\[0\] \(facts\): path .* not found"):
        load_tasks([TaskConfig(name="facts", path=str(tmp_path / "absent.jsonl"))])
    bad = write_multiple_choice(tmp_path / "bad.jsonl", [("Q1", ["a", "b"], 0), ("Q2", ["a", "b"], 2)])
    with pytest.raises(FoundryError, match="item 2: 'answer' 2 is not an index into its 2 choices"):
        load_tasks([TaskConfig(name="facts", path=str(bad))])
    (tmp_path / "text.jsonl").write_text('{"prompt": "a", "answer": "b"}\nnot json\n')
    with pytest.raises(FoundryError, match="line 2 is not JSON"):
        load_tasks([TaskConfig(name="gen", path=str(tmp_path / "text.jsonl"), format="generation")])
    (tmp_path / "hub.yaml").write_text("task: x\ndataset_path: cais/mmlu\noutput_type: multiple_choice\n")
    with pytest.raises(FoundryError, match="nothing is downloaded here: point it at local files"):
        load_tasks([TaskConfig(name="hub", path=str(tmp_path / "hub.yaml"), format="lm_eval")])
    (tmp_path / "nofile.yaml").write_text("task: x\ndataset_path: json\ndataset_kwargs:\n  data_files: gone.jsonl\n")
    with pytest.raises(FoundryError, match="data file gone.jsonl not found"):
        load_tasks([TaskConfig(name="nofile", path=str(tmp_path / "nofile.yaml"), format="lm_eval")])


# --- in process -------------------------------------------------------------------------------------


def test_in_process_adapter_scores_a_quantized_engine_item_by_item(
    tiny_engine_dir, tiny_fp16_exact_dir, tiny_llama_hf_dir, task_dir
):
    """The SmoothQuant engine through the adapter gives, per item, exactly the choice lm-eval's rule
    picks from its logits; paired with the unquantized model, the flips are the items that differ."""
    from foundry.builders import load_engine

    engine, unquantized = load_engine(tiny_engine_dir), HFEngine.load(tiny_fp16_exact_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_hf_dir)
    task = TaskConfig(name="facts", path=str(task_dir / "facts.jsonl"), limit=8)
    loaded = load_tasks([task])[0]
    engine_items = run_task(engine_lm(engine, tokenizer, 128), loaded)
    unquantized_items = run_task(engine_lm(unquantized, tokenizer, 128), loaded)
    assert sorted(engine_items) == list(range(8))
    for doc_id, (question, choices, answer) in enumerate(MULTIPLE_CHOICE[:8]):
        assert engine_items[doc_id] == float(hand_scored_choice(engine, tokenizer, question, choices) == answer)
        assert unquantized_items[doc_id] == float(
            hand_scored_choice(unquantized, tokenizer, question, choices) == answer
        )
    result = pair_items(loaded, engine_items, unquantized_items)
    differ = sum(engine_items[i] != unquantized_items[i] for i in range(8))
    assert result.flips == differ and result.num_items == 8
    assert result.engine_score == sum(engine_items.values()) / 8


def test_smollm2_answers_the_local_task_and_the_gates_judge_it(smollm2_hf_dir, task_dir):
    """The real model on the 20-item task; the same model as the engine: no flips, ratio 1 with a
    degenerate interval, both task gates pass. The lm-eval YAML form of the same data scores the same."""
    unquantized = HFEngine.load(smollm2_hf_dir)
    tokenizer = AutoTokenizer.from_pretrained(smollm2_hf_dir)
    (task_dir / "facts.yaml").write_text(
        "task: ignored\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: facts.jsonl\n"
        "test_split: test\noutput_type: multiple_choice\ndoc_to_text: '{{question}}'\n"
        "doc_to_choice: '{{choices}}'\ndoc_to_target: '{{answer}}'\n"
        "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
    )
    tasks = [
        TaskConfig(name="facts", path=str(task_dir / "facts.jsonl")),
        TaskConfig(name="facts_yaml", path=str(task_dir / "facts.yaml"), format="lm_eval"),
    ]
    lm = engine_lm(unquantized, tokenizer, 512)
    report = evaluate_tasks(tasks, lm, lm, unquantized.backend, 512)
    facts, facts_yaml = report.tasks
    assert facts.num_items == 20 and facts.unquantized_score >= 0.8, facts.unquantized_correct
    assert facts.flips == 0 and facts.score_ratio == facts.ratio_low == facts.ratio_high == 1.0
    assert facts_yaml.engine_correct == facts.engine_correct
    assert report.lm_eval_version == "0.4.13" and "McNemar" in report.method
    decision = evaluate_gates(GateConfig(max_task_flips=0), {}, tasks=report)
    task_gates = [r for r in decision.results if r.name.startswith("task ")]
    assert len(task_gates) == 4 and all(r.outcome == "pass" for r in task_gates)


# --- served -----------------------------------------------------------------------------------------


def test_served_engine_through_lm_eval_completions_model(
    tiny_engine_dir, tiny_fp16_exact_dir, tiny_llama_hf_dir, task_dir, tmp_path
):
    """Behind foundry.bench.server: a generation task through lm-eval's OpenAI completions model gives
    the in-process texts, and a multiple-choice task (prompt logprobs echoed, as vLLM does) the
    in-process item scores; a server that echoes no prompt logprobs is refused up front."""
    from lm_eval.api.instance import Instance

    from foundry.builders import load_engine
    from foundry.serving import open_engine

    info = json.loads((tiny_engine_dir / "engine.json").read_text())
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_hf_dir)
    unquantized = HFEngine.load(tiny_fp16_exact_dir)
    generation = TaskConfig(name="capitals", path=str(task_dir / "capitals.jsonl"), format="generation", max_gen_toks=4)
    facts = TaskConfig(name="facts", path=str(task_dir / "facts.jsonl"), limit=6)
    requests = [
        Instance("generate_until", {}, (prompt, {"until": ["\n"], "max_gen_toks": 4}), index)
        for index, (prompt, _) in enumerate(GENERATION)
    ]
    local_lm = engine_lm(load_engine(tiny_engine_dir), tokenizer, 128)
    local = local_lm.generate_until(requests)
    local_facts = run_task(local_lm, load_tasks([facts])[0])
    runtime = RuntimeConfig(served_by="foundry_server", startup_timeout_s=120)
    eos = [tokenizer.eos_token_id]
    with open_engine(
        tiny_engine_dir, info, "hash-x", runtime, tiny_llama_hf_dir, tmp_path / "s.log", "tiny", eos_ids=eos
    ) as served:
        lm = task_accuracy.served_lm(served.server.base_url, "tiny", tiny_llama_hf_dir, 128, 60, served.served_by)
        assert lm.generate_until(requests) == local
        report = evaluate_tasks_on([generation, facts], served, unquantized, tiny_llama_hf_dir, "tiny", 128, 60)
    assert report.engine_served_by == "foundry.bench.server (reference runtime)"
    capitals, scored = report.tasks
    assert capitals.num_items == 4 and capitals.output_type == "generate_until"
    assert scored.output_type == "multiple_choice" and scored.num_items == 6
    assert dict(zip(scored.doc_ids, scored.engine_correct)) == local_facts


def test_a_server_without_prompt_logprobs_is_refused_for_multiple_choice():
    """A server that cannot echo the prompt's logprobs (here a synthetic engine, which has no logits)
    is refused before lm-eval scores anything as zero, naming what to do."""
    from tests.test_http_bench import start_server

    process, port = start_server("--synthetic", "2,1")
    try:
        with pytest.raises(FoundryError, match="need the prompt's logprobs echoed"):
            task_accuracy.require_echo_logprobs(
                f"http://127.0.0.1:{port}", "synthetic", [1, 2, 3], "a synthetic server"
            )
    finally:
        process.kill()
        process.wait()


def test_the_champion_is_scored_on_the_same_items(tiny_engine_dir, tiny_fp16_exact_dir, tiny_llama_hf_dir, task_dir):
    """With the production engine given, each task runs on it too and is paired with this run's
    engine item by item (here the champion is the unquantized model: its items are the unquantized ones)."""
    from foundry.builders import load_engine

    engine, unquantized = load_engine(tiny_engine_dir), HFEngine.load(tiny_fp16_exact_dir)
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_hf_dir)
    unquantized_lm = engine_lm(unquantized, tokenizer, 128)
    tasks = [TaskConfig(name="facts", path=str(task_dir / "facts.jsonl"), limit=6)]
    report = evaluate_tasks(
        tasks, engine_lm(engine, tokenizer, 128), unquantized_lm, "hf", 128, champion_model=unquantized_lm
    )
    task = report.tasks[0]
    pair = task.champion
    assert pair.champion_correct == task.unquantized_correct and pair.champion_score == task.unquantized_score
    assert (pair.champion_only_correct, pair.challenger_only_correct) == (
        task.unquantized_only_correct,
        task.engine_only_correct,
    )
    assert report.headline()["task_facts_champion_score"] == pair.champion_score
    assert "only the champion" in task_accuracy.render_tasks_html(report)


# --- gates ------------------------------------------------------------------------------------------


def _report(engine: list[int], unquantized: list[int]) -> TaskAccuracyReport:
    loaded = LoadedTask(
        name="t",
        format="multiple_choice",
        path="t.jsonl",
        metric="acc",
        output_type="multiple_choice",
        lm_eval_config={},
        data_files=[],
        num_items=len(engine),
        limit=None,
    )
    result = pair_items(loaded, dict(enumerate(map(float, engine))), dict(enumerate(map(float, unquantized))))
    return TaskAccuracyReport(
        lm_eval_version="0.4.13",
        engine_served_by="x",
        unquantized_backend="hf-transformers",
        max_length=128,
        method="m",
        tasks=[result],
    )


def test_task_gates_pass_fail_and_inconclusive_from_the_paired_interval():
    unquantized = [1] * 18 + [0] * 2
    gates = GateConfig(max_task_flips=2)
    same, _ = task_gate_results(_report(unquantized, unquantized), gates)
    assert [r.outcome for r in same] == ["pass", "pass"]
    # 10 of the 18 lost: even the interval's upper bound is far below 99 %
    lost = [0] * 10 + [1] * 8 + [0] * 2
    failed, _ = task_gate_results(_report(lost, unquantized), gates)
    assert [r.outcome for r in failed] == ["fail", "fail"] and "FAIL" in failed[0].detail
    # one item lost, one gained: ratio 1, but 20 items cannot show >= 99 % with confidence
    swapped = [0] + [1] * 17 + [1, 0]
    result = _report(swapped, unquantized).tasks[0]
    assert result.flips == 2 and result.score_ratio == 1.0 and result.mcnemar_p == 1.0
    gated, _ = task_gate_results(_report(swapped, unquantized), gates)
    assert [r.outcome for r in gated] == ["inconclusive", "pass"] and "more items" in gated[0].detail
    assert not evaluate_gates(gates, {}, tasks=_report(swapped, unquantized)).passed
    loose, _ = task_gate_results(_report(swapped, unquantized), GateConfig(min_task_score_pct_of_unquantized=50))
    assert loose[0].outcome == "pass"
    assert task_gate_results(None, gates) == ([], [])
    _, unchecked = task_gate_results(_report(unquantized, unquantized), GateConfig())
    assert unchecked == ["max_task_flips"]
