"""A stream beside the decisions stream, archived: plan, copy, verify, delete; rewritten on erasure.

The review history (archiver/review_history.py) and the decision records
(archiver/decision_records.py) are Redis streams the weekly archive empties the same way:

1. *plan*: a batch's entry ids go to the journal (`<instance>/_journal/`) first;
2. *copy*: the entries are written as one Parquet file, read back from disk and compared
   (sha256, row count, every value); the journal entry becomes `copied`;
3. *delete*: XDEL of exactly those ids; the journal entry becomes `deleted`.

A run first finishes the batches the journal shows unfinished, with the same ids and file
name, so a run killed anywhere loses no entry and archives none twice. Every value is kept as
a string; a row is the entry's id and the fields the table names.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import redis

from archiver.store import ArchiveStore, BatchRecord, _write_atomic, parquet_bytes
from onboarding.streams import live_entries, text

XDEL_CHUNK = 500


def entry_key(entry_id: str) -> tuple[int, int]:
    """A stream entry id as a sort key: (milliseconds, sequence)."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def entry_week(entry_id: str) -> str:
    """The ISO week (`2024-W07`) of the entry's time: the folder its batch goes to."""
    year, week, _ = datetime.fromtimestamp(entry_key(entry_id)[0] / 1000, UTC).isocalendar()
    return f"{year}-W{week:02d}"


@dataclass
class StreamReport:
    """What one archive run moved out of a stream."""

    entries: int = 0
    batches: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class StreamArchive:
    """One stream's place in the archive: `<ARCHIVE_DIR>/<instance>/<table>/week=<YYYY>-W<ww>/`."""

    instance: str
    table: str
    columns: tuple[str, ...]  # entry_id, then the entry's fields
    batch_prefix: str  # a batch's id: <prefix>-<first entry id>
    stream_key: Callable[[str], str]  # the stream, from the decisions stream's name
    what: str  # the entries, in the run's log line
    logger: logging.Logger

    @property
    def schema(self) -> pa.Schema:
        return pa.schema([(name, pa.string()) for name in self.columns])

    def row(self, entry_id: str, fields: dict[Any, Any]) -> dict[str, str]:
        data = {text(k): text(v) for k, v in fields.items()}
        return {"entry_id": entry_id, **{name: data.get(name, "") for name in self.columns[1:]}}

    def table_of(self, rows: list[dict[str, str]]) -> pa.Table:
        return pa.Table.from_pylist(rows, schema=self.schema)

    def rows(self, client: redis.Redis, decisions_stream: str, start: str = "-", end: str = "+") -> Iterator[dict]:
        """The stream's entries (as rows) from `start` to `end` (XRANGE bounds), oldest first."""
        stream = self.stream_key(decisions_stream)
        while True:
            entries = live_entries(client.xrange(stream, min=start, max=end, count=1000))
            if not entries:
                return
            for entry_id, fields in entries:
                yield self.row(entry_id, fields)
            start = f"({entries[-1][0]}"

    def archived_rows(self, store: ArchiveStore) -> list[dict[str, str]]:
        data = store.read_table(self.instance, self.table)
        return [] if data is None else data.to_pylist()

    # -- archiving ---------------------------------------------------------------------------

    def archive(
        self,
        client: redis.Redis,
        store: ArchiveStore,
        decisions_stream: str,
        cutoff: datetime,
        batch_size: int = 2000,
        after_copy: Callable[[], None] | None = None,
    ) -> StreamReport:
        """Move the entries older than `cutoff` into the store: copy, verify, delete.

        Batches an earlier run left unfinished (its journal) are finished first. `after_copy` is
        called after each batch is copied and verified, before its delete (a test's fault point).
        """
        report = StreamReport()
        for record in store.unfinished_batches(self.instance):
            report.entries += self.finish(client, store, decisions_stream, record, after_copy)
            report.batches.append(record.batch_id)
        until = f"({int(cutoff.timestamp() * 1000)}-0"
        while True:
            rows = list(islice(self.rows(client, decisions_stream, end=until), batch_size))
            if not rows:
                break
            ids = [row["entry_id"] for row in rows]
            batch_id = f"{self.batch_prefix}-{ids[0].replace('-', '_')}"
            record = BatchRecord(batch_id, self.table, entry_week(ids[0]), ids, cutoff.astimezone(UTC).isoformat())
            store.save_batch(self.instance, record)
            report.entries += self.finish(client, store, decisions_stream, record, after_copy)
            report.batches.append(batch_id)
        if report.entries:
            self.logger.info("archive: %d %s archived in %d batch(es)", report.entries, self.what, len(report.batches))
        return report

    def finish(
        self,
        client: redis.Redis,
        store: ArchiveStore,
        decisions_stream: str,
        record: BatchRecord,
        after_copy: Callable[[], None] | None,
    ) -> int:
        """Copy (unless copied), verify, then delete one batch; returns its entries."""
        if record.state == "planned":
            ids = list(record.keys)
            wanted = set(ids)
            found = live_entries(client.xrange(self.stream_key(decisions_stream), min=ids[0], max=ids[-1]))
            self.copy(store, record, [self.row(i, f) for i, f in found if i in wanted])
            if after_copy is not None:
                after_copy()
        store.verify_batch(self.instance, record)  # never delete what is not readable in the archive
        self.delete(client, store, decisions_stream, record)
        return sum(entry.rows for entry in record.files.values())

    def copy(self, store: ArchiveStore, record: BatchRecord, rows: list[dict[str, str]]) -> None:
        """Write the batch's rows (read back and compared), then journal it as copied."""
        tables = {self.table: self.table_of(rows)}
        record.files = store.write_batch(self.instance, record.week, record.batch_id, tables, {})
        record.state = "copied"
        store.save_batch(self.instance, record)

    def delete(self, client: redis.Redis, store: ArchiveStore, decisions_stream: str, record: BatchRecord) -> None:
        """XDEL exactly the batch's ids, then journal it as deleted."""
        ids = list(record.keys)
        stream = self.stream_key(decisions_stream)
        for start in range(0, len(ids), XDEL_CHUNK):
            client.xdel(stream, *ids[start : start + XDEL_CHUNK])
        record.state = "deleted"
        store.save_batch(self.instance, record)

    # -- erasure and retention ---------------------------------------------------------------

    def rewrite(self, store: ArchiveStore, edit: Callable[[pa.Table], pa.Table | None]) -> None:
        """Pass every archived file of the table through `edit` (the file's rows changed, or
        None: the file stays as it is), keeping each journal entry's row count and sha256 true."""
        changed: dict[str, tuple[int, str]] = {}
        folder = store.instance_dir(self.instance)
        for path in store.table_files(self.instance, self.table):
            new = edit(pq.read_table(path))
            if new is None:
                continue
            body = parquet_bytes(new)
            _write_atomic(path, body)
            changed[str(path.relative_to(folder))] = (new.num_rows, hashlib.sha256(body).hexdigest())
        for batch in store.batches(self.instance):
            entries = [entry for entry in batch.files.values() if entry.path in changed]
            for entry in entries:
                entry.rows, entry.sha256 = changed[entry.path]
            if entries:
                store.save_batch(self.instance, batch)
