"""rq cron configuration: the weekly metadata archive on the maintenance queue.

    rq cron archiver.cron --url "$REDIS_URL"          # the scheduler (one replica)
    rq worker maintenance --url "$REDIS_URL"          # the worker that runs the job

Sunday 03:00 UTC: the quietest hour for signups. The job holds a Redis lock, so a run
still going when the next one is due makes the second fail fast instead of overlapping.

rq cron reads cron fields in the process's local time zone, so loading this file sets the
`rq cron` process's zone to UTC: the archive runs at 03:00 UTC whatever zone the host or
container is in (tests/archiver/test_operations.py runs it under other zones).
"""

from __future__ import annotations

import os
import time

from rq import cron

from archiver.jobs import run_archive_job
from archiver.settings import ArchiveSettings

os.environ["TZ"] = "UTC"
time.tzset()

WEEKLY = "0 3 * * 0"  # in UTC (above)
JOB_TIMEOUT_S = 4 * 3600

cron.register(
    run_archive_job,
    ArchiveSettings.from_env().queue,
    cron=WEEKLY,
    job_timeout=JOB_TIMEOUT_S,
    name="onboarding-metadata-archive",
)
