from pathlib import Path
from typing import Annotated

import pandas as pd
from transformers import AutoTokenizer
from zenml import log_metadata, step
from zenml.types import HTMLString

from foundry.artifacts import EngineArtifact, HFCheckpoint
from foundry.bench.metrics import records_dataframe
from foundry.bench.report import render_html
from foundry.bench.results_validation import require_valid_results
from foundry.bench.session import BenchmarkResults, LoadPlan, run_champion_rounds, run_session
from foundry.bench.workload import workload_from_config
from foundry.builders.base import read_engine_info
from foundry.champion import ProductionEngine, plan_champion, rounds_to_add
from foundry.config import BenchmarkConfig, GateConfig, RuntimeConfig
from foundry.runtime.hf import HFEngine, static_batch_size_for
from foundry.serving import open_engine, server_log_text, tokenizer_dir_of
from foundry.state import scratch_dir


# Never cached: a benchmark measures this machine now; the gates must not pass on yesterday's numbers.
@step(enable_cache=False)
def benchmark_engine(
    engine: EngineArtifact,
    checkpoint: HFCheckpoint,
    benchmark: BenchmarkConfig,
    runtime: RuntimeConfig,
    model_name: str,
    benchmark_dataset_fingerprint: str = "synthetic",
    production_engine: ProductionEngine | None = None,
    gates: GateConfig | None = None,
) -> tuple[
    Annotated[BenchmarkResults, "benchmark_results"],
    Annotated[pd.DataFrame, "benchmark_requests"],
    Annotated[HTMLString, "benchmark_report"],
    Annotated[str, "benchmark_server_log"],
]:
    """The engine as it serves (runtime.served_by: in process, or its own server process) and,
    optionally, the HF transformers baseline, on the same workload (seeded synthetic or a trtllm-bench
    dataset) under the configured load; results validated with GX. When production holds another
    engine that runs here (the champion), both are then measured interleaved in rounds."""
    info = read_engine_info(engine.path)
    tokenizer = AutoTokenizer.from_pretrained(checkpoint.path)
    requests, workload = workload_from_config(
        benchmark,
        len(tokenizer),
        list(tokenizer.all_special_ids),
        tokenizer=tokenizer,
        max_seq_len=info.get("max_seq_len"),
    )
    production_engine = production_engine or ProductionEngine(model_name=model_name, version=None)
    champion = plan_champion(
        production_engine,
        info,
        engine.content_hash,
        remeasure=benchmark.remeasure_champion,
        longest_request_tokens=max(len(r.input_ids) + r.output_tokens for r in requests),
    )
    log_path = scratch_dir("server-log") / "benchmark-server.log"
    served = open_engine(
        engine.path,
        info,
        engine.content_hash,
        runtime,
        tokenizer_dir_of(engine.path, info, checkpoint.path),
        log_path,
        model_name,
        eos_ids=[tokenizer.eos_token_id],
    )
    baseline = (
        (
            lambda: HFEngine.load(
                checkpoint.path,
                batching=benchmark.baseline_batching,
                max_batch_size=static_batch_size_for(benchmark.concurrency, benchmark.max_concurrency),
            )
        )
        if benchmark.baseline
        else None
    )
    results = run_session(
        served,
        requests,
        workload,
        LoadPlan.from_config(benchmark),
        model_name,
        baseline=baseline,
        dataset_fingerprint=benchmark_dataset_fingerprint,
    )
    rounds = None
    if champion.re_measure:
        gates = gates or GateConfig()
        champion_dir = Path(champion.engine_dir)
        champion_info = read_engine_info(champion_dir)
        rounds = run_champion_rounds(
            open_engine(
                engine.path,
                info,
                engine.content_hash,
                runtime,
                tokenizer_dir_of(engine.path, info, checkpoint.path),
                scratch_dir("server-log") / "challenger-rounds-server.log",
                model_name,
                eos_ids=[tokenizer.eos_token_id],
            ),
            open_engine(
                champion_dir,
                champion_info,
                champion.engine_content_hash,
                runtime.model_copy(update={"port": None}),  # two servers at once: the champion's on a free port
                tokenizer_dir_of(champion_dir, champion_info, checkpoint.path),
                scratch_dir("server-log") / "champion-rounds-server.log",
                model_name,
                eos_ids=[tokenizer.eos_token_id],
            ),
            champion.version,
            requests,
            workload,
            LoadPlan.from_config(benchmark),
            model_name,
            benchmark.champion_rounds,
            more_rounds=lambda so_far: rounds_to_add(
                so_far, gates, benchmark.champion_max_rounds, batch=max(2, benchmark.champion_rounds // 2)
            ),
        )
    results = results.model_copy(update={"champion_plan": champion, "champion_rounds": rounds})
    frames = [records_dataframe(results.engine.records).assign(backend=results.engine.backend)]
    if results.baseline is not None:
        frames.append(records_dataframe(results.baseline.records).assign(backend=results.baseline.backend))
    requests_frame = pd.concat(frames, ignore_index=True)
    validation = require_valid_results(requests_frame, benchmark.min_completion_rate)
    results = results.model_copy(update={"validation": validation.as_dict()})
    log_metadata(
        metadata={
            "benchmark": {k: v for k, v in results.headline.items() if v is not None},
            "backend": results.engine.backend,
            "served_by": results.served_by,
            "engine_content_hash": results.engine_content_hash,
            "benchmark_validation": {"success": validation.success, "rows": validation.checked_rows},
            "champion": champion.summary_line(rounds.rounds if rounds else None),
        }
    )
    html = render_html(results.engine, baseline=results.baseline, comparison=results.comparison)
    return results, requests_frame, HTMLString(html), server_log_text(log_path)
