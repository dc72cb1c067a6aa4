"""The exception types every user-facing problem is raised as; the CLI's exit code comes from the type.

2  FoundryError          bad input the user can fix (config, checkpoint, data, flags)
2  NotSupportedError     an honest "not supported: <reason>" instead of a fake success
4  InfrastructureError   the machinery under the run (artifact store, tracking DB, state dir)
"""


class FoundryError(Exception):
    """A problem the user can fix; the message names the file, field or tensor and the fix."""

    exit_code = 2


class NotSupportedError(FoundryError):
    """An honest 'not supported: <reason>' instead of a fake success."""


class InfrastructureError(FoundryError):
    """A stored artifact, the tracking database or the state directory failed; the message names
    it and the fix (rebuild with --no-cache, retry later, make the path writable)."""

    exit_code = 4


class ArtifactTamperedError(InfrastructureError):
    """A stored directory artifact no longer matches its sealed manifest."""


def exit_code_of(error_type: type[BaseException] | None) -> int:
    """2/4 for foundry's types (by class, not by message text), 1 for anything else."""
    if error_type is not None and issubclass(error_type, FoundryError):
        return error_type.exit_code
    return 1
