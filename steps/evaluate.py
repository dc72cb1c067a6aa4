from pathlib import Path
from typing import Annotated

import numpy as np
import torch
from transformers import AutoTokenizer
from zenml import log_metadata, step
from zenml.types import HTMLString

from foundry.artifacts import EngineArtifact, HFCheckpoint
from foundry.builders import load_engine
from foundry.builders.base import read_engine_info
from foundry.champion import ProductionEngine, plan_champion
from foundry.config import EvaluationConfig, RuntimeConfig
from foundry.generation_quality import evaluate_generation
from foundry.quality import QualityReport, evaluate_quality, render_quality_html
from foundry.runtime.hf import HFEngine
from foundry.serving import open_engine, server_log_text, tokenizer_dir_of
from foundry.state import scratch_dir
from foundry.task_accuracy import evaluate_tasks_on


@step
def evaluate_engine_quality(
    engine: EngineArtifact,
    checkpoint: HFCheckpoint,
    evaluation_windows: np.ndarray,
    data_lineage: dict,
    evaluation: EvaluationConfig,
    runtime: RuntimeConfig,
    model_name: str,
    production_engine: ProductionEngine | None = None,
    task_data_fingerprint: str = "none",
) -> tuple[
    Annotated[QualityReport, "quality_report"],
    Annotated[HTMLString, "quality_report_html"],
    Annotated[str, "evaluation_server_log"],
]:
    """The engine that will be promoted, run the way it serves, against the unquantized HF model on
    held-out windows (never calibration data): teacher-forced where it gives logits (in process),
    greedy continuations compared for every engine. The production engine (the champion), when it
    runs here in process beside this one, is scored in the same pass on the same windows and on the
    same task items. Tasks (evaluation.tasks) run through lm-evaluation-harness on the engine as it
    serves and on the unquantized model; `task_data_fingerprint` (their files' bytes) keys the step's cache."""
    info = read_engine_info(engine.path)
    champion_plan = plan_champion(
        production_engine or ProductionEngine(model_name=model_name, version=None),
        info,
        engine.content_hash,
        remeasure=True,
    )
    unquantized = HFEngine.load(checkpoint.path)
    eos_id = AutoTokenizer.from_pretrained(checkpoint.path).eos_token_id
    windows = torch.from_numpy(evaluation_windows)
    prompts = windows[: evaluation.generation_prompts, : evaluation.generation_prompt_len].tolist()
    log_path = scratch_dir("server-log") / "evaluation-server.log"
    with open_engine(
        engine.path,
        info,
        engine.content_hash,
        runtime,
        tokenizer_dir_of(engine.path, info, checkpoint.path),
        log_path,
        model_name,
        eos_ids=[eos_id],
    ) as served:
        champion, champion_note = None, None
        if champion_plan.re_measure and served.engine is not None:
            champion = load_engine(Path(champion_plan.engine_dir))
        elif champion_plan.re_measure:
            champion_note = f"this run's engine is {served.served_by}: no logits to compare"
        elif champion_plan.status == "not_re_measured":
            champion_note = champion_plan.reason
        try:
            report = evaluate_quality(
                served.engine,
                unquantized,
                windows,
                data_lineage["evaluation_data_hash"],
                engine_backend=info["backend"],
                champion=champion,
            )
            generation = None
            if prompts:
                generation = evaluate_generation(
                    served.continuations,
                    unquantized,
                    prompts,
                    evaluation.generation_tokens,
                    evaluation.stop_at_eos,
                    evaluation.top_logprobs,
                    eos_ids=[eos_id],
                )
            tasks = None
            if evaluation.tasks:
                tasks = evaluate_tasks_on(
                    evaluation.tasks,
                    served,
                    unquantized,
                    tokenizer_dir_of(engine.path, info, checkpoint.path),
                    model_name,
                    max_length=int(info["max_seq_len"]),
                    request_timeout_s=runtime.request_timeout_s,
                    champion=champion,
                )
        finally:
            if champion is not None:
                champion.close()
        served.require_alive("the evaluation")
    report = report.model_copy(
        update={
            "served_by": served.served_by,
            "engine_content_hash": engine.content_hash,
            "generation": generation,
            "tasks": tasks,
            "champion_quality_note": champion_note,
            "champion_pair": report.champion_pair.model_copy(
                update={"champion_engine_content_hash": champion_plan.engine_content_hash}
            )
            if report.champion_pair
            else None,
        }
    )
    headline = {k: v for k, v in report.model_dump(exclude={"generation"}).items() if isinstance(v, float)}
    if generation is not None:
        headline |= {f"generation_{k}": v for k, v in generation.model_dump().items() if isinstance(v, float)}
    if tasks is not None:
        headline |= tasks.headline()
    log_metadata(metadata={"quality": headline, "served_by": served.served_by})
    return report, HTMLString(render_quality_html(report)), server_log_text(log_path)
