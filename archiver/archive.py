"""Copy, verify, delete: moving one instance's old metadata into the archive store.

For each batch of root rows (finished DAG runs, then asset events, jobs, log rows):

1. *plan*: the batch's root keys go to the journal before anything is written;
2. *copy*: read the batch's rows (root and its whole foreign-key tree, children joined up
   to the root keys), write one Parquet file per table, read each back from disk and
   compare sha256, row count and every value; the journal entry becomes `copied`;
3. *delete*: in the same transaction (PostgreSQL REPEATABLE READ with the root rows
   locked, SQLite `BEGIN IMMEDIATE`), delete exactly the primary keys read, children
   before parents, checking every row count; commit; the journal entry becomes `deleted`.

A run first finishes the batches the journal shows unfinished, with the same keys and file
names, so a run killed at any point loses nothing and archives nothing twice: before the
delete commits the rows are still in the database and the files are rewritten in place;
after it, the rows are only in the verified files (docs/archive.md walks every crash point).
"""

from __future__ import annotations

import enum
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from archiver.errors import ArchiveError, ConcurrentChange, DatabaseError
from archiver.settings import ArchiveSettings, InstanceDatabase
from archiver.store import ARROW_TYPES, ArchiveStore, BatchRecord, canonical_json
from archiver.tables import KEEP_LAST_EXCLUDED_RUN_TYPES, ROOTS, Node, Root, tree

logger = logging.getLogger(__name__)

COPY_ATTEMPTS = 3
IN_CHUNK = 500  # keys per IN (...) list: far below SQLite's variable limit, cheap to plan
# A DAG run brings about 20 rows (task instances, history, XComs, logs...); batches of
# other roots (log, job, asset events) hold this many times batch_size rows, for a similar size.
ROWS_PER_RUN = 20
DELETE_CHUNK = 2000
# Serialization failure and deadlock: the batch changed under the move; it is copied again.
RETRYABLE_PGCODES = ("40001", "40P01")


def _pg_array_value(value: Any) -> Any:
    return str(value) if isinstance(value, uuid.UUID) else value


def column_kind(column: sa.Column) -> str:
    type_ = column.type
    if isinstance(type_, sa.Boolean):
        return "bool"
    if isinstance(type_, sa.Integer):
        return "int"
    if isinstance(type_, sa.Float | sa.Numeric):
        return "float"
    if isinstance(type_, sa.DateTime):
        return "timestamp"
    if isinstance(type_, sa.JSON):
        return "json"
    if isinstance(type_, sa.LargeBinary):
        return "binary"
    return "string"


def _string(v: Any) -> str:
    if type(v) is str:
        return v
    return str(v.value) if isinstance(v, enum.Enum) else str(v)


def _json_text(v: Any) -> str:
    return v if type(v) is str else canonical_json(v)


# Kinds whose driver values Arrow does not take as they are; the others (int, bool, str,
# datetime, and JSON/UUID selected as text) go to Arrow's C++ converters in one call per column.
_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "float": float,  # PostgreSQL numeric arrives as Decimal
    "binary": bytes,  # memoryview
}


@dataclass
class TableShape:
    """How one table is read, archived and deleted."""

    table: sa.Table
    kinds: list[tuple[str, str]]
    pk_index: list[int]
    schema: pa.Schema = field(init=False)

    def __post_init__(self) -> None:
        self.schema = pa.schema([pa.field(name, ARROW_TYPES[kind]) for name, kind in self.kinds])

    @classmethod
    def of(cls, table: sa.Table) -> TableShape:
        names = [c.name for c in table.columns]
        pk = [c.name for c in table.primary_key.columns] or names
        return cls(table, [(c.name, column_kind(c)) for c in table.columns], [names.index(n) for n in pk])

    @property
    def pk_names(self) -> list[str]:
        return [self.kinds[i][0] for i in self.pk_index]

    def columns(self, dialect: str) -> list[sa.ColumnElement]:
        """The select list: JSON and UUID columns as the text the database holds (no parsing)."""
        out: list[sa.ColumnElement] = []
        for column, (_, kind) in zip(self.table.columns, self.kinds, strict=True):
            if kind == "json" or isinstance(column.type, sa.Uuid):
                text = sa.cast(column, sa.Text) if dialect == "postgresql" else sa.type_coerce(column, sa.Text)
                out.append(text.label(column.name))
            else:
                out.append(column)
        return out

    def arrow_table(self, rows: Sequence[Sequence[Any]]) -> pa.Table:
        """Rows as the archive keeps them: an Arrow table in this table's schema, sorted by primary key."""
        columns: list[Sequence[Any]] = list(zip(*rows, strict=True)) if rows else [() for _ in self.kinds]
        arrays = []
        for values, (_name, kind), arrow_field in zip(columns, self.kinds, self.schema, strict=True):
            convert = _CONVERTERS.get(kind)
            if convert is not None:
                values = [None if v is None else convert(v) for v in values]
            try:
                arrays.append(pa.array(values, type=arrow_field.type))
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                # A value of another Python type: an enum in a string column, or a number in a
                # SQLite JSON column (its NUMERIC affinity stores the JSON text `0.42` as a REAL).
                text = {"string": _string, "json": _json_text}.get(kind)
                if text is None:
                    raise
                arrays.append(pa.array([None if v is None else text(v) for v in values], type=pa.string()))
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        return table.sort_by([(name, "ascending") for name in self.pk_names]) if rows else table


@dataclass
class RunReport:
    """What one archive run of one instance did (also the body of its run manifest)."""

    instance: str
    cutoff: str
    started_at: str
    dry_run: bool = False
    status: str = "running"
    finished_at: str = ""
    duration_s: float = 0.0
    airflow_version: str = ""
    alembic_revision: str = ""
    tables: dict[str, int] = field(default_factory=dict)
    batches: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None

    @property
    def rows(self) -> int:
        return sum(self.tables.values())

    def add(self, table: str, rows: int) -> None:
        self.tables[table] = self.tables.get(table, 0) + rows

    def manifest(self) -> dict[str, Any]:
        return {
            "instance": self.instance,
            "status": self.status,
            "dry_run": self.dry_run,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "duration_s": round(self.duration_s, 3),
            "cutoff": self.cutoff,
            "airflow_version": self.airflow_version,
            "alembic_revision": self.alembic_revision,
            "rows": self.rows,
            "tables": {
                name: {
                    "rows": rows,
                    # One checksum per table and run, over the batch files' checksums in order.
                    "sha256": hashlib.sha256(
                        "".join(b["files"][name]["sha256"] for b in self.batches if name in b["files"]).encode()
                    ).hexdigest(),
                }
                for name, rows in sorted(self.tables.items())
            },
            "batches": self.batches,
            "error": self.error,
        }


def make_engine(url: str) -> Engine:
    """An engine for archiving: SQLite gets foreign keys on (as Airflow does) and explicit BEGINs."""
    if not url.startswith("sqlite"):
        return sa.create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=8)
    engine = sa.create_engine(url, connect_args={"timeout": 60})

    @sa.event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # SQLAlchemy emits BEGIN itself (below)
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        # The delete transaction takes the write lock at once, so nothing changes between
        # re-reading the rows and deleting them; reads take no lock.
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write") else "BEGIN")

    return engine


def _week(value: datetime) -> str:
    iso = value.isocalendar()
    return f"{iso.year}-W{iso.week:02d}"


def _utc(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _chunks(values: list[Any], size: int = IN_CHUNK) -> Iterable[list[Any]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


class Archiver:
    """Archives one instance's metadata into the store (see the module docstring)."""

    def __init__(
        self,
        instance: InstanceDatabase,
        store: ArchiveStore,
        settings: ArchiveSettings,
        engine: Engine | None = None,
        on_batch: Callable[[], None] | None = None,
        after_copy: Callable[[], None] | None = None,
    ) -> None:
        self.instance = instance
        self.store = store
        self.settings = settings
        self.engine = engine or make_engine(instance.url)
        self.on_batch = on_batch  # e.g. renew the run lock
        # Called once a batch is copied and verified, before its rows are deleted: where a
        # test kills the process to prove the next run finishes the batch (docs/archive.md).
        self.after_copy = after_copy
        self.md = sa.MetaData()
        self.shapes: dict[str, TableShape] = {}
        self.trees: dict[str, tuple[Node, ...]] = {}
        self._report_lock = threading.Lock()

    @property
    def is_postgres(self) -> bool:
        return self.engine.dialect.name == "postgresql"

    def _reflect(self) -> None:
        if self.shapes:
            return
        database = self.engine.url.database if self.engine.dialect.name == "sqlite" else None
        if database and database != ":memory:" and not Path(database).is_file():
            # Connecting would create the file: an empty database that looks like the real one.
            raise DatabaseError(
                self.instance.name,
                f"no SQLite database at {database} (nothing was created): start the stack (`scripts/demo up` "
                "records its databases in <ONBOARDING_HOME>/stack.env.json, which this command reads) or set "
                f"ARCHIVE_{self.instance.name.upper()}_DB_URL to the instance's database URL",
            )
        try:
            self.md.reflect(self.engine)
        except sa.exc.SQLAlchemyError as err:
            raise DatabaseError(self.instance.name, str(err)) from err
        if "dag_run" not in self.md.tables:
            raise DatabaseError(self.instance.name, "no dag_run table: is this an Airflow metadata database?")
        for root in ROOTS:
            if root.table in self.md.tables:
                self.trees[root.table] = tree(self.md, root.table)
                for node in self.trees[root.table]:
                    self.shapes.setdefault(node.table, TableShape.of(self.md.tables[node.table]))

    # --- selecting -------------------------------------------------------------------------

    def _candidates(self, conn: Connection, root: Root, cutoff: datetime) -> list[tuple[Any, datetime]]:
        """(key, age) of every eligible root row, oldest first."""
        t = self.md.tables[root.table]
        pk = t.primary_key.columns[0]
        query = sa.select(pk, root.age(t).label("age")).where(root.eligible(t, self.md, cutoff))
        rows = conn.execute(query.order_by(sa.text("age"), pk)).all()
        keep: set[Any] = set()
        if root.keep_last:
            latest = (
                sa.select(t.c.dag_id, sa.func.max(t.c.run_after).label("run_after"))
                .where(t.c.run_type.notin_(KEEP_LAST_EXCLUDED_RUN_TYPES))
                .group_by(t.c.dag_id)
                .subquery()
            )
            keep = set(
                conn.execute(
                    sa.select(pk).join(
                        latest, sa.and_(t.c.dag_id == latest.c.dag_id, t.c.run_after == latest.c.run_after)
                    )
                ).scalars()
            )
        return [(key, _utc(age)) for key, age in rows if key not in keep]

    def _plan(self, root: Root, candidates: list[tuple[Any, datetime]], cutoff: datetime) -> Iterable[BatchRecord]:
        """Batches of at most batch_size keys, each within one ISO week (its partition)."""
        size = self.settings.batch_size * (1 if root.table == "dag_run" else ROWS_PER_RUN)
        batch: list[Any] = []
        week = ""
        for key, age in candidates:
            if batch and (len(batch) >= size or _week(age) != week):
                yield self._record(root, week, batch, cutoff)
                batch = []
            if not batch:
                week = _week(age)
            batch.append(key)
        if batch:
            yield self._record(root, week, batch, cutoff)

    def _record(self, root: Root, week: str, keys: list[Any], cutoff: datetime) -> BatchRecord:
        digest = hashlib.sha256(canonical_json(keys).encode()).hexdigest()[:10]
        batch_id = f"{root.table}-{week}-{keys[0]}-{digest}"
        return BatchRecord(batch_id, root.table, week, list(keys), cutoff.isoformat())

    # --- reading a batch -------------------------------------------------------------------

    def _keys_in(self, column: sa.ColumnElement, keys: list[Any]) -> sa.ColumnElement:
        """`column IN keys`: one array parameter on PostgreSQL (cheap to compile and plan)."""
        if self.is_postgres:
            array = sa.ARRAY(column.type)
            values = [_pg_array_value(k) for k in keys]
            return column == sa.any_(sa.cast(sa.bindparam(None, values, type_=array), array))
        return column.in_(keys)

    def _key_chunks(self, keys: list[Any]) -> Iterable[list[Any]]:
        """All keys at once as one PostgreSQL array; IN lists of a bounded length on SQLite."""
        return [keys] if self.is_postgres else _chunks(keys)

    def _path_join(self, root: str, node: Node) -> sa.FromClause:
        """The node's table joined up its foreign keys to the root table."""
        by_table = {n.table: n for n in self.trees[root]}
        joined: sa.FromClause = self.md.tables[node.table]
        current = node
        while current.parent is not None:
            child, parent = self.md.tables[current.table], self.md.tables[current.parent]
            on = sa.and_(
                *(child.c[c] == parent.c[p] for c, p in zip(current.columns, current.parent_columns, strict=True))
            )
            joined = joined.join(parent, on)
            current = by_table[current.parent]
        return joined

    def _collect(
        self, conn: Connection, root: Root, keys: list[Any], cutoff: datetime, lock: bool, eligible_only: bool = True
    ) -> dict[str, list[Sequence[Any]]]:
        """The batch's rows in every table of the root's tree (root rows still eligible only).

        Root rows are read first (locked when `lock`: PostgreSQL `FOR UPDATE`), then each
        table of the tree joined up to those root keys. Children take no row locks: the move
        runs in a REPEATABLE READ transaction on PostgreSQL, so a child that changes or
        appears after this read fails the delete (serialization failure or a row count that
        differs) instead of being deleted unseen; SQLite holds its write lock throughout.
        """
        dialect = self.engine.dialect.name
        root_table = self.md.tables[root.table]
        pk = root_table.primary_key.columns[0]
        shape = self.shapes[root.table]
        rows: dict[str, list[Sequence[Any]]] = {root.table: []}
        for chunk in self._key_chunks(keys):
            where = self._keys_in(pk, chunk)
            if eligible_only:
                where = sa.and_(where, root.eligible(root_table, self.md, cutoff))
            query = sa.select(*shape.columns(dialect)).where(where)
            if lock and self.is_postgres:
                query = query.with_for_update()
            rows[root.table].extend(conn.execute(query).all())
        found = [r[shape.pk_index[0]] for r in rows[root.table]]
        for node in self.trees[root.table][1:]:
            shape = self.shapes[node.table]
            rows[node.table] = []
            for chunk in self._key_chunks(found):
                query = sa.select(*shape.columns(dialect)).select_from(self._path_join(root.table, node))
                rows[node.table].extend(conn.execute(query.where(self._keys_in(pk, chunk))).all())
        return rows

    def _tables(self, rows: dict[str, list[Sequence[Any]]]) -> dict[str, pa.Table]:
        return {name: self.shapes[name].arrow_table(table_rows) for name, table_rows in rows.items() if table_rows}

    # --- one batch -------------------------------------------------------------------------

    def _process(self, root: Root, record: BatchRecord, cutoff: datetime, report: RunReport) -> None:
        for attempt in range(1, COPY_ATTEMPTS + 1):
            try:
                if not self._move(root, record, cutoff):
                    return
            except ConcurrentChange as err:
                logger.warning("archive: %s (attempt %d of %d); copying it again", err, attempt, COPY_ATTEMPTS)
                continue
            except sa.exc.DBAPIError as err:
                if getattr(err.orig, "pgcode", None) not in RETRYABLE_PGCODES:
                    raise
                logger.warning(
                    "archive: batch %s changed while being moved (%s; attempt %d of %d); copying it again",
                    record.batch_id,
                    str(err.orig).strip().splitlines()[0],
                    attempt,
                    COPY_ATTEMPTS,
                )
                continue
            record.state = "deleted"
            self.store.save_batch(self.instance.name, record)
            with self._report_lock:
                for name, entry in record.files.items():
                    report.add(name, entry.rows)
                report.batches.append(
                    {
                        "batch_id": record.batch_id,
                        "week": record.week,
                        "files": {n: vars(f) for n, f in record.files.items()},
                    }
                )
            return
        raise ArchiveError(f"{self.instance.name}: batch {record.batch_id} kept changing; left in the database")

    def _move(self, root: Root, record: BatchRecord, cutoff: datetime) -> bool:
        """Copy, verify and delete one batch in one transaction; False if nothing was left to move.

        The transaction sees one snapshot of the batch from the first read to the commit
        (PostgreSQL REPEATABLE READ with the root rows locked; SQLite's write lock), so what
        is deleted is exactly what was verified.
        """
        options: dict[str, Any] = {"write": True}
        if self.is_postgres:
            options["isolation_level"] = "REPEATABLE READ"
        with self.engine.connect().execution_options(**options) as conn, conn.begin():
            rows = self._collect(conn, root, record.keys, cutoff, lock=True)
            if not rows[root.table]:
                self._settle_empty(conn, root, record)
                return False
            record.keys = [r[self.shapes[root.table].pk_index[0]] for r in rows[root.table]]
            tables = self._tables(rows)
            if not (record.state == "copied" and self.store.holds(self.instance.name, record, tables)):
                record.files = self.store.write_batch(
                    self.instance.name, record.week, record.batch_id, tables, self.shapes
                )
                self.store.remove_batch_files(self.instance.name, record, keep=record.files)
                record.state = "copied"
                self.store.save_batch(self.instance.name, record)
            # else: copied and verified by a run that died before its delete committed.
            if self.after_copy is not None:
                self.after_copy()
            for node in reversed(self.trees[root.table]):
                if rows[node.table]:
                    self._delete_keys(conn, record, node.table, rows[node.table])
        return True

    def _settle_empty(self, conn: Connection, root: Root, record: BatchRecord) -> None:
        """None of the batch's root rows is eligible any more: find out why, and record it."""
        pk = self.md.tables[root.table].primary_key.columns[0]
        present = any(
            conn.execute(sa.select(sa.func.count()).select_from(pk.table).where(pk.in_(chunk))).scalar()
            for chunk in _chunks(record.keys)
        )
        if present or record.state == "planned":
            # Back in play (e.g. a run was cleared) or never copied: nothing of this batch may
            # stay in the archive; the rows are archived once they are old and finished again.
            self.store.remove_batch_files(self.instance.name, record)
            record.files = {}
            record.state = "dropped"
        else:
            # This batch's own delete committed just before a crash: the files hold the rows.
            self.store.verify_batch(self.instance.name, record)
            record.state = "deleted"
        self.store.save_batch(self.instance.name, record)

    def _delete_keys(self, conn: Connection, record: BatchRecord, name: str, rows: list[Sequence[Any]]) -> None:
        table = self.md.tables[name]
        shape = self.shapes[name]
        pk = [table.c[n] for n in shape.pk_names]
        keys = [tuple(r[i] for i in shape.pk_index) for r in rows]
        deleted = 0
        for chunk in _chunks(keys, DELETE_CHUNK):
            if len(pk) == 1:
                where = self._keys_in(pk[0], [k[0] for k in chunk])
            elif self.is_postgres:
                # A long row-value IN list is slow to plan on PostgreSQL; unnest(arrays) is not.
                arrays = [
                    sa.cast(
                        sa.bindparam(f"k{i}", [_pg_array_value(k[i]) for k in chunk], type_=sa.ARRAY(col.type)),
                        sa.ARRAY(col.type),
                    )
                    for i, col in enumerate(pk)
                ]
                where = sa.tuple_(*pk).in_(
                    sa.select(sa.func.unnest(*arrays).table_valued(*(c.name for c in pk)).render_derived())
                )
            else:
                where = sa.tuple_(*pk).in_(chunk)
            deleted += conn.execute(sa.delete(table).where(where)).rowcount
        if deleted != len(keys):
            raise ConcurrentChange(record.batch_id, name)

    # --- a whole run -----------------------------------------------------------------------

    def run(self, now: datetime | None = None, dry_run: bool = False) -> RunReport:
        """Archive everything older than the cut-off; the report is also written as the run manifest."""
        started = time.monotonic()
        cutoff = self.settings.cutoff(now)
        report = RunReport(
            self.instance.name,
            cutoff.isoformat(),
            datetime.now(UTC).isoformat(timespec="seconds"),
            dry_run=dry_run,
            airflow_version=version("apache-airflow"),
        )
        try:
            self._reflect()
            report.alembic_revision = self._alembic_revision()
            if not dry_run:
                self._analyze()
            if dry_run:
                self._dry_run(cutoff, report)
            else:
                self._archive(cutoff, report, started)
            report.status = "ok"
        except (ArchiveError, sa.exc.SQLAlchemyError, OSError) as err:
            report.status = "failed"
            report.error = str(err)
            if isinstance(err, sa.exc.SQLAlchemyError):
                raise DatabaseError(self.instance.name, str(err)) from err
            raise
        finally:
            report.duration_s = time.monotonic() - started
            report.finished_at = datetime.now(UTC).isoformat(timespec="seconds")
            if not dry_run:
                self.store.write_run_manifest(self.instance.name, report.manifest())
        return report

    def _analyze(self) -> None:
        """Fresh planner statistics for the tables a batch reads (PostgreSQL).

        Batches read children by joining them up to the root keys; on statistics older than
        a burst of runs (autovacuum analyzes late) the planner may scan whole tables for
        each batch. ANALYZE samples a bounded number of rows, so this costs seconds at most.
        """
        if not self.is_postgres:
            return
        names = sorted({node.table for nodes in self.trees.values() for node in nodes})
        started = time.monotonic()
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in names:
                try:
                    conn.exec_driver_sql(f'ANALYZE "{name}"')
                except sa.exc.DBAPIError as err:  # e.g. not the tables' owner: plans may be slower
                    logger.warning("archive: %s: cannot analyze %s: %s", self.instance.name, name, err.orig)
                    return
        logger.info(
            "archive: %s: analyzed %d tables in %.1f s", self.instance.name, len(names), time.monotonic() - started
        )

    def _alembic_revision(self) -> str:
        if "alembic_version" not in self.md.tables:
            return ""
        with self.engine.connect() as conn:
            return str(conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() or "")

    def _archive(self, cutoff: datetime, report: RunReport, started: float) -> None:
        roots = {root.table: root for root in ROOTS if root.table in self.trees}
        for record in self.store.unfinished_batches(self.instance.name):
            logger.info(
                "archive: %s: finishing batch %s left %s by an earlier run",
                self.instance.name,
                record.batch_id,
                record.state,
            )
            self._process(roots[record.root], record, _utc(record.cutoff), report)
            self._progress(report, started)
        for root in roots.values():
            with self.engine.connect() as conn:
                candidates = self._candidates(conn, root, cutoff)
            if candidates:
                logger.info(
                    "archive: %s: %d %s rows older than %s",
                    self.instance.name,
                    len(candidates),
                    root.table,
                    cutoff.isoformat(timespec="seconds"),
                )
            self._process_all(root, list(self._plan(root, candidates, cutoff)), cutoff, report, started)

    def _process_all(
        self, root: Root, records: list[BatchRecord], cutoff: datetime, report: RunReport, started: float
    ) -> None:
        """Move a root's batches, `workers` at a time (disjoint keys, one transaction each)."""

        def one(record: BatchRecord) -> None:
            self.store.save_batch(self.instance.name, record)
            self._process(root, record, cutoff, report)

        workers = 1 if not self.is_postgres else self.settings.workers  # SQLite has one writer
        if workers == 1:
            for record in records:
                one(record)
                self._progress(report, started)
            return
        with ThreadPoolExecutor(workers, thread_name_prefix="archive") as pool:
            futures = [pool.submit(one, record) for record in records]
            try:
                for future in as_completed(futures):
                    future.result()
                    self._progress(report, started)
            except BaseException:
                # Batches already moving finish (or roll back) on their own; none starts.
                for future in futures:
                    future.cancel()
                raise

    def _progress(self, report: RunReport, started: float) -> None:
        elapsed = time.monotonic() - started
        logger.info(
            "archive: %s: %d batches, %d rows archived, %.0f rows/s",
            self.instance.name,
            len(report.batches),
            report.rows,
            report.rows / elapsed if elapsed else 0.0,
        )
        if self.on_batch is not None:
            self.on_batch()

    def _dry_run(self, cutoff: datetime, report: RunReport) -> None:
        """Count what a run would move, per table, without writing or deleting anything."""
        planned_runs: set[Any] = set()
        run_tables = {node.table for node in self.trees["dag_run"]}
        with self.engine.connect() as conn:
            for root in ROOTS:
                if root.table not in self.trees:
                    continue
                if root.table == "asset_event":
                    candidates = self._asset_events_freed(conn, cutoff, planned_runs)
                else:
                    candidates = self._candidates(conn, root, cutoff)
                if root.table == "dag_run":
                    planned_runs = {key for key, _ in candidates}
                for record in self._plan(root, candidates, cutoff):
                    rows = self._collect(conn, root, record.keys, cutoff, lock=False, eligible_only=False)
                    for name, table_rows in rows.items():
                        # Links to runs (dagrun_asset_event) go with the runs, counted above.
                        already = root.table != "dag_run" and name in run_tables and name != root.table
                        if table_rows and not already:
                            report.add(name, len(table_rows))

    def _asset_events_freed(self, conn: Connection, cutoff: datetime, runs: set[Any]) -> list[tuple[Any, datetime]]:
        """Old asset events that only runs about to be archived consumed (a real run frees them first)."""
        event = self.md.tables["asset_event"]
        link = self.md.tables["dagrun_asset_event"]
        query = (
            sa.select(event.c.id, event.c.timestamp, link.c.dag_run_id)
            .outerjoin(link, link.c.event_id == event.c.id)
            .where(event.c.timestamp < cutoff)
            .order_by(event.c.timestamp, event.c.id)
        )
        blocked: set[Any] = set()
        ages: dict[Any, datetime] = {}
        for key, age, run in conn.execute(query):
            ages[key] = _utc(age)
            if run is not None and run not in runs:
                blocked.add(key)
        return [(key, age) for key, age in ages.items() if key not in blocked]
