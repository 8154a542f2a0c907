"""The review cases' history in the archive: moved weekly out of Redis, read back for the audit.

Every change of a review case (opened, claimed, released, decided: by whom, when) is an entry
of the history stream `<decisions>:review:history` (onboarding/keys.py). The weekly archive
moves the entries older than its cut-off into the archive store, with the same discipline as
the metadata tables (archiver/archive.py; the steps are archiver/stream_archive.py's):

1. *plan*: the batch's entry ids go to the journal (`_review/_journal/`) first;
2. *copy*: the entries are written as one Parquet file, read back from disk and compared
   (sha256, row count, every value); the journal entry becomes `copied`;
3. *delete*: XDEL of exactly those ids; the journal entry becomes `deleted`.

A run first finishes the batches the journal shows unfinished, with the same ids and file
name: killed before the delete, the entries are still in Redis and the file is rewritten in
place; killed after it, they are only in the verified file. An entry is never in neither, and
a reader that merges Redis and the archive drops the copy an interrupted run left in both
(by entry id).

The entries live under `<ARCHIVE_DIR>/_review/review_history/week=<YYYY>-W<ww>/` (a folder
starting with `_`: not an Airflow instance). Only a case's `opened` entry names its user
(`user_id`); a user's history is every entry of the cases opened for them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import redis

from archiver.store import ArchiveStore
from archiver.stream_archive import StreamArchive, entry_key
from onboarding import keys
from onboarding.streams import text

logger = logging.getLogger(__name__)

HISTORY_INSTANCE = "_review"
HISTORY_TABLE = "review_history"
COLUMNS = ("entry_id", "case_id", "user_id", "action", "actor", "at", "detail")
HISTORY = StreamArchive(
    HISTORY_INSTANCE, HISTORY_TABLE, COLUMNS, "history", keys.review_history_key, "review history entries", logger
)
# Move the history entries older than a cut-off into the store: copy, verify, delete.
archive_history = HISTORY.archive


def live_entries(client: redis.Redis, decisions_stream: str, after: str = "-", until: str = "+") -> Iterator[dict]:
    """The history stream's entries (as rows) after `after` (exclusive) up to `until`, oldest first."""
    return HISTORY.rows(client, decisions_stream, after if after == "-" else f"({after}", until)


# -- reading: the audit ------------------------------------------------------------------


def archived_entries(store: ArchiveStore) -> list[dict[str, str]]:
    return HISTORY.archived_rows(store)


def _user_cases(rows: Iterable[dict[str, str]], user_id: str) -> set[str]:
    return {r["case_id"] for r in rows if r["action"] == "opened" and r["user_id"] == user_id}


def user_history(client: redis.Redis | None, store: ArchiveStore, decisions_stream: str, user_id: str) -> list[dict]:
    """Every history entry of the user's review cases, from Redis (recent) and the archive
    (older), merged, oldest first; each row says where it was read (`source`). An entry
    found in both (a run interrupted between copy and delete) is shown once."""
    archived = archived_entries(store)
    live = list(live_entries(client, decisions_stream)) if client is not None else []
    cases = _user_cases(archived, user_id) | _user_cases(live, user_id)
    merged: dict[str, dict[str, str]] = {}
    for source, rows in (("archive", archived), ("redis", live)):
        for row in rows:
            if row["case_id"] in cases:
                merged[row["entry_id"]] = {**row, "user_id": user_id, "source": source}
    return [merged[i] for i in sorted(merged, key=entry_key)]


# -- erasure -----------------------------------------------------------------------------


def user_cases_in_redis(client: redis.Redis, decisions_stream: str, user_id: str) -> set[str]:
    """The user's review cases Redis knows: opened for them in the history stream, or a case
    hash naming them (its `opened` entry may be archived already)."""
    cases = _user_cases(live_entries(client, decisions_stream), user_id)
    prefix = keys.review_case_key(decisions_stream, "")
    found = [text(k) for k in client.scan_iter(match=keys.review_case_pattern(decisions_stream), count=1000)]
    if found:
        with client.pipeline(transaction=False) as pipe:
            for key in found:
                pipe.hget(key, "user_id")
            owners = pipe.execute()
        cases |= {
            key[len(prefix) :] for key, owner in zip(found, owners, strict=True) if owner and text(owner) == user_id
        }
    return cases


def live_entry_ids(client: redis.Redis, decisions_stream: str, case_ids: set[str]) -> list[str]:
    """The ids of the history stream's entries of these cases."""
    return [r["entry_id"] for r in live_entries(client, decisions_stream) if r["case_id"] in case_ids]


def erase_archived_history(
    store: ArchiveStore, user_id: str, case_ids: Iterable[str] = (), dry_run: bool = False
) -> int:
    """Remove the archived entries of the user's cases (those opened for `user_id` in the
    archive, and `case_ids` found elsewhere): rewrite each file that holds some, and keep its
    journal entry's row count and sha256 true. Returns the entries removed (or to remove)."""
    cases = _user_cases(archived_entries(store), user_id) | set(case_ids)
    if not cases:
        return 0
    removed = 0

    def edit(data: pa.Table) -> pa.Table | None:
        nonlocal removed
        mask = pc.is_in(data["case_id"], value_set=pa.array(sorted(cases), type=pa.string()))
        hits = pc.sum(mask).as_py() or 0
        removed += hits
        return None if not hits or dry_run else data.filter(pc.invert(mask))

    HISTORY.rewrite(store, edit)
    return removed
