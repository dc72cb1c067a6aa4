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


def true_latencies_ms(report: BenchmarkReport, requests: Sequence[Request], emission_log: list[dict],
                      times_key: str = "emitted_s") -> dict[str, np.ndarray]:
    """Per timed request of the report, TTFT from the harness's scheduled send time to the engine's
    first emission, TPOT over the engine's emissions, and e2e. `times_key`: "emitted_s" (the engine
    handed the token over) or, from the HTTP server's log, "written_s" (the server sent its chunk)."""
    prompts = [tuple(r.input_ids) for r in requests]
    assert len(set(prompts)) == len(prompts), "emissions are matched by prompt: prompts must be unique"
    emitted_by_prompt = {tuple(entry["prompt"]): entry[times_key] for entry in emission_log}
    by_id = {r.request_id: r for r in requests}
    ttft, tpot, e2e = [], [], []
    for record in report.records:
        emitted = np.asarray(emitted_by_prompt[tuple(by_id[record.request_id].input_ids)]) - report.clock_epoch_s
        assert len(emitted) == record.output_tokens
        ttft.append((emitted[0] - record.scheduled_s) * 1e3)
        e2e.append((emitted[-1] - record.scheduled_s) * 1e3)
        if len(emitted) > 1:
            tpot.append((emitted[-1] - emitted[0]) * 1e3 / (len(emitted) - 1))
    return {"ttft": np.array(ttft), "tpot": np.array(tpot), "e2e": np.array(e2e)}


def harness_error_ms(report: BenchmarkReport, requests: Sequence[Request], emission_log: list[dict]) -> np.ndarray:
    """Per token: the harness's arrival timestamp minus the engine's emission (≥ 0 up to clock reads)."""
    emitted_by_prompt = {tuple(entry["prompt"]): entry["emitted_s"] for entry in emission_log}
    by_id = {r.request_id: r for r in requests}
    gaps = [np.asarray(record.token_arrival_s) + report.clock_epoch_s
            - np.asarray(emitted_by_prompt[tuple(by_id[record.request_id].input_ids)])
            for record in report.records]
    return np.concatenate(gaps) * 1e3
