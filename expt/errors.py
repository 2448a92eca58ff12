"""The exceptions expt raises for problems a user can fix.

Front ends print ``str(error)`` (one line per problem) to stderr and exit with
``error.exit_code``; they never show a traceback for these.
"""

from __future__ import annotations


class ExptError(Exception):
    """A problem expt reports as text, without a traceback."""

    exit_code = 1


class UsageError(ExptError):
    """The user asked for something that cannot be done as asked (exit status 2)."""

    exit_code = 2


class ConfigError(UsageError):
    """One or more problems in experiments.toml, each a self-contained line."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


class NotFoundError(UsageError):
    """A run, experiment or file that the user named does not exist."""


class StoreError(ExptError):
    """runs.db cannot be used (newer schema, corrupt file, disk full)."""
