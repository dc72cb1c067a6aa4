"""Great Expectations 1.x validation of benchmark results (the per-request DataFrame).

Checked, per level (backend + load level) of the frame from `metrics.records_dataframe`:
* completion rate (completed / timed requests) >= `min_completion_rate`;
* every completed request: no missing and no negative TTFT / e2e, TPOT present and >= 0 when it
  produced more than one token, and `output_tokens == requested_output_tokens` (outputs are not
  truncated and nothing extra was counted);
* scheduled and end times present.
GX is imported only here (not on the GPU machine's path); the pipeline step calls this.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from foundry.errors import FoundryError


@dataclass(frozen=True)
class ResultsValidation:
    success: bool
    failures: list[str] = field(default_factory=list)
    checked_rows: int = 0
    completion_rate_by_level: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "success": self.success,
            "failures": self.failures,
            "checked_rows": self.checked_rows,
            "completion_rate_by_level": self.completion_rate_by_level,
        }


def _level_key(row) -> str:
    rate = row.get("request_rate")
    rate_part = f" rate {rate:g}/s" if isinstance(rate, float) and rate == rate else ""
    return f"{row.get('backend', '')} {row['load_mode']} c{row['concurrency']}{rate_part}".strip()


def validate_benchmark_results(frame, min_completion_rate: float = 1.0) -> ResultsValidation:
    """Run the expectation suite; returns the outcome (does not raise)."""
    import great_expectations as gx
    import pandas as pd

    if frame is None or len(frame) == 0:
        return ResultsValidation(False, ["no request records at all"])
    frame = frame.copy()
    frame["completed"] = frame["completed"].astype(bool)
    frame["tokens_match"] = frame["output_tokens"] == frame["requested_output_tokens"]
    frame["tpot_required"] = frame["completed"] & (frame["output_tokens"] > 1)
    frame["_level"] = [_level_key(row) for row in frame.to_dict(orient="records")]
    rates = frame.groupby("_level")["completed"].mean().to_dict()
    completed = frame[frame["completed"]].copy()
    multi = frame[frame["tpot_required"]].copy()
    levels = pd.DataFrame({"level": list(rates), "completion_rate": [float(v) for v in rates.values()]})

    logging.getLogger("great_expectations").setLevel(logging.ERROR)
    context = gx.get_context(mode="ephemeral")
    failures: list[str] = []

    def run(name: str, data, expectations) -> None:
        if len(data) == 0:
            return
        batch = (
            context.data_sources.add_pandas(f"{name}_src")
            .add_dataframe_asset(name)
            .add_batch_definition_whole_dataframe("all")
        )
        suite = context.suites.add(gx.ExpectationSuite(name=f"benchmark_{name}"))
        for expectation in expectations:
            suite.add_expectation(expectation)
        result = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"v_{name}", data=batch, suite=suite)
        ).run(batch_parameters={"dataframe": data})
        for item in result.results:
            if not item.success:
                config = item.expectation_config
                observed = item.result.get("partial_unexpected_list") or item.result.get("observed_value")
                failures.append(
                    f"{name}: {config.type} {config.kwargs.get('column', '')} failed "
                    f"(unexpected: {str(observed)[:200]})"
                )

    e = gx.expectations
    run(
        "completed_requests",
        completed,
        [
            *(e.ExpectColumnValuesToNotBeNull(column=c) for c in ("ttft_ms", "e2e_ms", "scheduled_s", "end_s")),
            *(e.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in ("ttft_ms", "e2e_ms")),
            e.ExpectColumnValuesToBeInSet(column="tokens_match", value_set=[True]),
        ],
    )
    run(
        "multi_token_requests",
        multi,
        [
            e.ExpectColumnValuesToNotBeNull(column="tpot_ms"),
            e.ExpectColumnValuesToBeBetween(column="tpot_ms", min_value=0),
        ],
    )
    run("levels", levels, [e.ExpectColumnValuesToBeBetween(column="completion_rate", min_value=min_completion_rate)])
    if len(levels) and (levels["completion_rate"] < min_completion_rate).any():
        bad = levels[levels["completion_rate"] < min_completion_rate]
        failures.append(
            "completion rate below "
            f"{min_completion_rate:.0%}: " + ", ".join(f"{r.level} {r.completion_rate:.1%}" for r in bad.itertuples())
        )
    return ResultsValidation(not failures, failures, len(frame), {k: float(v) for k, v in rates.items()})


def require_valid_results(frame, min_completion_rate: float = 1.0) -> ResultsValidation:
    outcome = validate_benchmark_results(frame, min_completion_rate)
    if not outcome.success:
        errors = [] if "error" not in frame.columns else sorted({str(e) for e in frame["error"].dropna() if str(e)})
        why = ("\nfailed requests said: " + "; ".join(errors[:3])) if errors else ""
        raise FoundryError(
            "benchmark results failed validation:\n  - "
            + "\n  - ".join(outcome.failures)
            + why
            + "\n(see the per-request table; lower benchmark.min_completion_rate to accept failures)"
        )
    return outcome
