"""The weekly archive job: one run over every configured instance, never two at once.

`run_archive_job` is what rq's cron scheduler enqueues on the `maintenance` queue
(`archiver/cron.py`); the CLI's `run` calls `archive_all` the same way.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
from redis.exceptions import LockError

from archiver.archive import Archiver, RunReport
from archiver.decision_records import archive_records, purge_expired, retention_cutoff
from archiver.errors import ArchiveError, LockHeld
from archiver.metrics import write_textfile
from archiver.review_history import archive_history
from archiver.settings import ArchiveSettings
from archiver.store import ArchiveStore
from onboarding.redis_clients import Role, connect

logger = logging.getLogger(__name__)


def _lower_priority(nice: int) -> None:
    """Run (and start the batch threads) at this niceness, so the realtime instance's
    processes win the CPU; never raises the priority of a process already nicer."""
    current = os.getpriority(os.PRIO_PROCESS, 0)
    if nice > current:
        os.setpriority(os.PRIO_PROCESS, 0, nice)


def archive_all(
    settings: ArchiveSettings,
    client: redis.Redis | None,
    instances: list[str] | None = None,
    now: datetime | None = None,
    after_copy: Callable[[], None] | None = None,
) -> list[RunReport]:
    """Archive each instance in turn under the run lock; raise if any instance failed.

    With `client` None no lock is taken (for a caller that guarantees exclusivity itself,
    such as a Kubernetes CronJob with concurrencyPolicy Forbid) and the review history, which
    lives in Redis, is not archived (archiver/review_history.py). `after_copy` is passed to
    each `Archiver` (a test's fault injection point).
    """
    _lower_priority(settings.nice)
    lock = None
    if client is not None:
        # The lock expires on its own if this process dies; each batch renews it.
        lock = client.lock(settings.lock_name, timeout=settings.lock_ttl_s, blocking=False)
        if not lock.acquire():
            raise LockHeld(settings.lock_name)
    store = ArchiveStore(settings.archive_dir)
    reports: list[RunReport] = []
    failures: list[str] = []
    try:
        for name in instances or [i.name for i in settings.instances]:
            instance = settings.instance(name)
            renew = (lambda: lock.extend(settings.lock_ttl_s, replace_ttl=True)) if lock else None
            archiver = Archiver(instance, store, settings, on_batch=renew, after_copy=after_copy)
            try:
                reports.append(archiver.run(now=now))
            except ArchiveError as err:
                logger.error("archive: %s failed: %s", name, err)
                failures.append(str(err))
            finally:
                archiver.engine.dispose()
        if client is not None:  # the Redis streams' old entries, in the same run and under the same lock
            failures += _archive_streams(client, store, settings, now, after_copy)
        write_textfile(store)
    finally:
        if lock is not None:
            try:
                lock.release()
            except LockError:
                logger.warning("archive: the run lock expired before the run ended")
    if failures:
        raise ArchiveError("; ".join(failures))
    return reports


def _archive_streams(
    client: redis.Redis,
    store: ArchiveStore,
    settings: ArchiveSettings,
    now: datetime | None,
    after_copy: Callable[[], None] | None,
) -> list[str]:
    """Move the old review history entries and decision records into the store, then remove
    the archived records past their retention period; the failures (none: []). A part that
    fails does not stop the other."""

    def history() -> None:
        archive_history(client, store, settings.decisions_stream, settings.cutoff(now), settings.batch_size, after_copy)

    def records() -> None:
        archive_records(client, store, settings.decisions_stream, settings.cutoff(now), settings.batch_size, after_copy)
        purge_expired(store, retention_cutoff(now or datetime.now(UTC), settings.record_retention_months))

    parts: list[tuple[str, Callable[[], None], tuple[type[Exception], ...]]] = [
        ("review history", history, (ArchiveError, redis.RedisError)),
        ("decision records", records, (ArchiveError, redis.RedisError, OSError)),
    ]
    failures: list[str] = []
    for part, move, errors in parts:
        try:
            move()
        except errors as err:
            logger.error("archive: the %s failed: %s", part, err)
            failures.append(f"{part}: {err}")
    return failures


def run_archive_job() -> dict[str, Any]:
    """The rq job: settings from the worker's environment; the result summarises the run."""
    settings = ArchiveSettings.from_env()
    client = connect(settings.redis_url, Role.CLI)
    reports = archive_all(settings, client)
    return {r.instance: {"rows": r.rows, "tables": r.tables, "duration_s": round(r.duration_s, 1)} for r in reports}
