"""Scheduled rebuilds: cron validation and which ZenML orchestrators honour a schedule.

ZenML's local orchestrator ignores `Schedule` (it runs the pipeline once, immediately): scheduling
on it would look like success and never run again, so `python run.py schedule` refuses it here.
"""

from __future__ import annotations

from datetime import datetime, timezone

from croniter import croniter

from foundry.errors import FoundryError, NotSupportedError

# Orchestrator flavors whose ZenML implementation turns a cron Schedule into a recurring job
# (checked against ZenML 0.98: docs/zenml-mlflow-gx-notes.md).
SCHEDULE_ORCHESTRATORS: dict[str, str] = {
    "kubernetes": "a Kubernetes CronJob per schedule (this project's kubernetes-gpu stack)",
    "kubeflow": "a Kubeflow Pipelines recurring run",
    "airflow": "an Airflow DAG with schedule_interval",
    "vertex": "a Vertex AI pipeline schedule",
    "sagemaker": "a SageMaker pipeline schedule (EventBridge)",
    "azureml": "an Azure ML schedule",
    "databricks": "a Databricks job schedule",
}
CRON_FIELDS = ("minute", "hour", "day-of-month", "month", "day-of-week")


def validate_cron(expression: str) -> str:
    """The expression normalized (single spaces), or a FoundryError saying what is wrong and an example.

    Five fields only: Kubernetes CronJobs (and most orchestrators) reject the seconds/years
    variants croniter would accept."""
    normalized = " ".join(expression.split())
    fields = normalized.split(" ") if normalized else []
    example = 'e.g. --cron "0 2 * * *" (every day at 02:00 UTC)'
    if len(fields) != len(CRON_FIELDS):
        raise FoundryError(
            f"--cron {expression!r}: a cron expression has {len(CRON_FIELDS)} fields "
            f"({' '.join(CRON_FIELDS)}), got {len(fields)}; {example}"
        )
    if not croniter.is_valid(normalized):
        bad = [
            f"{name}={value!r}"
            for name, value in zip(CRON_FIELDS, fields)
            if not croniter.is_valid(" ".join(value if n == name else "*" for n in CRON_FIELDS))
        ]
        detail = f" (bad field: {', '.join(bad)})" if bad else ""
        raise FoundryError(f"--cron {expression!r}: not a valid cron expression{detail}; {example}")
    return normalized


def next_fire_times(expression: str, count: int = 3, start: datetime | None = None) -> list[datetime]:
    iterator = croniter(validate_cron(expression), start or datetime.now(timezone.utc))
    return [iterator.get_next(datetime) for _ in range(count)]


def require_schedule_support(orchestrator_flavor: str, stack_name: str) -> None:
    """Refuse orchestrators that would silently run once instead of on the schedule."""
    if orchestrator_flavor in SCHEDULE_ORCHESTRATORS:
        return
    supported = ", ".join(sorted(SCHEDULE_ORCHESTRATORS))
    raise NotSupportedError(
        f"not supported: the active stack '{stack_name}' uses the '{orchestrator_flavor}' orchestrator, which "
        f"ignores schedules (it would run the pipeline once, now, and never again). Orchestrators that run "
        f"schedules: {supported}. Register and activate one, e.g. "
        "`python run.py stack register kubernetes-gpu --file <definition.yaml> --set`, then schedule again"
    )
