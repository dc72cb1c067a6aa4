"""The pipeline progress line follows the orchestrator's log records."""

import logging

from rich.console import Console
from rich.progress import Progress

from foundry.console import StepProgress, pipeline_progress


def _log(logger, message):
    logger.info(message)


def test_step_progress_counts_finished_and_cached_steps():
    logger = logging.getLogger("zenml.test_console")
    logger.setLevel(logging.INFO)
    progress = Progress(console=Console(file=open("/dev/null", "w")))
    handler = StepProgress(progress)
    logger.addHandler(handler)
    try:
        _log(logger, "Using cached version of step `ingest_checkpoint`.")
        _log(logger, "Step `calibrate_checkpoint` has started.")
        task = progress.tasks[0]
        assert task.description == "running calibrate_checkpoint" and task.completed == 1
        _log(logger, "Step `calibrate_checkpoint` has finished in 41.6s.")
        _log(logger, "an unrelated line")
        assert handler.done == ["ingest_checkpoint", "calibrate_checkpoint"]
        assert progress.tasks[0].completed == 2 and "calibrate_checkpoint done" in progress.tasks[0].description
    finally:
        logger.removeHandler(handler)


def test_progress_is_off_outside_a_terminal():
    with pipeline_progress(enabled=False) as handler:
        assert handler is None
    with pipeline_progress(logger_name="zenml.test_console2", enabled=True) as handler:
        assert handler in logging.getLogger("zenml.test_console2").handlers
    assert handler not in logging.getLogger("zenml.test_console2").handlers
