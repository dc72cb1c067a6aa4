"""The champion and the challenger measured side by side: interleaved rounds on the same requests.

Each round runs the same timed requests (the seeded workload, warm-up excluded) once on each engine
at the lowest load level, one engine after the other; which one goes first alternates from round to
round (champion first in even rounds), so a machine that slows down or speeds up during the run
charges both sides alike and order effects cancel. Both engines stay open for all rounds. Each side
of a round keeps its per-request values (in request order, so the two sides pair by request) and its
round-level ones; foundry/champion.py turns them into intervals and verdicts.
"""

from __future__ import annotations

import time
from typing import Callable, Literal, Sequence

from pydantic import BaseModel, ConfigDict

from foundry.bench.metrics import BenchmarkReport, RequestRecord, e2e_ms, tpot_ms, ttft_ms
from foundry.bench.runner import run_benchmark
from foundry.bench.workload import Request, WorkloadDescription
from foundry.errors import FoundryError

Side = Literal["champion", "challenger"]


class SideRound(BaseModel):
    """One engine's measurement in one round."""

    model_config = ConfigDict(frozen=True)

    side: Side
    round_index: int
    ran_first: bool
    # Per request, in ChampionRounds.request_ids order; None where the request failed.
    ttft_ms: list[float | None]
    tpot_ms: list[float | None]
    e2e_ms: list[float | None]
    ttft_p99_ms: float | None
    tpot_p99_ms: float | None
    output_tok_s: float
    failed_requests: int
    wall_s: float


class ChampionRounds(BaseModel):
    """Every round of a champion/challenger measurement."""

    model_config = ConfigDict(frozen=True)

    champion_version: str
    champion_engine_content_hash: str
    champion_served_by: str
    challenger_served_by: str
    concurrency: int
    request_ids: list[int]
    champion: list[SideRound]
    challenger: list[SideRound]
    wall_s: float
    sequential_note: str | None = None  # rounds bought because a gate was inconclusive

    @property
    def rounds(self) -> int:
        return len(self.champion)


def _per_request(record: RequestRecord) -> tuple[float | None, float | None, float | None]:
    if not record.completed or record.first_token_s is None or not record.token_arrival_s:
        return None, None, None
    first = ttft_ms(record.scheduled_s, record.first_token_s)
    total = e2e_ms(record.scheduled_s, record.token_arrival_s[-1])
    return first, tpot_ms(total, first, record.output_tokens), total


def side_round(report: BenchmarkReport, side: Side, round_index: int, ran_first: bool, wall_s: float) -> SideRound:
    """One engine's round from its benchmark report (one load level; records in request order)."""
    if len(report.levels) != 1:
        raise FoundryError(f"a round measures one load level, got {len(report.levels)}")
    level = report.levels[0]
    values = [_per_request(record) for record in sorted(report.records, key=lambda r: r.request_id)]
    return SideRound(
        side=side,
        round_index=round_index,
        ran_first=ran_first,
        ttft_ms=[v[0] for v in values],
        tpot_ms=[v[1] for v in values],
        e2e_ms=[v[2] for v in values],
        ttft_p99_ms=level.ttft.p99_ms if level.ttft else None,
        tpot_p99_ms=level.tpot.p99_ms if level.tpot else None,
        output_tok_s=level.output_token_throughput_tok_s,
        failed_requests=level.failed,
        wall_s=wall_s,
    )


def run_interleaved_rounds(
    challenger_target,
    champion_target,
    requests: Sequence[Request],
    warmup_requests: int,
    concurrency: int,
    rounds: int,
    *,
    workload: WorkloadDescription | None = None,
    model_name: str = "",
    identity: dict,
    more_rounds: Callable[[ChampionRounds], int] | None = None,
) -> ChampionRounds:
    """`rounds` interleaved rounds; then, while `more_rounds(result_so_far)` asks for more (a
    sequential test buying rounds up to its budget), that many more. `identity`: the champion's
    version, engine content hash and what served each side (ChampionRounds fields)."""
    if rounds < 2:
        raise FoundryError(f"champion rounds must be >= 2, got {rounds}")
    warmup, timed = list(requests[:warmup_requests]), list(requests[warmup_requests:])
    if not timed:
        raise FoundryError("the workload has no timed request to measure the champion with")
    targets = {"champion": champion_target, "challenger": challenger_target}

    def measure(side: Side, batch: list[Request]) -> tuple[BenchmarkReport, float]:
        started = time.perf_counter()
        report = run_benchmark(targets[side], batch, [concurrency], 0, model=model_name, workload=workload)
        return report, time.perf_counter() - started

    started_s = time.perf_counter()
    if warmup:  # the challenger's session warmed it; the champion starts cold: warm both the same way
        for side in ("champion", "challenger"):
            measure(side, warmup)
    sides: dict[Side, list[SideRound]] = {"champion": [], "challenger": []}
    notes: list[str] = []

    def run_rounds(count: int) -> None:
        for _ in range(count):
            index = len(sides["champion"])
            order: tuple[Side, Side] = ("champion", "challenger") if index % 2 == 0 else ("challenger", "champion")
            for position, side in enumerate(order):
                report, wall_s = measure(side, timed)
                sides[side].append(side_round(report, side, index, position == 0, wall_s))

    def result() -> ChampionRounds:
        return ChampionRounds(
            **identity,
            concurrency=concurrency,
            request_ids=[request.request_id for request in sorted(timed, key=lambda r: r.request_id)],
            champion=sides["champion"],
            challenger=sides["challenger"],
            wall_s=time.perf_counter() - started_s,
            sequential_note="; ".join(notes) or None,
        )

    run_rounds(rounds)
    while more_rounds is not None and (extra := more_rounds(result())) > 0:
        notes.append(f"inconclusive after {len(sides['champion'])} rounds: {extra} more")
        run_rounds(extra)
    return result()
