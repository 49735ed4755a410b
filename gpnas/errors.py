"""The one exception family the library raises for problems a user can fix.

Every message names the cause and the fix in one line; the CLI prints it as is
and exits non-zero. Anything that is not a GpnasError is a bug and keeps its
traceback.
"""


class GpnasError(Exception):
    """A problem with the user's input, files or environment, stated with its fix."""


class ConfigError(GpnasError):
    """An invalid configuration, preset, search space or option value."""


class DataError(GpnasError):
    """A dataset that cannot be found, read or verified."""


class FileFormatError(GpnasError):
    """A file (curves, predictor, run folder) that is malformed or unsafe to load."""


class EvaluationError(GpnasError):
    """Training failed in a way that stops a run (every male of a generation failed)."""
