"""The weekly archive job: one run over every configured instance, never two at once.

`run_archive_job` is what rq's cron scheduler enqueues on the `maintenance` queue
(`archiver/cron.py`); the CLI's `run` calls `archive_all` the same way.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import Any

import redis
from redis.exceptions import LockError

from archiver.archive import Archiver, RunReport
from archiver.errors import ArchiveError, LockHeld
from archiver.metrics import write_textfile
from archiver.settings import ArchiveSettings
from archiver.store import ArchiveStore

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
) -> list[RunReport]:
    """Archive each instance in turn under the run lock; raise if any instance failed.

    With `client` None no lock is taken (for a caller that guarantees exclusivity itself,
    such as a Kubernetes CronJob with concurrencyPolicy Forbid).
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
            archiver = Archiver(instance, store, settings, on_batch=renew)
            try:
                reports.append(archiver.run(now=now))
            except ArchiveError as err:
                logger.error("archive: %s failed: %s", name, err)
                failures.append(str(err))
            finally:
                archiver.engine.dispose()
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


def run_archive_job() -> dict[str, Any]:
    """The rq job: settings from the worker's environment; the result summarises the run."""
    settings = ArchiveSettings.from_env()
    client = redis.Redis.from_url(settings.redis_url)
    reports = archive_all(settings, client)
    return {r.instance: {"rows": r.rows, "tables": r.tables, "duration_s": round(r.duration_s, 1)} for r in reports}
