"""Decision records in the archive: moved weekly out of Redis, kept for the retention period.

The publish step appends one record per decision to `<decisions>:records` (risk/evidence.py,
onboarding/decision.py). The weekly archive moves the records older than its cut-off into the
archive store with the discipline of the review history (archiver/stream_archive.py, both): plan
(journal), copy (one Parquet file, read back and compared), delete (XDEL of exactly those
ids); a run killed anywhere loses none and archives none twice.

Retention: archived records are kept `DECISION_RECORD_RETENTION_MONTHS` (default 25: US
Regulation B, 12 CFR 1002.12(b), keeps application records 25 months after the applicant is
told the decision) and removed by the archive run after that (`purge_expired`).

Erasure inside the retention period (`onboarding-erase`, ops/erase.py) follows the legal-basis
switch `DECISION_RECORD_ERASURE`:

    refuse        (default) the records stay as they are: keeping them is a legal obligation
                  (GDPR Art. 17(3)(b)); the erasure report names them and the date they go
    pseudonymise  the user id, event id and run id in each record (Redis and archive) become
                  keyed pseudonyms (HMAC-SHA256 with DECISION_RECORD_PSEUDONYM_KEY): the record
                  still shows what was decided on which inputs, but no longer whose it was,
                  except to whoever holds the key and the user's id

Records live under `<ARCHIVE_DIR>/_records/decision_records/week=<YYYY>-W<ww>/`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa
import redis

from archiver.store import ArchiveStore, BatchRecord
from archiver.stream_archive import StreamArchive, entry_key, entry_week
from onboarding import keys

logger = logging.getLogger(__name__)

RECORDS_INSTANCE = "_records"
RECORDS_TABLE = "decision_records"
COLUMNS = ("entry_id", "event_id", "user_id", "decision_entry", "record")
RECORDS = StreamArchive(
    RECORDS_INSTANCE, RECORDS_TABLE, COLUMNS, "records", keys.decision_records_stream, "decision records", logger
)
# Move the records older than a cut-off into the store: copy, verify, delete; batches an
# earlier run left unfinished are finished first.
archive_records = RECORDS.archive
ERASURE_MODES = ("refuse", "pseudonymise")


def entry_ms(entry_id: str) -> int:
    return int(entry_id.partition("-")[0])


def retention_cutoff(now: datetime, months: int) -> datetime:
    """`now` minus `months` calendar months (the day clamped to the shorter month's last)."""
    import calendar

    total = now.year * 12 + (now.month - 1) - months
    year, month = divmod(total, 12)
    day = min(now.day, calendar.monthrange(year, month + 1)[1])
    return now.replace(year=year, month=month + 1, day=day)


def _rewrite(store: ArchiveStore, keep: Callable[[dict[str, str]], dict[str, str] | None]) -> tuple[int, int]:
    """Rewrite every archived records file through `keep` (a row, changed, or None: dropped),
    keeping each journal entry's row count and sha256 true. Returns (dropped, changed)."""
    dropped = changed_rows = 0

    def edit(data: pa.Table) -> pa.Table | None:
        nonlocal dropped, changed_rows
        out: list[dict[str, str]] = []
        touched = False
        for row in data.to_pylist():
            new = keep(row)
            if new is None:
                dropped += 1
                touched = True
            else:
                if new != row:
                    changed_rows += 1
                    touched = True
                out.append(new)
        return RECORDS.table_of(out) if touched else None

    RECORDS.rewrite(store, edit)
    return dropped, changed_rows


def purge_expired(store: ArchiveStore, cutoff: datetime) -> int:
    """Remove the archived records decided before `cutoff` (past the retention period)."""
    limit = int(cutoff.timestamp() * 1000)
    dropped, _ = _rewrite(store, lambda row: None if entry_ms(row["entry_id"]) < limit else row)
    if dropped:
        logger.info("archive: %d decision records past their retention removed", dropped)
    return dropped


# -- reading: replay and audit -------------------------------------------------------------


def archived_rows(store: ArchiveStore) -> list[dict[str, str]]:
    return RECORDS.archived_rows(store)


def all_records(
    client: redis.Redis | None,
    store: ArchiveStore | None,
    decisions_stream: str,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[dict[str, Any]]:
    """Every decision record decided in [since, until), from the archive and Redis, each once
    (a run interrupted between copy and delete leaves one in both), oldest first."""
    low = int(since.timestamp() * 1000) if since else 0
    high = int(until.timestamp() * 1000) if until else None
    merged: dict[str, dict[str, str]] = {}
    for row in archived_rows(store) if store is not None else []:
        merged[row["entry_id"]] = row
    if client is not None:
        start = f"{low}-0" if low else "-"
        end = f"({high}-0" if high is not None else "+"
        for row in RECORDS.rows(client, decisions_stream, start, end):
            merged[row["entry_id"]] = row
    out = []
    for entry_id in sorted(merged, key=entry_key):
        ms = entry_ms(entry_id)
        if ms < low or (high is not None and ms >= high):
            continue
        out.append({**json.loads(merged[entry_id]["record"]), "_entry_id": entry_id})
    return out


# -- erasure -------------------------------------------------------------------------------


def pseudonym(key: str, value: str, kind: str) -> str:
    """A keyed, stable pseudonym: the same value always maps to the same one, and only the
    key's holder can tell which value it was (by computing it again)."""
    digest = hmac.new(key.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:32]
    return f"pseudonym:{kind}:{digest}"


def pseudonymised(record: dict[str, Any], key: str) -> dict[str, Any]:
    """The record with its user id, event id and run id (also inside `inputs`) replaced by pseudonyms."""
    user, event = str(record.get("user_id", "")), str(record.get("event_id", ""))
    out = {**record, "user_id": pseudonym(key, user, "user"), "event_id": pseudonym(key, event, "event")}
    out["run_id"] = pseudonym(key, str(record.get("run_id")), "run") if record.get("run_id") else None
    if isinstance(record.get("inputs"), dict):
        out["inputs"] = {**record["inputs"], "user_id": out["user_id"], "event_id": out["event_id"]}
    out["pseudonymised"] = True
    return out


@dataclass
class RecordErasure:
    """What erasure found of a user's decision records, and did with them."""

    mode: str
    redis: list[str] = field(default_factory=list)  # entry ids in the records stream
    archived: int = 0
    kept_until: str | None = None  # refuse: when the last of them leaves the retention period

    def to_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "redis": self.redis, "archived": self.archived, "kept_until": self.kept_until}


def _users_rows(rows: Iterable[dict[str, str]], user_id: str) -> list[dict[str, str]]:
    return [row for row in rows if row["user_id"] == user_id]


def erase_user_records(
    client: redis.Redis,
    store: ArchiveStore | None,
    decisions_stream: str,
    user_id: str,
    mode: str,
    retention_months: int,
    key: str | None = None,
    dry_run: bool = False,
    now: datetime | None = None,
) -> RecordErasure:
    """A user's decision records under erasure: all are inside the retention period (older
    ones were purged), so `refuse` keeps them and says until when; `pseudonymise` replaces
    their identifiers in Redis (XDEL, then XADD of the pseudonymised copy) and the archive."""
    if mode not in ERASURE_MODES:
        raise ValueError(f"unknown erasure mode {mode!r}")
    live = _users_rows(RECORDS.rows(client, decisions_stream), user_id)
    archived = _users_rows(archived_rows(store), user_id) if store is not None else []
    report = RecordErasure(mode, [row["entry_id"] for row in live], len(archived))
    newest = max((entry_ms(row["entry_id"]) for row in [*live, *archived]), default=None)
    if newest is not None:
        decided = datetime.fromtimestamp(newest / 1000, UTC)
        report.kept_until = _add_months(decided, retention_months).isoformat()
    if mode == "refuse" or dry_run or (not live and not archived):
        return report
    if key is None:
        raise ValueError("pseudonymising needs DECISION_RECORD_PSEUDONYM_KEY")
    if store is None:
        raise ValueError("pseudonymising needs the archive store")
    if archived:

        def keep(row: dict[str, str]) -> dict[str, str]:
            return _pseudonymised_row(row, key) if row["user_id"] == user_id else row

        _rewrite(store, keep)
    if live:
        # The pseudonymised copies go straight to the archive under their own entry ids (so
        # their dates and order stay), then the originals leave Redis: copy, verify, delete.
        ids = [row["entry_id"] for row in live]
        batch = BatchRecord(
            f"records-erased-{ids[0].replace('-', '_')}",
            RECORDS_TABLE,
            entry_week(ids[0]),
            ids,
            (now or datetime.now(UTC)).isoformat(),
        )
        # No "planned" journal entry first: a later archive run would copy such a batch from
        # Redis as it is, identifiers and all. The files first, then the journal as copied.
        RECORDS.copy(store, batch, [_pseudonymised_row(row, key) for row in live])
        RECORDS.delete(client, store, decisions_stream, batch)
    return report


def _pseudonymised_row(row: dict[str, str], key: str) -> dict[str, str]:
    record = pseudonymised(json.loads(row["record"]), key)
    return {**row, "user_id": record["user_id"], "event_id": record["event_id"], "record": json.dumps(record)}


def _add_months(when: datetime, months: int) -> datetime:
    import calendar

    total = when.year * 12 + (when.month - 1) + months
    year, month = divmod(total, 12)
    day = min(when.day, calendar.monthrange(year, month + 1)[1])
    return when.replace(year=year, month=month + 1, day=day)
