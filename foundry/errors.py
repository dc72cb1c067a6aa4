"""One exception type for every user-facing problem: bad input, unsupported request, failed build."""


class FoundryError(Exception):
    """A problem the user can fix; the message names the file, field or tensor and the fix."""


class NotSupportedError(FoundryError):
    """An honest 'not supported: <reason>' instead of a fake success."""
