"""Errors of the metadata archiver.

ArchiveError (an `onboarding.errors.OnboardingError`)
 ├── DatabaseError          a metadata database could not be read or written
 ├── VerificationError      what was read back from the archive differs from what was copied
 ├── ConcurrentChange       rows changed between copy and delete; the batch is copied again
 └── LockHeld               another archive run holds the lock

A bad setting raises the shared `onboarding.errors.ConfigError` from `ArchiveSettings.from_env()`.
"""

from __future__ import annotations

from onboarding.errors import OnboardingError


class ArchiveError(OnboardingError):
    """Base class of every error raised by the archiver."""


class DatabaseError(ArchiveError):
    """A metadata database failed; nothing of the batch in hand was deleted."""

    def __init__(self, instance: str, detail: str) -> None:
        self.instance = instance
        super().__init__(f"{instance}: metadata database error: {detail}")


class VerificationError(ArchiveError):
    """An archive file does not hold exactly the rows copied; the rows stay in the database."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        super().__init__(f"{path}: archive verification failed: {detail}")


class ConcurrentChange(ArchiveError):
    """The rows of a batch changed after they were copied; the batch must be copied again."""

    def __init__(self, batch_id: str, table: str) -> None:
        self.batch_id = batch_id
        self.table = table
        super().__init__(f"batch {batch_id}: rows of {table} changed after they were archived")


class LockHeld(ArchiveError):
    """Two archive runs must never overlap; this one found the lock taken."""

    def __init__(self, name: str) -> None:
        super().__init__(f"another archive run holds the lock {name!r}; not starting a second one")
