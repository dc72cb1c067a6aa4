"""Task accuracy through lm-evaluation-harness: the engine against the unquantized model, item by item.

Tasks come only from local files the config names (`evaluation.tasks`; foundry/config.py TaskConfig):
a multiple-choice or generation JSONL file in a simple foundry format, translated here into an
lm-eval task config, or an lm-eval task YAML whose dataset is local. Nothing is downloaded: the
Hugging Face hub and datasets are switched offline while lm-eval runs.

Two adapters run lm-eval on a foundry engine:

* in process (`EngineLM`): loglikelihood from the engine's `logits([batch, seq]) -> [batch, seq,
  vocab]`, greedy generation from its `generate`; the unquantized model (foundry.runtime.hf
  HFEngine) goes through the same adapter, so both sides see the same tokens, truncation and batching;
* served (`served_lm`): lm-eval's own OpenAI completions model (`local-completions`) against the
  engine's server, token ids in, as the evaluation already talks to served engines. Loglikelihood
  through a server needs prompt logprobs echoed back (`echo: true`); a server that does not echo them
  is refused up front (`require_echo_logprobs`), never scored as zero.

Each task's per-item 0/1 correctness on both sides gives the score ratio engine/unquantized with a
bootstrap interval over items (paired) and McNemar's exact test on the items whose correctness flips
(foundry/stats.py); the gates judge those (foundry/gates.py, `task_gate_results`).

lm-eval is the optional `[tasks]` extra, pinned (LM_EVAL_VERSION); `require_lm_eval` fails before
any work with the install command when tasks are configured and it is missing.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import inspect
import json
import math
import os
import time
from pathlib import Path
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict

from foundry.config import TaskConfig
from foundry.errors import FoundryError
from foundry.hashing import sha256_file
from foundry.stats import mcnemar_exact, score_ratio_interval

LM_EVAL_VERSION = "0.4.13"
INSTALL_HINT = '.venv/bin/pip install -c constraints.txt -e ".[tasks]"'
LOCAL_BUILDERS = ("json", "csv", "parquet", "text", "arrow")
LOGLIKELIHOOD_TYPES = ("multiple_choice", "loglikelihood")
METHOD = (
    "Each task's items are scored on the engine and on the unquantized model by lm-evaluation-harness "
    "{version} (0/1 per item); the score ratio engine/unquantized with a {confidence:.0%} percentile-bootstrap "
    "interval resampling items in pairs (2,000 resamples, seeded); flips are the items whose correctness "
    "differs, with McNemar's exact test on them; the score gate passes if the interval's lower bound is at "
    "least the threshold, fails if its upper bound is below it, else is inconclusive (more items would narrow it)."
)


def require_lm_eval() -> str:
    """The installed lm-eval version, or a FoundryError with the install command."""
    try:
        version = importlib.metadata.version("lm-eval")
    except importlib.metadata.PackageNotFoundError:
        raise FoundryError(
            f"evaluation.tasks is set but lm-evaluation-harness is not installed; install the tasks extra: "
            f"{INSTALL_HINT} (lm-eval=={LM_EVAL_VERSION}), or remove evaluation.tasks"
        ) from None
    if version != LM_EVAL_VERSION:
        raise FoundryError(
            f"evaluation.tasks needs lm-eval=={LM_EVAL_VERSION} (the pinned version), found {version}; run {INSTALL_HINT}"
        )
    return version


@contextlib.contextmanager
def offline() -> Iterator[None]:
    """Hub and datasets offline (the env vars and, as they are read at import, the libraries' flags);
    local servers reached without a proxy. Restored afterwards."""
    names = {"HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    no_proxy = ",".join(filter(None, [os.environ.get("NO_PROXY"), "127.0.0.1", "localhost"]))
    saved = {name: os.environ.get(name) for name in [*names, "NO_PROXY", "no_proxy"]}
    os.environ.update(names | {"NO_PROXY": no_proxy, "no_proxy": no_proxy})
    flags = []
    with contextlib.suppress(ImportError):
        import datasets.config

        flags.append((datasets.config, "HF_DATASETS_OFFLINE", datasets.config.HF_DATASETS_OFFLINE))
        datasets.config.HF_DATASETS_OFFLINE = True
    with contextlib.suppress(ImportError):
        import huggingface_hub.constants

        flags.append((huggingface_hub.constants, "HF_HUB_OFFLINE", huggingface_hub.constants.HF_HUB_OFFLINE))
        huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        for module, name, value in flags:
            setattr(module, name, value)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


# --- tasks from local files -------------------------------------------------------------------------


class LoadedTask(BaseModel):
    """A configured task checked and turned into the lm-eval task config that runs it."""

    model_config = ConfigDict(frozen=True)

    name: str
    format: str
    path: str
    metric: str
    output_type: str
    lm_eval_config: dict
    data_files: list[str]  # every local file the task reads (fingerprinted)
    num_items: int | None  # known for the foundry formats; lm_eval YAMLs are counted when run
    limit: int | None

    @property
    def loglikelihood(self) -> bool:
        return self.output_type in LOGLIKELIHOOD_TYPES


def _where(index: int, task: TaskConfig) -> str:
    return f"evaluation.tasks[{index}] ({task.name})"


def _read_jsonl(path: Path, where: str, fields: dict[str, type]) -> list[dict]:
    rows = []
    try:
        lines = path.read_bytes().decode("utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise FoundryError(f"{where}: {path} is not UTF-8 (byte offset {error.start}); save it as UTF-8") from None
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as error:
            raise FoundryError(f"{where}: {path} line {number} is not JSON ({error})") from None
        if not isinstance(row, dict):
            raise FoundryError(f"{where}: {path} line {number} must be a JSON object")
        for field, kind in fields.items():
            if not isinstance(row.get(field), kind) or isinstance(row.get(field), bool):
                raise FoundryError(
                    f"{where}: {path} line {number}: field {field!r} must be {kind.__name__}, got {row.get(field)!r} "
                    f"(each line: {', '.join(f'{k}: {v.__name__}' for k, v in fields.items())})"
                )
        rows.append(row)
    if len(rows) < 2:
        raise FoundryError(f"{where}: {path} holds {len(rows)} item(s); a task needs at least 2")
    return rows


def _foundry_task(task: TaskConfig, path: Path, where: str) -> LoadedTask:
    common = {
        "task": task.name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(path)}},
        "test_split": "test",
        "num_fewshot": task.num_fewshot,
        "metadata": {"version": 1.0},
    }
    if task.num_fewshot:
        common["fewshot_split"] = "test"  # lm-eval leaves the item itself out of its own examples
    if task.format == "multiple_choice":
        rows = _read_jsonl(path, where, {"question": str, "choices": list, "answer": int})
        for number, row in enumerate(rows, 1):
            choices = row["choices"]
            if len(choices) < 2 or not all(isinstance(c, str) and c for c in choices):
                raise FoundryError(f"{where}: {path} item {number}: 'choices' must be >= 2 non-empty strings")
            if not 0 <= row["answer"] < len(choices):
                raise FoundryError(
                    f"{where}: {path} item {number}: 'answer' {row['answer']} is not an index into its "
                    f"{len(choices)} choices (0-based)"
                )
        metric = task.metric or "acc"
        config = common | {
            "output_type": "multiple_choice",
            "doc_to_text": "{{question}}",
            "doc_to_choice": "{{choices}}",
            "doc_to_target": "{{answer}}",
            "target_delimiter": " ",
            "metric_list": [{"metric": metric, "aggregation": "mean", "higher_is_better": True}],
        }
    else:
        rows = _read_jsonl(path, where, {"prompt": str, "answer": str})
        metric = task.metric or "exact_match"
        config = common | {
            "output_type": "generate_until",
            "doc_to_text": "{{prompt}}",
            "doc_to_target": "{{answer}}",
            "target_delimiter": "",
            "generation_kwargs": {
                "until": list(task.stop_strings),
                "max_gen_toks": task.max_gen_toks,
                "do_sample": False,
            },
            "metric_list": [
                {
                    "metric": metric,
                    "aggregation": "mean",
                    "higher_is_better": True,
                    "ignore_case": True,
                    "ignore_punctuation": True,
                    "regexes_to_ignore": ["^\\s+", "\\s+$"],
                }
            ],
        }
    return LoadedTask(
        name=task.name,
        format=task.format,
        path=str(path),
        metric=metric,
        output_type=config["output_type"],
        lm_eval_config=config,
        data_files=[str(path)],
        num_items=len(rows) if task.limit is None else min(len(rows), task.limit),
        limit=task.limit,
    )


def _lm_eval_yaml_task(task: TaskConfig, path: Path, where: str) -> LoadedTask:
    from lm_eval.tasks._yaml_loader import load_yaml  # pinned lm-eval: its loader resolves include and !function

    try:
        config = dict(load_yaml(path))
    except Exception as error:  # a YAML error, a bad include, a !function that does not import
        raise FoundryError(f"{where}: {path} is not a loadable lm-eval task YAML: {error}") from None
    if "group" in config or "task" not in config and "tag" in config:
        raise FoundryError(f"{where}: {path} defines a group; name one task YAML per evaluation.tasks entry")
    base = path.parent
    dataset = config.get("dataset_path")
    data_files: list[str] = []
    if dataset in LOCAL_BUILDERS:
        kwargs = dict(config.get("dataset_kwargs") or {})
        files = kwargs.get("data_files")
        if not files:
            raise FoundryError(
                f"{where}: {path}: dataset_path {dataset} needs dataset_kwargs.data_files naming local files"
            )

        def local(name: str) -> str:
            resolved = Path(name).expanduser()
            resolved = resolved if resolved.is_absolute() else base / resolved
            if not resolved.is_file():
                raise FoundryError(f"{where}: {path}: data file {name} not found (looked at {resolved})")
            data_files.append(str(resolved))
            return str(resolved)

        if isinstance(files, str):
            kwargs["data_files"] = local(files)
        elif isinstance(files, list):
            kwargs["data_files"] = [local(f) for f in files]
        elif isinstance(files, dict):
            kwargs["data_files"] = {
                split: [local(f) for f in names] if isinstance(names, list) else local(names)
                for split, names in files.items()
            }
        else:
            raise FoundryError(f"{where}: {path}: dataset_kwargs.data_files must be a path, a list or a split map")
        config["dataset_kwargs"] = kwargs
    elif isinstance(dataset, str) and (base / dataset).expanduser().is_dir():
        config["dataset_path"] = str((base / dataset).expanduser())
        data_files = sorted(str(p) for p in Path(config["dataset_path"]).rglob("*") if p.is_file())
    else:
        raise FoundryError(
            f"{where}: {path}: dataset_path {dataset!r} is neither a local builder ({', '.join(LOCAL_BUILDERS)}) with "
            "data_files nor a local dataset directory; nothing is downloaded here: point it at local files"
        )
    output_type = config.get("output_type", "generate_until")
    if output_type not in (*LOGLIKELIHOOD_TYPES, "generate_until"):
        raise FoundryError(
            f"{where}: {path}: output_type {output_type!r} gives no per-item 0/1 score; use multiple_choice, "
            "loglikelihood or generate_until"
        )
    metrics = [entry.get("metric") for entry in config.get("metric_list") or [] if isinstance(entry, dict)]
    metric = task.metric or (metrics[0] if metrics else "acc" if output_type in LOGLIKELIHOOD_TYPES else "exact_match")
    if metrics and metric not in metrics:
        raise FoundryError(f"{where}: metric {metric!r} is not in {path}'s metric_list ({', '.join(metrics)})")
    config |= {"task": task.name, "num_fewshot": task.num_fewshot}
    config.pop("tag", None)
    return LoadedTask(
        name=task.name,
        format=task.format,
        path=str(path),
        metric=metric,
        output_type=output_type,
        lm_eval_config=config,
        data_files=[str(path), *data_files],
        num_items=None,
        limit=task.limit,
    )


def load_tasks(tasks: Sequence[TaskConfig]) -> list[LoadedTask]:
    """Check every configured task (lm-eval installed, files present and well-formed, data local)
    and build its lm-eval config. Runs in preflight, before any work."""
    if not tasks:
        return []
    require_lm_eval()
    loaded = []
    for index, task in enumerate(tasks):
        where, path = _where(index, task), Path(task.path).expanduser()
        if not path.is_file():
            raise FoundryError(f"{where}: path {path} not found; write the task file there or fix the path")
        if task.format == "lm_eval":
            loaded.append(_lm_eval_yaml_task(task, path, where))
        else:
            loaded.append(_foundry_task(task, path, where))
    return loaded


def tasks_fingerprint(tasks: Sequence[TaskConfig]) -> str:
    """SHA-256 over every file the tasks read (name, path, content), "none" without tasks: the
    evaluation is re-run when a task file is rewritten in place."""
    if not tasks:
        return "none"
    from foundry.hashing import sha256_json

    entries = []
    for loaded in load_tasks(tasks):
        entries.append({"task": loaded.name, "files": {f: sha256_file(Path(f)) for f in loaded.data_files}})
    return sha256_json(entries)


# --- lm-eval models over foundry engines ------------------------------------------------------------


def _template_lm():
    from lm_eval.api.model import TemplateLM

    return TemplateLM


def _greedy_only(gen_kwargs: dict, served_by: str) -> None:
    if gen_kwargs.get("do_sample") or float(gen_kwargs.get("temperature") or 0.0) > 0.0:
        raise FoundryError(f"{served_by}: the task asks for sampling ({gen_kwargs}); engines are compared greedily")


def engine_lm(engine, tokenizer, max_length: int, batch_size: int = 8):
    """An lm-eval model over an in-process engine (`logits` and `generate`), e.g. the reference
    runtime or HFEngine. `max_length`: the longest sequence scored (the engine's max_seq_len), the
    same for both sides of a comparison."""

    class EngineLM(_template_lm()):
        def __init__(self) -> None:
            super().__init__()
            self.engine, self.tokenizer = engine, tokenizer
            self.max_length, self.batch_size = int(max_length), int(batch_size)
            self.served_by = f"in-process {engine.backend}"
            parameters = inspect.signature(engine.generate).parameters
            self._stops_itself = "stop_token_ids" in parameters

        @property
        def eot_token_id(self) -> int:
            return self.tokenizer.eos_token_id

        @property
        def prefix_token_id(self) -> int:
            bos = self.tokenizer.bos_token_id
            return bos if bos is not None else self.eot_token_id

        @property
        def tokenizer_name(self) -> str:
            return str(self.tokenizer.name_or_path).replace("/", "__")

        def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
            return list(self.tokenizer.encode(string, add_special_tokens=bool(add_special_tokens)))

        def tok_decode(self, tokens: Sequence[int]) -> str:
            return self.tokenizer.decode(list(tokens))

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, **kwargs):
            results: list[tuple[float, bool] | None] = [None] * len(requests)
            # longest first, so a batch pads little; right padding leaves a causal model's earlier positions alone
            order = sorted(range(len(requests)), key=lambda i: -(len(requests[i][1]) + len(requests[i][2])))
            for start in range(0, len(order), self.batch_size):
                rows = []
                for i in order[start : start + self.batch_size]:
                    _, context, continuation = requests[i]
                    if not continuation:
                        raise FoundryError(f"{self.served_by}: an empty continuation to score")
                    whole = (list(context) + list(continuation))[-(self.max_length + 1) :][:-1]
                    if len(continuation) > len(whole):
                        raise FoundryError(
                            f"{self.served_by}: a {len(continuation)}-token continuation does not fit max_length "
                            f"{self.max_length}"
                        )
                    rows.append((i, whole, list(continuation)))
                width = max(len(whole) for _, whole, _ in rows)
                ids = torch.full((len(rows), width), self.eot_token_id, dtype=torch.long)
                for row, (_, whole, _) in enumerate(rows):
                    ids[row, : len(whole)] = torch.tensor(whole, dtype=torch.long)
                logits = self.engine.logits(ids)
                if not torch.isfinite(logits).all():
                    raise FoundryError(f"{self.served_by} produced NaN/Inf logits on a task item; the engine is broken")
                logp = F.log_softmax(logits.double(), dim=-1)
                for row, (i, whole, continuation) in enumerate(rows):
                    positions = logp[row, len(whole) - len(continuation) : len(whole)]
                    targets = torch.tensor(continuation, dtype=torch.long)
                    score = float(positions.gather(-1, targets[:, None]).sum())
                    greedy = bool((positions.argmax(-1) == targets).all())
                    results[i] = (score, greedy)
                    self.cache_hook.add_partial("loglikelihood", requests[i][0], results[i])
            return results

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
            from lm_eval import utils

            totals = []
            for (text,) in [request.args for request in requests]:
                windows = map(
                    utils.make_disjoint_window,
                    utils.get_rolling_token_windows(
                        token_list=self.tok_encode(text),
                        prefix_token=self.prefix_token_id,
                        max_seq_len=self.max_length,
                        context_len=1,
                    ),
                )
                pieces = self._loglikelihood_tokens([(None, context, target) for context, target in windows])
                totals.append(sum(score for score, _ in pieces))
            return totals

        def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
            from lm_eval.models.utils import handle_stop_sequences

            eos = self.eot_token_id
            out = []
            for context, gen_kwargs in [request.args for request in requests]:
                gen_kwargs = dict(gen_kwargs or {})
                _greedy_only(gen_kwargs, self.served_by)
                until = handle_stop_sequences(gen_kwargs.get("until"), eos=self.tok_decode([eos]))
                max_new = int(gen_kwargs.get("max_gen_toks", 256))
                if max_new >= self.max_length:
                    raise FoundryError(f"max_gen_toks {max_new} leaves no room for a prompt in {self.max_length}")
                prompt = self.tok_encode(context)[-(self.max_length - max_new) :]
                if self._stops_itself:
                    tokens = list(self.engine.generate(prompt, max_new, stop_token_ids=(eos,)))
                else:
                    tokens = list(self.engine.generate(prompt, max_new))
                if eos in tokens:
                    tokens = tokens[: tokens.index(eos)]
                text = self.tok_decode(tokens)
                for stop in until:
                    if stop:
                        text = text.split(stop)[0]
                out.append(text)
                self.cache_hook.add_partial("generate_until", (context, gen_kwargs), text)
            return out

    return EngineLM()


def require_echo_logprobs(base_url: str, model_name: str, prompt_ids: Sequence[int], served_by: str) -> None:
    """Loglikelihood through a server needs the prompt's logprobs echoed back (`echo: true` with
    `logprobs`, as vLLM answers). Ask once; a server that does not is refused with what to do."""
    from foundry.server_process import NO_PROXY_OPENER

    body = {
        "model": model_name,
        "prompt": [list(prompt_ids)],
        "max_tokens": 1,
        "temperature": 0,
        "logprobs": 1,
        "echo": True,
    }
    import urllib.request

    request = urllib.request.Request(
        base_url.rstrip("/") + "/v1/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    problem = None
    try:
        with NO_PROXY_OPENER.open(request, timeout=120) as response:
            answer = json.loads(response.read())
        logprobs = (answer.get("choices") or [{}])[0].get("logprobs") or {}
        count = len(logprobs.get("token_logprobs") or [])
        if count < len(prompt_ids) + 1:
            problem = f"it returned logprobs for {count} token(s) of a {len(prompt_ids)}-token prompt with echo: true"
    except (OSError, ValueError, AttributeError, IndexError) as error:
        problem = f"an echo request failed ({error})"
    if problem:
        raise FoundryError(
            f"{served_by}: {problem}; loglikelihood (multiple-choice) tasks through a server need the prompt's "
            "logprobs echoed (vLLM does). Run them in process (runtime.served_by: in_process, reference backend), "
            "serve with a server that echoes prompt logprobs, or use generation tasks"
        )


def served_lm(base_url: str, model_name: str, tokenizer_dir: Path, max_length: int, timeout_s: float, served_by: str):
    """lm-eval's OpenAI completions model (`local-completions`) against an engine's server: token ids
    in (the local tokenizer), greedy; loglikelihood checks each response carries echoed prompt logprobs."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI

    class ServedCompletionsLM(LocalCompletionsAPI):
        @staticmethod
        def parse_logprobs(outputs, tokens=None, ctxlens=None, **kwargs):
            for out in outputs if isinstance(outputs, list) else [outputs]:
                for choice, prompt in zip(out.get("choices") or [], tokens or [], strict=False):
                    count = len((choice.get("logprobs") or {}).get("token_logprobs") or [])
                    if count < len(prompt) + 1:
                        raise FoundryError(
                            f"{served_by}: logprobs for {count} token(s) of a {len(prompt)}-token prompt with "
                            "echo: true; the server does not echo prompt logprobs"
                        )
            return LocalCompletionsAPI.parse_logprobs(outputs, tokens, ctxlens, **kwargs)

    lm = ServedCompletionsLM(
        base_url=base_url.rstrip("/") + "/v1/completions",
        model=model_name,
        tokenizer=str(tokenizer_dir),
        tokenizer_backend="huggingface",
        tokenized_requests=True,
        max_length=int(max_length) + 1,  # lm-eval keeps one position for the generated token
        max_retries=1,
        timeout=int(math.ceil(timeout_s)),
        batch_size=1,
        num_concurrent=1,
    )
    lm.served_by = served_by
    return lm


# --- running tasks and pairing the items -------------------------------------------------------------


def _is_binary(value) -> bool:
    return isinstance(value, (bool, int, float)) and float(value) in (0.0, 1.0)


def run_task(lm, loaded: LoadedTask) -> dict[int, float]:
    """{doc_id: 0/1 correctness} of one task on one lm-eval model."""
    from lm_eval import evaluator
    from lm_eval.tasks import TaskManager

    with offline():
        results = evaluator.simple_evaluate(
            model=lm,
            tasks=[loaded.lm_eval_config],
            task_manager=TaskManager(include_defaults=False),
            limit=loaded.limit,
            bootstrap_iters=0,
            log_samples=True,
            cache_requests=False,
        )
    samples = (results or {}).get("samples", {}).get(loaded.name)
    if not samples:
        raise FoundryError(f"task {loaded.name}: lm-eval scored no items (check {loaded.path})")
    items: dict[int, float] = {}
    for sample in samples:
        if loaded.metric not in sample:
            found = sorted(k for k, v in sample.items() if _is_binary(v) and k not in ("doc_id",))
            raise FoundryError(
                f"task {loaded.name}: lm-eval reported no per-item {loaded.metric!r} (per-item scores: "
                f"{', '.join(found) or 'none'}); set evaluation.tasks[].metric to one of them"
            )
        value = sample[loaded.metric]
        if not _is_binary(value):
            raise FoundryError(
                f"task {loaded.name}: metric {loaded.metric!r} is not a per-item 0/1 score (got {value!r}); "
                "choose one such as acc, acc_norm or exact_match"
            )
        items[int(sample["doc_id"])] = float(value)
    return items


class TaskChampionPair(BaseModel):
    """The production engine (the champion) on the same items as this run's engine (the challenger)."""

    model_config = ConfigDict(frozen=True)

    champion_score: float
    champion_correct: list[float]  # per item, in TaskResult.doc_ids order
    champion_only_correct: int  # items only the champion gets right
    challenger_only_correct: int  # items only this run's engine gets right
    mcnemar_p: float
    champion_wall_s: float


class TaskResult(BaseModel):
    """One task: the engine and the unquantized model on the same items (and the champion, when it
    was scored beside them)."""

    model_config = ConfigDict(frozen=True)

    name: str
    format: str
    output_type: str
    metric: str
    path: str
    num_items: int
    unquantized_score: float  # fraction of items right
    engine_score: float
    score_ratio: float | None  # engine / unquantized; None when the unquantized model scores 0
    ratio_low: float | None
    ratio_high: float | None
    confidence: float
    engine_only_correct: int  # items only the engine gets right
    unquantized_only_correct: int  # items only the unquantized model gets right
    mcnemar_p: float
    doc_ids: list[int]
    engine_correct: list[float]
    unquantized_correct: list[float]
    engine_wall_s: float
    unquantized_wall_s: float
    champion: TaskChampionPair | None = None

    @property
    def flips(self) -> int:
        return self.engine_only_correct + self.unquantized_only_correct

    @property
    def score_pct_of_unquantized(self) -> float | None:
        return None if self.score_ratio is None else 100.0 * self.score_ratio


class TaskAccuracyReport(BaseModel):
    model_config = ConfigDict(frozen=True)

    lm_eval_version: str
    engine_served_by: str
    unquantized_backend: str
    max_length: int
    method: str
    tasks: list[TaskResult]

    def headline(self) -> dict[str, float]:
        """Step metadata and MLflow-ready numbers, per task."""
        out: dict[str, float] = {}
        for task in self.tasks:
            out |= {
                f"task_{task.name}_engine_score": task.engine_score,
                f"task_{task.name}_unquantized_score": task.unquantized_score,
                f"task_{task.name}_flips": float(task.flips),
                f"task_{task.name}_mcnemar_p": task.mcnemar_p,
            }
            if task.score_ratio is not None:
                out[f"task_{task.name}_score_ratio"] = task.score_ratio
            if task.champion is not None:
                out[f"task_{task.name}_champion_score"] = task.champion.champion_score
                out[f"task_{task.name}_champion_mcnemar_p"] = task.champion.mcnemar_p
        return out


def discordant(first: Sequence[float], second: Sequence[float]) -> tuple[int, int]:
    """Paired 0/1 items: (how many only `first` gets right, how many only `second` does)."""
    return (
        sum(1 for a, b in zip(first, second, strict=True) if a and not b),
        sum(1 for a, b in zip(first, second, strict=True) if b and not a),
    )


def pair_items(
    loaded: LoadedTask,
    engine_items: dict[int, float],
    unquantized_items: dict[int, float],
    confidence: float = 0.95,
    engine_wall_s: float = 0.0,
    unquantized_wall_s: float = 0.0,
) -> TaskResult:
    """The per-item pairing: score ratio with its bootstrap interval, flips and McNemar's p."""
    if set(engine_items) != set(unquantized_items):
        raise FoundryError(
            f"task {loaded.name}: the engine was scored on {len(engine_items)} items, the unquantized model on "
            f"{len(unquantized_items)}; they must be the same items"
        )
    doc_ids = sorted(engine_items)
    engine = [engine_items[i] for i in doc_ids]
    unquantized = [unquantized_items[i] for i in doc_ids]
    if len(doc_ids) < 2:
        raise FoundryError(f"task {loaded.name}: {len(doc_ids)} item scored; at least 2 are needed for an interval")
    engine_only, unquantized_only = discordant(engine, unquantized)
    ratio = low = high = None
    if sum(unquantized) > 0:
        interval = score_ratio_interval(engine, unquantized, confidence)
        ratio, low, high = interval.ratio, interval.low, interval.high
    return TaskResult(
        name=loaded.name,
        format=loaded.format,
        output_type=loaded.output_type,
        metric=loaded.metric,
        path=loaded.path,
        num_items=len(doc_ids),
        unquantized_score=sum(unquantized) / len(unquantized),
        engine_score=sum(engine) / len(engine),
        score_ratio=ratio,
        ratio_low=low,
        ratio_high=high,
        confidence=confidence,
        engine_only_correct=engine_only,
        unquantized_only_correct=unquantized_only,
        mcnemar_p=mcnemar_exact(unquantized_only, engine_only),
        doc_ids=doc_ids,
        engine_correct=engine,
        unquantized_correct=unquantized,
        engine_wall_s=engine_wall_s,
        unquantized_wall_s=unquantized_wall_s,
    )


def pair_with_champion(
    result: TaskResult, champion_items: dict[int, float], champion_wall_s: float = 0.0
) -> TaskResult:
    """`result` (the engine against the unquantized model) with the champion scored on the same items:
    its score, the discordant items both ways and McNemar's exact p."""
    if set(champion_items) != set(result.doc_ids):
        raise FoundryError(
            f"task {result.name}: the champion was scored on {len(champion_items)} items, this run's engine on "
            f"{len(result.doc_ids)}; they must be the same items"
        )
    champion = [champion_items[i] for i in result.doc_ids]
    champion_only, challenger_only = discordant(champion, result.engine_correct)
    pair = TaskChampionPair(
        champion_score=sum(champion) / len(champion),
        champion_correct=champion,
        champion_only_correct=champion_only,
        challenger_only_correct=challenger_only,
        mcnemar_p=mcnemar_exact(champion_only, challenger_only),
        champion_wall_s=champion_wall_s,
    )
    return result.model_copy(update={"champion": pair})


def _timed_task(lm, loaded: LoadedTask) -> tuple[dict[int, float], float]:
    started = time.perf_counter()
    return run_task(lm, loaded), time.perf_counter() - started


def evaluate_tasks(
    tasks: Sequence[TaskConfig],
    engine_model,
    unquantized_model,
    unquantized_backend: str,
    max_length: int,
    confidence: float = 0.95,
    champion_model=None,
) -> TaskAccuracyReport:
    """Every configured task on the engine's lm-eval model and on the unquantized model's, paired item
    by item; with `champion_model` (the production engine's), the champion on the same items too."""
    version = require_lm_eval()
    results = []
    for loaded in load_tasks(tasks):
        engine_items, engine_s = _timed_task(engine_model, loaded)
        unquantized_items, unquantized_s = _timed_task(unquantized_model, loaded)
        result = pair_items(loaded, engine_items, unquantized_items, confidence, engine_s, unquantized_s)
        if champion_model is not None:
            result = pair_with_champion(result, *_timed_task(champion_model, loaded))
        results.append(result)
    return TaskAccuracyReport(
        lm_eval_version=version,
        engine_served_by=getattr(engine_model, "served_by", type(engine_model).__name__),
        unquantized_backend=unquantized_backend,
        max_length=max_length,
        method=METHOD.format(version=version, confidence=confidence),
        tasks=results,
    )


def evaluate_tasks_on(
    tasks: Sequence[TaskConfig],
    served,
    unquantized,
    tokenizer_dir: Path,
    model_name: str,
    max_length: int,
    request_timeout_s: float,
    champion=None,
) -> TaskAccuracyReport:
    """The tasks on an engine opened by foundry.serving.open_engine (`served`): through the in-process
    adapter when it runs in process, else through lm-eval's completions model against its server;
    the unquantized model (`unquantized`, an in-process HFEngine) always in process, and so is the
    production engine (`champion`, an in-process engine) when given."""
    from transformers import AutoTokenizer

    loaded = load_tasks(tasks)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    if served.engine is not None:
        model = engine_lm(served.engine, tokenizer, max_length)
    else:
        base_url = served.server.base_url
        if any(task.loglikelihood for task in loaded):
            probe = tokenizer.encode("The capital of France is Paris.", add_special_tokens=False)
            require_echo_logprobs(base_url, model_name, probe, served.served_by)
        model = served_lm(base_url, model_name, tokenizer_dir, max_length, request_timeout_s, served.served_by)
    return evaluate_tasks(
        tasks,
        model,
        engine_lm(unquantized, tokenizer, max_length),
        unquantized.backend,
        max_length,
        champion_model=None if champion is None else engine_lm(champion, tokenizer, max_length),
    )


def _champion_cell(pair: TaskChampionPair | None) -> str:
    if pair is None:
        return "not scored"
    return (
        f"{pair.champion_score:.2%}; {pair.champion_only_correct} only the champion, "
        f"{pair.challenger_only_correct} only this engine (McNemar p = {pair.mcnemar_p:.3g})"
    )


def render_tasks_html(report: TaskAccuracyReport) -> str:
    import html

    rows = []
    for task in report.tasks:
        ratio = (
            "— (the unquantized model scores 0)"
            if task.score_ratio is None
            else f"{task.score_ratio:.2%} ({task.confidence:.0%} CI {task.ratio_low:.2%}–{task.ratio_high:.2%})"
        )
        rows.append(
            f"<tr><td>{html.escape(task.name)}</td><td>{html.escape(task.output_type)} / {html.escape(task.metric)}</td>"
            f"<td>{task.num_items}</td><td>{task.unquantized_score:.2%}</td><td><b>{task.engine_score:.2%}</b></td>"
            f"<td>{ratio}</td><td>{task.flips} ({task.unquantized_only_correct} lost, {task.engine_only_correct} gained; "
            f"McNemar p = {task.mcnemar_p:.3g})</td><td>{_champion_cell(task.champion)}</td></tr>"
        )
    return (
        f"<h3>Task accuracy (lm-evaluation-harness {html.escape(report.lm_eval_version)}): "
        f"{html.escape(report.engine_served_by)} vs the unquantized model ({html.escape(report.unquantized_backend)})</h3>"
        "<table border='1' cellpadding='6' style='border-collapse:collapse'><tr><th>task</th><th>type / metric</th>"
        "<th>items</th><th>unquantized</th><th>engine</th><th>engine / unquantized</th><th>flips</th>"
        "<th>champion (same items)</th></tr>" + "".join(rows) + f"</table><p>{html.escape(report.method)}</p>"
    )
