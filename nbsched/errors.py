"""The one exception hierarchy. Surfaces translate these into exit codes and HTTP statuses."""

from __future__ import annotations


class NbschedError(Exception):
    """Base of every error nbsched raises on purpose; its message is one line for the user."""


class SpecError(NbschedError, ValueError):
    """A pipeline spec is wrong: the message names the file, the task and the field."""


class CycleError(SpecError):
    """The pipeline's upstream links form a cycle."""


class ConfigError(NbschedError, ValueError):
    """A setting (database URL, worker count, parameter) is wrong."""


class ScheduleError(NbschedError, ValueError):
    """A schedule or trigger is wrong."""


class NotFound(NbschedError, LookupError):
    """A run, pipeline or task that does not exist."""


class Conflict(NbschedError):
    """The request conflicts with the current state (e.g. cancelling a finished run)."""


class DatabaseError(NbschedError):
    """The database refused a transaction for a reason waiting does not mend (a corrupted or
    read-only file, a missing database, bad credentials)."""


class DatabaseUnavailable(DatabaseError):
    """The database stayed down or busy for longer than the caller waits."""
