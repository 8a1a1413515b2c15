"""Errors that reach the user, each with the exit code the CLI gives it."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2


class GridshiftError(Exception):
    """A failure the user should see as one clear line (exit code 1)."""

    exit_code = EXIT_FAILURE


class BadInput(GridshiftError):
    """The user's input is wrong; nothing was written (exit code 2)."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(BadInput):
    """The config file is wrong: the message names the file, the key and the problem."""

    def __init__(self, path: str, key: str, problem: str) -> None:
        super().__init__(f"{path}: {key}: {problem}")
        self.path = path
        self.key = key
        self.problem = problem


class UnknownJob(BadInput):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"no job with id {job_id}")
        self.job_id = job_id


class StateConflict(GridshiftError):
    """A conditional state change found the job in another state than expected."""


class PermissionDenied(GridshiftError):
    """The caller may not do this (another user's job, another user's daemon): exit 1."""
