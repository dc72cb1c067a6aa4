"""The truth a harness measurement is checked against: when a synthetic engine actually handed each
token over (its emission log, time.perf_counter = CLOCK_MONOTONIC, one clock per host), not its
nominal schedule. On a loaded host the engine itself delivers late; that lateness is real latency,
which the harness must report, not error it must hide, so only the gap between emission and the
harness's own timestamp is harness error."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from foundry.bench.metrics import BenchmarkReport
from foundry.bench.workload import Request


def emitted_per_record(
    report: BenchmarkReport, requests: Sequence[Request], emission_log: list[dict], times_key: str = "emitted_s"
) -> list[np.ndarray]:
    """For each of the report's records, its tokens' emission times in the records' time base.
    `times_key`: "emitted_s" (the engine handed the token over) or, from the HTTP server's log,
    "written_s" (the server sent its chunk). Emissions are matched by prompt."""
    prompts = [tuple(r.input_ids) for r in requests]
    assert len(set(prompts)) == len(prompts), "emissions are matched by prompt: prompts must be unique"
    emitted_by_prompt = {tuple(entry["prompt"]): entry[times_key] for entry in emission_log}
    prompt_by_id = {r.request_id: tuple(r.input_ids) for r in requests}
    return [
        np.asarray(emitted_by_prompt[prompt_by_id[record.request_id]]) - report.clock_epoch_s
        for record in report.records
    ]


def true_latencies_ms(
    report: BenchmarkReport, requests: Sequence[Request], emission_log: list[dict], times_key: str = "emitted_s"
) -> dict[str, np.ndarray]:
    """Per timed request: TTFT from the harness's scheduled send time to the first emission, TPOT
    over the emissions, and e2e."""
    ttft, tpot, e2e = [], [], []
    for record, emitted in zip(report.records, emitted_per_record(report, requests, emission_log, times_key)):
        assert len(emitted) == record.output_tokens
        ttft.append((emitted[0] - record.scheduled_s) * 1e3)
        e2e.append((emitted[-1] - record.scheduled_s) * 1e3)
        if len(emitted) > 1:
            tpot.append((emitted[-1] - emitted[0]) * 1e3 / (len(emitted) - 1))
    return {"ttft": np.array(ttft), "tpot": np.array(tpot), "e2e": np.array(e2e)}


def harness_error_ms(report: BenchmarkReport, requests: Sequence[Request], emission_log: list[dict]) -> np.ndarray:
    """Per token: the harness's arrival timestamp minus the engine's emission (≥ 0 up to clock reads)."""
    emitted = emitted_per_record(report, requests, emission_log)
    return np.concatenate([np.asarray(r.token_arrival_s) - e for r, e in zip(report.records, emitted)]) * 1e3
