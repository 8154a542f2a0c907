"""Weekly archive of Airflow metadata: copy to Parquet, verify, delete (see docs/archive.md)."""

from archiver.archive import Archiver, RunReport
from archiver.audit import find_runs
from archiver.errors import ArchiveError, ConcurrentChange, DatabaseError, LockHeld, VerificationError
from archiver.jobs import archive_all, run_archive_job
from archiver.settings import ArchiveSettings, InstanceDatabase
from archiver.store import ArchiveStore

__all__ = [
    "ArchiveError",
    "ArchiveSettings",
    "ArchiveStore",
    "Archiver",
    "ConcurrentChange",
    "DatabaseError",
    "InstanceDatabase",
    "LockHeld",
    "RunReport",
    "VerificationError",
    "archive_all",
    "find_runs",
    "run_archive_job",
]
